"""Input checks with messages that name the file, the field and what was expected."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxtrain.errors import DataError  # noqa: F401  (re-exported: jaxbrain.data.DataError)


def _where(mask: np.ndarray, limit: int = 5) -> str:
  idx = np.argwhere(mask)[:limit]
  return ", ".join(f"(roi {int(i)}, frame {int(t)})" for i, t in idx)


def check_timeseries(x: np.ndarray, source: str, *, min_frames: int = 2,
                     tr: float | None = None) -> np.ndarray:
  """Checks a [N_roi, T] series: 2-D, finite, every ROI varies, at least ``min_frames`` long.

  Returns ``x`` as float32. Raises DataError naming ``source`` otherwise.
  """
  x = np.asarray(x)
  if x.ndim != 2:
    raise DataError(f"{source}: expected a 2-D [ROI, time] array, got shape {x.shape}")
  if x.dtype.kind not in "fiub":
    raise DataError(f"{source}: expected numeric values, got dtype {x.dtype}")
  if x.shape[0] < 1:
    raise DataError(f"{source}: no ROIs (shape {x.shape})")
  x64 = x.astype(np.float64)
  bad = ~np.isfinite(x64)
  if bad.any():
    kinds = []
    if np.isnan(x64).any():
      kinds.append(f"{int(np.isnan(x64).sum())} NaN")
    if np.isinf(x64).any():
      kinds.append(f"{int(np.isinf(x64).sum())} inf")
    raise DataError(f"{source}: {' and '.join(kinds)} value(s) at {_where(bad)}"
                    f"{' ...' if bad.sum() > 5 else ''}; the series must be finite")
  check_length(x.shape[1], min_frames, source, tr=tr, what="minimum")
  flat = np.ptp(x64, axis=1) == 0
  if flat.any():
    rois = np.flatnonzero(flat)
    listed = ", ".join(str(int(i)) for i in rois[:10]) + (" ..." if len(rois) > 10 else "")
    raise DataError(f"{source}: zero-variance (constant) ROI index {listed} of {x.shape[0]}; "
                    f"every ROI must vary over time")
  return x.astype(np.float32, copy=False)


def check_length(num_frames: int, needed: int, source: str, *, tr: float | None = None,
                 what: str = "one segment") -> None:
  """Raises DataError if ``num_frames`` < ``needed`` frames, giving both lengths and the TR."""
  if num_frames >= needed:
    return
  if tr is not None:
    raise DataError(f"{source}: series has {num_frames} frames ({num_frames * tr:.2f} s at "
                    f"TR {tr} s), shorter than {what} of {needed} frames ({needed * tr:.2f} s)")
  raise DataError(f"{source}: series has {num_frames} frames, shorter than {what} of {needed} "
                  f"frames")


def check_same_rois(shapes: Sequence[tuple[str, int]]) -> None:
  """``shapes``: (source, N_roi) pairs. Raises DataError naming two files whose counts differ."""
  if not shapes:
    return
  first_src, first_n = shapes[0]
  for src, n in shapes[1:]:
    if n != first_n:
      raise DataError(f"ROI counts differ between subjects: {first_src} has {first_n} ROIs but "
                      f"{src} has {n}")


def check_tr(tr: float | None, source: str) -> float:
  """Returns ``tr`` as float if positive and finite, else raises DataError."""
  if tr is None:
    raise DataError(f"{source}: repetition time (TR) unknown; pass tr=<seconds>")
  tr = float(tr)
  if not np.isfinite(tr) or tr <= 0:
    raise DataError(f"{source}: TR must be a positive number of seconds, got {tr}")
  return tr
