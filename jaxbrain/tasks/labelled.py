"""The benchmark's labelled tasks: a synthetic cohort, pretrained vs random init vs static FC.

One draw of ``jaxbrain.data.synthetic`` gives ``labelled.pretrain_subjects`` subjects whose labels are
never read (pretraining, one of them for early stopping) and ``labelled.labelled_subjects`` labelled
subjects scored by subject-level k-fold cross-validation (``finetune.labelled_predictions``): the
pretrained encoder and a randomly initialised one, each probed and fully fine-tuned, and the static-FC
baselines, all on the same folds.
"""
from __future__ import annotations

import copy
import os
from typing import Sequence

import ml_collections
import numpy as np
from flax import nnx

from jaxbrain.data.splits import kfold_subjects, split_subjects
from jaxbrain.data.synthetic import make_synthetic
from jaxbrain.tasks import finetune, inputs, pretrain
from jaxbrain.tasks.train import with_data_shapes
from jaxtrain import loop


def labelled_cells(config: ml_collections.ConfigDict, row: ml_collections.ConfigDict,
                   workdir: str, modes: Sequence[str] | None = None) -> dict:
  """{column: {'task', 'subject' [n], 'label' [n], 'predictions': {method: [n, C] or [n]}}} for
  every target of ``config.labelled``; ``row`` is the row's config to pretrain (BrainMAE or
  ST-MAE; its model shapes are the cohort's: ``row.data.synthetic``'s ROIs and TR, whatever data
  the row was built for), ``modes`` those to run (default ``config.labelled.modes``)."""
  lc = config.labelled
  cfg = copy.deepcopy(row)
  cfg.data.source = "synthetic"
  syn = cfg.data.synthetic
  syn.update(dict(num_subjects=int(lc.pretrain_subjects) + int(lc.labelled_subjects),
                  length=int(lc.length), seed=int(lc.seed)))
  subjects, labels = make_synthetic(num_subjects=syn.num_subjects, num_rois=syn.num_rois,
                                    num_frames=syn.length, tr=syn.tr,
                                    num_classes=syn.num_classes, seed=syn.seed)
  unlabelled = inputs.FmriData(subjects[:int(lc.pretrain_subjects)])
  data = inputs.FmriData(subjects[int(lc.pretrain_subjects):], labels)
  # The row's recipe on the cohort's shapes: the row's own data (e.g. a user's folder) may have
  # other ROIs or another TR than the synthetic cohort.
  cfg.model.num_rois = cfg.model.seg_len = 0
  cfg = with_data_shapes(cfg, subjects[0].num_rois, inputs.frames_per_segment(cfg.data, subjects))

  split = split_subjects(unlabelled.ids, {"val": 1}, seed=int(cfg.seed))
  window = cfg.data.num_segments * cfg.model.seg_len
  train_x = inputs.window_arrays(unlabelled.select(split["train"]), cfg.data,
                                 stride_frames=cfg.data.stride_frames)["x"]
  val_x = inputs.window_arrays(unlabelled.select(split["val"]), cfg.data, stride_frames=window)["x"]
  run_dir = os.path.join(workdir, "pretrain")
  result = pretrain.pretrain(cfg, run_dir, train_x, val_x)
  if result.preempted:
    raise SystemExit(f"preempted while training {run_dir}; rerun the same command to resume")
  model, _ = loop.restore_model(cfg, pretrain.pretrain_task(cfg), os.path.join(run_dir, "best"))
  states = {"pretrained": nnx.state(model), "random_init": None}

  out = {}
  for target in lc.targets:
    column, task = finetune.parse_target(target)
    y = data.labels.values(column, data.ids, task=task)
    folds = kfold_subjects(data.ids, int(lc.folds), seed=int(cfg.seed),
                           labels=y if task == "classification" else None)
    r = finetune.labelled_predictions(cfg, workdir, data, states, folds, target,
                                      modes=tuple(lc.modes if modes is None else modes))
    out[column] = {"task": task, "subject": np.asarray(r["subjects"]), "label": np.asarray(r["y"]),
                   "predictions": {m.replace("/", "_"): np.asarray(p)
                                   for m, p in r["predictions"].items()}}
  return out
