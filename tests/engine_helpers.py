"""Shared pieces for the engine tests: a tiny NNX net (batch norm, dropout) with logical axis names,
its loss and two-pass step, a config (SGD, lr multipliers, a frozen module),
a deterministic in-memory data iterator with get_state()/set_state(), a small BrainMAE run, and
helpers that start ``engine_worker.py`` processes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx


class Backbone(nnx.Module):
  def __init__(self, rngs: nnx.Rngs, din: int, hidden: int):
    init = nnx.initializers.lecun_normal()
    self.w = nnx.Param(init(rngs.params(), (din, hidden)), out_sharding=("embed", "mlp"))
    self.bn = nnx.BatchNorm(hidden, rngs=rngs, momentum=0.9)


class TinyNet(nnx.Module):
  """x [B, 8] -> y [B, 4]: backbone (linear, batch norm, dropout), neck, head. Parameters carry
  logical axis names for the sharding rules; batch statistics live in ``backbone.bn``."""

  def __init__(self, rngs: nnx.Rngs, din: int = 8, hidden: int = 32, dout: int = 4):
    init = nnx.initializers.lecun_normal()
    self.backbone = Backbone(rngs, din, hidden)
    self.drop = nnx.Dropout(0.1)
    self.neck = nnx.Linear(hidden, hidden, rngs=rngs,
                           kernel_init=nnx.with_partitioning(init, ("mlp", "embed")))
    self.head = nnx.Linear(hidden, dout, rngs=rngs,
                           kernel_init=nnx.with_partitioning(init, ("mlp", "embed")))

  def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    h = jax.nn.gelu(self.backbone.bn(x @ self.backbone.w))
    h = jax.nn.gelu(self.neck(self.drop(h, rngs=rngs)))
    return self.head(h)


def loss_fn(model: TinyNet, batch: dict, rng: jax.Array, step: jax.Array):
  del step
  pred = model(batch["x"], nnx.Rngs(dropout=rng))
  err = jnp.mean((pred - batch["y"]) ** 2)
  return err, {"mae": jnp.mean(jnp.abs(pred - batch["y"])),
               "max_err": jnp.abs(pred - batch["y"]).max(axis=1),
               "mse_per_output": jnp.mean((pred - batch["y"]) ** 2, axis=0)}


def two_pass_step(parts, state, batch, rng):
  """Two passes per step: the batch as is and sign-flipped (targets flipped too); gradients
  averaged; batch statistics from the first pass only."""
  r1, r2 = jax.random.split(rng)
  l1, m1, g1, rest = parts.grad(parts.loss, state, batch, r1)
  flipped = {"x": -batch["x"], "y": -batch["y"]}
  l2, _, g2, _ = parts.grad(parts.loss, state, flipped, r2)
  grads = jax.tree.map(lambda a, b: 0.5 * (a + b), g1, g2)
  return parts.update(state, grads, rest, 0.5 * (l1 + l2), {**m1, "loss_flipped": l2})


def make_task(two_pass: bool = True, evaluators=()):
  from jaxtrain.task import Task
  return Task(model=TinyNet, loss=loss_fn,
              reductions={"max_err": "max", "mse_per_output": "none"},
              train_step=two_pass_step if two_pass else None, evaluators=evaluators)


def make_config(steps: int = 6, batch_size: int = 16, shape=None, **train) -> ml_collections.ConfigDict:
  """SGD with momentum, per-module learning-rate and weight-decay multipliers, a frozen neck."""
  c = ml_collections.ConfigDict()
  c.name = "engine_test"
  c.seed = 0
  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ml_collections.ConfigDict(shape or {"data": 2, "fsdp": 4})
  c.mesh.rules = (("embed", None), ("mlp", "fsdp"))
  c.train = ml_collections.ConfigDict(dict(
      steps=steps, batch_size=batch_size, log_every=1, checkpoint_every=0, keep_checkpoints=3))
  c.train.update(train)
  # A constant schedule after warmup keeps the compiled step the same for any number of steps,
  # so test runs of different lengths share compiled programs.
  c.optim = ml_collections.ConfigDict(dict(
      name="sgd", lr=5e-2, momentum=0.9, nesterov=False, warmup_steps=2, weight_decay=1e-4,
      grad_clip=1.0, schedule="constant",
      lr_mults=(("^head/", 5.0), ("^backbone/", 0.5)),
      wd_mults=(("kernel$|/w$", 1.0),),
      frozen=("^neck/",)))
  return c


class ArrayIterator:
  """Endless deterministic batches from fixed arrays; each process takes its slice of every
  global batch. The position is its whole state."""

  def __init__(self, global_batch: int, seed: int = 0, n: int = 256,
               process_index: int = 0, process_count: int = 1, nan_at: int | None = None):
    rng = np.random.default_rng(seed)
    self.x = rng.normal(size=(n, 8)).astype(np.float32)
    w = rng.normal(size=(8, 4)).astype(np.float32)
    self.y = np.tanh(self.x @ w).astype(np.float32)
    self.global_batch, self.seed, self.n = global_batch, seed, n
    self.local = global_batch // process_count
    self.offset = process_index * self.local
    self.position = 0
    self.nan_at = nan_at

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    order = np.random.default_rng([self.seed, self.position]).permutation(self.n)
    rows = order[:self.global_batch][self.offset:self.offset + self.local]
    batch = {"x": self.x[rows].copy(), "y": self.y[rows].copy()}
    if self.nan_at is not None and self.position == self.nan_at:
      batch["x"][0, 0] = np.nan
    self.position += 1
    return batch

  def get_state(self) -> dict:
    return {"position": self.position}

  def set_state(self, state: dict) -> None:
    self.position = int(state["position"])


def params_of(model) -> dict:
  """Parameters and batch statistics as a flat {path: numpy array} dict."""
  state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
  return {jax.tree_util.keystr(p): np.asarray(jax.device_get(v))
          for p, v in jax.tree_util.tree_leaves_with_path(state)}


def _pretrain_setup(config_file: str, overrides: list[str], stride: int | None = None
                    ) -> tuple[ml_collections.ConfigDict, np.ndarray]:
  """A pretraining run of ``configs/<config_file>`` with ``overrides`` on a (data=2, fsdp=rest) mesh
  (rules: embed -> fsdp) and its training windows: real HCP windows of two subjects, a hop of
  ``stride`` frames (default one segment)."""
  from jaxbrain.tasks import inputs, train
  from jaxtrain.config import load_config

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = load_config(os.path.join(root, "configs", config_file), overrides)
  config.mesh.shape = ml_collections.ConfigDict({"data": 2, "fsdp": -1})
  data = inputs.load_data(config.data)
  config = train.with_data_shapes(config, *inputs.data_shapes(config.data, data))
  x = inputs.window_arrays(data.subjects[:2], config.data, stride_frames=stride)["x"]
  return config, x


def brainmae_setup(steps: int, checkpoint_every: int) -> tuple[ml_collections.ConfigDict, np.ndarray]:
  """A small BrainMAE pretraining run, parameters sharded over fsdp (``_pretrain_setup``)."""
  return _pretrain_setup("brainmae.py:smoke", [
      "model.embed_dim=16", "model.num_heads=2", "model.decoder_dim=8", "model.decoder_heads=2",
      "train.batch_size=8", "train.log_every=1", f"train.steps={steps}",
      f"train.checkpoint_every={checkpoint_every}", "optim.warmup_steps=2"])


def stmae_setup(steps: int, checkpoint_every: int) -> tuple[ml_collections.ConfigDict, np.ndarray]:
  """A small ST-MAE pretraining run (8 segments, FC windows of 40 frames every 16), windows every
  42 frames (``_pretrain_setup``)."""
  return _pretrain_setup("stmae.py:smoke", [
      "data.num_segments=8", "model.num_segments=8", "model.fc_window=40", "data.stride_frames=42",
      "train.batch_size=8", "train.log_every=1", f"train.steps={steps}",
      f"train.checkpoint_every={checkpoint_every}", "optim.warmup_steps=2"], stride=42)


# ------------------------------------------------------------------------ worker subprocesses

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine_worker.py")


def start_worker(args, cache_dir=None) -> subprocess.Popen:
  """Starts ``engine_worker.py ARGS``; ``cache_dir``: a persistent compilation cache that keeps
  every program (workers run the same programs over and over)."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  if cache_dir is not None:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return subprocess.Popen([sys.executable, WORKER, *map(str, args)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def worker_result(proc: subprocess.Popen, timeout: float = 300) -> dict:
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{err[-3000:]}"
  line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def run_workers(arg_lists, cache_dir=None, timeout: float = 300) -> list[dict]:
  """Runs workers concurrently (e.g. the processes of one multi-process run); their results."""
  procs = [start_worker(args, cache_dir) for args in arg_lists]
  try:
    return [worker_result(p, timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def wait_for_checkpoint(proc: subprocess.Popen, ckdir, min_step: int, timeout: float = 240) -> int:
  t0 = time.monotonic()
  while time.monotonic() - t0 < timeout:
    assert proc.poll() is None, f"worker ended early:\n{proc.stderr.read()[-3000:]}"
    steps = [int(s) for s in os.listdir(ckdir) if s.isdigit()] if os.path.isdir(ckdir) else []
    if steps and max(steps) >= min_step:
      return max(steps)
    time.sleep(0.05)
  raise TimeoutError(f"no checkpoint >= {min_step} in {ckdir}")


def kill_after_checkpoint(args, workdir, min_step: int, cache_dir=None,
                          sig: int = signal.SIGKILL, timeout: float = 240) -> subprocess.Popen:
  """Starts a worker, sends it ``sig`` once a checkpoint >= ``min_step`` exists; the process."""
  proc = start_worker(args, cache_dir)
  try:
    wait_for_checkpoint(proc, os.path.join(str(workdir), "checkpoints"), min_step, timeout)
    proc.send_signal(sig)
  except BaseException:
    proc.kill()
    raise
  return proc
