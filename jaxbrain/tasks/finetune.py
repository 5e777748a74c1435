"""Labelled subjects: out-of-fold predictions by subject-level k-fold CV, and their summary.

Methods (``MODES``), each giving one prediction per test subject (class probabilities or a value):

  full       fine-tuning of the whole BrainMAEForPrediction on the engine (``loop.train``) with
             the training subjects' windows (``config.finetune.steps``, ``batch_size``, ``lr``);
             the test windows' predictions (class probabilities) are averaged per subject.
  probe      frozen-encoder linear probe: L2 logistic / ridge regression on the pooled embeddings
             of each subject's windows, averaged per subject, features standardised and the
             penalty chosen by an inner CV on the training subjects
             (``fc_baselines.fit_predict('linear')``).
  fc_linear  the same estimator on static FC (``jaxbrain.evaluation.fc_baselines``).
  fc_mlp     a one-hidden-layer MLP on static FC, its L2 penalty chosen the same way.

Why the probe is not a head trained on the engine: the pooled embeddings share a large common
component (norm ~8 after the head's LayerNorm) while subjects differ by ~0.06 and the classes by
~0.04, and a LayerNorm (per-window, not per-feature) does not change that. A linear head trained
with Adam (lr 1e-2, 300 steps) then learns the class prior through that common component and
almost nothing else: on the synthetic cohort (24 subjects, 5 stratified folds) every test subject
got the training folds' majority class (train loss 0.69 = ln 2), so accuracy was 0.42 (the test
folds' minority, 2 of 5 in four folds, 2 of 4 in one) while the tiny feature term still ranked
subjects (AUROC 0.92). 3000 steps gave 0.96; the standardised, inner-CV-penalised logistic
regression gives 1.00 with no step count to tune.
"""
from __future__ import annotations

import os
import time
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from sklearn.metrics import balanced_accuracy_score

from jaxtrain.data import InMemorySource, make_loader
from jaxbrain.data.splits import kfold_subjects
from jaxbrain.data.validation import DataError
from jaxbrain.evaluation import cv, fc_baselines, metrics
from jaxbrain import models
from jaxbrain.tasks import inference
from jaxbrain.tasks.inputs import FmriData, window_arrays
from jaxtrain import loop
from jaxtrain.errors import ConfigError
from jaxtrain.task import Task

TASKS = ("classification", "regression")
MODES = ("full", "probe", "fc_linear", "fc_mlp")
ENCODER_MODES = ("full", "probe")  # run once per encoder state; the FC baselines run once


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
    out, penalty = model(batch["x"], rngs=nnx.Rngs(dropout=rng), with_penalty=True)
    if task == "classification":
      loss = optax.softmax_cross_entropy_with_integer_labels(out, batch["label"]).mean()
      return loss + penalty, {"accuracy": jnp.mean(jnp.argmax(out, -1) == batch["label"]),
                              "penalty": penalty}
    return jnp.mean(jnp.square(out[:, 0] - batch["label"])) + penalty, {"penalty": penalty}
  return loss_fn


def load_encoder(config: ml_collections.ConfigDict, state: nnx.State | None) -> nnx.Module:
  """The encoder (``config.model``) holding ``state``; for None, freshly initialised with
  ``config.seed``: the encoder a prediction model built with that seed starts from."""
  encoder = models.family(config.model).build(config.model, rngs=nnx.Rngs(config.seed))
  if state is not None:
    nnx.update(encoder, state)
  return encoder


