"""Functional connectivity: the project's one Pearson-correlation helper.

``correlation`` works on NumPy arrays (computed in float64) and on jax arrays, also inside
``jax.jit`` (computed in at least float32): the array module is chosen from the input's type.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _namespace(*arrays: Any) -> Any:
  """jax.numpy if any input is a jax array (or tracer), else NumPy."""
  for a in arrays:
    ns = getattr(a, "__array_namespace__", None)
    if ns is not None and not isinstance(a, (np.ndarray, np.generic)):
      return ns()
  return np


def _unit_rows(v: Any, xp: Any, eps: float) -> Any:
  """Rows centred and scaled to unit norm (a constant row becomes zero), so dot products are r."""
  v = v - xp.mean(v, axis=-1, keepdims=True)
  return v / xp.maximum(xp.linalg.norm(v, axis=-1, keepdims=True), eps)


def correlation(a: Any, b: Any | None = None, *, eps: float = 1e-12) -> Any:
  """Pearson r between every row of a [..., n, F] and every row of b [..., m, F] -> [..., n, m].

  ``b=None`` correlates the rows of ``a`` with each other. NumPy inputs give float64, jax inputs
  at least float32. A constant row has correlation 0 with every row (itself included).
  """
  xp = _namespace(a, b)
  dtype = np.float64 if xp is np else xp.promote_types(xp.asarray(a).dtype, xp.float32)
  ua = _unit_rows(xp.asarray(a, dtype=dtype), xp, eps)
  ub = ua if b is None else _unit_rows(xp.asarray(b, dtype=dtype), xp, eps)
  return xp.matmul(ua, xp.swapaxes(ub, -1, -2))


def upper_triangle(c: Any, k: int = 1) -> Any:
  """The entries of square matrices c [..., n, n] above diagonal offset k -> [..., n(n-1)/2]."""
  i, j = np.triu_indices(c.shape[-1], k)
  return c[..., i, j]

