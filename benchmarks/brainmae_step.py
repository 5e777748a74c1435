"""BrainMAE training-step throughput: steps/s, samples/s, peak memory, achieved FLOP/s.

  python benchmarks/brainmae_step.py [--configs=default,paper] [--steps=10] [--batch_size=...]
                                     [--cpu_devices=1]

Times the engine's own jitted, donated train step (jaxtrain.loop.build_program) on random windows
shaped like each config's input, and reports achieved FLOP/s (XLA's count of the compiled step)
as a fraction of this machine's fp32 matmul rate measured in the same run. Prints one JSON line
per config plus a table.
"""
from __future__ import annotations

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

from jaxbrain.tasks import inputs, train  # noqa: E402
from jaxbrain.tasks.pretrain import pretrain_task  # noqa: E402
from jaxtrain import distributed, loop, mesh as mesh_lib, perf  # noqa: E402
from jaxtrain.config import load_config  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                       "brainmae.py")


def peak_memory_bytes() -> tuple[float, str]:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return float(stats["peak_bytes_in_use"]), "device peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, "process max RSS"


def bench(variant: str, steps: int, batch_size: int | None, configs: str = CONFIGS,
          overrides: tuple[str, ...] = (), label: str = "") -> dict:
  """One config's row; ``overrides`` ('a.b=value' strings) may set the model's input shapes, else
  they come from the config's data."""
  config = load_config(f"{configs}:{variant}" if variant != "default" else configs, overrides)
  if batch_size:
    config.train.batch_size = batch_size
  if not (config.model.num_rois and config.model.seg_len):
    data = inputs.load_data(config.data)
    config = train.with_data_shapes(config, *inputs.data_shapes(config.data, data))
  m = config.model
  program = loop.build_program(config, pretrain_task(config))
  state = program.init()
  rng = np.random.default_rng(0)
  shape = (config.train.batch_size, config.data.num_segments, m.num_rois, m.seg_len)
  batch = mesh_lib.global_batch({"x": rng.standard_normal(shape, np.float32)}, program.mesh)
  # XLA's cost analysis counts one device's share of the SPMD program: scale to the whole mesh.
  flops = perf.compiled_flops(program.step, state, batch) * program.mesh.devices.size
  t0 = time.perf_counter()
  state, diag = program.step(state, batch)  # compile + first step
  jax.block_until_ready(diag)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, diag = program.step(state, batch)
    jax.block_until_ready(diag)
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  mem, mem_kind = peak_memory_bytes()
  params = sum(x.size for x in jax.tree.leaves(state.params))
  return {"config": label or variant, "batch_size": config.train.batch_size, "input": list(shape),
          "params": int(params), "compile_s": compile_s, "step_s_median": step_s,
          "steps_per_s": 1 / step_s, "samples_per_s": config.train.batch_size / step_s,
          "flops_per_step": flops, "achieved_flops_per_s": flops / step_s,
          "peak_memory_gib": mem / 2**30, "memory_kind": mem_kind,
          "loss": float(diag["loss"])}


def run(rows: list, args: argparse.Namespace) -> list[dict]:
  """Measures the matmul rate, then each of ``rows`` (callables giving a ``bench`` row), then the
  matmul rate again; prints one JSON line per row and the table."""
  if args.dry_run:
    print(f"dry run: the arguments parse: {vars(args)}")
    return []
  distributed.set_cpu_device_count(args.cpu_devices)
  device = jax.devices()[0]
  print(f"device: {device.platform} {device.device_kind} x{jax.device_count()}")
  rate_before = perf.matmul_flops_per_s(args.matmul_size)
  rows = [row() for row in rows]
  rate_after = perf.matmul_flops_per_s(args.matmul_size)
  rate = max(rate_before, rate_after)
  print(f"fp32 matmul {args.matmul_size}^2: {rate_before / 1e9:.1f} GFLOP/s before, "
        f"{rate_after / 1e9:.1f} after (fractions below use the higher)")
  for r in rows:
    r["matmul_flops_per_s"] = rate
    r["fraction_of_matmul"] = r["achieved_flops_per_s"] / rate
    print(json.dumps(r))
  print("\n| config | batch | steps/s | samples/s | GFLOP/step | GFLOP/s | of matmul | peak mem (GiB) |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['config']} | {r['batch_size']} | {r['steps_per_s']:.2f} | "
          f"{r['samples_per_s']:.1f} | {r['flops_per_step'] / 1e9:.2f} | "
          f"{r['achieved_flops_per_s'] / 1e9:.1f} | {100 * r['fraction_of_matmul']:.0f}% | "
          f"{r['peak_memory_gib']:.2f} ({r['memory_kind']}) |")
  return rows


def common_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=0)
  parser.add_argument("--matmul_size", type=int, default=2048)
  parser.add_argument("--cpu_devices", type=int, default=1,
                      help="JAX devices to split the CPU into (the mesh's data axis spans them)")
  parser.add_argument("--dry_run", action="store_true", help="parse the arguments and exit")
  return parser


def main() -> None:
  parser = common_flags(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
  parser.add_argument("--configs", default="default,paper")
  args = parser.parse_args()
  run([lambda v=v: bench(v, args.steps, args.batch_size or None) for v in args.configs.split(",")],
      args)


if __name__ == "__main__":
  main()
