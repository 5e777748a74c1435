"""Out-of-fold predictions on labelled subjects (jaxbrain.tasks.finetune): the probe, the FC
baselines' fold wiring, fine-tuning through the engine, metrics and the CV summary."""
import os

import jax
import numpy as np
import pytest
from flax import nnx

from jaxbrain import models
from jaxbrain.data.splits import kfold_subjects
from jaxbrain.data.synthetic import make_synthetic
from jaxbrain.data.validation import DataError
from jaxbrain.evaluation import fc_baselines
from jaxbrain.tasks import finetune
from jaxbrain.tasks.inputs import FmriData, window_arrays
from jaxtrain.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_MODEL = ["model.num_rois=8", "model.seg_len=21", "model.embed_dim=16", "model.num_heads=2",
              "model.decoder_dim=16", "model.decoder_heads=2", "model.tse_depth=1",
              "model.encoder_depth=1", "eval.batch_size=16"]


def _setup(num_subjects=20, frames=120, overrides=()):
  config = load_config(os.path.join(ROOT, "configs/brainmae.py:synthetic"),
                       TINY_MODEL + list(overrides))
  subjects, labels = make_synthetic(num_subjects, 8, frames, seed=0)
  return config, FmriData(subjects, labels)


def _class_folds(data, k=5):
  y = data.labels.values("class", data.ids, task="classification")
  return kfold_subjects(data.ids, k, seed=0, labels=y), y


def test_probe_decides_as_well_as_it_ranks(tmp_path, monkeypatch):
  # The failure the probe had: embeddings with a large common component and a tiny class
  # direction, stratified folds whose training majority is the test minority. An under-trained
  # head predicted the training majority everywhere (accuracy 0.42 with AUROC 0.92).
  config, data = _setup()
  folds, y = _class_folds(data)
  windows = window_arrays(data.select(sorted(data.ids)), config.data)
  rng = np.random.default_rng(0)
  direction = rng.standard_normal(16)
  direction /= np.linalg.norm(direction)
  common = 8.0 * rng.standard_normal(16) / 4.0
  label = y[np.argsort(data.ids)][windows["subject"]]
  feats = (common + 0.04 * (2 * label[:, None] - 1) * direction
           + 0.01 * rng.standard_normal((len(label), 16)))

  def fake_embed(model, x, batch_size, kind="pooled"):
    assert kind == "pooled" and len(x) == len(feats)
    return feats.astype(np.float32)
  monkeypatch.setattr(finetune.inference, "embed", fake_embed)
  out = finetune.labelled_predictions(config, str(tmp_path), data, {"random_init": None}, folds,
                                      "class:classification", modes=["probe"])
  m = finetune.method_metrics(out)["random_init/probe"]
  assert m["auroc"] == 1.0 and m["accuracy"] == 1.0 and m["balanced_accuracy"] == 1.0
  assert all(i["inner_cv"] for i in out["info"]["random_init/probe"])


def test_fc_baselines_on_the_folds_never_see_the_test_subjects(tmp_path, monkeypatch):
  config, data = _setup()
  folds, _ = _class_folds(data)
  calls = []
  real = fc_baselines.fit_predict

  def spy(kind, x_train, y_train, x_test, task, **kw):
    p, info = real(kind, x_train, y_train, x_test, task, **kw)
    calls.append((x_train.copy(), info))
    return p, info
  monkeypatch.setattr(fc_baselines, "fit_predict", spy)
  out = finetune.labelled_predictions(config, str(tmp_path), data, {}, folds,
                                      "class:classification", modes=["fc_linear", "fc_mlp"])
  # Every subject once, fold by fold, with its label; probabilities per subject.
  assert sorted(out["subjects"]) == sorted(data.ids)
  assert out["subjects"] == [s for _, te in folds for s in sorted(te)]
  want_y = data.labels.values("class", out["subjects"], task="classification")
  np.testing.assert_array_equal(out["y"], want_y)
  assert [int((out["fold"] == k).sum()) for k in range(5)] == [len(te) for _, te in folds]
  for name in ("fc_linear", "fc_mlp"):
    assert out["predictions"][name].shape == (20, 2) and len(out["info"][name]) == 5
  # Fold 0's training features are the training subjects' FC, and poisoning its test subjects'
  # series changes neither them nor the penalty its inner CV chose.
  fc = fc_baselines.subject_fc(data.select(sorted(folds[0][0])), config.data)
  np.testing.assert_allclose(calls[0][0], fc, rtol=0, atol=0)
  first = calls[0]
  test0 = set(folds[0][1])
  for s in data.subjects:
    if s.id in test0:
      s.timeseries[:] = np.random.default_rng(1).standard_normal(s.timeseries.shape) * 1e3
  calls.clear()
  finetune.labelled_predictions(config, str(tmp_path), data, {}, folds[:1],
                                "class:classification", modes=["fc_linear"])
  np.testing.assert_array_equal(calls[0][0], first[0])
  assert calls[0][1]["value"] == first[1]["value"]
  np.testing.assert_array_equal(calls[0][1]["train_pred"], first[1]["train_pred"])


