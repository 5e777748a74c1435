"""Batched, jitted inference with a trained model: reconstructions, embeddings, predictions.

``batched_apply`` puts the model in eval mode (no dropout), so no random keys are needed here.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbrain.data.connectivity import correlation, upper_triangle
from jaxtrain.inference import batched_apply

EMBEDDING_KINDS = ("pooled", "tokens", "token_fc", "token_fc_seg")


def _reconstruct(model: nnx.Module, x: jax.Array, mask: jax.Array) -> jax.Array:
  return model(x, mask)  # module level: periodic evaluations reuse one compiled program


def reconstruct(model: nnx.Module, x: np.ndarray, mask: np.ndarray, batch_size: int) -> np.ndarray:
  """BrainMAE reconstruction of windows ``x`` [W,S,N,L] with masks [W,S,N]."""
  return batched_apply(model, _reconstruct, (x, mask), batch_size)


def embed(model: nnx.Module, x: np.ndarray, batch_size: int, kind: str = "pooled") -> np.ndarray:
  """Frozen-encoder embeddings of windows: 'pooled' [W, d]; 'tokens' (ROI tokens averaged over
  segments, flattened) [W, N*d]; 'token_fc' (connectivity of the tokens: Pearson r between the ROIs'
  tokens flattened over segments and features, upper triangle) [W, N(N-1)/2]; 'token_fc_seg' (the
  same after subtracting each ROI's mean token over the window's segments)."""
  def fn(m, xb):
    out = m.encode(xb)
    if kind == "pooled":
      return out["pooled"]
    if kind in ("token_fc", "token_fc_seg"):
      t = out["tokens"]
      if kind == "token_fc_seg":  # fluctuations across segments only (drops static ROI identity)
        t = t - jnp.mean(t, axis=1, keepdims=True)
      t = jnp.swapaxes(t, 1, 2)  # [B, N, S, d]
      return upper_triangle(correlation(t.reshape(t.shape[0], t.shape[1], -1)))
    return jnp.mean(out["tokens"], axis=1).reshape(xb.shape[0], -1)
  if kind not in EMBEDDING_KINDS:
    raise ValueError(f"embedding kind {kind!r}: expected one of {EMBEDDING_KINDS}")
  return batched_apply(model, fn, (x,), batch_size)


def raw_fc(x: np.ndarray) -> np.ndarray:
  """Functional connectivity of raw windows x [W, S, N, L]: Pearson r (float64) between ROI signals
  over the window's frames, upper triangle -> [W, N(N-1)/2] (context for fingerprinting)."""
  v = np.swapaxes(np.asarray(x, np.float64), 1, 2).reshape(x.shape[0], x.shape[2], -1)
  return upper_triangle(correlation(v))


def predict(model: nnx.Module, x: np.ndarray, batch_size: int) -> np.ndarray:
  """Head outputs [W, num_outputs] of a BrainMAEForPrediction."""
  return batched_apply(model, lambda m, xb: m(xb), (x,), batch_size)
