"""Fine-tuning (full) and frozen linear probes with k-fold cross-validation by subject."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxtrain.data import InMemorySource, make_loader
from jaxbrain.data.splits import kfold_subjects
from jaxbrain.evaluation import cv, metrics
from jaxbrain import models
from jaxbrain.tasks import inference
from jaxbrain.tasks.inputs import FmriData, window_arrays
from jaxtrain import loop
from jaxtrain.errors import ConfigError
from jaxtrain.task import Task

TASKS = ("classification", "regression")


def parse_target(text: str) -> tuple[str, str]:
  """'column:task' -> (column, task)."""
  column, _, task = text.partition(":")
  if task not in TASKS:
    raise ConfigError(f"config.finetune.targets entry {text!r}: expected 'column:task' with task "
                      f"in {TASKS}")
  return column, task


def _loss_fn(task: str):
  def loss_fn(model, batch, rng, step):
    del step
    out = model(batch["x"], rngs=nnx.Rngs(dropout=rng))
    if task == "classification":
      loss = optax.softmax_cross_entropy_with_integer_labels(out, batch["label"]).mean()
      return loss, {"accuracy": jnp.mean(jnp.argmax(out, -1) == batch["label"])}
    return jnp.mean(jnp.square(out[:, 0] - batch["label"])), {}
  return loss_fn


def finetune_fold(config: ml_collections.ConfigDict, workdir: str, encoder_state: nnx.State,
                  train: dict[str, np.ndarray], test: dict[str, np.ndarray], task: str,
                  num_outputs: int, mode: str) -> tuple[dict, nnx.Module]:
  """Trains a head (probe) or the whole model (full) on ``train`` windows; returns subject-level
  test metrics (window predictions averaged per subject) and the trained model."""
  ft = config.finetune
  # A probe freezes the encoder: no gradient, no optimizer state, bit-for-bit as pretrained.
  probe = mode == "probe"
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.train.update(dict(steps=ft.steps, batch_size=ft.batch_size, checkpoint_every=ft.steps,
                        eval_every=0, best_metric=""))
  cfg.optim.update(dict(lr=ft.probe_lr if probe else ft.lr,
                        warmup_steps=min(cfg.optim.warmup_steps, ft.steps // 10),
                        weight_decay=0.0 if probe else cfg.optim.weight_decay,
                        frozen=("^encoder/",) if probe else ()))
  mu, sd = 0.0, 1.0
  if task == "regression":  # standardised targets (training statistics), predictions mapped back
    mu, sd = float(train["label"].mean()), float(train["label"].std()) or 1.0
    train = dict(train, label=((train["label"] - mu) / sd).astype(np.float32))

  def model_fn(rngs):
    model = models.family(cfg.model).build_for_prediction(cfg.model, num_outputs, rngs=rngs)
    nnx.update(model.encoder, encoder_state)
    return model

  it = make_loader(InMemorySource({"x": train["x"], "label": train["label"]}),
                   global_batch_size=ft.batch_size, seed=config.seed, fields=("x", "label"))
  result = loop.train(config=cfg, workdir=workdir, train_iter=it,
                      task=Task(model=model_fn, loss=_loss_fn(task)))
  out = inference.predict(result.model, test["x"], config.eval.batch_size)
  subjects = np.unique(test["subject"])
  per_subject = np.stack([out[test["subject"] == s].mean(0) for s in subjects])
  y = np.asarray([test["label"][test["subject"] == s][0] for s in subjects])
  if task == "classification":
    scores = np.asarray(jax.nn.softmax(per_subject, axis=-1))
    return metrics.classification_metrics(y, scores), result.model
  return metrics.regression_metrics(y, per_subject[:, 0] * sd + mu), result.model


def cross_validate(config: ml_collections.ConfigDict, workdir: str, data: FmriData,
                   encoder_state: nnx.State) -> dict:
  """k-fold subject-level CV for every target and mode; returns {target: {mode: mean/std}}."""
  if data.labels is None:
    raise ConfigError("fine-tuning needs labels: set config.data.labels_csv (or use the synthetic "
                      "source, which has 'class' and 'score')")
  ft = config.finetune
  results = {}
  for target in ft.targets:
    column, task = parse_target(target)
    y = data.labels.values(column, data.ids, task=task)
    num_outputs = int(y.max()) + 1 if task == "classification" else 1
    folds = kfold_subjects(data.ids, ft.folds, seed=config.seed,
                           labels=y if task == "classification" else None)
    index = {sid: i for i, sid in enumerate(data.ids)}
    results[column] = {}
    for mode in ft.modes:
      fold_metrics = []
      for k, (train_ids, test_ids) in enumerate(folds):
        def arrays(ids):
          return window_arrays(data.select(ids), config.data, labels=y[[index[i] for i in ids]],
                               subject_index=[index[i] for i in ids])
        train, test = arrays(train_ids), arrays(test_ids)
        m, _ = finetune_fold(config, os.path.join(workdir, "finetune", column, mode, f"fold_{k}"),
                          encoder_state, train, test, task, num_outputs, mode)
        fold_metrics.append(m)
      results[column][mode] = cv.aggregate_folds(fold_metrics)
  return results
