"""Synthetic generator: shapes, determinism, HRF, and labels learnable from the dynamics."""
import numpy as np
import pytest

from jaxbrain.data.synthetic import double_gamma_hrf, make_synthetic, network_assignment


def test_shapes_and_determinism():
  a, la = make_synthetic(num_subjects=6, num_rois=20, num_frames=150, tr=1.0, seed=3)
  b, lb = make_synthetic(num_subjects=6, num_rois=20, num_frames=150, tr=1.0, seed=3)
  c, _ = make_synthetic(num_subjects=6, num_rois=20, num_frames=150, tr=1.0, seed=4)
  assert [s.timeseries.shape for s in a] == [(20, 150)] * 6
  assert all(s.timeseries.dtype == np.float32 and s.tr == 1.0 for s in a)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x.timeseries, y.timeseries)
  assert la.rows == lb.rows
  assert not np.array_equal(a[0].timeseries, c[0].timeseries)
  more, _ = make_synthetic(num_subjects=8, num_rois=20, num_frames=150, tr=1.0, seed=3)
  np.testing.assert_array_equal(more[5].timeseries, a[5].timeseries)  # prefix-stable
  ids = [s.id for s in a]
  classes = la.values("class", ids)
  assert sorted(np.bincount(classes)) == [3, 3]
  scores = la.values("score", ids, "regression")
  assert np.all(np.abs(scores) <= 1)


def test_hrf_peaks_near_five_seconds():
  h = double_gamma_hrf(0.1)
  assert h.sum() == pytest.approx(1.0)
  assert 4.0 < np.argmax(h) * 0.1 < 6.0
  assert h.min() < 0  # undershoot


def test_labels_learnable_from_network_coupling():
  subjects, labels = make_synthetic(num_subjects=12, num_rois=24, num_frames=300, tr=0.72,
                                    noise_std=1.0, seed=0)
  ids = [s.id for s in subjects]
  net = network_assignment(24, 4)

  def coupling(x, a, b):
    return np.corrcoef(x[net == a].mean(0), x[net == b].mean(0))[0, 1]

  c01 = np.array([coupling(s.timeseries, 0, 1) for s in subjects])
  c23 = np.array([coupling(s.timeseries, 2, 3) for s in subjects])
  y = labels.values("class", ids)
  assert c01[y == 1].min() > c01[y == 0].max()  # one threshold separates the classes
  score = labels.values("score", ids, "regression")
  assert np.corrcoef(c23, score)[0, 1] > 0.8


def test_bad_arguments():
  with pytest.raises(ValueError, match="num_networks"):
    make_synthetic(num_networks=2)
  with pytest.raises(ValueError, match="coupling"):
    make_synthetic(coupling=1.5)
