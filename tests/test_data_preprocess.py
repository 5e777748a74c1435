"""Preprocessing against NumPy/SciPy float64 references."""
import numpy as np
import pytest
import scipy.signal

from jaxbrain.data import DataError
from jaxbrain.data.preprocess import (bandpass, preprocess, resample, resample_subject,
                                     segment_frames, zscore)
from jaxbrain.data.sources import Subject
from jaxbrain.data.windows import make_windows, subject_windows, window_starts

RNG = np.random.default_rng(1)


def test_zscore_moments():
  x = (RNG.standard_normal((6, 300)) * RNG.uniform(1, 50, (6, 1)) + 9000).astype(np.float32)
  z = zscore(x)
  assert z.dtype == np.float32
  np.testing.assert_allclose(z.astype(np.float64).mean(1), 0, atol=1e-5)
  np.testing.assert_allclose(z.astype(np.float64).std(1), 1, atol=1e-5)
  x64 = x.astype(np.float64)
  ref = (x64 - x64.mean(1, keepdims=True)) / x64.std(1, keepdims=True)
  np.testing.assert_allclose(z, ref, atol=1e-5)
  x[2] = 1.0
  with pytest.raises(DataError, match=r"s\.npy: zero-variance ROI index \[2\]"):
    zscore(x, source="s.npy")


def test_bandpass_matches_scipy_filtfilt_and_passes_band():
  tr, t = 0.72, 600
  time = np.arange(t) * tr
  slow, mid, fast = (np.sin(2 * np.pi * f * time) for f in (0.003, 0.05, 0.5))
  x = np.stack([slow + mid + fast, mid + 0.1 * RNG.standard_normal(t)])
  y = bandpass(x, tr, 0.01, 0.1, order=2)
  b, a = scipy.signal.butter(2, [0.01, 0.1], btype="bandpass", fs=1 / tr)
  ref = scipy.signal.filtfilt(b, a, x, axis=-1)
  core = slice(100, -100)  # edge handling of the two filtfilt variants differs slightly
  np.testing.assert_allclose(y[:, core], ref[:, core], atol=5e-3)
  np.testing.assert_allclose(y[0, core], mid[core], atol=0.1)  # keeps 0.05 Hz, drops the rest
  low = bandpass(x, tr, high_hz=0.02)
  assert np.abs(low[0, core] - slow[core]).max() < 0.15


def test_bandpass_cutoff_validation():
  x = RNG.standard_normal((2, 200))
  with pytest.raises(DataError, match=r"high_hz=0\.8 Hz must lie in \(0, 0\.6944\) Hz"):
    bandpass(x, 0.72, 0.01, 0.8)
  with pytest.raises(DataError, match=r"low_hz=0\.2 must be below high_hz=0\.1"):
    bandpass(x, 0.72, 0.2, 0.1)
  with pytest.raises(DataError, match=r"shorter than the band-pass filter's padding"):
    bandpass(x[:, :10], 0.72, 0.01, 0.1)


def test_segments_and_windows_are_slices_of_the_series():
  assert segment_frames(15.0, 0.72) == 21 and segment_frames(15.0, 2.0) == 8
  x = RNG.standard_normal((5, 131)).astype(np.float32)
  for stride in (1, 2, 3):
    w = make_windows(x, seg_frames=7, num_segments=3, stride_frames=7 * stride)
    count = (131 // 7 - 3) // stride + 1
    assert w.shape == (count, 3, 5, 7) == (len(window_starts(131, 7, 3, 7 * stride)), 3, 5, 7)
    for i in range(count):
      for s in range(3):
        start = (i * stride + s) * 7
        np.testing.assert_array_equal(w[i, s], x[:, start:start + 7])
  assert len(window_starts(20, 7, 3)) == 0
  with pytest.raises(DataError, match=r"20 frames.*shorter than one window of 3 segments of 21"):
    make_windows(x[:, :20], 7, 3)


def test_window_starts_below_and_above_one_segment():
  # Below one segment: segment-aligned windows from every offset 0, stride, ... < seg.
  np.testing.assert_array_equal(window_starts(30, 5, 3, 2), [0, 2, 4, 5, 7, 9, 10, 12, 14, 15])
  np.testing.assert_array_equal(window_starts(30, 6, 3, 3), [0, 3, 6, 9, 12])
  np.testing.assert_array_equal(window_starts(31, 5, 2, 10), [0, 10, 20])
  np.testing.assert_array_equal(window_starts(31, 5, 2), np.arange(0, 22, 5))
  for bad in (0, 7):
    with pytest.raises(DataError, match=f"window stride of {bad} frames"):
      window_starts(30, 5, 2, bad)
  x = RNG.standard_normal((3, 40)).astype(np.float32)
  w = make_windows(x, 5, 2, 3)
  for i, start in enumerate(window_starts(40, 5, 2, 3)):
    np.testing.assert_array_equal(w[i], x[:, start:start + 10].reshape(3, 2, 5).transpose(1, 0, 2))


def test_subject_windows_pipeline():
  x = (RNG.standard_normal((4, 400)) * 10 + 50).astype(np.float32)
  w = subject_windows(x, 0.72, tau_s=15.0, num_segments=2, stride_frames=42)
  ref = make_windows(zscore(x), 21, 2, 42)
  np.testing.assert_array_equal(w, ref)
  np.testing.assert_allclose(preprocess(x, 0.72, band_hz=(0.01, 0.1)),
                             zscore(bandpass(x, 0.72, 0.01, 0.1)), atol=1e-6)



def _sine_fit(y: np.ndarray, tr: float, freq: float) -> tuple[np.ndarray, float]:
  """Least-squares fit of y(k TR) = a sin(2 pi f t) + b cos(2 pi f t) + c on the middle 80% of the
  frames (the ends carry the filter's edge effects): returns (a, b, c) and the largest residual."""
  t = np.arange(len(y)) * tr
  core = slice(len(y) // 10, len(y) - len(y) // 10)
  basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)], 1)
  coef = np.linalg.lstsq(basis[core], y[core], rcond=None)[0]
  return coef, float(np.abs(basis[core] @ coef - y[core]).max())


