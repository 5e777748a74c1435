"""Predict on a video file with a trained AdaFocusV2 run (either variant).

  python -m jaxvision.predict --workdir=RUN --video=FILE [--out=DIR] [--q=1.0] [--checkpoint=best]

Reads the run's config (``RUN/summary.json``) and checkpoint (``RUN/best`` if it exists, else the
latest in ``RUN/checkpoints``), samples the video's frames as evaluation does (TSN centres, resize
256, centre crop 224; the Sth-Sth / Jester variant: its glance and its focus samples), and prints
the top-5 classes after every step and the step at which early exit would stop (thresholds of
``RUN/early_exit.json`` at the operating point nearest ``--q``). The ActivityNet variant's steps
are its frames; the TSM variant's are its 2 stages, 1 = glance only (the global CNN's own head) and
2 = glance + focus (``jaxvision.train``). Writes ``strip.png`` (the frames in the model's order
with their patch drawn, those of the exit step in red; TSM: the glance frames, then the focus
frames with the video's one patch) and ``patches.gif`` (the frames with a patch, in time order) to
``--out`` (default ``RUN/predict/<video name>``). Bad input (a missing or corrupt video, one with
too few frames, a run without a checkpoint) prints one line and exits 2, writing nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Any, Sequence

import numpy as np
from absl import flags

from jaxtrain import cli
from jaxtrain.errors import DataError, UserError


def load_run(workdir: str, which: str = "best") -> tuple[Any, Any]:
  """(config, model) of a finished run: its summary's config and its best (or latest) state."""
  import ml_collections

  from etils import epath

  from jaxtrain import checkpoint as ckpt_lib, loop
  from jaxvision.train import task

  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    raise UserError(f"{workdir}: no summary.json (train with python -m jaxvision.main first)")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f)["config"])
  latest, best = loop.checkpoint_dirs(workdir, config.train)
  folders = [best, latest] if which == "best" else [latest]
  folder = next((f for f in folders if ckpt_lib.exists(f) and any(
      p.name.isdigit() for p in epath.Path(f).iterdir())), None)  # orbax names steps by number
  if folder is None:
    raise UserError(f"{workdir}: no checkpoint in {' or '.join(folders)}")
  import jax

  from jaxtrain import mesh as mesh_lib
  one_device = mesh_lib.make_mesh({"shape": {"data": 1}}, devices=jax.devices()[:1])
  return config, loop.restore_model(config, task(config), folder, mesh=one_device)[0]


