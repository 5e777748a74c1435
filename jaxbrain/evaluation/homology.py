"""Are homologous (left/right) ROI pairs more similar than random pairs? A permutation test.

The statistic is the mean similarity over the given pairs, ``(S[i, j] + S[j, i]) / 2``. Its null
distribution comes from relabelling the ROIs by a random permutation ``p`` and taking the mean over
the pairs ``(p[i], p[j])``: the same number of pairs, with the same structure (disjoint pairs stay
disjoint, never a self-pair), but random partners. p-value = (count(null >= observed) + 1) / (n_perm + 1).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike


def alternating_pairs(n: int) -> list[tuple[int, int]]:
  """(0, 1), (2, 3), ...: ROIs ordered left, right, left, right (the built-in AAL2 data)."""
  if n < 2 or n % 2:
    raise ValueError(f"n: expected an even number of ROIs >= 2, got {n}")
  return [(i, i + 1) for i in range(0, n, 2)]


def homologous_pairs(names: Sequence[str]) -> list[tuple[int, int]]:
  """Pairs (i, j) of names that differ only in a left/right suffix ``_L``/``_R`` (also ``.L``, ``-lh``…)."""
  pattern = re.compile(r"^(.*?)[_.\-\s]?(L|R|l|r|Left|Right|left|right|lh|rh|LH|RH)$")
  sides: dict[str, dict[str, int]] = {}
  for i, name in enumerate(names):
    match = pattern.match(str(name))
    if not match:
      continue
    side = "L" if match.group(2).lower() in ("l", "left", "lh") else "R"
    slot = sides.setdefault(match.group(1), {})
    if side in slot:
      raise ValueError(
          f"names: {name!r} and {names[slot[side]]!r} are both side {side} of {match.group(1)!r}")
    slot[side] = i
  pairs = sorted((d["L"], d["R"]) for d in sides.values() if len(d) == 2)
  if not pairs:
    raise ValueError("names: no left/right homologous pair found (expected suffixes such as _L/_R)")
  return pairs


def homology_test(similarity: ArrayLike, pairs: Sequence[tuple[int, int]], n_perm: int = 10000,
                  seed: int = 0, chunk: int = 1000) -> dict[str, float | int]:
  """Permutation test of mean homologous-pair similarity against random pairs (one-sided, greater).

  Returns {'mean_homologous', 'mean_random' (mean of the null distribution), 'p_value', 'n_pairs',
  'n_perm'}.
  """
  s = np.asarray(similarity, np.float64)
  if s.ndim != 2 or s.shape[0] != s.shape[1]:
    raise ValueError(f"similarity: expected a square [N, N] matrix, got shape {s.shape}")
  if not np.all(np.isfinite(s)):
    raise ValueError(f"similarity: contains {int(np.sum(~np.isfinite(s)))} NaN/inf values")
  n = s.shape[0]
  p = np.asarray(pairs)
  if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0:
    raise ValueError(f"pairs: expected a non-empty list of (i, j) pairs, got shape {p.shape}")
  if not np.issubdtype(p.dtype, np.integer):
    raise ValueError(f"pairs: expected integer ROI indices, got dtype {p.dtype}")
  if p.min() < 0 or p.max() >= n:
    raise ValueError(f"pairs: indices must lie in 0..{n - 1}, got range {p.min()}..{p.max()}")
  if np.any(p[:, 0] == p[:, 1]):
    raise ValueError(f"pairs: self-pair {tuple(p[p[:, 0] == p[:, 1]][0])} is not allowed")
  if n_perm < 1:
    raise ValueError(f"n_perm: expected >= 1, got {n_perm}")
  sym = 0.5 * (s + s.T)
  i, j = p[:, 0], p[:, 1]
  observed = float(sym[i, j].mean())
  rng = np.random.default_rng(seed)
  null = np.empty(n_perm)
  for start in range(0, n_perm, chunk):
    k = min(chunk, n_perm - start)
    perm = np.argsort(rng.random((k, n)), axis=1)  # [k, N] random relabellings
    null[start:start + k] = sym[perm[:, i], perm[:, j]].mean(axis=1)
  count = int(np.sum(null >= observed - 1e-12 * max(1.0, abs(observed))))
  return {
      "mean_homologous": observed,
      "mean_random": float(null.mean()),
      "p_value": (count + 1) / (n_perm + 1),
      "n_pairs": int(p.shape[0]),
      "n_perm": int(n_perm),
  }
