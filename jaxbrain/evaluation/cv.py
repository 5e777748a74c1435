"""Aggregate k-fold cross-validation results into mean, std and the per-fold values."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def aggregate_folds(fold_metrics: Sequence[Mapping[str, float]], ddof: int = 0) -> dict[str, dict]:
  """[{metric: value} per fold] -> {metric: {'mean', 'std', 'folds': [values]}}.

  Every fold must report the same metrics, each a real number (NaN is kept and propagates).
  ``std`` uses ``ddof`` (0: population std as np.std; 1: sample std); it is 0.0 for one fold.
  """
  if len(fold_metrics) == 0:
    raise ValueError("fold_metrics: expected at least one fold, got none")
  keys = list(fold_metrics[0].keys())
  for k, fold in enumerate(fold_metrics):
    if not isinstance(fold, Mapping):
      raise ValueError(f"fold_metrics[{k}]: expected a dict of metrics, got {type(fold).__name__}")
    if set(fold) != set(keys):
      missing = sorted(set(keys) - set(fold))
      extra = sorted(set(fold) - set(keys))
      raise ValueError(f"fold_metrics[{k}]: metrics differ from fold 0 (missing {missing}, extra {extra})")
  out = {}
  for key in keys:
    values = []
    for k, fold in enumerate(fold_metrics):
      v = fold[key]
      if isinstance(v, np.ndarray) and v.shape == ():
        v = v.item()
      if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"fold_metrics[{k}][{key!r}]: expected a number, got {v!r}")
      values.append(float(v))
    arr = np.asarray(values)
    std = float(arr.std(ddof=ddof)) if arr.size > ddof else 0.0
    out[key] = {"mean": float(arr.mean()), "std": std, "folds": values}
  return out