def read_clip(video: str, counts: Sequence[int], image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(frames [sum(counts), S, S, 3] uint8 as evaluation sees them, their indices in the video):
  one TSN sample per count, under one resize and centre crop."""
  from jaxvision.data import sampling, transforms
  from jaxvision.data import video as video_lib
  if not os.path.isfile(video):
    raise DataError(f"{video}: no such video file")
  n = video_lib.num_frames(video)
  idx = sampling.clip_indices(n, counts, train=False, name=video)
  frames = video_lib.read_frames(video, idx)
  return transforms.eval_transform(frames, input_size=image_size), np.asarray(idx)


def _class_names(config: Any) -> list[str]:
  if config.data.source == "builtin":
    from jaxvision.data import builtin
    return [str(c) for c in builtin.load_meta(config.data.dir)["classes"]]
  return [str(i) for i in range(config.model.num_classes)]


def predict_video(workdir: str, video: str, q: float = 1.0, which: str = "best",
                  run: tuple[Any, Any] | None = None) -> dict:
  """Per-step top-5, the early-exit step and, per frame in model order, its step and patch box.

  ``run``: the ``(config, model)`` that ``load_run(workdir, which)`` returns, to predict several
  videos without restoring the checkpoint each time (``which`` is then unused)."""
  from jaxtrain.inference import batched_apply
  from jaxvision import early_exit, train
  from jaxvision.models import crop as crop_lib

  config, model = load_run(workdir, which) if run is None else run
  m = config.model
  v = train.variant(m)
  frames, idx = read_clip(video, v.counts(m), m.image_size)
  out = batched_apply(model, v.outputs, (frames[None],), 1)      # jitted, eval mode
  logits = np.asarray(out["logits"][0], np.float64)               # [steps, C]
  probs = early_exit.softmax(logits)
  names = _class_names(config)
  steps = []
  for t in range(len(logits)):
    top = np.argsort(-probs[t])[:5]
    steps.append([(names[int(c)] if int(c) < len(names) else str(int(c)), float(probs[t, c]))
                  for c in top])
  exit_step, q_used = None, None
  curve = os.path.join(workdir, "early_exit.json")
  if os.path.exists(curve):
    with open(curve) as f:
      points = json.load(f)["points"]
    point = min(points, key=lambda p: abs(float(p["q"]) - q))
    th = np.array([float(x) for x in point["thresholds"]])
    conf = early_exit.confidence(logits[None], config.eval.confidence)
    exit_step, q_used = int(early_exit.exit_steps(conf, th)[0]), float(point["q"])
  order = v.order(m)
  boxes = [None] * len(order)   # frames without a patch (glance frames, the global-only baseline)
  if "actions" in out:
    patched = train.patched_frames(m)
    actions = np.asarray(out["actions"][0], np.float64).reshape(-1, 2)
    actions = np.broadcast_to(actions, (len(patched), 2))   # the TSM variant: one for all
    for j, box in zip(patched, np.asarray(crop_lib.patch_boxes(actions, m.image_size,
                                                               m.patch_size)).tolist()):
      boxes[j] = box
  return {"video": video, "frame_indices": idx[order].tolist(), "top5_per_step": steps,
          "exit_step": exit_step, "exit_q": q_used, "boxes": boxes,
          "frame_steps": v.frame_steps(m).tolist(), "frames": frames[order],
          "order": order.tolist()}


def draw(result: dict, out_dir: str) -> dict[str, str]:
  """``strip.png`` (model order, exit step marked) and ``patches.gif`` (time order), atomically."""
  from PIL import Image, ImageDraw

  frames, boxes = result["frames"], result["boxes"]
  images = []
  for frame, box, step in zip(frames, boxes, result["frame_steps"]):
    img = Image.fromarray(frame)
    d = ImageDraw.Draw(img)
    color = (255, 64, 64) if step == result["exit_step"] else (255, 230, 0)
    if box is not None:
      top, left, bottom, right = box
      d.rectangle([left, top, right - 1, bottom - 1], outline=color, width=2)
    d.text((4, 2), f"{step + 1}: {result['top5_per_step'][step][0][0]}", fill=color)
    images.append(img)
  with_patch = [i for i, b in enumerate(boxes) if b is not None] or list(range(len(images)))
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".predict_", dir=parent)
  try:
    w, h = images[0].size
    strip = Image.new("RGB", (w * len(images), h))
    for i, img in enumerate(images):
      strip.paste(img, (i * w, 0))
    strip.save(os.path.join(tmp, "strip.png"))
    in_time = [images[i] for i in sorted(with_patch, key=lambda i: result["frame_indices"][i])]
    in_time[0].save(os.path.join(tmp, "patches.gif"), save_all=True, append_images=in_time[1:],
                    duration=250, loop=0)
    summary = {k: v for k, v in result.items() if k != "frames"}
    with open(os.path.join(tmp, "prediction.json"), "w") as f:
      json.dump(summary, f, indent=1)
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return {name: os.path.join(out_dir, name) for name in ("strip.png", "patches.gif",
                                                        "prediction.json")}


def _define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "a finished python -m jaxvision.main run", flag_values=fv)
  flags.DEFINE_string("video", None, "an mp4/avi/mkv file", flag_values=fv)
  flags.DEFINE_string("out", "", "output folder (default RUN/predict/<video name>)", flag_values=fv)
  flags.DEFINE_float("q", 1.0, "early-exit operating point (nearest q of the run's curve)",
                     flag_values=fv)
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "which checkpoint", flag_values=fv)


def _run(fv: flags.FlagValues) -> None:
  if not fv.workdir or not fv.video:
    raise UserError("expected --workdir=RUN and --video=FILE")
  result = predict_video(fv.workdir, fv.video, fv.q, fv.checkpoint)
  out = fv.out or os.path.join(fv.workdir, "predict",
                               os.path.splitext(os.path.basename(fv.video))[0])
  paths = draw(result, out)
  for t, top in enumerate(result["top5_per_step"]):
    mark = "  <- early exit" if t == result["exit_step"] else ""
    print(f"step {t + 1:2d}: " + ", ".join(f"{c} {p:.2f}" for c, p in top) + mark)
  print(json.dumps(paths))


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run_tool(_run, _define_flags, argv=argv, prog="python -m jaxvision.predict",
                      doc=__doc__)

if __name__ == "__main__":
  sys.exit(main())
