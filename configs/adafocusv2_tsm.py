"""AdaFocusV2 for Something-Something V1/V2 and Jester (TSM backbones, one patch per video).

Command:
  python -m jaxvision.flops --config=configs/adafocusv2_tsm.py:ssv1_p128   # GFLOPs per video, per P
  (training through jaxvision.main is not built yet: it refuses this config with one line.)

Variants: {ssv1,ssv2,jester}_p{128,144,160,176} (default ssv1_p128), the official settings:
MobileNetV2-TSM on 8 frames and ResNet-50-TSM on 12 patches of P x P from 224 x 224 frames, shift
1/8 + 1/8 offline, dropout 0.5; SGD with momentum 0.9, lr 0.01 with a cosine schedule over 50
epochs, batch 32, weight decay 5e-4, gradient norm clipped at 20, learning-rate multipliers policy
0.01 and global CNN 0.5 (the official training script). Expected GFLOPs per video (official README):
18.5 / 23.5 / 27.5 / 33.7 at P = 128 / 144 / 160 / 176.
"""
import ml_collections

from configs import adafocusv2
from jaxvision.models.adafocus_tsm import default_model_config

DATASETS = {"ssv1": 174, "ssv2": 174, "jester": 27}  # classes
PATCHES = (128, 144, 160, 176)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "ssv1_p128"
  name, _, p = variant.partition("_p")
  if name not in DATASETS or not p.isdigit() or int(p) not in PATCHES:
    raise ValueError(f"unknown variant {variant!r} of configs/adafocusv2_tsm.py; expected "
                     "{ssv1,ssv2,jester}_p{128,144,160,176}")
  c = adafocusv2.base_config()
  c.name = f"adafocusv2_tsm:{variant}"
  c.data.update(dict(source="list", flip=False))  # Sth-Sth and Jester classes are direction-sensitive
  c.model = default_model_config()
  c.model.update(dict(num_classes=DATASETS[name], patch_size=int(p)))
  c.mesh.cpu_devices = 0
  c.train.update(dict(epochs=50, batch_size=32))
  c.optim.update(dict(lr=0.01, weight_decay=5e-4, grad_clip=20.0,
                      lr_mults=(("^policy/", 0.01), ("^global_(cnn|heads)/", 0.5),
                                ("^local_(cnn|heads)/", 1.0))))
  return c
