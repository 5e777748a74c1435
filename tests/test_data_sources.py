"""Readers, Subject loading, labels tables, and the errors bad inputs give."""
import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io

from jaxbrain.data import DataError, load_subjects, read_labels, read_timeseries
from jaxbrain.data.sources import read_nifti_rois

RNG = np.random.default_rng(0)
X = RNG.standard_normal((5, 40)).astype(np.float32)  # [N_roi, T]


def _write_csv(path, rows, header=None, delim=","):
  with open(path, "w") as f:
    if header:
      f.write(delim.join(header) + "\n")
    for r in rows:
      f.write(delim.join(repr(float(v)) for v in r) + "\n")


def test_npy_npz_mat_h5(tmp_path):
  np.save(tmp_path / "a.npy", X)
  np.savez(tmp_path / "b.npz", other=np.zeros(3), ts=X)
  scipy.io.savemat(tmp_path / "c.mat", {"tc": X.astype(np.float64)})
  scipy.io.savemat(tmp_path / "d.mat", {"bold": X})
  with h5py.File(tmp_path / "e.h5", "w") as f:
    f["data"] = X.T  # [T, N]: auto orientation makes the shorter axis ROIs
  np.testing.assert_array_equal(read_timeseries(tmp_path / "a.npy"), X)
  np.testing.assert_array_equal(read_timeseries(tmp_path / "b.npz", key="ts"), X)
  np.testing.assert_array_equal(read_timeseries(tmp_path / "c.mat"), X)
  np.testing.assert_array_equal(read_timeseries(tmp_path / "d.mat", key="bold"), X)
  y = read_timeseries(tmp_path / "e.h5")
  assert y.dtype == np.float32
  np.testing.assert_array_equal(y, X)
  np.testing.assert_array_equal(read_timeseries(tmp_path / "e.h5", roi_axis=1), X)


def test_orientation_rules(tmp_path):
  np.save(tmp_path / "t.npy", X.T)
  np.testing.assert_array_equal(read_timeseries(tmp_path / "t.npy"), X)  # shorter axis = ROIs
  np.testing.assert_array_equal(read_timeseries(tmp_path / "t.npy", roi_axis=0), X.T)
  wide = RNG.standard_normal((50, 30)).astype(np.float32)  # more ROIs than frames
  np.save(tmp_path / "w.npy", wide)
  assert read_timeseries(tmp_path / "w.npy", num_rois=50).shape == (50, 30)
  np.save(tmp_path / "sq.npy", np.ones((4, 4)))
  with pytest.raises(DataError, match=r"sq\.npy.*square"):
    read_timeseries(tmp_path / "sq.npy")
  with pytest.raises(DataError, match=r"expected 7 ROIs"):
    read_timeseries(tmp_path / "t.npy", num_rois=7)


def test_csv_tsv_with_and_without_header(tmp_path):
  _write_csv(tmp_path / "h.csv", X.T, header=[f"roi{i}" for i in range(5)])
  _write_csv(tmp_path / "n.csv", X.T)
  _write_csv(tmp_path / "t.tsv", X.T, header=[f"r{i}" for i in range(5)], delim="\t")
  for name in ("h.csv", "n.csv", "t.tsv"):
    np.testing.assert_allclose(read_timeseries(tmp_path / name), X, rtol=1e-6)


def test_nifti_atlas_roi_means(tmp_path):
  shape, t = (4, 3, 2), 6
  bold = RNG.standard_normal(shape + (t,)).astype(np.float32)
  atlas = np.zeros(shape, np.int16)
  atlas[0, :, :] = 3
  atlas[1:3, 0, :] = 7
  atlas[3, 2, 1] = 1
  affine = np.diag([2.0, 2.0, 2.0, 1.0])
  img = nib.Nifti1Image(bold, affine)
  img.header.set_xyzt_units("mm", "sec")
  img.header["pixdim"][4] = 0.8
  nib.save(img, tmp_path / "sub01.nii.gz")
  nib.save(nib.Nifti1Image(atlas, affine), tmp_path / "atlas.nii.gz")
  expected = np.stack([bold[atlas == v].astype(np.float64).mean(0) for v in (1, 3, 7)])
  got, values = read_nifti_rois(tmp_path / "sub01.nii.gz", tmp_path / "atlas.nii.gz",
                                chunk_frames=4)
  np.testing.assert_array_equal(values, [1, 3, 7])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  got2, _ = read_nifti_rois(tmp_path / "sub01.nii.gz", tmp_path / "atlas.nii.gz", labels=[7, 1])
  np.testing.assert_allclose(got2, expected[[2, 0]], rtol=1e-5, atol=1e-6)
  # A folder load: the atlas is skipped, the TR comes from the header, the id from the file name.
  [s] = load_subjects(tmp_path, atlas=tmp_path / "atlas.nii.gz")
  assert (s.id, s.tr, s.timeseries.shape) == ("sub01", pytest.approx(0.8), (3, t))
  # Grid mismatches are errors naming both files.
  nib.save(nib.Nifti1Image(atlas, np.diag([3.0, 2.0, 2.0, 1.0])), tmp_path / "moved.nii.gz")
  with pytest.raises(DataError, match=r"moved\.nii\.gz.*sub01\.nii\.gz.*affines"):
    read_nifti_rois(tmp_path / "sub01.nii.gz", tmp_path / "moved.nii.gz")
  nib.save(nib.Nifti1Image(atlas[:3], affine), tmp_path / "small.nii.gz")
  with pytest.raises(DataError, match=r"small\.nii\.gz.*shape"):
    read_nifti_rois(tmp_path / "sub01.nii.gz", tmp_path / "small.nii.gz")


