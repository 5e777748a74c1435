"""Classification and regression metrics in NumPy: accuracy, AUROC, macro F1, MAE, Pearson r.

All functions take array-likes and return Python floats, so results go straight into JSON.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


def _vector(name: str, a: ArrayLike) -> np.ndarray:
  a = np.asarray(a)
  if a.ndim != 1:
    raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
  if a.size == 0:
    raise ValueError(f"{name}: expected at least one value, got an empty array")
  return a


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
  if a.shape[0] != b.shape[0]:
    raise ValueError(f"{na} has {a.shape[0]} entries but {nb} has {b.shape[0]}")


def _finite(name: str, a: np.ndarray) -> np.ndarray:
  a = a.astype(np.float64)
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name}: expected finite values, found {np.sum(~np.isfinite(a))} NaN/inf")
  return a


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
  """Fraction of exact matches between integer labels."""
  t, p = _vector("y_true", y_true), _vector("y_pred", y_pred)
  _same_length(t, p, "y_true", "y_pred")
  return float(np.mean(t == p))


def _binary_auroc(pos: np.ndarray, scores: np.ndarray) -> float:
  """Mann-Whitney U / (n_pos n_neg) with average ranks (ties count 1/2)."""
  n_pos = int(pos.sum())
  n_neg = pos.size - n_pos
  ranks = stats.rankdata(scores, method="average")
  u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def auroc(y_true: ArrayLike, scores: ArrayLike) -> float:
  """Area under the ROC curve, rank based, ties counted as one half.

  Binary: ``y_true`` in {0, 1} (or bool) and ``scores`` [n] (higher = class 1); a [n, 2] score matrix
  uses its column 1. Multiclass: ``scores`` [n, C] and ``y_true`` in 0..C-1; the macro average of the
  one-vs-rest AUROCs over the classes present in ``y_true`` (a class needs positives and negatives).
  """
  t = _vector("y_true", y_true)
  s = np.asarray(scores)
  if s.ndim == 2 and s.shape[1] == 2:
    s = s[:, 1]
  if s.ndim == 1:
    _same_length(t, s, "y_true", "scores")
    s = _finite("scores", s)
    labels = set(np.unique(t).tolist())
    if not labels <= {0, 1}:
      raise ValueError(f"y_true: binary AUROC expects labels in {{0, 1}}, got {sorted(labels)}")
    pos = t.astype(bool)
    if pos.all() or not pos.any():
      raise ValueError("y_true: AUROC needs both classes present, got only one")
    return _binary_auroc(pos, s)
  if s.ndim != 2:
    raise ValueError(f"scores: expected shape [n] or [n, C], got {s.shape}")
  _same_length(t, s, "y_true", "scores")
  s = _finite("scores", s)
  n_classes = s.shape[1]
  if np.any((t < 0) | (t >= n_classes)) or not np.all(t == np.round(t)):
    raise ValueError(f"y_true: expected integer labels in 0..{n_classes - 1}, got {np.unique(t)}")
  t = t.astype(np.int64)
  values = []
  for c in range(n_classes):
    pos = t == c
    if pos.any() and not pos.all():
      values.append(_binary_auroc(pos, s[:, c]))
  if not values:
    raise ValueError("y_true: AUROC needs at least two classes present, got only one")
  return float(np.mean(values))


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> float:
  """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN).

  Classes are 0..num_classes-1 when given, else the union of labels in y_true and y_pred; a class
  with no true and no predicted members (F1 = 0/0) is left out of the mean.
  """
  t, p = _vector("y_true", y_true), _vector("y_pred", y_pred)
  _same_length(t, p, "y_true", "y_pred")
  classes = np.arange(num_classes) if num_classes is not None else np.union1d(t, p)
  scores = []
  for c in classes:
    tp = np.sum((t == c) & (p == c))
    fp = np.sum((t != c) & (p == c))
    fn = np.sum((t == c) & (p != c))
    denom = 2 * tp + fp + fn
    if denom > 0:
      scores.append(2.0 * tp / denom)
  if not scores:
    raise ValueError("macro_f1: no class has any true or predicted member")
  return float(np.mean(scores))


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
  """Mean absolute error."""
  t = _finite("y_true", _vector("y_true", y_true))
  p = _finite("y_pred", _vector("y_pred", y_pred))
  _same_length(t, p, "y_true", "y_pred")
  return float(np.mean(np.abs(t - p)))


def pearson_r(x: ArrayLike, y: ArrayLike) -> float:
  """Pearson correlation of two 1-D series (error if either is constant)."""
  a = _finite("x", _vector("x", x))
  b = _finite("y", _vector("y", y))
  _same_length(a, b, "x", "y")
  if a.size < 2:
    raise ValueError("pearson_r: needs at least two values")
  a = a - a.mean()
  b = b - b.mean()
  na, nb = np.sqrt(a @ a), np.sqrt(b @ b)
  if na == 0 or nb == 0:
    raise ValueError("pearson_r: undefined for a constant series " + ("x" if na == 0 else "y"))
  return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def classification_metrics(y_true: ArrayLike, scores: ArrayLike) -> dict[str, float]:
  """accuracy, auroc and f1 (macro) from class scores [n, C] (logits or probabilities)."""
  s = np.asarray(scores)
  if s.ndim != 2:
    raise ValueError(f"scores: expected [n, C] class scores, got shape {s.shape}")
  pred = np.argmax(s, axis=1)
  return {"accuracy": accuracy(y_true, pred), "auroc": auroc(y_true, s),
          "f1": macro_f1(y_true, pred, num_classes=s.shape[1])}


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
  """mae and pearson_r."""
  return {"mae": mae(y_true, y_pred), "pearson_r": pearson_r(y_true, y_pred)}
