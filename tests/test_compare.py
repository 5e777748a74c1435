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
  argv = ["--config=configs/compare.py:smoke", f"--workdir={workdir}", "--config.protocol.folds=2"]
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
  for target, metric in (("class", "accuracy"), ("score", "mae")):
    lab = summary["labelled"][target]
    assert set(lab["methods"]) == {"pretrained_probe", "random_init_probe", "fc_linear", "fc_mlp"}
    assert lab["metric"] == metric and lab["num_subjects"] == 6
  for name in ("comparison.md", "comparison.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  # Resume: a finished comparison recomputes nothing; a lost cell is recomputed alone.
  cells = os.path.join(workdir, "cells")
  stamp = {p: os.path.getmtime(os.path.join(cells, "fold0", p)) for p in os.listdir(
      os.path.join(cells, "fold0"))}
  os.remove(os.path.join(cells, "fold1", "plain_autoencoder.npz"))
  assert compare.main(argv) == 0
  assert os.path.exists(os.path.join(cells, "fold1", "plain_autoencoder.npz"))
  for p, t in stamp.items():
    assert os.path.getmtime(os.path.join(cells, "fold0", p)) == t
  with open(os.path.join(workdir, "comparison.json")) as f:
    again = json.load(f)
  assert again["reconstruction"]["native"]["methods"] == native["methods"]


def test_bad_config_is_one_line(tmp_path, capsys):
  argv = ["--config=configs/compare.py:smoke", f"--workdir={tmp_path}",
          "--config.baselines=('ridge','oracle')", "--config.labelled.enabled=False"]
  assert compare.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "oracle" in err[0]
