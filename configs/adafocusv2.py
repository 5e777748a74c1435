"""AdaFocusV2 (Wang et al., CVPR 2022): spatially dynamic video recognition.

Command:
  python -m jaxvision.main --config=configs/adafocusv2.py[:variant] --workdir=runs/adafocus
  python -m jaxvision.flops --config=configs/adafocusv2.py      # GFLOPs per frame and video, per P

Variants:
  builtin (default)  The built-in dataset (real MNIST digits moving over real video backgrounds,
                     10 classes, 224x224 frames, 2000/300/500 videos), built into data.dir on first
                     use. A CPU-sized model: frames resized to 128, T = 8, P = 64, MobileNetV2 x0.5
                     and a ResNet-18 local CNN, trained from scratch (AdamW) for 1000 steps of 8
                     videos: 1.55 s per step on 2 CPU cores (about 30 min with evaluation).
                     Expected result: README, "AdaFocusV2", built-in results.
  builtin_random     Baseline, same cost: the same network trained and run on uniformly random
                     patches (no policy, one pass per step).
  builtin_global     Baseline, same cost: MobileNetV2 x1.0 alone on whole frames resized to 168
                     (189 MMACs per frame with its classifier; AdaFocus above: 185), same
                     classifier and training.
  builtin_small      Small digits (24-36 px in the 224 px frames; data/builtin_video_small),
                     the setting AdaFocus is built for: the global CNN (MobileNetV2 x0.5) glances
                     at the frame average-pooled to 56 px, where a digit is 6-9 px, and the local
                     CNN (MobileNetV2 x1.0) reads a 64 px patch cut from the full 224 px frame;
                     36 MMACs per frame, 2000 steps of 8 videos (about 1.25 s per step alone on
                     2 CPU cores). Measured (benchmarks/RESULTS.md, small digits): from scratch,
                     it and both baselines stay at chance (10%) within these steps.
  builtin_small_random, builtin_small_global
                     Its baselines: the same network on uniformly random patches; MobileNetV2 x1.0
                     alone on whole frames resized to 72 px (41 MMACs per frame, more than
                     AdaFocus's 36).
  smoke              A tiny model on a tiny built-in dataset for a few steps: checks the pipeline.
  actnet_p{96,128,160}, fcvid_p{96,128,160}, minik_p{96,128,160}
                     The paper's settings (MobileNetV2 + ResNet-50, T = 16, SGD, cosine, 50 epochs,
                     lr 0.002 (Mini-Kinetics 0.003), batch 32 (48), lr multipliers policy 0.1,
                     global CNN 0.5, local CNN 1, classifier 5, weight decay 1e-4) on data in the
                     official layout: frame folders plus list files `folder num_frames label[,label]`
                     (set data.root, data.train_list, data.val_list). For GPUs and TPUs.

Evaluation only (a finished run, or an official checkpoint converted by jaxvision.convert):
  python -m jaxvision.main --config=... --workdir=RUN --config.eval.only=True
restores the latest checkpoint in RUN/checkpoints, runs the test evaluation (early exit included)
and rewrites RUN/summary.json.
"""
import ml_collections

from jaxvision.models.adafocus_v2 import default_model_config

DATASETS = {  # name: (classes, multi-label, lr, batch)
    "actnet": (200, True, 0.002, 32),
    "fcvid": (239, True, 0.002, 32),
    "minik": (200, False, 0.003, 48),
}


# The same-cost global-only baseline of each built-in variant: MobileNetV2 x1.0 on whole frames
# (builtin: 168 px, 189 MMACs/frame against AdaFocus's 185; builtin_small: 72 px, 41 against 36).
GLOBAL_ONLY = {"builtin": dict(global_width=1.0, image_size=168),
               "builtin_small": dict(global_width=1.0, image_size=72, glance_size=0)}
