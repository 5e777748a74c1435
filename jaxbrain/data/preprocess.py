"""Preprocessing of [N_roi, T] series: z-scoring, band-pass, segments of tau seconds, windows.

A window is ``num_segments`` consecutive segments of ``seg_frames`` frames each, laid out as
float32 [S, N, L] = (segments, ROIs, frames per segment), the encoder's input record.
"""
from __future__ import annotations

import numpy as np

from jaxbrain.data.validation import DataError, check_length

DEFAULT_TAU_S = 15.0


def zscore(x: np.ndarray, *, source: str = "array") -> np.ndarray:
  """Per-ROI z-scoring over time (population std), computed in float64, returned as float32."""
  x64 = np.asarray(x, np.float64)
  mean = x64.mean(axis=-1, keepdims=True)
  std = x64.std(axis=-1, keepdims=True)
  flat = np.flatnonzero(std.reshape(-1) == 0)
  if flat.size:
    raise DataError(f"{source}: zero-variance ROI index {flat[:10].tolist()}; cannot z-score")
  return ((x64 - mean) / std).astype(np.float32)


def bandpass(x: np.ndarray, tr: float, low_hz: float | None = None, high_hz: float | None = None,
             *, order: int = 4, source: str = "array") -> np.ndarray:
  """Zero-phase Butterworth filter along time (second-order sections, forward-backward).

  ``low_hz``/``high_hz`` in Hz (None = no low/high cut-off); each must lie in (0, Nyquist),
  Nyquist = 1 / (2 TR).
  """
  import scipy.signal
  if low_hz is None and high_hz is None:
    return np.asarray(x, np.float32)
  nyquist = 0.5 / tr
  for name, f in (("low_hz", low_hz), ("high_hz", high_hz)):
    if f is not None and not 0 < f < nyquist:
      raise DataError(f"{source}: band-pass {name}={f} Hz must lie in (0, {nyquist:.4g}) Hz "
                      f"(Nyquist at TR {tr} s)")
  if low_hz is not None and high_hz is not None and low_hz >= high_hz:
    raise DataError(f"{source}: band-pass low_hz={low_hz} must be below high_hz={high_hz}")
  if low_hz is not None and high_hz is not None:
    sos = scipy.signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=1.0 / tr, output="sos")
  elif low_hz is not None:
    sos = scipy.signal.butter(order, low_hz, btype="highpass", fs=1.0 / tr, output="sos")
  else:
    sos = scipy.signal.butter(order, high_hz, btype="lowpass", fs=1.0 / tr, output="sos")
  x64 = np.asarray(x, np.float64)
  padlen = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
  check_length(x64.shape[-1], padlen + 1, source, tr=tr, what=f"the band-pass filter's padding")
  return scipy.signal.sosfiltfilt(sos, x64, axis=-1).astype(np.float32)


def preprocess(x: np.ndarray, tr: float, *, standardize: bool = True,
               band_hz: tuple[float | None, float | None] | None = None,
               source: str = "array") -> np.ndarray:
  """Optional band-pass (``band_hz=(low, high)``) then optional per-ROI z-scoring."""
  if band_hz is not None:
    x = bandpass(x, tr, band_hz[0], band_hz[1], source=source)
  return zscore(x, source=source) if standardize else np.asarray(x, np.float32)


def segment_frames(tau_s: float = DEFAULT_TAU_S, tr: float = 0.72) -> int:
  """Frames per segment: round(tau / TR), at least 1 (15 s at TR 0.72 s -> 21 frames)."""
  if tau_s <= 0 or tr <= 0:
    raise DataError(f"segment length tau_s={tau_s} and tr={tr} must be positive")
  return max(1, int(round(tau_s / tr)))


def num_windows(num_frames: int, seg_frames: int, num_segments: int,
                stride_segments: int = 1) -> int:
  """Number of windows of ``num_segments`` segments, starting every ``stride_segments`` segments."""
  if seg_frames < 1 or num_segments < 1 or stride_segments < 1:
    raise DataError(f"seg_frames={seg_frames}, num_segments={num_segments} and "
                    f"stride_segments={stride_segments} must all be >= 1")
  span = seg_frames * num_segments
  if num_frames < span:
    return 0
  return (num_frames - span) // (stride_segments * seg_frames) + 1


def make_windows(x: np.ndarray, seg_frames: int, num_segments: int, stride_segments: int = 1, *,
                 tr: float | None = None, source: str = "array") -> np.ndarray:
  """Cuts [N, T] into windows float32 [W, S, N, L] with L = ``seg_frames``, S = ``num_segments``.

  Window w, segment s holds frames ``(w * stride_segments + s) * L`` ... ``+ L``; trailing frames
  that do not fill a window are dropped. Raises DataError if not even one window fits.
  """
  x = np.asarray(x, np.float32)
  if x.ndim != 2:
    raise DataError(f"{source}: expected [ROI, time], got shape {x.shape}")
  n, t = x.shape
  check_length(t, seg_frames, source, tr=tr, what="one segment")
  w = num_windows(t, seg_frames, num_segments, stride_segments)
  check_length(t, seg_frames * num_segments, source, tr=tr, what=f"one window of {num_segments} "
               f"segments")
  segs = x[:, : (t // seg_frames) * seg_frames].reshape(n, -1, seg_frames)  # [N, num_segs, L]
  starts = np.arange(w)[:, None] * stride_segments + np.arange(num_segments)[None, :]  # [W, S]
  return np.ascontiguousarray(segs[:, starts].transpose(1, 2, 0, 3))  # [W, S, N, L]


def subject_windows(x: np.ndarray, tr: float, *, tau_s: float = DEFAULT_TAU_S,
                    num_segments: int = 4, stride_segments: int = 1, standardize: bool = True,
                    band_hz: tuple[float | None, float | None] | None = None,
                    source: str = "array") -> np.ndarray:
  """Preprocesses one [N, T] series and cuts it into windows float32 [W, S, N, L]."""
  seg = segment_frames(tau_s, tr)
  check_length(np.shape(x)[-1], seg, source, tr=tr, what=f"one segment (tau {tau_s} s)")
  x = preprocess(x, tr, standardize=standardize, band_hz=band_hz, source=source)
  return make_windows(x, seg, num_segments, stride_segments, tr=tr, source=source)


def dynamic_fc(x: np.ndarray, window_frames: int, stride_frames: int = 1) -> np.ndarray:
  """Sliding-window functional connectivity: Pearson correlations float32 [W, N, N].

  Window w covers frames ``w * stride_frames`` ... ``+ window_frames``. A ROI that is constant
  within a window gets correlation 0 with the others (and 1 on the diagonal).
  """
  x = np.asarray(x, np.float64)
  n, t = x.shape
  if window_frames < 2 or stride_frames < 1:
    raise DataError(f"window_frames={window_frames} must be >= 2 and stride_frames="
                    f"{stride_frames} >= 1")
  check_length(t, window_frames, "array", what="one FC window")
  starts = np.arange(0, t - window_frames + 1, stride_frames)
  win = np.stack([x[:, s:s + window_frames] for s in starts])  # [W, N, L]
  win = win - win.mean(-1, keepdims=True)
  norm = np.sqrt((win ** 2).sum(-1, keepdims=True))
  win = np.divide(win, norm, out=np.zeros_like(win), where=norm > 0)
  fc = win @ win.transpose(0, 2, 1)
  fc[:, np.arange(n), np.arange(n)] = 1.0
  return fc.astype(np.float32)