def test_full_finetuning_and_probe_per_encoder_state(tmp_path):
  config, data = _setup(6, 160, ["finetune.steps=2", "finetune.batch_size=8",
                                 "optim.warmup_steps=0"])
  y = data.labels.values("score", data.ids, task="regression")
  folds = kfold_subjects(data.ids, 2, seed=0)
  pretrained = nnx.state(models.family(config.model).build(config.model, rngs=nnx.Rngs(7)))
  probes = finetune.labelled_predictions(config, str(tmp_path), data,
                                         {"pretrained": pretrained, "random_init": None}, folds,
                                         "score:regression", modes=["probe"])
  assert set(probes["predictions"]) == {"pretrained/probe", "random_init/probe"}
  assert not np.allclose(probes["predictions"]["pretrained/probe"],
                         probes["predictions"]["random_init/probe"])
  out = finetune.labelled_predictions(config, str(tmp_path), data, {"random_init": None}, folds,
                                      "score:regression", modes=["full"])
  pred = out["predictions"]["random_init/full"]
  assert pred.shape == (6,) and np.all(np.isfinite(pred))
  # Fine-tuning predictions are in the target's units (standardised targets mapped back).
  assert abs(np.mean(pred) - y.mean()) < 3 * y.std()
  assert os.path.isdir(tmp_path / "finetune" / "score" / "random_init" / "full" / "fold_1")
  metrics = finetune.method_metrics(out, per_fold=True)["random_init/full"]
  assert len(metrics) == 2 and set(metrics[0]) == {"mae", "pearson_r"}


def test_fresh_encoder_is_the_one_fine_tuning_starts_from():
  config, _ = _setup()
  fresh = jax.device_get(nnx.state(finetune.load_encoder(config, None), nnx.Param))
  model = models.family(config.model).build_for_prediction(config.model, 2,
                                                           rngs=nnx.Rngs(config.seed))
  jax.tree.map(np.testing.assert_array_equal, fresh,
               jax.device_get(nnx.state(model.encoder, nnx.Param)))


def test_cross_validate_reports_the_configured_modes(tmp_path):
  config, data = _setup()
  config.finetune.modes = ("fc_linear",)
  out = finetune.cross_validate(config, str(tmp_path), data, None)
  assert set(out) == {"class", "score"}
  assert set(out["class"]) == {"fc_linear"} and set(out["score"]) == {"fc_linear"}
  assert set(out["class"]["fc_linear"]) == {"accuracy", "balanced_accuracy", "auroc", "f1"}
  assert set(out["score"]["fc_linear"]) == {"mae", "pearson_r"}
  assert len(out["class"]["fc_linear"]["accuracy"]["folds"]) == config.finetune.folds


def test_prediction_metrics_and_bad_input(tmp_path):
  m = finetune.prediction_metrics("classification", np.array([0, 1, 1, 1]),
                                  np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]))
  assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.5 * (1 + 2 / 3) and m["auroc"] == 1
  r = finetune.prediction_metrics("regression", np.array([1.0, 2.0, 3.0]), np.full(3, 2.0))
  assert r["mae"] == pytest.approx(2 / 3) and np.isnan(r["pearson_r"])
  config, data = _setup()
  folds, _ = _class_folds(data)
  with pytest.raises(ConfigError, match="svm"):
    finetune.labelled_predictions(config, str(tmp_path), data, {}, folds, "class:classification",
                                  modes=["svm"])
  again = [s for s in folds[1][0] if s not in folds[0][1]]
  overlapping = [folds[0], (again, folds[0][1])]
  with pytest.raises(DataError, match="tested in an earlier fold"):
    finetune.labelled_predictions(config, str(tmp_path), data, {}, overlapping,
                                  "class:classification", modes=["fc_linear"])
