"""``train_and_evaluate(config, workdir)``: AdaFocusV2 on the shared engine, then evaluation.

Both variants (``config.model.name``, ``VARIANTS``): ActivityNet / FCVID / Mini-Kinetics
(``adafocus_v2``: T frames, a patch and logits after every frame) and Something-Something / Jester
(``adafocus_v2_tsm``: a glance and a focus sample of each clip, one patch per video).

Training: the two-pass loss (policy patches and random patches) under SGD with per-module learning
rates; the validation split is evaluated every ``train.eval_every`` steps (best checkpoint by
``train.best_metric``). After training (or instead of it, ``config.eval.only``: the latest
checkpoint in ``WORKDIR/checkpoints``, e.g. a converted official one), on the test split: the
score at every step, the early-exit curve (thresholds fitted on the validation split, reported on
the test split), the same network on random and on centred patches and, on the built-in dataset,
how often the patches contain the moving digit.

Steps: the ActivityNet variant's are its frames (logits after frame t cost t frames). The TSM
variant has no per-frame steps (TSN averages over frames, and the offline shift reads future
frames), so its steps are 2 stages: 1 = glance only (the global CNN's own head, ``aux_fc``, which
is trained to classify alone; ``fc`` is trained only as a summand of the final logits), costing
the global CNN on the glance frames; 2 = glance + focus (the final logits), costing the whole
model. Early exit over the 2 stages fits the same q^k thresholds with these per-step costs.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxtrain import checkpoint as ckpt_lib, loop
from jaxtrain import metrics as metrics_lib
from jaxtrain.data import make_loader
from jaxtrain.errors import ConfigError, DataError
from jaxtrain.inference import batched_apply
from jaxtrain.task import Evaluator, Task
from jaxvision import early_exit
from jaxvision.data import builtin
from jaxvision.data.sources import VideoClips
from jaxvision.data.transforms import eval_points
from jaxvision.models import adafocus_tsm
from jaxvision.models import adafocus_v2 as afv2
from jaxvision.models import crop as crop_lib


# --------------------------------------------------------------------------------------- variants

@dataclasses.dataclass(frozen=True)
class Variant:
  """What the AdaFocusV2 variants do differently in training and evaluation."""
  model: Callable[..., nnx.Module]               # model(config.model, rngs=...)
  loss: Callable
  reductions: Mapping[str, str]
  check: Callable[[ml_collections.ConfigDict], None]
  inputs: tuple[str, ...]                        # the clip fields the model reads, in call order
  counts: Callable[[Any], tuple[int, ...]]       # model config -> frames sampled per input
  # (model, frames [B, sum(counts), S, S, 3], actions=None) -> {'logits' [B, steps, C],
  # 'global_logits' [B, C] (the global CNN alone), 'actions'}; module level (one compile)
  outputs: Callable
  order: Callable[[Any], np.ndarray]             # the sampled frames in model order
  frame_steps: Callable[[Any], np.ndarray]       # the step each frame (model order) belongs to
  costs: Callable[[ml_collections.ConfigDict], tuple[list[float], dict]]  # GFLOPs per step


def _outputs(model, frames, actions=None) -> dict:
  out = model(frames, actions=actions)
  res = {"logits": out["logits"], "global_logits": jnp.mean(out["global_logits"], axis=1)}
  return res if "actions" not in out else {**res, "actions": out["actions"]}


def _tsm_outputs(model, frames, actions=None) -> dict:
  """Stage 1 (glance only) and stage 2 (glance + focus) logits; ``frames`` = glance then focus."""
  tg = model.config.glance_frames
  out = model(frames[:, :tg], frames[:, tg:], actions=actions)
  glance = out["global_aux_logits"]
  return {"logits": jnp.stack([glance, out["logits"]], axis=1), "global_logits": glance,
          "actions": out["actions"]}


def _check(config: ml_collections.ConfigDict) -> None:
  afv2.check_config(config.model)


def _check_tsm(config: ml_collections.ConfigDict) -> None:
  adafocus_tsm.check_config(config.model)
  if config.data.get("multilabel", False):
    raise ConfigError("config.data.multilabel=True: the Sth-Sth / Jester variant trains on one "
                      "label per video")


def _order(m: Any) -> np.ndarray:
  return np.asarray(afv2.input_order(m.num_frames)) if m.sample_order else np.arange(m.num_frames)


def per_frame_gflops(config: ml_collections.ConfigDict) -> float:
  """Inference GMACs per frame of this config's model (``jaxvision.flops``, papers' count)."""
  from jaxvision import flops
  return flops.adafocus_costs(config.model)["total_per_frame"] / 1e9


def _costs(config: ml_collections.ConfigDict) -> tuple[list[float], dict]:
  g = per_frame_gflops(config)
  return [g] * int(config.model.num_frames), {"gflops_per_frame": g}


def _tsm_costs(config: ml_collections.ConfigDict) -> tuple[list[float], dict]:
  from jaxvision import flops
  c = flops.tsm_costs(config.model)
  glance, total = c["global_cnn"] / 1e9, c["total_per_video"] / 1e9
  return [glance, total - glance], {}


VARIANTS = {
    "adafocus_v2": Variant(
        afv2.AdaFocusV2, afv2.train_loss, afv2.REDUCTIONS, _check, ("frames",),
        lambda m: (int(m.num_frames),), _outputs, _order, lambda m: np.arange(m.num_frames),
        _costs),
    "adafocus_v2_tsm": Variant(
        adafocus_tsm.AdaFocusV2TSM, adafocus_tsm.train_loss, {}, _check_tsm, ("glance", "focus"),
        lambda m: (int(m.glance_frames), int(m.focus_frames)), _tsm_outputs,
        lambda m: np.arange(m.glance_frames + m.focus_frames),
        lambda m: np.repeat([0, 1], [m.glance_frames, m.focus_frames]), _tsm_costs),
}


def variant(model_cfg: Any) -> Variant:
  """The variant of ``config.model`` (its ``name``)."""
  name = model_cfg.get("name", "adafocus_v2")
  if name not in VARIANTS:
    raise ConfigError(f"config.model.name={name!r}: expected one of {sorted(VARIANTS)}")
  return VARIANTS[name]


def patched_frames(model_cfg: Any) -> np.ndarray:
  """Positions, in model order, of the frames the patches are cut from (the last input's:
  every frame of the ActivityNet variant, the focus frames of the TSM one)."""
  v = variant(model_cfg)
  counts = v.counts(model_cfg)
  return np.flatnonzero(v.order(model_cfg) >= sum(counts[:-1]))


# ------------------------------------------------------------------------------------------- data

def _clips(config: ml_collections.ConfigDict, split: str, train: bool, epochs: int = 1
           ) -> VideoClips | None:
  d, m = config.data, config.model
  num_frames, *focus = variant(m).counts(m)
  common = dict(num_frames=num_frames, focus_frames=focus[0] if focus else None, train=train,
                seed=config.seed, input_size=m.image_size, epochs=epochs,
                flip=bool(d.get("flip", True)))
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
  """A clip source's model inputs as a lazily read array: ``len`` and slices [i:j] (what
  ``batched_apply`` reads) of the ``fields`` stacked on the frame axis (the TSM variant: glance
  then focus), so evaluation never holds a whole split in memory."""

  def __init__(self, clips: VideoClips, fields: Sequence[str] = ("frames",)):
    self.clips, self.fields = clips, tuple(fields)

  def __len__(self) -> int:
    return len(self.clips)

  def __getitem__(self, index: slice) -> np.ndarray:
    items = (self.clips[i] for i in range(*index.indices(len(self))))
    return np.stack([np.concatenate([item[f] for f in self.fields]) for item in items])


def labels_of(clips: VideoClips) -> np.ndarray:
  return np.stack([clips.label(v) for v in range(clips.num_videos)])


def predict(model, clips: VideoClips, batch_size: int, actions: np.ndarray | None = None
            ) -> dict[str, np.ndarray]:
  """Per-step logits [N, steps, C], the global CNN's own logits [N, C] and the patch positions
  (ActivityNet variant [N, T, 2] in model frame order, TSM [N, 2]), eval mode; ``actions``
  replaces the policy's patch positions."""
  v = variant(model.config)
  extra = () if actions is None else (actions.astype(np.float32),)
  arrays = (FramesView(clips, v.inputs),) + extra
  return batched_apply(model, v.outputs, arrays, batch_size)


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
  """Fraction of the patched frames (every frame; the TSM variant: the focus frames, all with
  their video's one patch) whose patch contains the digit's centre, for the model's patches and
  for uniformly random ones (built-in dataset only)."""
  m = config.model
  meta = builtin.load_meta(config.data.dir)
  centers = builtin.load_centers(config.data.dir, split)             # [N, F, 2] at build size
  size = int(meta["size"])
  slots = variant(m).order(m)[patched_frames(m)]
  idx = np.stack([clips.frame_indices(v) for v in range(clips.num_videos)])[:, slots]
  pts = eval_points(np.take_along_axis(centers, idx[..., None], axis=1), size, size,
                    input_size=m.image_size)                           # [N, K, 2] in model input

  def hit_rate(a):
    a = np.broadcast_to(a.reshape(len(a), -1, 2), pts.shape)         # one patch per video: all K
    boxes = np.asarray(crop_lib.patch_boxes(a.reshape(-1, 2), m.image_size, m.patch_size))
    p = pts.reshape(-1, 2)
    inside = ((p[:, 0] >= boxes[:, 0]) & (p[:, 0] < boxes[:, 2]) & (p[:, 1] >= boxes[:, 1])
              & (p[:, 1] < boxes[:, 3]))
    return float(inside.mean())

  rand = np.random.default_rng(seed).uniform(size=actions.shape)
  return {"patch_contains_digit": hit_rate(actions), "patch_contains_digit_random": hit_rate(rand)}


