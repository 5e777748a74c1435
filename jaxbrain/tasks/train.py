"""``train_and_evaluate(config, workdir)``: pretrain BrainMAE, evaluate, optionally fine-tune."""
from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxbrain.data.splits import split_subjects
from jaxbrain.tasks import evaluate, finetune, inputs, pretrain
from jaxtrain import metrics as metrics_lib
from jaxtrain.errors import ConfigError


def check_model_matches_data(config: ml_collections.ConfigDict, data: inputs.FmriData) -> None:
  n = data.subjects[0].num_rois
  seg = inputs.frames_per_segment(config.data, data.subjects)
  for field, want in (("num_rois", n), ("seg_len", seg)):
    if config.model[field] != want:
      raise ConfigError(f"config.model.{field}={config.model[field]} but the data has {want} "
                        f"({'ROIs' if field == 'num_rois' else 'frames per segment of config.data.tau_s'}); "
                        f"set --config.model.{field}={want}")
  if config.data.num_segments > config.model.num_segments:
    raise ConfigError(f"config.data.num_segments={config.data.num_segments} exceeds "
                      f"config.model.num_segments={config.model.num_segments}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the whole experiment; returns (and writes to workdir/summary.json) its summary."""
  t0 = time.perf_counter()
  data = inputs.load_data(config.data)
  check_model_matches_data(config, data)
  # Held-out subjects (reported) first, then validation subjects (periodic evaluation during
  # pretraining, never reported as results) from the rest; with val 0 the split is unchanged.
  holdout = {"heldout": config.data.holdout_subjects,
             "val": int(config.data.get("val_subjects", 0) or 0)}
  split = split_subjects(data.ids, holdout, seed=config.seed)
  index = {sid: i for i, sid in enumerate(data.ids)}
  def arrays(ids, stride=None):
    return inputs.window_arrays(data.select(ids), config.data, stride_frames=stride,
                                subject_index=[index[i] for i in ids])
  seg_len = config.model.seg_len
  train = arrays(split["train"], config.data.stride_frames)
  val_x = arrays(split["val"], config.data.num_segments * seg_len)["x"] if split["val"] else None

  result = pretrain.pretrain(config, workdir, train["x"], val_x)
  sections = {"pretrain_subjects": split["train"], "val_subjects": split["val"],
              "heldout_subjects": split["heldout"], "num_train_windows": int(len(train["x"]))}
  if not result.preempted:
    model = result.model
    ev = {}
    if split["heldout"]:
      test = arrays(split["heldout"], config.data.num_segments * seg_len)  # non-overlapping
      if config.eval.reconstruction:
        ev.update(evaluate.reconstruction_eval(model, test["x"], train["x"], config))
      if config.eval.fingerprint:
        frames = np.array([s.num_frames for s in data.subjects])  # indexed by window "subject"
        ev.update(evaluate.fingerprint_eval(model, arrays(split["heldout"], seg_len), frames,
                                            config))
    if config.eval.interpret and jax.process_index() == 0:
      ev.update(evaluate.interpretability(model, data, workdir, config))
    sections["eval"] = ev
    if config.finetune.enabled:
      sections["finetune"] = finetune.cross_validate(config, workdir, data, nnx.state(model))
  return metrics_lib.write_summary(workdir, config, result, wall_time_s=time.perf_counter() - t0,
                                   **sections)
