"""Hierarchical bootstrap over subjects and their items (windows, queries), for paired contrasts.

Every method is scored on the same items (same windows, same masks), so one set of resampling
weights serves all of them and a contrast between two methods is computed on the same resample:
the interval of a difference is paired. A resample draws the subjects with replacement, then, for
every drawn subject, as many of its items as it has, with replacement (two-stage bootstrap).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def resample_weights(groups: ArrayLike, num_resamples: int = 10000, seed: int = 0) -> np.ndarray:
  """Counts [R, n] (float64): how often each of the n items is drawn in each of R resamples.

  ``groups`` [n] names each item's subject. With one item per subject this is the ordinary
  bootstrap of the items.
  """
  g = np.asarray(groups)
  if g.ndim != 1 or g.size == 0:
    raise ValueError(f"groups: expected a non-empty 1-D array, got shape {g.shape}")
  if num_resamples < 1:
    raise ValueError(f"num_resamples: expected a positive integer, got {num_resamples}")
  rng = np.random.default_rng(seed)
  names, index = np.unique(g, return_inverse=True)
  k = len(names)
  times = rng.multinomial(k, np.full(k, 1.0 / k), size=num_resamples)  # [R, K] subject draws
  w = np.zeros((num_resamples, g.size))
  for s in range(k):
    items = np.nonzero(index == s)[0]
    m = len(items)
    # Each draw of subject s brings m items drawn with replacement: times * m uniform draws.
    w[:, items] = rng.multinomial(times[:, s] * m, np.full(m, 1.0 / m))
  return w


def resampled_means(values: ArrayLike, weights: np.ndarray) -> np.ndarray:
  """Weighted means [R, ...] of ``values`` [n, ...] under each resample's counts [R, n]."""
  v = np.asarray(values, np.float64)
  if v.shape[0] != weights.shape[1]:
    raise ValueError(f"values has {v.shape[0]} items but the weights cover {weights.shape[1]}")
  total = weights.sum(axis=1)
  return np.tensordot(weights, v, axes=(1, 0)) / total.reshape((-1,) + (1,) * (v.ndim - 1))


def interval(estimate: float, samples: np.ndarray, level: float = 0.95) -> dict:
  """{'mean', 'lo', 'hi'}: the point estimate and the percentile interval of its resamples."""
  a = (1.0 - level) / 2.0
  lo, hi = np.quantile(np.asarray(samples, np.float64), [a, 1.0 - a])
  return {"mean": float(estimate), "lo": float(lo), "hi": float(hi)}


def verdict(ci: dict, lower_is_better: bool = True) -> str:
  """'win', 'loss' or 'tie' of a model over a baseline from the interval of ``model - baseline``:
  with ``lower_is_better`` (errors) a win is an interval below zero; a verdict other than 'tie'
  needs the interval to exclude zero."""
  if ci["lo"] > 0:
    return "loss" if lower_is_better else "win"
  if ci["hi"] < 0:
    return "win" if lower_is_better else "loss"
  return "tie"


def mean_ci(values: ArrayLike, groups: ArrayLike, *, num_resamples: int = 10000, seed: int = 0,
            level: float = 0.95) -> dict:
  """Mean of ``values`` [n] with its hierarchical-bootstrap interval."""
  v = np.asarray(values, np.float64)
  w = resample_weights(groups, num_resamples, seed)
  return interval(v.mean(), resampled_means(v, w), level)


def paired_contrast(a: ArrayLike, b: ArrayLike, weights: np.ndarray, level: float = 0.95, *,
                    lower_is_better: bool = True, relative: bool = False) -> dict:
  """Method ``a`` against method ``b``, scored on the same items [n], under the resamples
  ``weights`` [R, n] (``resample_weights``): {'diff': interval of mean(a) - mean(b), 'verdict':
  ``verdict`` of a over b} and, with ``relative``, 'relative_pct': the interval of
  100 (mean(a) / mean(b) - 1). Both methods are resampled with the same counts (paired)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"a and b must score the same items, got shapes {a.shape} and {b.shape}")
  ra, rb = resampled_means(a, weights), resampled_means(b, weights)
  out = {"diff": interval(a.mean() - b.mean(), ra - rb, level)}
  if relative:
    out["relative_pct"] = interval(100 * (a.mean() / b.mean() - 1), 100 * (ra / rb - 1), level)
  out["verdict"] = verdict(out["diff"], lower_is_better)
  return out
