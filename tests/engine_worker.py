"""Runs the engine on the tiny test MLP in a fresh process (for the multi-process, SIGKILL and
SIGTERM tests). Writes the final parameters to --out (npz) and a result line to stdout."""
import argparse
import json
import os
import sys

p = argparse.ArgumentParser()
p.add_argument("--workdir", required=True)
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

config = h.make_config(steps=args.steps, checkpoint_every=args.checkpoint_every)
it = h.ArrayIterator(config.train.batch_size, process_index=jax.process_index(),
                     process_count=jax.process_count(), sleep_s=args.sleep)
result = loop.train(config=config, workdir=args.workdir, model_fn=h.TinyMLP, loss_fn=h.loss_fn,
                    train_iter=it)
_, params = nnx.split(result.model, nnx.Param)
flat = {jax.tree_util.keystr(k): np.asarray(multihost_utils.process_allgather(v, tiled=True))
        for k, v in jax.tree_util.tree_leaves_with_path(params)}
if args.out and jax.process_index() == 0:
  np.savez(args.out, **flat)
print("RESULT " + json.dumps({"step": result.step, "preempted": result.preempted,
                              "losses": [h_["loss"] for h_ in result.history],
                              "position": it.position}), flush=True)
