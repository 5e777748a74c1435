"""Runs the engine in a fresh process (for the multi-process, SIGKILL and SIGTERM tests) on the tiny
test net (``--model=mlp``: batch norm, dropout, SGD with multipliers, a frozen module, two passes per
step), on BrainMAE or ST-MAE pretraining over real HCP windows (``--model=brainmae|stmae``) or on the smoke-sized
AdaFocusV2 with random frames (``--model=adafocus``).
Writes the final parameters to --out (npz) and a result line to stdout."""
import argparse
import json
import os
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--workdir", required=True)
p.add_argument("--model", choices=("mlp", "brainmae", "stmae", "adafocus"), default="mlp")
p.add_argument("--out", default="")
p.add_argument("--steps", type=int, default=8)
p.add_argument("--checkpoint_every", type=int, default=0)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--devices", type=int, default=8)
p.add_argument("--num_processes", type=int, default=1)
p.add_argument("--process_id", type=int, default=0)
p.add_argument("--port", type=int, default=0)
args = p.parse_args()

os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", args.devices)
from jaxtrain import distributed  # noqa: E402

if args.num_processes > 1:
  distributed.maybe_initialize(f"localhost:{args.port}", args.num_processes, args.process_id,
                               cpu_collectives=True)

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from flax import nnx  # noqa: E402

import engine_helpers as h  # noqa: E402
from jaxtrain import loop  # noqa: E402


class Slowed:
  """Wraps an iterator and sleeps before each batch (so a test can signal the run mid-way)."""

  def __init__(self, it, sleep_s: float):
    self.it, self.sleep_s = it, sleep_s

  def __iter__(self):
    return self

  def __next__(self):
    time.sleep(self.sleep_s)
    return next(self.it)

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)


if args.model == "mlp":
  config = h.make_config(steps=args.steps, checkpoint_every=args.checkpoint_every)
  it = h.ArrayIterator(config.train.batch_size, process_index=jax.process_index(),
                       process_count=jax.process_count())
  task = h.make_task()
elif args.model == "adafocus":
  from jaxtrain.config import load_config  # noqa: E402
  from jaxtrain.data import InMemorySource, make_loader  # noqa: E402
  from jaxvision.train import task as adafocus_task  # noqa: E402

  config = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "configs", "adafocusv2.py:smoke"))
  config.train.update(dict(steps=args.steps, checkpoint_every=args.checkpoint_every,
                           batch_size=8, log_every=1, eval_every=0, best_metric=""))
  m = config.model
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (32, m.num_frames, m.image_size, m.image_size, 3), dtype=np.uint8)
  it = make_loader(InMemorySource({"frames": frames, "label": np.arange(32, dtype=np.int32) % 10}),
                   global_batch_size=8, seed=0)
  task = adafocus_task(config)
else:
  from jaxtrain.data import InMemorySource, make_loader  # noqa: E402
  from jaxbrain.tasks.pretrain import pretrain_task  # noqa: E402

  setup = h.stmae_setup if args.model == "stmae" else h.brainmae_setup
  config, x = setup(steps=args.steps, checkpoint_every=args.checkpoint_every)
  it = make_loader(InMemorySource({"x": x}), global_batch_size=config.train.batch_size,
                   seed=config.seed, fields=("x",))
  task = pretrain_task(config)
result = loop.train(config=config, workdir=args.workdir, task=task,
                    train_iter=Slowed(it, args.sleep) if args.sleep else it)
from jaxtrain import metrics  # noqa: E402
metrics.write_summary(args.workdir, config, result)
state = nnx.state(result.model, nnx.Any(nnx.Param, nnx.BatchStat))  # parameters and batch statistics
flat = {jax.tree_util.keystr(k): np.asarray(multihost_utils.process_allgather(v, tiled=True))
        for k, v in jax.tree_util.tree_leaves_with_path(state)}
if args.out and jax.process_index() == 0:
  np.savez(args.out, **flat)
out = {"step": result.step, "preempted": result.preempted,
       "losses": [h_["loss"] for h_ in result.history], "position": it.get_state()}
if args.model == "brainmae":  # evaluation after training (every process passes the same windows)
  from jaxbrain.evaluation import reconstruction  # noqa: E402
  from jaxbrain.tasks import inference  # noqa: E402

  mask = reconstruction.random_mask(x[:21].shape[:3], 0.5, seed=1)
  recon = inference.reconstruct(result.model, x[:21], mask, batch_size=8)
  out["eval_mse"] = reconstruction.masked_mse(recon, x[:21], mask)
print("RESULT " + json.dumps(out), flush=True)