def _per_subject(values: np.ndarray, subject: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(sorted unique subject indices, mean of ``values`` over each subject's rows)."""
  ids = np.unique(subject)
  return ids, np.stack([values[subject == s].mean(0) for s in ids])


def finetune_fold(config: ml_collections.ConfigDict, workdir: str, encoder_state: nnx.State,
                  train: dict[str, np.ndarray], test: dict[str, np.ndarray], task: str,
                  num_outputs: int, mode: str = "full") -> tuple[dict, nnx.Module]:
  """Trains on ``train`` windows with the engine: the whole model (``mode='full'``) or, with the
  encoder frozen, its head alone (``'probe'``: not the reported probe, see the module docstring).

  Returns ({'subject': sorted subject indices of ``test``, 'pred': per-subject class probabilities
  [n, C] or values [n]}, the trained model); window predictions are averaged per subject.
  """
  if mode not in ENCODER_MODES:
    raise ConfigError(f"finetune mode {mode!r}: expected one of {ENCODER_MODES}")
  ft = config.finetune
  probe = mode == "probe"  # frozen encoder: no gradient, no optimizer state, bit-for-bit kept
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
  if task == "classification":
    subjects, pred = _per_subject(np.asarray(jax.nn.softmax(out, axis=-1)), test["subject"])
  else:
    subjects, pred = _per_subject(out[:, 0] * sd + mu, test["subject"])
  return {"subject": subjects, "pred": pred.astype(np.float64)}, result.model


def _check_folds(folds: Sequence[tuple[Sequence[str], Sequence[str]]], known: set[str]) -> None:
  tested: set[str] = set()
  for k, (train_ids, test_ids) in enumerate(folds):
    unknown = (set(train_ids) | set(test_ids)) - known
    if unknown:
      raise DataError(f"fold {k}: unknown subject ids {sorted(unknown)[:5]}")
    if set(train_ids) & set(test_ids):
      raise DataError(f"fold {k}: subjects {sorted(set(train_ids) & set(test_ids))[:5]} are in "
                      "both train and test")
    if tested & set(test_ids):
      raise DataError(f"fold {k}: subjects {sorted(tested & set(test_ids))[:5]} are tested in an "
                      "earlier fold too")
    tested |= set(test_ids)


def labelled_predictions(config: ml_collections.ConfigDict, workdir: str, data: FmriData,
                         encoder_states: Mapping[str, nnx.State | None],
                         folds: Sequence[tuple[Sequence[str], Sequence[str]]], target: str,
                         modes: Sequence[str] | None = None) -> dict:
  """Out-of-fold predictions of every method for one ``target`` ('column:task') on ``folds``
  ([(train_ids, test_ids)], e.g. ``kfold_subjects``, stratified for classification).

  ``encoder_states``: name -> encoder state (None: a fresh encoder, ``config.seed``); the encoder
  modes ('full', 'probe') run for each, as method ``'<name>/<mode>'``; 'fc_linear' and 'fc_mlp'
  run once. ``modes``: a subset of ``MODES`` (default all). ``config.model`` must have the data's
  ``num_rois`` and ``seg_len`` (as the config of ``train_and_evaluate`` has). Full fine-tuning
  costs one engine run per state and fold (``config.finetune.steps`` x ``batch_size`` windows,
  plus the step's compilation, which JAX's persistent compilation cache shares between folds).
  Returns a dict:

    column, task, num_classes (None for regression)
    subjects   [n] test subject ids, fold by fold (each once)
    fold       int [n], the outer fold that tested each subject
    y          [n] labels (int classes or float values)
    predictions  method -> class probabilities [n, C] or values [n], aligned with ``subjects``
    info       method -> one dict per fold ({'param', 'value', 'inner_cv'}: the chosen penalty;
               'full': {})
    time_s     method -> wall seconds over all folds (the probe's with its embedding, the FC
               baselines' with the FC features)

  ``method_metrics`` and ``prediction_metrics`` score them (per fold, pooled, or resampled).
  """
  column, task = parse_target(target)
  modes = tuple(MODES if modes is None else modes)
  bad = [m for m in modes if m not in MODES]
  if bad:
    raise ConfigError(f"finetune modes {bad}: expected a subset of {MODES}")
  if data.labels is None:
    raise ConfigError("fine-tuning needs labels: set config.data.labels_csv (or use the synthetic "
                      "source, which has 'class' and 'score')")
  _check_folds(folds, set(data.ids))
  ids = sorted({s for tr, te in folds for s in (*tr, *te)})
  pos = {sid: i for i, sid in enumerate(ids)}
  y_all = data.labels.values(column, ids, task=task)
  num_classes = int(y_all.max()) + 1 if task == "classification" else None
  subjects = [s for _, te in folds for s in sorted(te)]
  fold_of = np.concatenate([np.full(len(te), k, np.int32) for k, (_, te) in enumerate(folds)])
  order = np.asarray([pos[s] for s in subjects])
  out = {"column": column, "task": task, "num_classes": num_classes, "subjects": subjects,
         "fold": fold_of, "y": y_all[order], "predictions": {}, "info": {}, "time_s": {}}
  # Windows of every subject once; a window's "subject" is its subject's index in ``ids``.
  windows = None
  if set(modes) & set(ENCODER_MODES) and encoder_states:
    windows = window_arrays(data.select(ids), config.data, labels=y_all,
                            subject_index=list(range(len(ids))))

  def run(name, fit):
    """fit(k, train_idx, test_idx) -> (predictions for test_idx in order, info)."""
    t0 = time.perf_counter()
    shape = (len(subjects), num_classes) if task == "classification" else (len(subjects),)
    pred, info, start = np.zeros(shape), [], 0
    for k, (train_ids, test_ids) in enumerate(folds):
      tr = np.asarray([pos[s] for s in sorted(train_ids)])
      te = np.asarray([pos[s] for s in sorted(test_ids)])
      p, i = fit(k, tr, te)
      pred[start:start + len(te)] = p
      info.append(i)
      start += len(te)
    out["predictions"][name], out["info"][name] = pred, info
    out["time_s"][name] = time.perf_counter() - t0

  def estimator_fit(kind, features):
    def fit(k, tr, te):
      p, info = fc_baselines.fit_predict(kind, features[tr], y_all[tr], features[te], task,
                                         num_classes=num_classes, seed=config.seed)
      return p, {key: info[key] for key in ("param", "value", "inner_cv")}
    return fit

  for state_name, state in (encoder_states.items() if windows is not None else ()):
    encoder = load_encoder(config, state)
    state = nnx.state(encoder)
    if "probe" in modes:
      t0 = time.perf_counter()
      emb = inference.embed(encoder, windows["x"], config.eval.batch_size, kind="pooled")
      _, subject_emb = _per_subject(np.asarray(emb, np.float64), windows["subject"])
      embed_s = time.perf_counter() - t0
      run(f"{state_name}/probe", estimator_fit("linear", subject_emb))
      out["time_s"][f"{state_name}/probe"] += embed_s
    if "full" in modes:
      def fit_full(k, tr, te, state=state, state_name=state_name):
        train = {f: v[np.isin(windows["subject"], tr)] for f, v in windows.items()}
        test = {f: v[np.isin(windows["subject"], te)] for f, v in windows.items()}
        res, _ = finetune_fold(config, os.path.join(workdir, "finetune", column, state_name,
                                                    "full", f"fold_{k}"),
                               state, train, test, task, num_classes or 1, "full")
        assert np.array_equal(res["subject"], te)  # both ascending
        return res["pred"], {}
      run(f"{state_name}/full", fit_full)
  if "fc_linear" in modes or "fc_mlp" in modes:
    t0 = time.perf_counter()
    fc = fc_baselines.subject_fc(data.select(ids), config.data)
    fc_s = time.perf_counter() - t0
    for mode, kind in (("fc_linear", "linear"), ("fc_mlp", "mlp")):
      if mode in modes:
        run(mode, estimator_fit(kind, fc))
        out["time_s"][mode] += fc_s
  return out


def prediction_metrics(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
  """Classification (``pred`` [n, C] probabilities): accuracy, balanced_accuracy, auroc, f1;
  regression (``pred`` [n]): mae, pearson_r. A metric undefined on these subjects (AUROC with one
  class, r with constant predictions) is NaN."""
  y, pred = np.asarray(y), np.asarray(pred)
  if task == "classification":
    label = np.argmax(pred, axis=1)
    out = {"accuracy": metrics.accuracy(y, label),
           "balanced_accuracy": float(balanced_accuracy_score(y, label)),
           "f1": metrics.macro_f1(y, label, num_classes=pred.shape[1])}
    present = np.unique(y)
    out["auroc"] = metrics.auroc(y, pred) if len(present) > 1 else float("nan")
    return out
  r = metrics.pearson_r(y, pred) if np.ptp(pred) > 0 and np.ptp(y) > 0 else float("nan")
  return {"mae": metrics.mae(y, pred), "pearson_r": r}


def method_metrics(result: dict, per_fold: bool = False) -> dict:
  """``labelled_predictions`` output -> {method: metrics over all its subjects}; with ``per_fold``,
  {method: [metrics of fold 0, fold 1, ...]}."""
  task, y, fold = result["task"], result["y"], result["fold"]
  out = {}
  for name, pred in result["predictions"].items():
    if per_fold:
      out[name] = [prediction_metrics(task, y[fold == k], pred[fold == k])
                   for k in range(int(fold.max()) + 1)]
    else:
      out[name] = prediction_metrics(task, y, pred)
  return out


def cross_validate(config: ml_collections.ConfigDict, workdir: str, data: FmriData,
                   encoder_state: nnx.State) -> dict:
  """k-fold subject-level CV for every target and mode of ``config.finetune`` with the pretrained
  encoder; returns {column: {mode: {metric: mean/std/folds}}}."""
  if data.labels is None:
    raise ConfigError("fine-tuning needs labels: set config.data.labels_csv (or use the synthetic "
                      "source, which has 'class' and 'score')")
  ft = config.finetune
  results = {}
  for target in ft.targets:
    column, task = parse_target(target)
    y = data.labels.values(column, data.ids, task=task)
    folds = kfold_subjects(data.ids, ft.folds, seed=config.seed,
                           labels=y if task == "classification" else None)
    res = labelled_predictions(config, workdir, data, {"pretrained": encoder_state}, folds, target,
                               modes=ft.modes)
    per_fold = method_metrics(res, per_fold=True)
    results[column] = {name.removeprefix("pretrained/"): cv.aggregate_folds(m)
                       for name, m in per_fold.items()}
  return results
