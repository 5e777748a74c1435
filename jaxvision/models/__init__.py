"""Vision backbones as in torchvision, NHWC, Flax NNX: MobileNetV2 and ResNet-18/34/50.

Every backbone has ``features(x) -> [N, h, w, C]``, ``pooled(x) -> [N, C]``, ``num_features`` and
a residual-branch hook for the temporal shift (``tsm.TemporalShift``); no classifier unless
``num_classes`` is given. Shared layers, the logical axis names
(``LOGICAL_AXES``) and the torchvision key mapping are in ``jaxvision.models.layers``.
"""
from jaxvision.models.layers import LOGICAL_AXES, set_shift  # noqa: F401
from jaxvision.models.mobilenet_v2 import InvertedResidual, MobileNetV2  # noqa: F401
from jaxvision.models.resnet import (  # noqa: F401
    BasicBlock, Bottleneck, ResNet, ResNet18, ResNet34, ResNet50)
from jaxvision.models.tsm import TemporalShift  # noqa: F401
