"""Subject-level splits: holdout splits and k-fold cross-validation, no subject in two parts."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jaxbrain.data.validation import DataError


def _unique_ids(subject_ids: Sequence[str]) -> list[str]:
  ids = [str(s) for s in subject_ids]
  if len(set(ids)) != len(ids):
    dup = sorted({s for s in ids if ids.count(s) > 1})
    raise DataError(f"duplicate subject ids {dup[:10]}; splits need unique subjects")
  return ids


def split_subjects(subject_ids: Sequence[str], holdout: Mapping[str, int | float], *,
                   seed: int = 0, train_name: str = "train") -> dict[str, list[str]]:
  """Splits subjects into ``holdout`` parts plus the rest (``train_name``), disjoint.

  ``holdout``: split name -> a count (int >= 0) or a fraction (float in [0, 1), rounded, at least 1
  subject if the fraction is positive). Deterministic by ``seed`` and independent of input order.
  Each list is sorted. Raises DataError if the holdouts need more subjects than there are or leave
  no training subject.
  """
  ids = sorted(_unique_ids(subject_ids))
  n = len(ids)
  counts = {}
  for name, v in holdout.items():
    if name == train_name:
      raise DataError(f"holdout split may not be named {train_name!r}")
    if isinstance(v, float):
      if not 0 <= v < 1:
        raise DataError(f"holdout fraction {name}={v} must lie in [0, 1)")
      counts[name] = max(1, int(round(v * n))) if v > 0 else 0
    elif isinstance(v, int) and v >= 0:
      counts[name] = v
    else:
      raise DataError(f"holdout {name}={v!r} must be an int count or a float fraction")
  if sum(counts.values()) >= n:
    raise DataError(f"holdout splits {counts} need {sum(counts.values())} of {n} subjects and "
                    f"leave none for {train_name!r}")
  order = [ids[i] for i in np.random.default_rng(seed).permutation(n)]
  out, start = {}, 0
  for name, c in counts.items():
    out[name] = sorted(order[start:start + c])
    start += c
  out[train_name] = sorted(order[start:])
  return out


def kfold_subjects(subject_ids: Sequence[str], k: int, *, seed: int = 0,
                   labels: Sequence | None = None) -> list[tuple[list[str], list[str]]]:
  """k-fold CV by subject: returns k (train_ids, test_ids); every subject is tested exactly once.

  With ``labels`` (one per subject, aligned with ``subject_ids``) folds are stratified: each class's
  subjects are shuffled and dealt round-robin over folds. Deterministic by ``seed``.
  """
  ids = _unique_ids(subject_ids)
  if not 2 <= k <= len(ids):
    raise DataError(f"k={k} folds need 2 <= k <= number of subjects ({len(ids)})")
  rng = np.random.default_rng(seed)
  fold_of: dict[str, int] = {}
  if labels is None:
    groups = [sorted(ids)]
  else:
    labels = list(labels)
    if len(labels) != len(ids):
      raise DataError(f"{len(labels)} labels for {len(ids)} subjects")
    by_class: dict = {}
    for sid, lab in zip(ids, labels):
      by_class.setdefault(lab, []).append(sid)
    groups = [sorted(by_class[c]) for c in sorted(by_class, key=str)]
  offset = 0
  for g in groups:
    perm = rng.permutation(len(g))
    for j, idx in enumerate(perm):
      fold_of[g[idx]] = (offset + j) % k
    offset += len(g)  # continue dealing where the previous class stopped: balanced fold sizes
  folds = []
  for f in range(k):
    test = sorted(s for s in ids if fold_of[s] == f)
    train = sorted(s for s in ids if fold_of[s] != f)
    folds.append((train, test))
  return folds
