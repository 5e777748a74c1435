"""``train_and_evaluate(config, workdir)``: pretrain BrainMAE or ST-MAE, evaluate, optionally fine-tune;
``load_run(workdir)``: the config and pretrained model of a finished run."""
from __future__ import annotations

import copy
import json
import os
import time

import jax
import ml_collections
from flax import nnx

from jaxbrain.tasks import evaluate, finetune, inputs, pretrain
from jaxtrain import metrics as metrics_lib
from jaxtrain.config import get
from jaxtrain.errors import ConfigError, UserError


def with_data_shapes(config: ml_collections.ConfigDict, num_rois: int, seg_len: int
                     ) -> ml_collections.ConfigDict:
  """A copy of ``config`` whose ``model.num_rois`` and ``model.seg_len``, where 0 (unset), are the
  data's: its ROI count and frames per ``data.tau_s`` segment (``inputs.data_shapes`` for subjects
  in memory). Explicit values must equal them (ConfigError)."""
  config = copy.deepcopy(config)
  for field, want in (("num_rois", num_rois), ("seg_len", seg_len)):
    if config.model[field] == 0:
      config.model[field] = int(want)
    elif config.model[field] != want:
      raise ConfigError(f"config.model.{field}={config.model[field]} but the data has {want} "
                        f"({'ROIs' if field == 'num_rois' else 'frames per segment of config.data.tau_s'}); "
                        f"set --config.model.{field}={want} (or 0 to take it from the data)")
  if config.data.num_segments > config.model.num_segments:
    raise ConfigError(f"config.data.num_segments={config.data.num_segments} exceeds "
                      f"config.model.num_segments={config.model.num_segments}")
  return config


def heldout_eval(model, win: inputs.Windows, config: ml_collections.ConfigDict) -> dict:
  """The held-out subjects' evaluations of ``config.eval``: masked reconstruction (of BOLD for
  BrainMAE, of dynamic FC for ST-MAE) against baselines, and fingerprinting."""
  ev = {}
  seg_len = config.model.seg_len
  if config.eval.reconstruction:
    train_x = win.train_sample(config.eval.baseline_windows, config.eval.mask_seed)
    recon = (evaluate.fc_reconstruction_eval if config.model.name == "stmae"
             else evaluate.reconstruction_eval)
    ev.update(recon(model, win.arrays("heldout", config.data.num_segments * seg_len)["x"], train_x,
                    config))
  if config.eval.fingerprint:
    ev.update(evaluate.fingerprint_eval(model, win.arrays("heldout", seg_len), win.num_frames,
                                        config))
  return ev


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the whole experiment; returns (and writes to workdir/summary.json) its summary, whose
  config has the model shapes taken from the data. Windows come from subjects in memory, or from
  the TFDS build in ``config.data.tfds_dir`` (``inputs.tfds_windows``: its splits decide the
  subjects)."""
  t0 = time.perf_counter()
  if get(config.data, "tfds_dir", ""):
    if config.finetune.enabled:
      raise ConfigError("config.finetune.enabled needs the subjects in memory; it does not work "
                        "with config.data.tfds_dir")
    win = inputs.tfds_windows(config)
  else:
    win = inputs.memory_windows(config, inputs.load_data(config.data))
  config = with_data_shapes(config, win.num_rois, win.seg_len)
  # Held-out subjects are reported; validation subjects are evaluated during pretraining only.
  split = win.splits
  whole = config.data.num_segments * config.model.seg_len  # non-overlapping windows
  val_x = win.arrays("val", whole)["x"] if split["val"] else None

  result = pretrain.pretrain(config, workdir, win.train, val_x)
  sections = {"pretrain_subjects": split["train"], "val_subjects": split["val"],
              "heldout_subjects": split["heldout"], "num_train_windows": len(win.train)}
  if not result.preempted:
    model = result.model
    ev = heldout_eval(model, win, config) if split["heldout"] else {}
    if split["heldout"] and get(config.eval, "random_init_twin", False):
      # The same evaluations of the encoder pretraining started from (config.seed): what it adds.
      twin = finetune.load_encoder(config, None)
      twin.eval()
      ev["random_init"] = heldout_eval(twin, win, config)
    if config.eval.interpret and jax.process_index() == 0:
      ev.update(evaluate.interpretability(model, win.data, workdir, config))
    sections["eval"] = ev
    if config.finetune.enabled:
      sections["finetune"] = finetune.cross_validate(config, workdir, win.data, nnx.state(model))
  return metrics_lib.write_summary(workdir, config, result, wall_time_s=time.perf_counter() - t0,
                                   **sections)


def load_run(workdir: str, which: str = "best") -> tuple[ml_collections.ConfigDict, nnx.Module]:
  """(config, pretrained model in eval mode) of a finished ``train_and_evaluate`` run: the config
  of its ``summary.json`` (model shapes filled in from the data) and its checkpoint: the best one
  by ``train.best_metric`` when ``which='best'`` and the run kept one, else the latest. The model
  is BrainMAE or ST-MAE as the config says; its ``roi_similarity()`` and, for BrainMAE,
  ``roi_attention(layer)`` are the maps of ``evaluate.interpretation_maps``. Raises UserError for a
  folder without summary.json or checkpoint."""
  from jaxtrain import checkpoint as ckpt_lib, loop
  if which not in ("best", "latest"):
    raise ValueError(f"which={which!r}: expected 'best' or 'latest'")
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    raise UserError(f"{workdir}: no summary.json (run train_and_evaluate / python -m "
                    "jaxbrain.main there first)")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f)["config"])
  latest, best = loop.checkpoint_dirs(workdir, config.train)
  folders = [best, latest] if which == "best" else [latest]

  def has_step(folder: str) -> bool:
    if not ckpt_lib.exists(folder):
      return False
    ckpt = ckpt_lib.Checkpointer(folder, keep=None)
    try:
      return ckpt.latest_step() is not None
    finally:
      ckpt.close()
  folder = next((f for f in folders if has_step(f)), None)
  if folder is None:
    raise UserError(f"{workdir}: no checkpoint in {' or '.join(folders)}")
  model, _ = loop.restore_model(config, pretrain.pretrain_task(config), folder)
  model.eval()
  return config, model
