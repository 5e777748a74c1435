"""``train_and_evaluate(config, workdir)``: AdaFocusV2 on the shared engine, then evaluation.

Training: the two-pass loss (policy patches and random patches) under SGD with per-module learning
rates; the validation split is evaluated every ``train.eval_every`` steps (best checkpoint by
``train.best_metric``). After training, on the test split: top-1 (or mAP) at every step, the
early-exit curve (thresholds fitted on the validation split, reported on the test split) and, on
the built-in dataset, how often the patches contain the moving digit.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxtrain import loop
from jaxtrain import metrics as metrics_lib
from jaxtrain.data import make_loader
from jaxtrain.errors import ConfigError, DataError
from jaxtrain.inference import batched_apply
from jaxtrain.task import Evaluator, Task
from jaxvision import early_exit
from jaxvision.data import builtin
from jaxvision.data.sources import VideoClips
from jaxvision.data.transforms import eval_points
from jaxvision.models import adafocus_v2 as afv2
from jaxvision.models import crop as crop_lib


# ------------------------------------------------------------------------------------------- data

def _clips(config: ml_collections.ConfigDict, split: str, train: bool, epochs: int = 1
           ) -> VideoClips | None:
  d, m = config.data, config.model
  common = dict(num_frames=m.num_frames, train=train, seed=config.seed, input_size=m.image_size,
                epochs=epochs, flip=bool(d.get("flip", True)))
  if d.source == "builtin":
    meta = builtin.load_meta(d.dir)
    return builtin.clips(d.dir, split, **common) if meta["splits"].get(split) else None
  if d.source == "list":
    path = d.get(f"{split}_list", "")
    if not path:
      return None
    return VideoClips(path, root=d.root or None, template=d.template, num_classes=m.num_classes,
                      multi_label=bool(d.multilabel), **common)
  raise ConfigError(f"config.data.source={d.source!r}: expected 'builtin' or 'list'")


def ensure_builtin(config: ml_collections.ConfigDict) -> None:
  """Builds the built-in dataset into ``config.data.dir`` on first use (one process builds); a
  folder built with other settings than ``config.data.builtin`` is an error, not silently used."""
  d = config.data
  if d.source != "builtin":
    return
  if os.path.exists(os.path.join(d.dir, "meta.json")):
    meta, want = builtin.load_meta(d.dir), dict(d.builtin)
    size = int(want.get("size", meta["size"]))
    asked = {"splits": {s: int(want[s]) for s in ("train", "val", "test") if int(want.get(s, 0))},
             "frames": int(want.get("frames", meta["frames"])), "size": size,
             "seed": int(want.get("seed", meta["seed"])),
             "digit_size": [round(f * size) for f in want.get("digit_size", builtin.DIGIT_SIZE)]}
    built = {k: meta.get(k) for k in asked}
    if built != asked:
      raise DataError(f"{d.dir}: built with {built}, but config.data.builtin asks for {asked}; "
                      "delete the folder (it is rebuilt) or set config.data.dir elsewhere")
    return
  if jax.process_index() == 0:
    print(f"building the built-in video dataset into {d.dir} ...", flush=True)
    builtin.build(d.dir, **dict(d.builtin))
  from jaxtrain import distributed
  distributed.barrier("built-in dataset")


class FramesView:
  """``frames`` of a clip source as a lazily read array: ``len`` and slices [i:j] (what
  ``batched_apply`` reads), so evaluation never holds a whole split in memory."""

  def __init__(self, clips: VideoClips):
    self.clips = clips

  def __len__(self) -> int:
    return len(self.clips)

  def __getitem__(self, index: slice) -> np.ndarray:
    return np.stack([self.clips[i]["frames"] for i in range(*index.indices(len(self)))])


def labels_of(clips: VideoClips) -> np.ndarray:
  return np.stack([clips.label(v) for v in range(clips.num_videos)])


def predict(model, clips: VideoClips, batch_size: int, actions: np.ndarray | None = None
            ) -> dict[str, np.ndarray]:
  """Per-step logits [N, T, C], per-frame global-head logits and patch positions [N, T, 2]
  (model frame order), eval mode; ``actions`` replaces the policy's patch positions."""
  arrays = (FramesView(clips),) + (() if actions is None else (actions.astype(np.float32),))
  return batched_apply(model, _outputs, arrays, batch_size)


def _outputs(model, frames, actions=None) -> dict:
  """Module level, so that periodic evaluations reuse one compiled program."""
  out = model(frames, actions=actions)
  return {k: out[k] for k in ("logits", "global_logits", "actions") if k in out}


def _score(logits: np.ndarray, labels: np.ndarray, multilabel: bool) -> float:
  return early_exit.score(logits, labels, "map" if multilabel else "top1")


def val_evaluator(config: ml_collections.ConfigDict, clips: VideoClips) -> Evaluator:
  labels = labels_of(clips)
  key = "map" if clips.multi_label else "accuracy"

  def fn(model):
    logits = predict(model, clips, config.eval.batch_size)["logits"]
    return {key: _score(logits[:, -1], labels, clips.multi_label)}

  return Evaluator("val", fn)


# ------------------------------------------------------------------------------------- evaluation

