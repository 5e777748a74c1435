"""Dynamic functional connectivity: sliding-window Pearson FC graphs, sparsified per window.

For a series [..., N, T], window ``w`` covers frames ``w * stride ... w * stride + window - 1``;
its FC is the Pearson correlation of the N ROIs over those frames (the project's one correlation
helper), clamped to [-1, 1], and its graph keeps the top ``sparsity`` percent of the off-diagonal
edges by correlation value (ties at the threshold kept), symmetric, with self-loops optional.
Defaults are the ST-MAE paper's on UK Biobank (window 50, stride 16, 30%); STAGIN used stride 3.
Everything is jax and jit-compiled with the window settings static, so it runs batched on the
accelerator.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxbrain.data.connectivity import correlation
from jaxbrain.data.validation import DataError

DEFAULT_WINDOW = 50
DEFAULT_STRIDE = 16
DEFAULT_SPARSITY = 30.0


def check_settings(num_frames: int, window: int, stride: int, sparsity: float,
                   source: str = "dynamic FC") -> None:
  """Raises DataError (one line naming the value) unless the settings fit a series of num_frames."""
  for name, v in (("window", window), ("stride", stride)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise DataError(f"{source}: {name} = {v!r} volumes; expected an integer >= 1")
  if window < 2:
    raise DataError(f"{source}: window = {window} volumes; a correlation needs at least 2")
  if not isinstance(sparsity, (int, float)) or not 0 < sparsity <= 100:
    raise DataError(f"{source}: sparsity = {sparsity!r}; expected a percentage in (0, 100]")
  if num_frames < window:
    raise DataError(f"{source}: series has {num_frames} volumes, shorter than one window of "
                    f"{window} volumes")


def num_windows(num_frames: int, window: int, stride: int) -> int:
  """Windows that fit in ``num_frames`` (trailing frames that do not fill one are dropped)."""
  return (num_frames - window) // stride + 1


def window_ends(num_frames: int, window: int, stride: int) -> np.ndarray:
  """Index of each window's last frame, int32 [W] (the time encoding reads the series up to it)."""
  return (np.arange(num_windows(num_frames, window, stride)) * stride + window - 1).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("window", "stride"))
def window_fc(x: jax.Array, window: int = DEFAULT_WINDOW, stride: int = DEFAULT_STRIDE) -> jax.Array:
  """Sliding-window Pearson FC of x [..., N, T] -> float32 [..., W, N, N], clamped to [-1, 1]."""
  t = x.shape[-1]
  frames = (np.arange(num_windows(t, window, stride))[:, None] * stride
            + np.arange(window)[None, :])  # [W, window]
  xw = jnp.moveaxis(jnp.asarray(x, jnp.float32)[..., frames], -2, -3)  # [..., W, N, window]
  return jnp.clip(correlation(xw), -1.0, 1.0)


@functools.partial(jax.jit, static_argnames=("sparsity", "self_loops"))
def sparsify(fc: jax.Array, sparsity: float = DEFAULT_SPARSITY, self_loops: bool = False) -> jax.Array:
  """Binary adjacency float32 [..., N, N]: the top ``sparsity`` % of each matrix's off-diagonal
  edges (counted over the upper triangle, at least one) by value, symmetric."""
  n = fc.shape[-1]
  num_edges = n * (n - 1) // 2
  keep = max(1, math.ceil(num_edges * sparsity / 100.0)) if num_edges else 0
  if keep == 0:
    adj = jnp.zeros(fc.shape, jnp.float32)
  else:
    adj = top_edges(fc, jnp.ones(fc.shape, bool), keep)
  if self_loops:
    adj = adj + jnp.eye(n, dtype=jnp.float32)
  return adj


def kth_largest(values: jax.Array, k: int) -> jax.Array:
  """The k-th largest entry of each row ``values`` [..., E], exactly, as [..., 1].

  A bitwise binary search over the float32 values' order-preserving uint32 keys: 32 vectorised
  counts, ~5x faster on CPU than ``lax.top_k`` at the sizes here (k ~ 2000 of ~13000 entries)."""
  bits = jax.lax.bitcast_convert_type(values.astype(jnp.float32), jnp.uint32)
  key = jnp.where((bits >> 31) == 1, ~bits, bits | jnp.uint32(1 << 31))  # increasing in the value
  t = jnp.zeros(values.shape[:-1] + (1,), jnp.uint32)
  for bit in range(31, -1, -1):  # the largest t with at least k keys >= t
    cand = t | jnp.uint32(1 << bit)
    t = jnp.where(jnp.sum((key >= cand).astype(jnp.int32), axis=-1, keepdims=True) >= k, cand, t)
  out = jnp.where((t >> 31) == 0, ~t, t & jnp.uint32((1 << 31) - 1))
  return jax.lax.bitcast_convert_type(out, jnp.float32)


def top_edges(fc: jax.Array, valid: jax.Array, keep: int) -> jax.Array:
  """Binary symmetric adjacency float32 [..., N, N]: the ``keep`` largest entries of ``fc`` among
  the strict upper triangle where ``valid`` (ties at the threshold kept), mirrored."""
  n = fc.shape[-1]
  valid = valid & jnp.asarray(np.triu(np.ones((n, n), bool), 1))
  scored = jnp.where(valid, fc, -jnp.inf)
  thr = kth_largest(scored.reshape(*fc.shape[:-2], n * n), keep)[..., None]
  off = valid & (scored >= thr)
  return (off | jnp.swapaxes(off, -1, -2)).astype(jnp.float32)


def dynamic_fc(x: jax.Array | np.ndarray, window: int = DEFAULT_WINDOW, stride: int = DEFAULT_STRIDE,
               sparsity: float = DEFAULT_SPARSITY, self_loops: bool = False,
               source: str = "dynamic FC") -> tuple[jax.Array, jax.Array]:
  """(FC [..., W, N, N], adjacency [..., W, N, N]) of series x [..., N, T], after checking the
  settings and that the series is finite (DataError naming ``source`` otherwise)."""
  check_settings(x.shape[-1], window, stride, sparsity, source)
  if not isinstance(x, jax.core.Tracer):
    bad = int(np.sum(~np.isfinite(np.asarray(x))))
    if bad:
      raise DataError(f"{source}: {bad} non-finite value(s) (NaN or inf); the series must be finite")
  fc = window_fc(x, window=window, stride=stride)
  return fc, sparsify(fc, sparsity=float(sparsity), self_loops=self_loops)
