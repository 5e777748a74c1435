"""The fMRI benchmark: ``python -m jaxbrain.compare --config=configs/compare.py[:smoke|full] --workdir=DIR``.

Runs every BrainMAE row and every baseline on the same held-out subjects, windows and masks, in
subject-level folds, and writes ``comparison.json``, ``comparison.md`` and ``comparison.png``. The
protocol is in ``configs/compare.py``. The subjects are those of ``config.brainmae.data`` (the
built-in HCP scans by default, or a folder of the user's scans: ``source='folder'``, ``path``,
``tr``, ``resample_tr``, ...), and every model family's rows see them (``family_config``). Every (fold, method) is a cell whose result is saved under
``DIR/cells`` as soon as it is done; a killed comparison resumes without redoing finished cells (and a
model row resumes its training from its last checkpoint).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from jaxbrain.evaluation.comparison_report import FAMILIES, row_family, rows_of
from jaxtrain import cli
from jaxtrain import metrics as metrics_lib


BASELINES = ("roi_mean", "linear_interp", "ridge", "st_ridge")
# Fields of a family's data section that are its own (the windows its model reads); every other
# field (where the subjects come from, their TR and resampling, preprocessing, segment length, the
# synthetic cohort of the labelled tasks) is config.brainmae.data's for every family.
FAMILY_WINDOW_FIELDS = ("num_segments", "stride_frames")


def family_config(config: ml_collections.ConfigDict, family: str) -> ml_collections.ConfigDict:
  """A copy of the settings ``config.<family>`` of a model family, whose data section takes every
  field but ``FAMILY_WINDOW_FIELDS`` from ``config.brainmae.data``: one data section, the
  BrainMAE one, says which subjects every row is trained and scored on (e.g. a user's folder:
  ``--config.brainmae.data.source=folder --config.brainmae.data.path=DIR``)."""
  c = ml_collections.ConfigDict(config[family].to_dict())
  if family != "brainmae":
    shared = config.brainmae.data.to_dict()
    for field in FAMILY_WINDOW_FIELDS:
      shared[field] = c.data[field]
    c.data = ml_collections.ConfigDict(shared)
  return c


def check_config(config: ml_collections.ConfigDict) -> None:
  """Rejects unknown baselines, unknown model families and row lists without a BrainMAE row
  before any work starts."""
  from jaxtrain.errors import ConfigError
  unknown = [b for b in config.baselines if b not in BASELINES]
  if unknown:
    raise ConfigError(f"config.baselines has {unknown}; expected names from {list(BASELINES)}")
  for row in config.rows:
    family = row_family(config, row)
    if family not in FAMILIES or family not in config:
      raise ConfigError(f"config.rows.{row}.name={family!r}: expected a model family with its "
                        f"section in the config, one of {list(FAMILIES)}")
  if not rows_of(config, "brainmae"):
    raise ConfigError("config.rows has no BrainMAE row; expected at least one")
  missing = [r for r in config.reference_rows if r not in config.rows]
  if missing or not len(config.reference_rows):
    raise ConfigError(f"config.reference_rows={tuple(config.reference_rows)}: expected one or more "
                      f"names from config.rows {list(config.rows)}")


def labelled_rows(config: ml_collections.ConfigDict) -> list[str]:
  """The rows whose untrained encoder is scored too and that the labelled tasks pretrain (rows
  are a ConfigDict, whose order is alphabetical: so they are named, not the first)."""
  return list(config.reference_rows)


# ---------------------------------------------------------------------------------------------------
# Folds, windows and masks.

def fold_splits(ids: Sequence[str], protocol: ml_collections.ConfigDict, seed: int
                ) -> list[dict[str, list[str]]]:
  """Per fold {'train', 'val', 'heldout'}: k subject-level folds; the validation subjects are drawn
  from that fold's pretraining subjects, so nothing is chosen on the held-out ones."""
  from jaxbrain.data.splits import kfold_subjects, split_subjects
  out = []
  for f, (rest, heldout) in enumerate(kfold_subjects(ids, int(protocol.folds), seed=seed)):
    part = split_subjects(rest, {"val": int(protocol.val_subjects)}, seed=seed + f)
    out.append({"train": part["train"], "val": part["val"], "heldout": heldout})
  return out