def patch_hits(config: ml_collections.ConfigDict, clips: VideoClips, actions: np.ndarray,
               split: str, seed: int = 0) -> dict[str, float]:
  """Fraction of frames whose patch contains the digit's centre, for the model's patches and for
  uniformly random ones (built-in dataset only)."""
  m = config.model
  meta = builtin.load_meta(config.data.dir)
  centers = builtin.load_centers(config.data.dir, split)             # [N, F, 2] at build size
  size = int(meta["size"])
  order = np.asarray(afv2.input_order(m.num_frames)) if m.sample_order else np.arange(m.num_frames)
  idx = np.stack([clips.frame_indices(v) for v in range(clips.num_videos)])[:, order]
  pts = eval_points(np.take_along_axis(centers, idx[..., None], axis=1), size, size,
                    input_size=m.image_size)                           # [N, T, 2] in model input

  def hit_rate(a):
    boxes = np.asarray(crop_lib.patch_boxes(a.reshape(-1, 2), m.image_size, m.patch_size))
    p = pts.reshape(-1, 2)
    inside = ((p[:, 0] >= boxes[:, 0]) & (p[:, 0] < boxes[:, 2]) & (p[:, 1] >= boxes[:, 1])
              & (p[:, 1] < boxes[:, 3]))
    return float(inside.mean())

  rand = np.random.default_rng(seed).uniform(size=actions.shape)
  return {"patch_contains_digit": hit_rate(actions), "patch_contains_digit_random": hit_rate(rand)}


def evaluate_test(config: ml_collections.ConfigDict, model, workdir: str, flops_per_frame: float
                  ) -> dict[str, Any]:
  """Test-split results: score per step, early-exit curve (thresholds fitted on val), patches."""
  test, val = _clips(config, "test", False), _clips(config, "val", False)
  if test is None:
    return {}
  out = predict(model, test, config.eval.batch_size)
  labels = labels_of(test)
  if jax.process_index() == 0:  # per-video outputs for paired comparisons (jaxvision.compare)
    saved = {k: np.asarray(v) for k, v in out.items() if k != "global_logits"}
    metrics_lib.write_atomic(os.path.join(workdir, "test_outputs.npz"),
                             lambda f: np.savez(f, labels=labels, **saved))
  multilabel = test.multi_label
  per_step = [_score(out["logits"][:, t], labels, multilabel) for t in range(out["logits"].shape[1])]
  res: dict[str, Any] = {"metric": "map" if multilabel else "accuracy",
                         "test_score": per_step[-1], "test_score_per_step": per_step,
                         "num_test_videos": int(test.num_videos)}
  if val is not None:
    fit = predict(model, val, config.eval.batch_size)["logits"]
    points = early_exit.sweep(fit, out["logits"], labels, qs=tuple(config.eval.early_exit_qs),
                              cost_per_step=flops_per_frame, kind=config.eval.confidence,
                              multilabel=multilabel)
    if jax.process_index() == 0:
      early_exit.save_curve(points, os.path.join(workdir, "early_exit.json"),
                            os.path.join(workdir, "early_exit.png"))
    res["early_exit"] = [{k: p[k] for k in ("q", "score", "avg_cost")} for p in points]
  res["test_score_global_only"] = _score(out["global_logits"].mean(1), labels, multilabel)
  if "actions" not in out:  # the global-only baseline
    return res
  # Ablations of the same trained network, at the same cost: uniformly random and centred patches
  # instead of the policy's; and its global CNN alone (per-frame global head, averaged over frames).
  shape = out["actions"].shape
  for name, actions in (("random_patches", np.random.default_rng(config.seed).uniform(size=shape)),
                        ("center_patches", np.full(shape, 0.5))):
    logits = predict(model, test, config.eval.batch_size, actions)["logits"]
    res[f"test_score_{name}"] = _score(logits[:, -1], labels, multilabel)
  if config.data.source == "builtin":
    res.update(patch_hits(config, test, out["actions"], "test", config.seed))
  return res


# ----------------------------------------------------------------------------------------- run

def task(config: ml_collections.ConfigDict, evaluators=()) -> Task:
  return Task(model=lambda rngs: afv2.AdaFocusV2(config.model, rngs=rngs), loss=afv2.train_loss,
              reductions=afv2.REDUCTIONS, evaluators=tuple(evaluators))


def per_frame_gflops(config: ml_collections.ConfigDict) -> float:
  """Inference GMACs per frame of this config's model (XLA's count, ``jaxvision.flops``)."""
  from jaxvision import flops
  return flops.adafocus_costs(config.model)["total_per_frame"] / 1e9


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from ``workdir``), evaluates; writes and returns the summary."""
  t0 = time.perf_counter()
  if config.model.get("name") == "adafocus_v2_tsm":
    raise ConfigError("config.model.name='adafocus_v2_tsm': training the Sth-Sth / Jester variant "
                      "through jaxvision.main is not built yet; `python -m jaxvision.flops "
                      "--config=...` prints its costs")
  afv2.check_config(config.model)
  ensure_builtin(config)
  probe = _clips(config, "train", True)
  if probe is None:
    raise ConfigError("no training split: set config.data.train_list")
  batch = int(config.train.batch_size)
  if int(config.train.steps) <= 0:
    config.train.steps = int(config.train.epochs) * math.ceil(probe.num_videos / batch)
  epochs = max(1, math.ceil(int(config.train.steps) * batch / probe.num_videos))
  train_clips = _clips(config, "train", True, epochs)   # a fresh augmentation every epoch
  loader = make_loader(train_clips, global_batch_size=batch, seed=config.seed,
                       fields=("frames", "label"), num_threads=int(config.data.num_workers))
  val = _clips(config, "val", False)
  evaluators = () if val is None else (val_evaluator(config, val),)
  result = loop.train(config=config, workdir=workdir, task=task(config, evaluators),
                      train_iter=loader)
  sections: dict[str, Any] = {"num_train_videos": int(probe.num_videos)}
  if not result.preempted:
    gflops = per_frame_gflops(config)
    sections["gflops_per_frame"] = gflops
    sections["gflops_per_video"] = gflops * config.model.num_frames
    sections["eval"] = evaluate_test(config, result.model, workdir, gflops)
  return metrics_lib.write_summary(workdir, config, result, wall_time_s=time.perf_counter() - t0,
                                   **sections)
