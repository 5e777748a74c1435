"""Pretraining from a TFDS array_record build (config.data.tfds_dir) is the in-memory run: same
subjects, windows, batches, losses and parameters."""
import os

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from jaxbrain.data.synthetic import make_synthetic
from jaxbrain.data.tfds_builder import FmriWindowsConfig, build_dataset
from jaxbrain.tasks import pretrain
from jaxbrain.tasks.train import train_and_evaluate
from jaxtrain.config import ConfigError, load_config
from jaxtrain.data import InMemorySource

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TR, TAU, SEGMENTS, STRIDE = 1.0, 5.0, 2, 2  # 5 frames per segment; windows every 2 frames


@pytest.fixture(scope="module")
def build(tmp_path_factory):
  """Five subjects in a folder and their build: one held-out ('test'), one validation subject."""
  root = tmp_path_factory.mktemp("cohort")
  subjects, _ = make_synthetic(num_subjects=5, num_rois=8, num_frames=60, tr=TR, seed=0)
  for s in subjects:
    np.save(root / f"{s.id}.npy", s.timeseries)
  build_dataset(FmriWindowsConfig(name="tiny", source=str(root), tr=TR, tau_s=TAU,
                                  num_segments=SEGMENTS, stride_frames=STRIDE,
                                  holdout={"test": 1, "val": 1}, seed=0), root / "tfds")
  return root


def _config(root, **data):
  config = load_config(os.path.join(ROOT, "configs/brainmae.py:smoke"), [
      "train.steps=6", "train.log_every=1", "train.checkpoint_every=0", "train.batch_size=8",
      "eval.ridge_lambda=0.01", "eval.num_permutations=200", "eval.batch_size=16",
      "eval.interpret=False", "data.source=folder", f"data.path={root}", f"data.tr={TR}",
      f"data.tau_s={TAU}", f"data.num_segments={SEGMENTS}", f"data.stride_frames={STRIDE}",
      "data.holdout_subjects=1", "data.val_subjects=1", "train.eval_every=3", "seed=0"])
  config.data.update(data)
  return config


def _run(config, workdir, monkeypatch):
  """train_and_evaluate's summary, its pretraining result (loss history, model) and the training
  windows' source."""
  calls = []

  def spy(config, workdir, train_x, val_x=None):
    calls.append((original(config, workdir, train_x, val_x), train_x))
    return calls[-1][0]

  original = pretrain.pretrain
  monkeypatch.setattr(pretrain, "pretrain", spy)
  return (train_and_evaluate(config, str(workdir)), *calls[0])


def test_tfds_build_trains_like_the_in_memory_path(build, tmp_path, monkeypatch):
  mem, mem_result, mem_source = _run(_config(build), tmp_path / "mem", monkeypatch)
  tfds, tfds_result, tfds_source = _run(
      _config(build, tfds_dir=str(build / "tfds"), tfds_config="tiny"), tmp_path / "tfds",
      monkeypatch)
  assert isinstance(mem_source, InMemorySource)
  assert "ArrayRecord" in type(tfds_source).__name__  # read from the files, example by example
  for key in ("pretrain_subjects", "val_subjects", "heldout_subjects", "num_train_windows"):
    assert tfds[key] == mem[key], key
  assert len(mem["val_subjects"]) == len(mem["heldout_subjects"]) == 1
  assert mem["num_train_windows"] == 3 * 31  # starts 0, 2, 4, 5, 7, 9, 10, ... 50 of each subject
  assert tfds["config"]["model"]["seg_len"] == mem["config"]["model"]["seg_len"] == 5
  assert tfds["config"]["model"]["num_rois"] == 8
  assert [h["step"] for h in tfds_result.history] == list(range(1, 7))
  np.testing.assert_allclose([h["loss"] for h in tfds_result.history],
                             [h["loss"] for h in mem_result.history], rtol=1e-6)
  assert [e["step"] for e in tfds["eval_history"]] == [3, 6]  # validation from the 'val' split
  np.testing.assert_allclose([e["val/recon_mse"] for e in tfds["eval_history"]],
                             [e["val/recon_mse"] for e in mem["eval_history"]], rtol=1e-5)
  chex.assert_trees_all_close(jax.device_get(nnx.state(tfds_result.model, nnx.Param)),
                              jax.device_get(nnx.state(mem_result.model, nnx.Param)),
                              rtol=1e-6, atol=1e-7)
  assert tfds["eval"].keys() == mem["eval"].keys()  # held-out evaluation from the 'test' split
  for key, value in mem["eval"].items():
    want = value if isinstance(value, str) else pytest.approx(value, rel=1e-5)
    assert tfds["eval"][key] == want, key


def test_tfds_build_must_match_the_data_config(build, tmp_path):
  config = _config(build, tfds_dir=str(build / "tfds"), tfds_config="tiny", stride_frames=5)
  with pytest.raises(ConfigError, match=r"^config\.data\.stride_frames=5 but the TFDS build 'tiny' "
                                        r"in .* has 2; set --config\.data\.stride_frames=2"):
    train_and_evaluate(config, str(tmp_path / "run"))
  config = _config(build, tfds_dir=str(build / "tfds"), tfds_config="tiny")
  config.finetune.enabled = True
  with pytest.raises(ConfigError, match=r"config\.finetune\.enabled needs the subjects in memory"):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
