"""AdaFocusV2 throughput: inference videos/s and training steps/s (the engine's two-pass step).

  python benchmarks/adafocus.py [--batch_sizes=4,8] [--steps=3] [--dtype=float32] [--config=actnet_p128]
  python benchmarks/adafocus.py --config=tsm:ssv1_p128      # the Sth-Sth / Jester (TSM) variant
  python benchmarks/adafocus.py --batch_sizes=4 --steps=2 --profile_top=12   # + where the step's time goes

The paper's setting by default (MobileNetV2 + ResNet-50, T = 16, P = 128, 200 classes) on random
frames; ``tsm:<variant>`` takes ``configs/adafocusv2_tsm.py`` (8 glance + 12 focus frames). Medians over ``--steps`` timed calls after a compiling one; achieved FLOP/s from XLA's cost
analysis of the compiled programs, as a fraction of this machine's fp32 matmul rate measured in the
same run (before and after; the higher is used); peak memory.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxtrain import distributed, loop, mesh as mesh_lib, perf  # noqa: E402
from jaxtrain.config import load_config  # noqa: E402
from jaxvision.train import task, variant  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def peak_memory_gib() -> tuple[float, str]:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**30, "device peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process max RSS"


def load(variant: str):
  """``actnet_p128`` -> configs/adafocusv2.py:actnet_p128; ``tsm:ssv1_p128`` -> adafocusv2_tsm.py."""
  tsm, _, name = variant.rpartition(":")
  return load_config(os.path.join(CONFIGS, "adafocusv2_tsm.py" if tsm else "adafocusv2.py")
                     + f":{name}")


def input_lengths(m) -> dict:
  """The model's video inputs, in call order, and their frame counts (``jaxvision.train``)."""
  v = variant(m)
  return dict(zip(v.inputs, v.counts(m)))


def random_videos(m, batch: int) -> dict:
  """Random uint8 clips as the variant's batch fields, and labels."""
  rng = np.random.default_rng(0)
  out = {k: rng.integers(0, 256, (batch, t, m.image_size, m.image_size, 3)).astype(np.uint8)
         for k, t in input_lengths(m).items()}
  return {**out, "label": np.arange(batch, dtype=np.int32) % m.num_classes}


def bench(variant: str, batch: int, steps: int, dtype: str, profile_top: int = 0) -> dict:
  config = load(variant)
  config.model.dtype = dtype
  config.train.update(dict(batch_size=batch, steps=100))
  m = config.model
  program = loop.build_program(config, task(config))
  mesh = program.mesh
  batch_arrays = mesh_lib.global_batch(random_videos(m, batch), mesh)
  state = program.init()

  # Inference: the eval-mode model on a batch of videos (the logits).
  graphdef, params = nnx.split(program.model(state))
  x = tuple(batch_arrays[k] for k in input_lengths(m))

  @jax.jit
  def infer(params, x):
    model = nnx.merge(graphdef, params)
    model.eval()
    return model(*x)["logits"]

  t0 = time.perf_counter()
  infer_c = infer.lower(params, x).compile()
  infer_compile = time.perf_counter() - t0
  jax.block_until_ready(infer_c(params, x))
  infer_s = _median_time(lambda: infer_c(params, x), steps)
  infer_flops = perf.compiled_flops(infer, params, x) * mesh.devices.size

  # Training: the engine's jitted, donated two-pass step.
  t0 = time.perf_counter()
  step_c = program.step.lower(state, batch_arrays).compile()
  train_compile = time.perf_counter() - t0
  train_flops = perf.compiled_flops(program.step, state, batch_arrays) * mesh.devices.size
  state, diag = step_c(state, batch_arrays)
  jax.block_until_ready(diag)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, diag = step_c(state, batch_arrays)
    jax.block_until_ready(diag)
    times.append(time.perf_counter() - t0)
  train_s = statistics.median(times)
  profile = []
  if profile_top:
    holder = [state]

    def one_step():
      holder[0], d = step_c(holder[0], batch_arrays)
      return d

    rows = perf.op_time_by_kind(one_step, step_c.as_text())
    profile = [{"kind": k, "s": s, "count": n} for k, s, n in rows[:profile_top]]
  mem, kind = peak_memory_gib()
  frames = "+".join(str(t) for t in input_lengths(m).values())
  return {"config": variant, "dtype": dtype, "batch": batch, "T": frames, "P": m.patch_size,
          "infer_videos_per_s": batch / infer_s, "infer_s": infer_s,
          "infer_gflop": infer_flops / 1e9, "infer_flops_per_s": infer_flops / infer_s,
          "train_s_per_step": train_s, "train_steps_per_s": 1 / train_s,
          "train_gflop": train_flops / 1e9, "train_flops_per_s": train_flops / train_s,
          "compile_s": {"inference": infer_compile, "train": train_compile},
          "peak_memory_gib": mem, "memory_kind": kind, "loss": float(diag["loss"]),
          "train_op_time_by_kind": profile}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="actnet_p128")
  parser.add_argument("--batch_sizes", default="4,8")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--cpu_devices", type=int, default=1)
  parser.add_argument("--matmul_size", type=int, default=2048)
  parser.add_argument("--profile_top", type=int, default=0,
                      help="also trace one training step and print its N most costly op kinds")
  parser.add_argument("--dry_run", action="store_true", help="parse the arguments and the config, exit")
  args = parser.parse_args()
  if args.dry_run:
    print(f"dry run: the arguments parse; config {load(args.config).name}: {vars(args)}")
    return
  distributed.set_cpu_device_count(args.cpu_devices)
  device = jax.devices()[0]
  print(f"device: {device.platform} {device.device_kind} x{jax.device_count()}", flush=True)
  rate_before = perf.matmul_flops_per_s(args.matmul_size)
  rows = [bench(args.config, int(b), args.steps, args.dtype, args.profile_top)
          for b in args.batch_sizes.split(",")]
  rate = max(rate_before, perf.matmul_flops_per_s(args.matmul_size))
  print(f"fp32 matmul {args.matmul_size}^2: {rate / 1e9:.1f} GFLOP/s (the higher of before/after)")
  for r in rows:
    r["matmul_flops_per_s"] = rate
    print(json.dumps(r))
  print("\n| config | dtype | batch | inference videos/s | of matmul | train s/step | of matmul "
        "| peak memory |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['config']} (T={r['T']}, P={r['P']}) | {r['dtype']} | {r['batch']} | "
          f"{r['infer_videos_per_s']:.2f} | {100 * r['infer_flops_per_s'] / rate:.0f}% | "
          f"{r['train_s_per_step']:.2f} | {100 * r['train_flops_per_s'] / rate:.0f}% | "
          f"{r['peak_memory_gib']:.2f} GiB ({r['memory_kind']}) |")
  for r in rows:
    if r["train_op_time_by_kind"]:
      print(f"\ntraining step, batch {r['batch']}: op time by kind (one traced step, "
            f"{r['train_s_per_step']:.2f} s median wall)")
      for p in r["train_op_time_by_kind"]:
        print(f"  {p['kind']:40s} {p['s']:7.2f} s  {p['count']:5d} ops")


if __name__ == "__main__":
  main()
