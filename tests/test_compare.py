"""jaxbrain.compare: folds, choices made without the held-out subjects, and a resumable smoke run."""
import dataclasses
import json
import os

import numpy as np
import pytest

from configs import compare as compare_config
from jaxbrain import compare
from jaxbrain.tasks import inputs


@pytest.fixture(scope="module")
def hcp():
  return inputs.load_data(compare_config.get_config("smoke").brainmae.data)


def test_folds_hold_every_subject_out_once_and_validate_on_pretraining_subjects(hcp):
  config = compare_config.get_config()
  splits = compare.fold_splits(hcp.ids, config.protocol, seed=0)
  assert len(splits) == config.protocol.folds
  held = [s for f in splits for s in f["heldout"]]
  assert sorted(held) == sorted(hcp.ids)  # each subject held out exactly once
  for f in splits:
    parts = [set(f["train"]), set(f["val"]), set(f["heldout"])]
    assert sum(map(len, parts)) == len(hcp.ids)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(f["val"]) == config.protocol.val_subjects


def _poisoned(data, ids):
  """The same data with the given subjects' scans replaced by large noise."""
  rng = np.random.default_rng(0)
  subjects = [dataclasses.replace(s, timeseries=(1e3 * rng.standard_normal(s.timeseries.shape))
                                  .astype(np.float32)) if s.id in ids else s
              for s in data.subjects]
  return dataclasses.replace(data, subjects=subjects)


def test_no_choice_reads_the_heldout_subjects(hcp):
  config = compare_config.get_config("smoke")
  config.baselines = ("ridge", "st_ridge")
  split = compare.fold_splits(hcp.ids, config.protocol, seed=0)[0]
  clean = compare.FoldData(config, hcp, split, 0)
  dirty = compare.FoldData(config, _poisoned(hcp, split["heldout"]), split, 0)
  # What training and every choice see is unchanged...
  np.testing.assert_array_equal(clean.train_x, dirty.train_x)
  np.testing.assert_array_equal(clean.val_x, dirty.val_x)
  a, b = compare.baseline_cells(config, clean), compare.baseline_cells(config, dirty)
  for name in config.baselines:
    for key in [k for k in a[name] if not k.startswith("mse/")]:
      assert a[name][key] == b[name][key], (name, key)  # chosen penalty, lags, validation error
    # ...while the held-out scores do change: the poison reached the scored data.
    assert not np.allclose(a[name]["mse/native"], b[name]["mse/native"])


