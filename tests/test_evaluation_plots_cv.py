"""Matrix export (npy + PNG, atomic) and k-fold aggregation."""
import os

import numpy as np
import pytest

from jaxbrain.evaluation import cv, plots


def test_save_matrix_writes_npy_and_png(tmp_path):
  m = np.random.default_rng(0).normal(size=(6, 6)).astype(np.float32)
  names = [f"R{i}_{'L' if i % 2 == 0 else 'R'}" for i in range(6)]
  out = plots.save_matrix(tmp_path / "sub" / "similarity.npy", m, names, title="ROI similarity")
  assert out == {"npy": str(tmp_path / "sub" / "similarity.npy"),
                 "png": str(tmp_path / "sub" / "similarity.png")}
  np.testing.assert_array_equal(np.load(out["npy"]), m)
  with open(out["png"], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert sorted(os.listdir(tmp_path / "sub")) == ["similarity.npy", "similarity.png"]  # no temporaries
  # Replaced in place, rectangular matrix, no names.
  plots.save_matrix(tmp_path / "sub" / "similarity", np.ones((3, 5)))
  assert np.load(out["npy"]).shape == (3, 5)


def test_save_matrix_bad_input_leaves_nothing(tmp_path):
  with pytest.raises(ValueError, match="names: expected 4 names"):
    plots.save_matrix(tmp_path / "m", np.eye(4), ["a", "b"])
  with pytest.raises(ValueError, match="2-D"):
    plots.save_matrix(tmp_path / "m", np.zeros((2, 2, 2)))
  with pytest.raises(ValueError):
    plots.save_matrix(tmp_path / "m", np.eye(3), cmap="no-such-colormap")
  assert os.listdir(tmp_path) == []


def test_aggregate_folds():
  folds = [{"accuracy": 0.5, "auroc": 0.6}, {"accuracy": 0.7, "auroc": np.float32(0.8)},
           {"accuracy": 0.9, "auroc": 1}]
  out = cv.aggregate_folds(folds)
  assert out["accuracy"]["folds"] == [0.5, 0.7, 0.9]
  assert out["accuracy"]["mean"] == pytest.approx(0.7)
  assert out["accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
  assert cv.aggregate_folds(folds, ddof=1)["auroc"]["std"] == pytest.approx(
      np.std([0.6, 0.8, 1.0], ddof=1), rel=1e-6)
  assert all(type(v) is float for v in out["auroc"]["folds"])
  assert cv.aggregate_folds([{"mae": 2.0}]) == {"mae": {"mean": 2.0, "std": 0.0, "folds": [2.0]}}
  assert cv.aggregate_folds([{"mae": 2.0}], ddof=1)["mae"]["std"] == 0.0


def test_aggregate_folds_bad_input():
  with pytest.raises(ValueError, match="at least one fold"):
    cv.aggregate_folds([])
  with pytest.raises(ValueError, match=r"fold_metrics\[1\]: metrics differ.*missing \['auroc'\]"):
    cv.aggregate_folds([{"accuracy": 1.0, "auroc": 1.0}, {"accuracy": 1.0}])
  with pytest.raises(ValueError, match=r"fold_metrics\[0\]\['accuracy'\]: expected a number"):
    cv.aggregate_folds([{"accuracy": "high"}])
