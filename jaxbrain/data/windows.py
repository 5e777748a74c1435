"""Windows of [N_roi, T] series: the one path from subjects to encoder inputs.

A window is ``num_segments`` consecutive segments of ``seg_frames`` frames each, laid out as
float32 [S, N, L] = (segments, ROIs, frames per segment), the encoder's input record. Windows start
every ``stride_frames`` frames (default: one segment). A stride below one segment takes the
segment-aligned windows from every offset ``0, stride, 2 * stride, ... < seg_frames``; a stride
above one segment must be a multiple of it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxbrain.data.preprocess import DEFAULT_TAU_S, preprocess, segment_frames
from jaxbrain.data.sources import Subject
from jaxbrain.data.validation import DataError, check_length, check_same_rois


def window_starts(num_frames: int, seg_frames: int, num_segments: int,
                  stride_frames: int | None = None) -> np.ndarray:
  """First frame of every window that fits in ``num_frames``, ascending, int32 (may be empty)."""
  if seg_frames < 1 or num_segments < 1:
    raise DataError(f"seg_frames={seg_frames} and num_segments={num_segments} must be >= 1")
  stride = seg_frames if stride_frames is None else int(stride_frames)
  if stride < 1 or (stride > seg_frames and stride % seg_frames):
    raise DataError(f"window stride of {stride} frames: expected >= 1 and, above one segment "
                    f"({seg_frames} frames), a multiple of it")
  last = num_frames - seg_frames * num_segments  # the latest possible start
  if last < 0:
    return np.zeros(0, np.int32)
  if stride >= seg_frames:
    return np.arange(0, last + 1, stride, dtype=np.int32)
  starts = np.arange(0, last + 1, dtype=np.int32)
  return starts[(starts % seg_frames) % stride == 0]


def make_windows(x: np.ndarray, seg_frames: int, num_segments: int,
                 stride_frames: int | None = None, *, tr: float | None = None,
                 source: str = "array") -> np.ndarray:
  """Cuts [N, T] into windows float32 [W, S, N, L] starting at ``window_starts(...)``.

  Window w, segment s holds frames ``start_w + s * L`` ... ``+ L``; trailing frames that do not fill
  a window are dropped. Raises DataError if not even one window fits.
  """
  x = np.asarray(x, np.float32)
  if x.ndim != 2:
    raise DataError(f"{source}: expected [ROI, time], got shape {x.shape}")
  t = x.shape[1]
  check_length(t, seg_frames, source, tr=tr, what="one segment")
  check_length(t, seg_frames * num_segments, source, tr=tr,
               what=f"one window of {num_segments} segments")
  starts = window_starts(t, seg_frames, num_segments, stride_frames)
  frames = starts[:, None, None] + np.arange(num_segments * seg_frames).reshape(
      num_segments, seg_frames)  # [W, S, L]
  return np.ascontiguousarray(x[:, frames].transpose(1, 2, 0, 3))  # [N, W, S, L] -> [W, S, N, L]


def subject_windows(x: np.ndarray, tr: float, *, tau_s: float = DEFAULT_TAU_S,
                    num_segments: int = 4, stride_frames: int | None = None,
                    standardize: bool = True,
                    band_hz: tuple[float | None, float | None] | None = None,
                    source: str = "array") -> np.ndarray:
  """Preprocesses one [N, T] series (optional band-pass, z-scoring) and cuts it into windows
  float32 [W, S, N, L] of segments of ``tau_s`` seconds."""
  seg = segment_frames(tau_s, tr)
  check_length(np.shape(x)[-1], seg, source, tr=tr, what=f"one segment (tau {tau_s} s)")
  check_length(np.shape(x)[-1], seg * num_segments, source, tr=tr,
               what=f"a window of {num_segments} segments of {tau_s} s")
  x = preprocess(x, tr, standardize=standardize, band_hz=band_hz, source=source)
  return make_windows(x, seg, num_segments, stride_frames, tr=tr, source=source)


def window_arrays(subjects: Sequence[Subject], *, tau_s: float = DEFAULT_TAU_S,
                  num_segments: int = 4, stride_frames: int | None = None,
                  standardize: bool = True,
                  band_hz: tuple[float | None, float | None] | None = None,
                  labels: np.ndarray | None = None,
                  subject_index: Sequence[int] | None = None) -> dict[str, np.ndarray]:
  """Windows of all subjects: ``x`` float32 [W, S, N, L], ``subject`` int32, ``start`` int32 (the
  window's first frame, so callers can split a scan in time) and ``label``, sorted by (subject,
  start).

  ``labels``: one number per subject (kept in its dtype); -1 (int32) when None. ``subject_index``:
  the integer id stored per window (default: position in ``subjects``).
  """
  if not subjects:
    raise DataError("window_arrays: no subjects")
  trs = {round(s.tr, 6) for s in subjects}
  if len(trs) != 1:
    raise DataError(f"subjects have different TRs {sorted(trs)}; resample them to one TR first "
                    "(jaxbrain.data.preprocess.resample_subject)")
  check_same_rois([(s.source, s.num_rois) for s in subjects])
  if labels is not None:
    labels = np.asarray(labels)
    if labels.shape != (len(subjects),) or labels.dtype.kind not in "biuf":
      raise DataError(f"labels must be {len(subjects)} numbers (one per subject), got shape "
                      f"{labels.shape} dtype {labels.dtype}")
  index = list(range(len(subjects))) if subject_index is None else list(subject_index)
  if len(index) != len(subjects):
    raise DataError(f"subject_index has {len(index)} entries for {len(subjects)} subjects")
  seg = segment_frames(tau_s, subjects[0].tr)
  xs, subj, starts, labs = [], [], [], []
  for i, s in enumerate(subjects):
    w = subject_windows(s.timeseries, s.tr, tau_s=tau_s, num_segments=num_segments,
                        stride_frames=stride_frames, standardize=standardize, band_hz=band_hz,
                        source=s.source)
    xs.append(w)
    subj.append(np.full(len(w), index[i], np.int32))
    starts.append(window_starts(s.num_frames, seg, num_segments, stride_frames))
    labs.append(np.full(len(w), -1 if labels is None else labels[i],
                        np.int32 if labels is None else labels.dtype))
  subj, starts = np.concatenate(subj), np.concatenate(starts)
  order = np.lexsort((starts, subj))
  return {"x": np.concatenate(xs)[order], "subject": subj[order], "start": starts[order],
          "label": np.concatenate(labs)[order]}
