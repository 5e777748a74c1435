"""Subject fingerprinting from frozen embeddings.

Each held-out scan is split in parts (e.g. first and second half); windows of one part form the
gallery, windows of another the queries. A query is assigned to the gallery subject whose embedding
correlates best with it (Pearson r across embedding dimensions): either the subject's mean gallery
embedding (``match='mean'``) or its best single gallery window (``match='window'``). With
``aggregate_queries=True`` a subject's query windows are averaged first (one query per subject).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from jaxbrain.data.connectivity import correlation


def scan_halves(start: ArrayLike, length: int, num_frames: ArrayLike) -> np.ndarray:
  """Part of each window (first frame ``start``, ``length`` frames) of a scan of ``num_frames``
  frames: 0 inside the first half, 1 inside the second, -1 across the middle (the usual gallery and
  query parts, with no frame in both)."""
  start, half = np.asarray(start), np.asarray(num_frames) // 2
  return np.where(start + length <= half, 0, np.where(start >= half, 1, -1))


def _check_varies(name: str, e: np.ndarray) -> None:
  """Raises ValueError if a row of e is constant (its Pearson r is undefined)."""
  const = np.ptp(e, axis=1) == 0
  if const.any():
    raise ValueError(f"{name}: {int(const.sum())} embedding(s) are constant; Pearson r is undefined")


def fingerprint(embeddings: ArrayLike, subjects: ArrayLike, parts: ArrayLike,
                gallery_part: object = 0, query_part: object = 1, *, match: str = "mean",
                aggregate_queries: bool = False) -> dict:
  """Identify the subject of each query from the gallery.

  Args:
    embeddings: [n, ...] one embedding per window (flattened to [n, D]).
    subjects: [n] subject id per window (any hashable values, e.g. ints or strings).
    parts: [n] part tag per window; rows tagged ``gallery_part`` / ``query_part`` are used.
    match: 'mean' (per-subject mean gallery embedding) or 'window' (nearest gallery window).
    aggregate_queries: average each subject's query windows into one query.

  Returns a dict: accuracy (float), chance (1 / number of gallery subjects), confusion ([K, K] int
  array, rows = true subject, columns = predicted, in the order of ``subject_ids``), subject_ids (list),
  n_queries (int), predicted (list, the predicted subject id per query), true (list).
  """
  e = np.asarray(embeddings)
  if e.ndim < 2 or e.shape[0] == 0:
    raise ValueError(f"embeddings: expected shape [n, ...] with n > 0, got {e.shape}")
  e = e.reshape(e.shape[0], -1).astype(np.float64)
  if not np.all(np.isfinite(e)):
    raise ValueError(f"embeddings: contain {int(np.sum(~np.isfinite(e)))} NaN/inf values")
  subjects = np.asarray(subjects)
  parts = np.asarray(parts)
  for name, a in (("subjects", subjects), ("parts", parts)):
    if a.shape != (e.shape[0],):
      raise ValueError(f"{name}: expected shape ({e.shape[0]},) (one per embedding), got {a.shape}")
  if match not in ("mean", "window"):
    raise ValueError(f"match: expected 'mean' or 'window', got {match!r}")
  g_rows, q_rows = parts == gallery_part, parts == query_part
  if not g_rows.any():
    raise ValueError(f"parts: no window has the gallery part {gallery_part!r}")
  if not q_rows.any():
    raise ValueError(f"parts: no window has the query part {query_part!r}")
  ids = np.unique(subjects[g_rows])
  index = {s: i for i, s in enumerate(ids.tolist())}
  missing = sorted(set(subjects[q_rows].tolist()) - set(index))
  if missing:
    raise ValueError(f"subjects: query subjects {missing} have no gallery windows")

  g_sub = np.array([index[s] for s in subjects[g_rows].tolist()])
  gallery = e[g_rows]
  if match == "mean":
    gallery = np.stack([gallery[g_sub == k].mean(axis=0) for k in range(len(ids))])
    g_sub = np.arange(len(ids))
  q_sub = np.array([index[s] for s in subjects[q_rows].tolist()])
  queries = e[q_rows]
  if aggregate_queries:
    present = np.unique(q_sub)
    queries = np.stack([queries[q_sub == k].mean(axis=0) for k in present])
    q_sub = present
  _check_varies("query embeddings", queries)
  _check_varies("gallery embeddings", gallery)
  r = np.clip(correlation(queries, gallery), -1.0, 1.0)  # [q, g], float64
  pred = g_sub[np.argmax(r, axis=1)]
  confusion = np.zeros((len(ids), len(ids)), np.int64)
  np.add.at(confusion, (q_sub, pred), 1)
  return {
      "accuracy": float(np.mean(pred == q_sub)),
      "chance": 1.0 / len(ids),
      "confusion": confusion,
      "subject_ids": ids.tolist(),
      "n_queries": int(q_sub.size),
      "predicted": ids[pred].tolist(),
      "true": ids[q_sub].tolist(),
  }

