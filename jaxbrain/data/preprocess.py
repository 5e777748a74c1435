"""Preprocessing of [N_roi, T] series: resampling to another TR, z-scoring, band-pass, segments of
tau seconds.

Windows are cut by ``jaxbrain.data.windows``.
"""
from __future__ import annotations

import dataclasses
import fractions

import numpy as np

from jaxbrain.data.sources import Subject
from jaxbrain.data.validation import DataError, check_length

DEFAULT_TAU_S = 15.0
RESAMPLE_MAX_DENOMINATOR = 1000  # largest up/down factor tried for the ratio of two TRs
RESAMPLE_RTOL = 1e-9             # the achieved TR must equal the requested one to this precision


def resample(x: np.ndarray, tr_in: float, tr_out: float, *, source: str = "array") -> np.ndarray:
  """Band-limited resampling of [N, T] along time from TR ``tr_in`` to ``tr_out`` (seconds).

  ``scipy.signal.resample_poly`` (Kaiser-windowed anti-aliasing filter, zero phase, ends padded
  along a fitted line) with up/down the rational approximation of ``tr_in / tr_out`` (denominator
  at most ``RESAMPLE_MAX_DENOMINATOR``); output frame k is at time ``k * tr_out``, ``ceil(T * up /
  down)`` frames. Computed in float64, returned as float32. Raises DataError for a TR that is not a
  positive number or a ratio whose approximation gives a TR off by more than ``RESAMPLE_RTOL``.
  """
  import scipy.signal
  for name, tr in (("tr_in", tr_in), ("tr_out", tr_out)):
    if not (isinstance(tr, (int, float, np.number)) and np.isfinite(tr) and tr > 0):
      raise DataError(f"{source}: resampling {name}={tr!r}: expected a positive number of seconds")
  ratio = fractions.Fraction(tr_in / tr_out).limit_denominator(RESAMPLE_MAX_DENOMINATOR)
  up, down = ratio.numerator, ratio.denominator
  achieved = tr_in * down / up
  if abs(achieved - tr_out) > RESAMPLE_RTOL * tr_out:
    raise DataError(f"{source}: cannot resample from TR {tr_in} s to {tr_out} s: the nearest ratio "
                    f"{up}/{down} gives TR {achieved:.9g} s; pick a target TR whose ratio to "
                    f"{tr_in} s is a fraction with denominator <= {RESAMPLE_MAX_DENOMINATOR}")
  x64 = np.asarray(x, np.float64)
  if up == down:
    return x64.astype(np.float32)
  return scipy.signal.resample_poly(x64, up, down, axis=-1, padtype="line").astype(np.float32)


def resample_subject(subject: Subject, tr_out: float) -> Subject:
  """``subject`` resampled to TR ``tr_out`` (``resample``); the new Subject's ``tr`` is ``tr_out``
  (the TR achieved, exact to ``RESAMPLE_RTOL``). Returned unchanged if it already has that TR."""
  if subject.tr == tr_out:
    return subject
  x = resample(subject.timeseries, subject.tr, tr_out, source=subject.source)
  return dataclasses.replace(subject, timeseries=x, tr=float(tr_out))


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
  check_length(x64.shape[-1], padlen + 1, source, tr=tr, what="the band-pass filter's padding")
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