def evaluate_test(config: ml_collections.ConfigDict, model, workdir: str,
                  cost_per_step: float | Sequence[float]) -> dict[str, Any]:
  """Test-split results: score per step, early-exit curve (thresholds fitted on val, costs
  ``cost_per_step`` GFLOPs: a number or one per step), ablations and patches."""
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
                              cost_per_step=cost_per_step, kind=config.eval.confidence,
                              multilabel=multilabel)
    if jax.process_index() == 0:
      early_exit.save_curve(points, os.path.join(workdir, "early_exit.json"),
                            os.path.join(workdir, "early_exit.png"))
    res["early_exit"] = [{k: p[k] for k in ("q", "score", "avg_cost", "exit_fractions")}
                         for p in points]
  res["test_score_global_only"] = _score(out["global_logits"], labels, multilabel)
  if "actions" not in out:  # the global-only baseline
    return res
  # Ablations of the same trained network, at the same cost: uniformly random and centred patches
  # instead of the policy's.
  shape = out["actions"].shape
  for name, actions in (("random_patches", np.random.default_rng(config.seed).uniform(size=shape)),
                        ("center_patches", np.full(shape, 0.5))):
    logits = predict(model, test, config.eval.batch_size, actions)["logits"]
    res[f"test_score_{name}"] = _score(logits[:, -1], labels, multilabel)
  if config.data.source == "builtin":
    res.update(patch_hits(config, test, out["actions"], "test", config.seed))
  return res


