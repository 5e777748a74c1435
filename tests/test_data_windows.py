"""The one windowing path: window_arrays against a brute-force reference, and the config view."""
import ml_collections
import numpy as np
import pytest

from jaxbrain.data import DataError
from jaxbrain.data.preprocess import zscore
from jaxbrain.data.synthetic import make_synthetic
from jaxbrain.data.windows import subject_windows, window_arrays
from jaxbrain.tasks import inputs

TR, TAU, S, SEG = 1.0, 5.0, 3, 5


@pytest.fixture(scope="module")
def subjects():
  return make_synthetic(num_subjects=3, num_rois=4, num_frames=47, tr=TR, seed=2)[0]


def _reference(subjects, stride, index):
  """Windows by brute force: every start whose offset within a segment is a multiple of the
  stride (below one segment) or every stride-th frame (above), sorted by (subject id, start)."""
  rows = []
  for i, s in enumerate(subjects):
    z = zscore(s.timeseries)
    for start in range(0, s.num_frames - S * SEG + 1):
      ok = (start % SEG) % stride == 0 if stride < SEG else start % stride == 0
      if ok:
        w = z[:, start:start + S * SEG].reshape(z.shape[0], S, SEG).transpose(1, 0, 2)
        rows.append((index[i], start, w))
  rows.sort(key=lambda r: (r[0], r[1]))
  return rows


@pytest.mark.parametrize("stride", [1, 2, 3, 5, 10])
def test_window_arrays_against_reference(subjects, stride):
  index = [7, 2, 4]
  out = window_arrays(subjects, tau_s=TAU, num_segments=S, stride_frames=stride,
                      subject_index=index, labels=np.array([0.5, 1.5, 2.5], np.float32))
  ref = _reference(subjects, stride, index)
  assert out["x"].dtype == np.float32 and out["subject"].dtype == np.int32
  assert out["start"].dtype == np.int32 and out["label"].dtype == np.float32
  assert len(out["x"]) == len(ref)
  np.testing.assert_array_equal(out["subject"], [r[0] for r in ref])
  np.testing.assert_array_equal(out["start"], [r[1] for r in ref])
  np.testing.assert_array_equal(out["x"], np.stack([r[2] for r in ref]))
  by_index = {7: 0.5, 2: 1.5, 4: 2.5}
  np.testing.assert_array_equal(out["label"], [by_index[r[0]] for r in ref])


def test_window_arrays_defaults_and_errors(subjects):
  out = window_arrays(subjects, tau_s=TAU, num_segments=S)
  np.testing.assert_array_equal(out["label"], -1)
  assert out["label"].dtype == np.int32
  for i, s in enumerate(subjects):
    np.testing.assert_array_equal(out["x"][out["subject"] == i],
                                  subject_windows(s.timeseries, TR, tau_s=TAU, num_segments=S))
  with pytest.raises(DataError, match="no subjects"):
    window_arrays([], tau_s=TAU, num_segments=S)
  with pytest.raises(DataError, match="window stride of 7 frames"):
    window_arrays(subjects, tau_s=TAU, num_segments=S, stride_frames=7)
  with pytest.raises(DataError, match=r"shorter than a window of 10 segments of 5\.0 s"):
    window_arrays(subjects, tau_s=TAU, num_segments=10)


def test_task_view_reads_the_config(subjects):
  data = ml_collections.ConfigDict(dict(tau_s=TAU, num_segments=S, zscore=False,
                                        bandpass_hz=(0.0, 0.2)))
  got = inputs.window_arrays(subjects, data, stride_frames=2, subject_index=[1, 0, 2])
  want = window_arrays(subjects, tau_s=TAU, num_segments=S, stride_frames=2, standardize=False,
                       band_hz=(None, 0.2), subject_index=[1, 0, 2])
  assert got.keys() == want.keys() == {"x", "subject", "start", "label"}
  for k in got:
    np.testing.assert_array_equal(got[k], want[k])