def test_resample_keeps_a_sine_below_nyquist():
  """0.05 Hz (Nyquist is 0.23 Hz at TR 2.16 s): same frequency, amplitude and phase at the new frame
  times, away from the edges; 0.72 -> 1.44 -> 0.72 s returns the original series."""
  freq, t = 0.05, np.arange(1200) * 0.72
  x = np.stack([np.sin(2 * np.pi * freq * t), 2.0 + 0.5 * np.sin(2 * np.pi * freq * t)])
  for tr in (1.44, 2.16):
    y = resample(x, 0.72, tr)
    assert y.shape == (2, int(np.ceil(1200 * 0.72 / tr))) and y.dtype == np.float32
    for row, want in ((0, (1.0, 0.0, 0.0)), (1, (0.5, 0.0, 2.0))):
      coef, resid = _sine_fit(y[row].astype(np.float64), tr, freq)
      np.testing.assert_allclose(coef, want, atol=2e-3)
      assert resid < 2e-3
    spectrum = np.abs(np.fft.rfft(y[0] * np.hanning(y.shape[1])))
    peak = np.fft.rfftfreq(y.shape[1], tr)[np.argmax(spectrum)]
    assert abs(peak - freq) <= 1 / (y.shape[1] * tr)  # within one FFT bin
  back = resample(resample(x, 0.72, 1.44), 1.44, 0.72)
  assert back.shape == x.shape
  np.testing.assert_allclose(back[:, 120:-120], x[:, 120:-120], atol=2e-3)


def test_resample_equals_scipy_resample_poly():
  x = (RNG.standard_normal((3, 250)) + 100).astype(np.float32)
  for tr_in, tr_out, up, down in ((0.72, 2.16, 1, 3), (2.0, 0.72, 25, 9), (0.735, 0.72, 49, 48)):
    ref = scipy.signal.resample_poly(x.astype(np.float64), up, down, axis=-1, padtype="line")
    np.testing.assert_array_equal(resample(x, tr_in, tr_out), ref.astype(np.float32))
  np.testing.assert_array_equal(resample(x, 0.72, 0.72), x)
  s = resample_subject(Subject("a", x, 2.0, "a.npy"), 0.72)
  assert s.tr == 0.72 and s.id == "a" and s.num_frames == int(np.ceil(250 * 25 / 9))


def test_resample_rejects_bad_trs():
  x = RNG.standard_normal((2, 50))
  for tr_in, tr_out, named in ((0.72, 0.0, "tr_out=0.0"), (-1.0, 0.72, "tr_in=-1.0"),
                               (float("nan"), 0.72, "tr_in=nan")):
    with pytest.raises(DataError, match=rf"^s\.npy: resampling {named}: expected a positive "
                                        r"number of seconds$"):
      resample(x, tr_in, tr_out, source="s.npy")
  with pytest.raises(DataError, match=r"from TR 2\.1234 s to 0\.72 s: the nearest ratio 2843/964"):
    resample(x, 2.1234, 0.72)
