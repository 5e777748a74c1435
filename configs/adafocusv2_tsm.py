"""AdaFocusV2 for Something-Something V1/V2 and Jester (TSM backbones, one patch per video).

Command:
  python -m jaxvision.main --config=configs/adafocusv2_tsm.py[:variant] --workdir=runs/tsm
  python -m jaxvision.main --config=configs/adafocusv2_tsm.py:ssv1_p128 --workdir=RUN \\
      --config.eval.only=True           # evaluate a finished or converted run (jaxvision.convert)
  python -m jaxvision.predict --workdir=RUN --video=FILE
  python -m jaxvision.flops --config=configs/adafocusv2_tsm.py:ssv1_p128   # GFLOPs per video, per P

Variants:
  {ssv1,ssv2,jester}_p{128,144,160,176} (default ssv1_p128)
      The official settings: MobileNetV2-TSM on 8 glance frames and ResNet-50-TSM on 12 patches
      of P x P, both TSN samples of the same clip, from 224 x 224 frames; shift 1/8 + 1/8 offline,
      dropout 0.5; SGD with momentum 0.9, lr 0.01 with a cosine schedule over 50 epochs, batch 32,
      weight decay 5e-4, gradient norm clipped at 20, learning-rate multipliers policy 0.01 and
      global CNN 0.5 (the official training script); no flips (direction-sensitive classes). Data
      in the official layout: frame folders plus list files `folder num_frames label` (set
      data.root, data.train_list, data.val_list, data.test_list, data.template). For GPUs and TPUs.
      Expected GFLOPs per video (official README): 18.5 / 23.5 / 27.5 / 33.7 at P = 128 / 144 /
      160 / 176.
  smoke
      A tiny model (MobileNetV2 x0.25-TSM on 2 glance frames, ResNet-18-TSM on 3 patches of 32 px
      from 64 px frames) on the tiny built-in dataset of configs/adafocusv2.py:smoke (built into
      data.dir on first use, shared with it), 4 steps of 4 videos: checks the pipeline (training,
      validation and the best checkpoint, test scores of both stages, early exit, patch statistics)
      in about half a minute on 2 CPU cores. Its scores are chance-level (10 classes, 4 steps).

Evaluation has 2 steps (stages), not one per frame: 1 = glance only (the global CNN's own head),
costing the global CNN; 2 = glance + focus (the final logits), costing the whole model. Early exit
fits the q^k thresholds over the 2 stages on the validation split (jaxvision.train).
"""
import ml_collections

from configs import adafocusv2
from jaxvision.models.adafocus_tsm import default_model_config

DATASETS = {"ssv1": 174, "ssv2": 174, "jester": 27}  # classes
PATCHES = (128, 144, 160, 176)


def _official(c: ml_collections.ConfigDict, name: str, patch: int) -> None:
  c.data.update(dict(source="list"))
  c.model.update(dict(num_classes=DATASETS[name], patch_size=patch))
  c.mesh.cpu_devices = 0
  c.train.update(dict(epochs=50, batch_size=32))


def _smoke(c: ml_collections.ConfigDict) -> None:
  smoke = adafocusv2.get_config("smoke")
  c.data.update(dict(dir=smoke.data.dir, builtin=smoke.data.builtin.to_dict()))
  c.model.update(dict(num_classes=10, glance_frames=2, focus_frames=3, image_size=64, patch_size=32,
                      global_width=0.25, local_arch="resnet18"))
  c.train.update(smoke.train.to_dict())
  c.eval.batch_size = smoke.eval.batch_size


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "ssv1_p128"
  name, _, p = variant.partition("_p")
  official = name in DATASETS and p.isdigit() and int(p) in PATCHES
  if not official and variant != "smoke":
    raise ValueError(f"unknown variant {variant!r} of configs/adafocusv2_tsm.py; expected smoke or "
                     "{ssv1,ssv2,jester}_p{128,144,160,176}")
  c = adafocusv2.base_config()
  c.name = f"adafocusv2_tsm:{variant}"
  c.data.flip = False  # Sth-Sth and Jester classes are direction-sensitive (and digits are too)
  c.model = default_model_config()
  c.optim.update(dict(lr=0.01, weight_decay=5e-4, grad_clip=20.0,
                      lr_mults=(("^policy/", 0.01), ("^global_(cnn|heads)/", 0.5),
                                ("^local_(cnn|heads)/", 1.0))))
  if official:
    _official(c, name, int(p))
  else:
    _smoke(c)
  return c