@pytest.mark.slow
def test_smoke_comparison_runs_and_resumes(tmp_path):
  workdir = str(tmp_path / "cmp")
  argv = ["--config=configs/compare.py:smoke", f"--workdir={workdir}", "--config.protocol.folds=2",
          "--config.fingerprint_segments=(1,)"]
  assert compare.main(argv) == 0
  with open(os.path.join(workdir, "comparison.json")) as f:
    summary = json.load(f)
  native = summary["reconstruction"]["native"]
  assert set(native["methods"]) == {"roi_mean", "linear_interp", "ridge", "st_ridge",
                                    "brainmae_prior", "plain_autoencoder"}
  for m in native["methods"].values():
    assert np.isfinite(m["mse"]["mean"]) and m["mse"]["lo"] <= m["mse"]["mean"] <= m["mse"]["hi"]
  assert native["num_subjects"] == 7
  assert summary["reconstruction"]["tr1.44"]["bar"] in ("roi_mean", "linear_interp", "ridge",
                                                         "st_ridge")
  # ST-MAE: masked FC reconstruction beside its untrained encoder and the mean graph, per set.
  for set_name in ("native", "tr1.44"):
    st = summary["fc_reconstruction"][set_name]["stmae"]
    assert set(st["methods"]) == {"model", "untrained", "mean_graph"}
    assert set(st["contrasts"]) == {"untrained", "mean_graph"}
    assert st["num_subjects"] == 7 and st["num_windows"] == 7 * 7  # 1200 frames / 168 per window
    for m in st["methods"].values():
      for metric in ("fc_mse", "fc_bce"):
        assert 0 < m[metric]["lo"] <= m[metric]["mean"] <= m[metric]["hi"]
  fp = summary["fingerprint"]["1seg"]
  assert {"brainmae_prior_untrained", "stmae", "stmae_untrained", "raw_fc"} <= set(fp["methods"])
  assert set(fp["contrasts"]["stmae"]) == {"raw_fc", "untrained"}
  assert set(fp["contrasts"]["plain_autoencoder"]) == {"raw_fc"} and "raw_fc" not in fp["contrasts"]
  for target, metric in (("class", "accuracy"), ("score", "mae")):
    lab = summary["labelled"][target]
    assert set(lab["methods"]) == {f"{r}_{m}" for r in ("brainmae_prior", "stmae")
                                   for m in ("pretrained_probe", "random_init_probe")} | {
                                       "fc_linear", "fc_mlp"}
    assert lab["references"] == ["brainmae_prior_pretrained_probe", "stmae_pretrained_probe"]
    assert lab["metric"] == metric and lab["num_subjects"] == 6
  for name in ("comparison.md", "comparison.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  # Resume: a finished comparison recomputes nothing; a lost cell is recomputed alone.
  cells = os.path.join(workdir, "cells")
  stamp = {p: os.path.getmtime(os.path.join(cells, "fold0", p)) for p in os.listdir(
      os.path.join(cells, "fold0"))}
  os.remove(os.path.join(cells, "fold1", "stmae.npz"))
  assert compare.main(argv) == 0
  assert os.path.exists(os.path.join(cells, "fold1", "stmae.npz"))
  for p, t in stamp.items():
    assert os.path.getmtime(os.path.join(cells, "fold0", p)) == t
  with open(os.path.join(workdir, "comparison.json")) as f:
    again = json.load(f)
  assert again["reconstruction"]["native"]["methods"] == native["methods"]
  assert again["fc_reconstruction"] == summary["fc_reconstruction"]  # training resumed bitwise


def test_labelled_cells_of_two_rows_merge_into_one_table():
  def cell(preds):
    return {"class": {"task": "classification", "subject": np.array(["a", "b"]),
                      "label": np.array([0, 1]), "predictions": preds}}
  p = np.eye(2)
  merged = compare.merge_labelled({"ours": cell({"pretrained_probe": p, "fc_linear": p}),
                                   "stmae": cell({"pretrained_probe": 1 - p})})
  assert set(merged["class"]["predictions"]) == {"ours_pretrained_probe", "fc_linear",
                                                 "stmae_pretrained_probe"}
  np.testing.assert_array_equal(merged["class"]["predictions"]["stmae_pretrained_probe"], 1 - p)
  bad = cell({"pretrained_probe": p})
  bad["class"]["subject"] = np.array(["b", "a"])
  with pytest.raises(RuntimeError, match="different subjects"):
    compare.merge_labelled({"ours": cell({"pretrained_probe": p}), "stmae": bad})


@pytest.mark.parametrize("override, field", [
    ("--config.rows.stmae.name=gcn", "config.rows.stmae.name='gcn'"),
    ("--config.reference_rows=('brainmae_prior','nope')", "config.reference_rows")])
def test_bad_rows_are_one_line(tmp_path, capsys, override, field):
  argv = ["--config=configs/compare.py:smoke", f"--workdir={tmp_path}", override]
  assert compare.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and field in err[0], err


def test_bad_config_is_one_line(tmp_path, capsys):
  argv = ["--config=configs/compare.py:smoke", f"--workdir={tmp_path}",
          "--config.baselines=('ridge','oracle')", "--config.labelled.enabled=False"]
  assert compare.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "oracle" in err[0]


def test_every_family_sees_the_brainmae_data_section():
  """One data section (config.brainmae.data) names the subjects of every row; ST-MAE keeps its own
  windows. The built-in configs are unchanged by this (same sections, same cell digests), and a
  change of data redoes the ST-MAE cells too."""
  for variant in ("default", "smoke", "full"):
    config = compare_config.get_config(variant)
    assert compare.family_config(config, "stmae").to_dict() == config.stmae.to_dict()
    assert compare.family_config(config, "brainmae").to_dict() == config.brainmae.to_dict()
  config = compare_config.get_config("smoke")
  before = {name: compare.cell_key(config, name) for name in ["baselines", *config.rows]}
  config.brainmae.data.update(dict(source="folder", path="/data/mine", tr=2.0, resample_tr=0.72))
  st = compare.family_config(config, "stmae")
  assert (st.data.source, st.data.path, st.data.tr, st.data.resample_tr) == (
      "folder", "/data/mine", 2.0, 0.72)
  assert (st.data.num_segments, st.data.stride_frames) == (
      config.stmae.data.num_segments, config.stmae.data.stride_frames)
  assert config.stmae.data.source == "hcp"  # the config itself is left as it was
  for name, key in before.items():
    assert compare.cell_key(config, name) != key, name


def _write_scans(folder, num_subjects=6, num_rois=20, tr=2.0):
  """Synthetic subjects as a scanner at TR ``tr`` would record them, one file per subject in the
  formats a user has (.npy [ROI, time], .csv [time, ROI], .mat 'tc'); returns the ids."""
  import scipy.io
  from jaxbrain.data.preprocess import resample
  from jaxbrain.data.synthetic import make_synthetic
  folder.mkdir()
  subjects, _ = make_synthetic(num_subjects, num_rois, 600, tr=0.72, seed=3)
  for i, s in enumerate(subjects):
    x = resample(s.timeseries, 0.72, tr)
    if i % 3 == 0:
      np.save(folder / f"{s.id}.npy", x)
    elif i % 3 == 1:
      np.savetxt(folder / f"{s.id}.csv", x.T, delimiter=",",
                 header=",".join(f"roi{j}" for j in range(num_rois)), comments="")
    else:
      scipy.io.savemat(folder / f"{s.id}.mat", {"tc": x})
  return [s.id for s in subjects]


@pytest.mark.slow
def test_comparison_on_a_folder_of_scans_at_another_tr(tmp_path):
  """jaxbrain.compare on a user's folder (20 ROIs at TR 2 s, resampled to 0.72 s): BrainMAE and
  ST-MAE rows, the baselines and the labelled tasks (the synthetic cohort, 94 ROIs) all run."""
  ids = _write_scans(tmp_path / "scans")
  config = compare_config.get_config("smoke")
  config.brainmae.data.update(dict(source="folder", path=str(tmp_path / "scans"), tr=2.0,
                                   resample_tr=0.72))
  config.protocol.folds = 2
  config.cross_tr = ()
  config.fingerprint_segments = (1,)
  config.rows = type(config.rows)({"brainmae_prior": {"linear_prior": True},
                                   "stmae": {"name": "stmae"}})
  workdir = str(tmp_path / "cmp")
  summary = compare.train_and_evaluate(config, workdir)
  assert summary["subjects"] == ids and summary["tr_s"] == 0.72
  assert list(summary["reconstruction"]) == ["native"]
  native = summary["reconstruction"]["native"]
  assert set(native["methods"]) == {"roi_mean", "linear_interp", "ridge", "st_ridge",
                                    "brainmae_prior"}
  # 216 volumes at TR 2 s = 600 frames at 0.72 s: 7 BrainMAE windows of 84 frames per subject,
  # 3 ST-MAE windows of 168.
  assert (native["num_subjects"], native["num_windows"]) == (6, 6 * 7)
  st = summary["fc_reconstruction"]["native"]["stmae"]
  assert (st["num_subjects"], st["num_windows"]) == (6, 6 * 3)
  for m in [*native["methods"].values()]:
    assert m["mse"]["lo"] <= m["mse"]["mean"] <= m["mse"]["hi"]
  assert summary["labelled"]["class"]["num_subjects"] == 6
  with open(os.path.join(workdir, "comparison.md")) as f:
    md = f.read()
  assert "native TR 0.72 s" in md and "stmae" in md
  assert os.path.getsize(os.path.join(workdir, "comparison.png")) > 0


def test_full_prior_variant_computes_the_full_variants_cells_of_our_row():
  full, part = compare_config.get_config("full"), compare_config.get_config("full_prior")
  assert list(part.rows) == ["brainmae_prior"] and not part.labelled.enabled
  for name in ("baselines", "brainmae_prior"):
    assert compare.cell_key(part, name) == compare.cell_key(full, name), name
  assert compare.cell_key(part, "brainmae_prior") != compare.cell_key(
      compare_config.get_config(), "brainmae_prior")  # the default's smaller model
