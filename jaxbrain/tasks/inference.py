"""Batched, jitted inference with a trained model: reconstructions, embeddings, predictions."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def batched_apply(model: nnx.Module, fn: Callable, arrays: tuple[np.ndarray, ...],
                  batch_size: int) -> np.ndarray:
  """``fn(model, *batch)`` over ``arrays`` in batches of ``batch_size`` (the last one padded)."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def apply(state, *batch):
    return fn(nnx.merge(graphdef, state), *batch)

  n = len(arrays[0])
  outs = []
  for i in range(0, n, batch_size):
    chunk = [a[i:i + batch_size] for a in arrays]
    pad = batch_size - len(chunk[0])
    if pad:
      chunk = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunk]
    outs.append(np.asarray(jax.device_get(apply(state, *chunk)))[:batch_size - pad])
  return np.concatenate(outs)


def reconstruct(model: nnx.Module, x: np.ndarray, mask: np.ndarray, batch_size: int) -> np.ndarray:
  """BrainMAE reconstruction of windows ``x`` [W,S,N,L] with masks [W,S,N]."""
  return batched_apply(model, lambda m, xb, mb: m(xb, mb), (x, mask), batch_size)


def embed(model: nnx.Module, x: np.ndarray, batch_size: int, kind: str = "pooled") -> np.ndarray:
  """Frozen-encoder embeddings of windows: 'pooled' [W, d] or 'tokens' (ROI tokens averaged over
  segments, flattened) [W, N*d]."""
  def fn(m, xb):
    out = m.encode(xb)
    if kind == "pooled":
      return out["pooled"]
    return jnp.mean(out["tokens"], axis=1).reshape(xb.shape[0], -1)
  if kind not in ("pooled", "tokens"):
    raise ValueError(f"embedding kind {kind!r}: expected 'pooled' or 'tokens'")
  return batched_apply(model, fn, (x,), batch_size)


def predict(model: nnx.Module, x: np.ndarray, batch_size: int) -> np.ndarray:
  """Head outputs [W, num_outputs] of a BrainMAEForPrediction."""
  return batched_apply(model, lambda m, xb: m(xb), (x,), batch_size)
