"""Shared pieces for the engine tests: a tiny NNX MLP with logical axis names, its loss, a config
and a deterministic in-memory data iterator with get_state()/set_state()."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx


class TinyMLP(nnx.Module):
  """x [B, 8] -> y [B, 4]; parameters carry logical axis names for the sharding rules."""

  def __init__(self, rngs: nnx.Rngs, din: int = 8, hidden: int = 32, dout: int = 4):
    init = nnx.initializers.lecun_normal()
    self.w1 = nnx.Param(init(rngs.params(), (din, hidden)), out_sharding=("embed", "mlp"))
    self.b1 = nnx.Param(jnp.zeros((hidden,)), out_sharding=("mlp",))
    self.out = nnx.Linear(hidden, dout, rngs=rngs,
                          kernel_init=nnx.with_partitioning(init, ("mlp", "embed")))

  def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    h = jax.nn.gelu(x @ self.w1 + self.b1)
    if rng is not None:  # exercise the per-step rng: a fixed-rate dropout
      keep = jax.random.bernoulli(rng, 0.9, h.shape)
      h = jnp.where(keep, h / 0.9, 0.0)
    return self.out(h)


def loss_fn(model: TinyMLP, batch: dict, rng: jax.Array):
  pred = model(batch["x"], rng)
  err = jnp.mean((pred - batch["y"]) ** 2)
  return err, {"mae": jnp.mean(jnp.abs(pred - batch["y"]))}


def make_config(steps: int = 6, batch_size: int = 16, shape=None, **train) -> ml_collections.ConfigDict:
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
      lr=1e-2, warmup_steps=2, weight_decay=1e-4, grad_clip=1.0, b1=0.9, b2=0.999,
      schedule="constant"))
  return c


class ArrayIterator:
  """Endless deterministic batches from fixed arrays; each process takes its slice of every
  global batch. The position is its whole state."""

  def __init__(self, global_batch: int, seed: int = 0, n: int = 256,
               process_index: int = 0, process_count: int = 1, nan_at: int | None = None,
               sleep_s: float = 0.0):
    rng = np.random.default_rng(seed)
    self.x = rng.normal(size=(n, 8)).astype(np.float32)
    w = rng.normal(size=(8, 4)).astype(np.float32)
    self.y = np.tanh(self.x @ w).astype(np.float32)
    self.global_batch, self.seed, self.n = global_batch, seed, n
    self.local = global_batch // process_count
    self.offset = process_index * self.local
    self.position = 0
    self.nan_at = nan_at
    self.sleep_s = sleep_s

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self.sleep_s:
      import time
      time.sleep(self.sleep_s)
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
  """Parameters as a flat {path: numpy array} dict."""
  _, params = nnx.split(model, nnx.Param)
  return {jax.tree_util.keystr(p): np.asarray(jax.device_get(v))
          for p, v in jax.tree_util.tree_leaves_with_path(params)}