def evaluation(config: ml_collections.ConfigDict, model, workdir: str) -> dict[str, Any]:
  """The summary's cost and test sections: GFLOPs per step (the cost of exiting after each step)
  and per video, and ``evaluate_test``'s results."""
  per_step, sections = variant(config.model).costs(config)
  exit_costs = early_exit.exit_costs(per_step, len(per_step))
  sections.update(gflops_per_step=exit_costs.tolist(), gflops_per_video=float(exit_costs[-1]))
  sections["eval"] = evaluate_test(config, model, workdir, per_step)
  return sections


# ----------------------------------------------------------------------------------------- run

def task(config: ml_collections.ConfigDict, evaluators=()) -> Task:
  """The engine's task of this config's variant."""
  v = variant(config.model)
  return Task(model=lambda rngs: v.model(config.model, rngs=rngs), loss=v.loss,
              reductions=v.reductions, evaluators=tuple(evaluators))


def evaluate_only(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """``config.eval.only``: no training; the test evaluation of the latest checkpoint in
  ``workdir/checkpoints`` (or ``train.checkpoint_root``: a finished run, or a converted official
  checkpoint); writes and returns the summary."""
  t0 = time.perf_counter()
  folder = loop.checkpoint_dirs(workdir, config.train)[0]
  model, step = loop.restore_model(config, task(config), folder)
  ensure_builtin(config)
  sections = evaluation(config, model, workdir)
  return metrics_lib.write_summary(workdir, config, wall_time_s=time.perf_counter() - t0,
                                   step=step, eval_only=True,
                                   checkpoint=ckpt_lib.join(folder, str(step)), **sections)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from ``workdir``), evaluates; writes and returns the summary
  (``config.eval.only``: evaluates the latest checkpoint, ``evaluate_only``)."""
  t0 = time.perf_counter()
  v = variant(config.model)
  v.check(config)
  if config.eval.get("only", False):
    return evaluate_only(config, workdir)
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
                       fields=v.inputs + ("label",), num_threads=int(config.data.num_workers))
  val = _clips(config, "val", False)
  evaluators = () if val is None else (val_evaluator(config, val),)
  result = loop.train(config=config, workdir=workdir, task=task(config, evaluators),
                      train_iter=loader)
  sections: dict[str, Any] = {"num_train_videos": int(probe.num_videos)}
  if not result.preempted:
    sections.update(evaluation(config, result.model, workdir))
  return metrics_lib.write_summary(workdir, config, result, wall_time_s=time.perf_counter() - t0,
                                   **sections)