def _masked_windows(x: np.ndarray, protocol: ml_collections.ConfigDict, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Each window repeated ``mask_draws`` times (consecutive) with its own random mask."""
  from jaxbrain.evaluation.reconstruction import random_mask
  draws = int(protocol.mask_draws)
  xr = np.repeat(x, draws, axis=0)
  return xr, random_mask(xr.shape[:3], float(protocol.mask_ratio), seed=seed)


def _per_window(errors: np.ndarray, draws: int) -> np.ndarray:
  return errors.reshape(-1, draws).mean(axis=1)


class FoldData:
  """Everything one fold's cells read: training/validation windows, the held-out evaluation sets
  (native TR and each cross-TR version, with their masks) and the fingerprinting windows; the
  BrainMAE rows' windows as attributes, other families' through ``windows``."""

  def __init__(self, config: ml_collections.ConfigDict, data: Any, split: dict, fold: int):
    from jaxbrain.data.preprocess import resample
    from jaxbrain.evaluation.fingerprint import scan_halves
    from jaxbrain.tasks import inputs
    bc, protocol = config.brainmae, config.protocol
    self.split, self.fold, self._data, self._cache = split, fold, data, {}
    self._index = index = {sid: i for i, sid in enumerate(data.ids)}
    heldout = data.select(split["heldout"])
    self._heldout = {name: heldout if tr is None else [_through_tr(s, tr, resample) for s in heldout]
                     for name, tr in [("native", None)] + [(f"tr{t:g}", float(t))
                                                           for t in config.cross_tr]}
    w = self.windows(bc.data)
    self.train_x, self.val_x, self.groups = w["train_x"], w["val_x"], w["groups"]
    self.mask_seed = seed = int(protocol.mask_seed) + 1000 * fold
    self.val = _masked_windows(self.val_x, protocol, seed + 1)
    self.sets = {name: _masked_windows(x, protocol, seed) for name, x in w["sets"].items()}
    # Fingerprinting: non-overlapping windows of 1, 2, ... segments of the held-out scans.
    seg = inputs.frames_per_segment(bc.data, data.subjects)
    self.fingerprint = {}
    for k in config.fingerprint_segments:
      d = ml_collections.ConfigDict(bc.data.to_dict())
      d.num_segments = int(k)
      a = inputs.window_arrays(heldout, d, stride_frames=int(k) * seg,
                               subject_index=[index[s.id] for s in heldout])
      frames_of = {index[s.id]: s.num_frames for s in heldout}
      parts = scan_halves(a["start"], int(k) * seg, [frames_of[i] for i in a["subject"]])
      keep = parts >= 0
      self.fingerprint[f"{k}seg"] = {"x": a["x"][keep], "subject": a["subject"][keep],
                                     "part": parts[keep]}

  def windows(self, dc: ml_collections.ConfigDict) -> dict:
    """Windows of the data section ``dc``: 'train_x' (every ``dc.stride_frames``), non-overlapping
    'val_x' and held-out 'sets' {name: x}, with 'groups' {name: subject index per window}."""
    from jaxbrain.tasks import inputs
    key = json.dumps(dc.to_dict(), sort_keys=True, default=str)
    if key not in self._cache:
      window = dc.num_segments * inputs.frames_per_segment(dc, self._data.subjects)

      def arrays(subjects, stride):
        return inputs.window_arrays(subjects, dc, stride_frames=stride,
                                    subject_index=[self._index[s.id] for s in subjects])
      sets = {name: arrays(subjects, window) for name, subjects in self._heldout.items()}
      self._cache[key] = {
          "train_x": arrays(self._data.select(self.split["train"]), dc.stride_frames)["x"],
          "val_x": arrays(self._data.select(self.split["val"]), window)["x"],
          "sets": {name: a["x"] for name, a in sets.items()},
          "groups": {name: a["subject"] for name, a in sets.items()}}
    return self._cache[key]


def _through_tr(subject: Any, tr: float, resample: Callable) -> Any:
  """The subject's scan as a scanner at TR ``tr`` would record it, resampled back to its TR."""
  x = subject.timeseries
  back = resample(resample(x, subject.tr, tr), tr, subject.tr)[:, :x.shape[1]]
  return dataclasses.replace(subject, timeseries=back.astype(x.dtype))


def fingerprint_correct(emb: np.ndarray, fp: dict) -> np.ndarray:
  """Per query (second-half window): 1.0 if its subject is identified from the first halves."""
  from jaxbrain.evaluation.fingerprint import fingerprint
  res = fingerprint(emb, fp["subject"], fp["part"], 0, 1, match="mean")
  return (np.asarray(res["predicted"]) == np.asarray(res["true"])).astype(np.float64)


def fingerprint_scores(fd: "FoldData", embed: Callable[[np.ndarray], np.ndarray]) -> dict:
  """{'fp/<k>seg': per-query correctness} of the representation ``embed`` (windows -> rows) on
  each of the fold's fingerprinting sets."""
  return {f"fp/{k}": fingerprint_correct(embed(fp["x"]), fp) for k, fp in fd.fingerprint.items()}


# ---------------------------------------------------------------------------------------------------
# Cells: one method on one fold -> arrays of per-item scores (saved, so a rerun skips them).

def baseline_cells(config: ml_collections.ConfigDict, fd: FoldData) -> dict[str, dict]:
  """Every baseline of ``config.baselines`` fitted on the pretraining subjects, its choices made on
  the validation subjects, scored on every held-out set."""
  from jaxbrain.evaluation import reconstruction as rec
  from jaxbrain.evaluation import st_ridge
  from jaxbrain.tasks.inference import raw_fc
  draws = int(config.protocol.mask_draws)
  ratio = float(config.protocol.mask_ratio)
  fallback = rec.roi_means(fd.train_x)

  def ridge_fit():
    best = rec.choose_ridge(fd.train_x, *fd.val)
    return lambda x, m: rec.ridge_predict(x, m, best), {"lam": best.lam}

  def st_fit():
    model = st_ridge.fit_st_ridge(fd.train_x, val_x=fd.val_x, mask_ratio=ratio,
                                  seed=int(config.protocol.mask_seed))
    return lambda x, m: st_ridge.st_ridge_predict(x, m, model), {"lam": model.lam, "k": model.k}
  fits = {
      "roi_mean": lambda: (lambda x, m: rec.roi_mean(x, m, fd.train_x), {}),
      "linear_interp": lambda: (lambda x, m: rec.linear_interp(x, m, fallback=fallback), {}),
      "ridge": ridge_fit,
      "st_ridge": st_fit,
  }
  # In-sample error on (up to 64 of) the training windows, beside the validation error.
  pick = np.random.default_rng(int(config.seed)).permutation(len(fd.train_x))[:64]
  tx = fd.train_x[np.sort(pick)]
  tm = rec.random_mask(tx.shape[:3], ratio, seed=int(config.protocol.mask_seed) + 7)
  out = {}
  for name in config.baselines:
    predict, chosen = fits[name]()
    vx, vm = fd.val
    cell = {"val_mse": np.float64(rec.masked_mse(predict(vx, vm), vx, vm)),
            "train_mse": np.float64(rec.masked_mse(predict(tx, tm), tx, tm)),
            **{f"chosen_{k}": np.float64(v) for k, v in chosen.items()}}
    for set_name, (x, m) in fd.sets.items():
      cell[f"mse/{set_name}"] = _per_window(rec.masked_mse_per_window(predict(x, m), x, m), draws)
    out[name] = cell
  out["raw_fc"] = fingerprint_scores(fd, raw_fc)
  # Each item's subject, the groups of the bootstrap: held-out windows, then fingerprint queries.
  out["items"] = {**{f"mse/{k}": fd.groups[k] for k in fd.sets},
                  **{f"fp/{k}": fp["subject"][fp["part"] == 1] for k, fp in fd.fingerprint.items()}}
  return out


def row_config(config: ml_collections.ConfigDict, row: str, data: Any) -> ml_collections.ConfigDict:
  """The row's family section (``family_config``: ``config.brainmae`` or ``config.stmae``, the data
  section shared) with the row's model
  overrides, the protocol's evaluation masks and the model shapes of ``data``."""
  from jaxbrain.tasks.inputs import frames_per_segment
  from jaxbrain.tasks.train import with_data_shapes
  c = family_config(config, row_family(config, row))
  c.name = f"{config.name}/{row}"
  c.seed = int(config.seed)
  c.model.update(config.rows[row].to_dict())
  c.eval.mask_ratio = float(config.protocol.mask_ratio)
  c.eval.mask_seed = int(config.protocol.mask_seed)
  return with_data_shapes(c, data.subjects[0].num_rois, frames_per_segment(c.data, data.subjects))


def _pretrained(c: ml_collections.ConfigDict, run_dir: str, train_x: np.ndarray,
                val_x: np.ndarray) -> tuple[Any, int]:
  """(model in eval mode, step): the row pretrained on ``train_x`` (resumed from ``run_dir``'s
  checkpoints), its best checkpoint by the validation metric ``c.train.best_metric``."""
  from jaxbrain.tasks import pretrain
  from jaxtrain import loop
  result = pretrain.pretrain(c, run_dir, train_x, val_x)
  if result.preempted:  # the checkpoint is saved: rerunning the command resumes here
    raise SystemExit(f"preempted while training {run_dir}; rerun the same command to resume")
  model, step = loop.restore_model(c, pretrain.pretrain_task(c), os.path.join(run_dir, "best"))
  model.eval()
  return model, step


def _untrained(c: ml_collections.ConfigDict) -> Any:
  """The encoder pretraining started from (``c.seed``), in eval mode: what pretraining adds."""
  from jaxbrain.tasks.finetune import load_encoder
  model = load_encoder(c, None)
  model.eval()
  return model


def model_cell(config: ml_collections.ConfigDict, row: str, fd: FoldData, run_dir: str,
               data: Any, prior_lam: float | None = None) -> dict:
  """Pretrains a BrainMAE row on the fold's pretraining subjects (early stopping on the validation
  subjects: the best checkpoint by validation reconstruction error), then scores it. A row with a
  linear prior takes ``prior_lam``, the ridge penalty chosen on the validation subjects."""
  from jaxbrain.evaluation.reconstruction import masked_mse_per_window
  from jaxbrain.tasks import inference
  c = row_config(config, row, data)
  if c.model.linear_prior and prior_lam is not None:
    c.model.prior_lam = float(prior_lam)
  model, step = _pretrained(c, run_dir, fd.train_x, fd.val_x)
  draws, bs = int(config.protocol.mask_draws), int(c.eval.batch_size)
  # Training loss (masked MSE on training batches, logged every train.log_every steps) at the best
  # step: with the validation error it shows how much the row overfits its pretraining subjects.
  # Read from the run's metrics.jsonl, which also covers steps done before a resume.
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  logged = [{"loss": r["train/loss"]} for r in records if "train/loss" in r and r["step"] <= step]
  vx, vm = fd.val  # the baselines' validation masks (early stopping used the evaluator's own)
  cell = {"val_mse": np.float64(np.mean(masked_mse_per_window(
              inference.reconstruct(model, vx, vm, bs), vx, vm))),
          "best_step": np.float64(step),
          "train_mse": np.float64(logged[-1]["loss"] if logged else np.nan)}
  for set_name, (x, m) in fd.sets.items():
    recon = inference.reconstruct(model, x, m, bs)
    cell[f"mse/{set_name}"] = _per_window(masked_mse_per_window(recon, x, m), draws)
  kind = c.eval.fingerprint_embedding

  def fingerprints(m):
    return fingerprint_scores(fd, lambda x: inference.embed(m, x, bs, kind))
  cell.update(fingerprints(model))
  if row in labelled_rows(config):
    cell["untrained"] = fingerprints(_untrained(c))
  return cell


def stmae_cell(config: ml_collections.ConfigDict, row: str, fd: FoldData, run_dir: str,
               data: Any) -> dict:
  """Pretrains an ST-MAE row like ``model_cell`` (early stopping on the validation subjects' masked
  FC reconstruction), then scores on its own windows (``config.stmae.data``'s segments) the masked FC
  reconstruction of every held-out set, ``protocol.mask_draws`` masks per window at the model's
  node and window ratios, beside the untrained encoder and the training-mean graph on the same
  masks; and fingerprinting on the benchmark's short windows (``stmae.for_segments``)."""
  from jaxbrain.models.stmae import for_segments
  from jaxbrain.tasks import evaluate, inference
  c = row_config(config, row, data)
  w = fd.windows(c.data)
  model, step = _pretrained(c, run_dir, w["train_x"], w["val_x"])
  draws, bs = int(config.protocol.mask_draws), int(c.eval.batch_size)
  kind = c.eval.fingerprint_embedding

  def errors(m, x, seed, baseline=None):
    x = np.repeat(x, draws, axis=0)
    e = evaluate.fc_reconstruction_errors(m, x, evaluate.fc_masks(len(x), c, seed), bs, baseline)
    return {k: _per_window(v, draws) for k, v in e.items()}

  def scores(m, baseline=None):
    out = {}
    for name, x in w["sets"].items():
      e = errors(m, x, fd.mask_seed, baseline)
      out.update({f"fc_mse/{name}": e["feature_mse"], f"fc_bce/{name}": e["edge_bce"]})
    if baseline is None:
      out.update(fingerprint_scores(
          fd, lambda x: inference.embed(for_segments(m, x.shape[1]), x, bs, kind)))
    return out
  val = errors(model, w["val_x"], fd.mask_seed + 1)
  untrained = _untrained(c)
  return {"best_step": np.float64(step), "val_fc_mse": np.mean(val["feature_mse"]),
          "val_fc_bce": np.mean(val["edge_bce"]), **scores(model),
          "untrained": scores(untrained),
          "mean_graph": scores(model, evaluate.fc_baseline(model, w["train_x"], bs)),
          "items": {f"fc/{name}": g for name, g in w["groups"].items()}}


def cell_key(config: ml_collections.ConfigDict, name: str) -> str:
  """A digest of every setting the cell ``name`` (a row, 'baselines' or 'labelled/<row>') depends
  on: a stored cell with another digest was computed with other settings and is redone."""
  row = name.split("/", 1)[1] if name.startswith("labelled/") else name
  family = row_family(config, row) if row in config.rows else "brainmae"
  parts = {k: config[k] for k in ("seed", "cross_tr", "fingerprint_segments")}
  parts[family] = family_config(config, family)
  parts["protocol"] = {k: v for k, v in config.protocol.items() if k not in ("bootstrap", "level")}
  if name in config.rows:
    parts.update(row=config.rows[name], reference=name in labelled_rows(config))
  elif row in config.rows:
    parts.update(labelled=config.labelled, row=config.rows[row],
                 first=row == labelled_rows(config)[0])
  else:
    parts["baselines"] = config.baselines
  text = json.dumps(ml_collections.ConfigDict(parts).to_dict(), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


class CellStore:
  """Finished cells as ``DIR/cells/<part>/<name>.npz`` (numbers and strings only, never pickles),
  written atomically with the digest of their settings; a cell on disk with the same digest is not
  recomputed."""

  def __init__(self, workdir: str):
    self.root = os.path.join(workdir, "cells")

  def path(self, part: str, name: str) -> str:
    return os.path.join(self.root, part, f"{name}.npz")

  def get(self, part: str, name: str, key: str) -> dict | None:
    p = self.path(part, name)
    if not os.path.exists(p):
      return None
    with np.load(p, allow_pickle=False) as z:
      cell = {k: z[k] for k in z.files}
    if str(cell.pop("_key", "")) != key:
      print(f"compare: {p} was computed with other settings; redoing it", flush=True)
      return None
    return cell

  def put(self, part: str, name: str, arrays: dict, key: str) -> None:
    p = self.path(part, name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    metrics_lib.write_atomic(p, lambda f: np.savez(f, _key=np.asarray(key), **arrays))


def _run_dir(path: str, key: str) -> str:
  """``path`` for a cell's training runs: kept (training resumes from its checkpoints) when it was
  made for the same settings, emptied otherwise."""
  stamp = os.path.join(path, "cell_key.txt")
  if os.path.exists(stamp):
    with open(stamp) as f:
      if f.read().strip() == key:
        return path
  shutil.rmtree(path, ignore_errors=True)
  os.makedirs(path)
  metrics_lib.write_atomic(stamp, lambda f: f.write(key), mode="w")
  return path


def _flatten(cell: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in cell.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}:"))
    else:
      out[f"{prefix}{k}"] = np.asarray(v)
  return out


def _unflatten(arrays: dict) -> dict:
  out: dict = {}
  for k, v in arrays.items():
    *heads, leaf = k.split(":")
    node = out
    for h in heads:
      node = node.setdefault(h, {})
    node[leaf] = v
  return out


# ---------------------------------------------------------------------------------------------------
# The run.

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) the whole comparison; writes and returns comparison.json's content."""
  from jaxbrain.evaluation import comparison_report
  from jaxbrain.tasks import inputs
  t0 = time.perf_counter()
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  store = CellStore(workdir)
  data = inputs.load_data(config.brainmae.data)
  splits = fold_splits(data.ids, config.protocol, int(config.seed))
  rows = list(config.rows)
  tasks = [(f, name) for f in range(len(splits)) for name in ["baselines", *rows]]
  lab_rows = labelled_rows(config) if config.labelled.enabled else []
  progress = metrics_lib.Progress(len(tasks) + len(lab_rows), desc="compare", unit="cell",
                                  every_s=0.0)
  cells: dict[int, dict[str, dict]] = {}
  fold_data: dict[int, FoldData] = {}
  for done, (f, name) in enumerate(tasks):
    key = cell_key(config, name)
    cell = store.get(f"fold{f}", name, key)
    if cell is None:
      if f not in fold_data:
        fold_data = {f: FoldData(config, data, splits[f], f)}  # one fold in memory at a time
      fd = fold_data[f]
      if name == "baselines":
        for method, c in baseline_cells(config, fd).items():
          store.put(f"fold{f}", method, _flatten(c), key)
        cell = {}
      else:
        run_dir = _run_dir(os.path.join(workdir, "runs", f"fold{f}", name), key)
        if row_family(config, name) == "stmae":
          cell = _flatten(stmae_cell(config, name, fd, run_dir, data))
        else:
          ridge = store.get(f"fold{f}", "ridge", cell_key(config, "baselines"))
          cell = _flatten(model_cell(config, name, fd, run_dir, data,
                                     None if ridge is None else float(ridge["chosen_lam"])))
      store.put(f"fold{f}", name, cell, key)
    cells.setdefault(f, {})[name] = _unflatten(cell)
    progress.update(done + 1, force=True)
  for f in cells:  # the baselines' own files
    for method in [*config.baselines, "raw_fc", "items"]:
      cells[f][method] = _unflatten(store.get(f"fold{f}", method, cell_key(config, "baselines")))
  labelled = {}
  for i, row in enumerate(lab_rows):
    key = cell_key(config, f"labelled/{row}")
    cell = store.get("labelled", row, key)
    if cell is None:
      from jaxbrain.tasks.labelled import labelled_cells
      modes = [m for m in config.labelled.modes if i == 0 or not m.startswith("fc_")]
      cell = _flatten(labelled_cells(config, row_config(config, row, data),
                                     _run_dir(os.path.join(workdir, "runs", "labelled", row), key),
                                     modes=modes))
      store.put("labelled", row, cell, key)
    labelled[row] = _unflatten(cell)
    progress.update(len(tasks) + i + 1, force=True)
  summary = comparison_report.summarise(config, splits, cells,
                                        merge_labelled(labelled) if labelled else None, data.ids)
  summary["tr_s"] = float(data.subjects[0].tr)  # the TR every model and baseline saw
  summary["wall_time_s"] = time.perf_counter() - t0
  comparison_report.write(workdir, config, summary)
  return summary


def merge_labelled(cells: dict[str, dict]) -> dict:
  """The labelled cells of several rows as one per target: each row's encoder methods as
  '<row>_<method>' (e.g. 'stmae_pretrained_probe'), the static-FC baselines once."""
  out: dict = {}
  for row, cell in cells.items():
    for target, t in cell.items():
      merged = out.setdefault(target, {**{k: v for k, v in t.items() if k != "predictions"},
                                       "predictions": {}})
      if not np.array_equal(merged["subject"], t["subject"]):
        raise RuntimeError(f"labelled cells of {list(cells)} scored different subjects for {target}")
      for method, p in t["predictions"].items():
        merged["predictions"][method if method.startswith("fc_") else f"{row}_{method}"] = p
  return out


def report(summary: dict) -> None:
  """Prints the Markdown table."""
  from jaxbrain.evaluation import comparison_report
  print(comparison_report.markdown(summary))


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
  return cli.run(train_and_evaluate, argv=argv, report=report, prog="python -m jaxbrain.compare",
                 doc=__doc__)


if __name__ == "__main__":
  sys.exit(main())