def test_load_subjects_folder_and_labels(tmp_path):
  for i in range(3):
    np.save(tmp_path / f"s{i}.npy", X + i)
  (tmp_path / "labels.csv").write_text("subject_id,group,age\ns0,ctrl,20.5\ns1,pat,30\n"
                                       "s2,ctrl,41\n")
  subs = load_subjects(tmp_path, tr=2.0, exclude=[tmp_path / "labels.csv"])
  assert [s.id for s in subs] == ["s0", "s1", "s2"]
  assert all(s.tr == 2.0 and s.timeseries.dtype == np.float32 for s in subs)
  assert subs[1].source == str(tmp_path / "s1.npy")
  table = read_labels(tmp_path / "labels.csv")
  ids = [s.id for s in subs]
  assert table.classes("group") == ["ctrl", "pat"]
  np.testing.assert_array_equal(table.values("group", ids), [0, 1, 0])
  np.testing.assert_allclose(table.values("age", ids, "regression"), [20.5, 30, 41])
  assert table.values("group", ids).dtype == np.int32
  with pytest.raises(DataError, match=r"no column 'sex'"):
    table.values("sex", ids)
  with pytest.raises(DataError, match=r"'ctrl' is not a finite number"):
    table.values("group", ids, "regression")


# ---- bad inputs: each a DataError naming the file and what is wrong ----

def _one(tmp_path, x, name="bad.npy", **kw):
  np.save(tmp_path / name, x)
  return load_subjects([tmp_path / name], tr=1.0, **kw)


def test_nan_and_inf_are_located(tmp_path):
  x = X.copy()
  x[2, 7] = np.nan
  with pytest.raises(DataError, match=r"bad\.npy: 1 NaN value\(s\) at \(roi 2, frame 7\)"):
    _one(tmp_path, x)
  x = X.copy()
  x[4, 0] = -np.inf
  with pytest.raises(DataError, match=r"bad\.npy: 1 inf value\(s\) at \(roi 4, frame 0\)"):
    _one(tmp_path, x)


def test_zero_variance_roi_named(tmp_path):
  x = X.copy()
  x[3] = 5.0
  with pytest.raises(DataError, match=r"bad\.npy: zero-variance \(constant\) ROI index 3 of 5"):
    _one(tmp_path, x)


def test_short_series_gives_lengths_and_tr(tmp_path):
  from jaxbrain.data.windows import subject_windows
  [s] = _one(tmp_path, X[:, :10])
  with pytest.raises(DataError, match=r"bad\.npy: series has 10 frames \(10\.00 s at TR 1\.0 s\), "
                     r"shorter than one segment \(tau 15\.0 s\) of 15 frames \(15\.00 s\)"):
    subject_windows(s.timeseries, s.tr, source=s.source)


def test_roi_count_mismatch_names_both_files(tmp_path):
  np.save(tmp_path / "a.npy", X)
  np.save(tmp_path / "b.npy", RNG.standard_normal((6, 40)))
  with pytest.raises(DataError, match=r"a\.npy has 5 ROIs but .*b\.npy has 6"):
    load_subjects(tmp_path, tr=1.0)


def test_missing_and_unreadable_files(tmp_path):
  with pytest.raises(DataError, match=r"nope\.npy: file not found"):
    load_subjects([tmp_path / "nope.npy"], tr=1.0)
  (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
  with pytest.raises(DataError, match=r"junk\.npy: cannot read file"):
    load_subjects([tmp_path / "junk.npy"], tr=1.0)
  (tmp_path / "junk.mat").write_bytes(b"\x00" * 10)
  with pytest.raises(DataError, match=r"junk\.mat: cannot read file"):
    read_timeseries(tmp_path / "junk.mat")
  scipy.io.savemat(tmp_path / "k.mat", {"bold": X})
  with pytest.raises(DataError, match=r"k\.mat: no variable 'tc'; available: \['bold'\]"):
    read_timeseries(tmp_path / "k.mat")
  (tmp_path / "t.csv").write_text("1,2\n3,x\n")
  with pytest.raises(DataError, match=r"t\.csv: line 2, column 2: 'x' is not a number"):
    read_timeseries(tmp_path / "t.csv")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DataError, match=r"empty: no subject files"):
    load_subjects(empty, tr=1.0)
  with pytest.raises(DataError, match=r"a\.npy: repetition time \(TR\) unknown"):
    np.save(tmp_path / "a.npy", X)
    load_subjects([tmp_path / "a.npy"])


def test_labels_table_missing_subject_names_subject_and_file(tmp_path):
  path = tmp_path / "pheno.csv"
  path.write_text("subject_id,group\ns0,1\n")
  table = read_labels(path)
  with pytest.raises(DataError, match=r"subject 's1' is missing from labels table .*pheno\.csv"):
    table.values("group", ["s0", "s1"])
  with pytest.raises(DataError, match=r"pheno\.csv: no id column 'sub'"):
    read_labels(path, id_column="sub")
  with pytest.raises(DataError, match=r"labels table .*gone\.csv: file not found"):
    read_labels(tmp_path / "gone.csv")


def test_data_error_is_value_error():
  assert issubclass(DataError, ValueError)