BASELINES = tuple(f"{base}_{kind}" for base in GLOBAL_ONLY for kind in ("random", "global"))


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "adafocusv2"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      source="builtin",            # 'builtin' or 'list' (the official frame-folder layout)
      dir="data/builtin_video",    # built-in dataset folder (built on first use)
      builtin=dict(train=2000, val=300, test=500, frames=16, size=224, seed=0,
                   digit_size=(72 / 224, 104 / 224)),
      root="",                     # list source: folder of frame folders (or videos)
      train_list="", val_list="", test_list="",
      template="img_{:05d}.jpg",   # frame file names inside a frame folder
      multilabel=False,            # list labels 'a,b,c' (ActivityNet, FCVID): mAP
      flip=True,                   # training flips (off for direction-sensitive classes: digits)
      num_workers=0))

  c.model = default_model_config()

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.mesh.cpu_devices = 1  # 2 CPU devices: faster inference, slower training (benchmarks/RESULTS.md)
  c.mesh.rules = (("embed", None), ("mlp", None), ("vocab", None), ("conv_in", None),
                  ("conv_out", None))

  c.train = ml_collections.ConfigDict(dict(
      steps=0, epochs=50, batch_size=32, log_every=20, checkpoint_every=500, keep_checkpoints=2,
      eval_every=0, best_metric="", best_mode="max",
      checkpoint_root=""))  # "": the workdir; or gs://... / a shared path every host sees
  c.optim = ml_collections.ConfigDict(dict(
      name="sgd", lr=0.002, momentum=0.9, nesterov=False, schedule="cosine", warmup_steps=0,
      weight_decay=1e-4, grad_clip=0.0, ema_decay=0.0, frozen=(),
      wd_mults=((".*", 1.0),),  # PyTorch's SGD decays every parameter (decay_mult 1)
      lr_mults=(("^policy/", 0.1), ("^global_(cnn|head)/", 0.5), ("^local_(cnn|head)/", 1.0),
                ("^classifier/", 5.0))))

  c.eval = ml_collections.ConfigDict(dict(
      batch_size=16, early_exit_qs=(0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0),
      confidence="max_logit",  # the official criterion
      only=False))  # True: no training, evaluate the latest checkpoint in WORKDIR/checkpoints
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config()
  variant = arg or "builtin"
  c.name = f"adafocusv2:{variant}"
  if variant == "builtin":
    c.model.update(dict(num_classes=10, num_frames=8, image_size=128, patch_size=64,
                        global_width=0.5, local_arch="resnet18", policy_hidden=512,
                        classifier_hidden=1024))
    c.data.flip = False  # digits are not mirror-symmetric
    c.train.update(dict(steps=1000, epochs=0, batch_size=8, eval_every=250,
                        best_metric="val/accuracy", checkpoint_every=250))
    # From scratch (the paper fine-tunes ImageNet backbones, no weights here): AdamW, one learning
    # rate for every module except the policy (0.1, as the paper).
    c.optim.update(dict(name="adamw", lr=1e-3, warmup_steps=50, weight_decay=1e-4,
                        lr_mults=(("^policy/", 0.1),)))
  elif variant == "builtin_small":
    c = get_config("builtin")
    c.name = f"adafocusv2:{variant}"
    c.data.dir = "data/builtin_video_small"
    c.data.builtin.digit_size = (24 / 224, 36 / 224)
    c.model.update(dict(image_size=224, glance_size=56, patch_size=64, global_width=0.5,
                        local_arch="mobilenet_v2", local_width=1.0))
    c.train.update(dict(steps=2000, eval_every=500, checkpoint_every=500))
  elif variant in BASELINES:
    base, _, kind = variant.rpartition("_")
    c = get_config(base)
    c.name = f"adafocusv2:{variant}"
    if kind == "random":
      c.model.patch_policy = "random"
    else:
      c.model.update(dict(patch_policy="none", **GLOBAL_ONLY[base]))
    absent = ("^policy/",) if kind == "random" else ("^policy/", "^local_")
    c.optim.lr_mults = tuple(m for m in c.optim.lr_mults if not m[0].startswith(absent))
  elif variant == "smoke":
    c.data.dir = "data/builtin_video_smoke"
    c.data.builtin.update(dict(train=8, val=4, test=4, frames=4, size=64))
    c.model.update(dict(num_classes=10, num_frames=4, image_size=64, patch_size=32,
                        global_width=0.25, local_arch="resnet18", policy_hidden=32,
                        classifier_hidden=64))
    c.train.update(dict(steps=4, epochs=0, batch_size=4, log_every=2, checkpoint_every=2,
                        eval_every=4, best_metric="val/accuracy"))
    c.optim.update(dict(lr=0.01))
    c.eval.batch_size = 4
  else:
    name, _, p = variant.partition("_p")
    if name not in DATASETS or p not in ("96", "128", "160"):
      raise ValueError(f"unknown variant {variant!r} of configs/adafocusv2.py; expected builtin, "
                       "smoke or {actnet,fcvid,minik}_p{96,128,160}")
    classes, multilabel, lr, batch = DATASETS[name]
    c.data.update(dict(source="list", multilabel=multilabel))
    c.model.update(dict(num_classes=classes, patch_size=int(p)))
    c.train.batch_size = batch
    c.optim.lr = lr
    c.mesh.cpu_devices = 0
  return c
