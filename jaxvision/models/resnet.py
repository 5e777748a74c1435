"""ResNet (He et al., 2016) as in torchvision: v1.5 bottleneck (stride on the 3x3 conv), NHWC.

``ResNet(block_counts, block="bottleneck" | "basic")``; ``ResNet18``, ``ResNet34`` and ``ResNet50``
fix the depths. ``features(x [N, H, W, 3]) -> [N, H/32, W/32, C]`` (C = 512 basic, 2048 bottleneck),
``pooled(x) -> [N, C]`` (global average, float32), ``__call__`` -> logits when ``num_classes`` is
set (``fc``), else ``pooled``. No classifier by default.

Names mirror torchvision's state dict (see ``jaxvision.models.layers`` for the per-tensor mapping):
``conv1``, ``bn1``, ``layer{1..4}/{j}/{conv1,bn1,conv2,bn2,conv3,bn3}``,
``layer{i}/0/downsample/{0,1}``, ``fc``. Logical axis names: ``jaxvision.models.layers``.

Init as torchvision: kaiming-normal (fan_out) convs, BN scale 1 bias 0, ``fc`` PyTorch's default
uniform. ``zero_init_residual=True`` zeroes the scale of the last BN of each residual branch
(torchvision's option, off by default as there).

TSM hook: each block calls ``self.shift`` (None by default) on the input of its residual branch,
before ``conv1``; the identity path is untouched. Pass ``shift=`` to the constructor or use
``jaxvision.models.layers.set_shift`` later; parameter names do not change.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvision.models.layers import (Conv, Linear, Seq, batch_norm, global_avg_pool, max_pool,
                                     maybe_data)

Array = jax.Array
Shift = Callable[[Array], Array]


class BasicBlock(nnx.Module):
  """relu(bn2(conv2(relu(bn1(conv1(shift(x)))))) + identity), two 3x3 convs (ResNet-18/34)."""

  expansion = 1
  takes_shift = True

  def __init__(self, cin: int, planes: int, stride: int = 1, *, rngs: nnx.Rngs,
               dtype: Any = jnp.float32, shift: Shift | None = None,
               zero_init_residual: bool = False):
    cout = planes * self.expansion
    self.conv1 = Conv(cin, planes, 3, stride=stride, rngs=rngs, dtype=dtype)
    self.bn1 = batch_norm(planes, rngs=rngs, dtype=dtype)
    self.conv2 = Conv(planes, planes, 3, rngs=rngs, dtype=dtype)
    self.bn2 = batch_norm(planes, rngs=rngs, dtype=dtype, zero_init=zero_init_residual)
    self.downsample = _downsample(cin, cout, stride, rngs=rngs, dtype=dtype)
    self.shift = maybe_data(shift)

  def __call__(self, x: Array) -> Array:
    identity = x if self.downsample is None else self.downsample(x)
    h = x if self.shift is None else self.shift(x)
    h = jax.nn.relu(self.bn1(self.conv1(h)))
    h = self.bn2(self.conv2(h))
    return jax.nn.relu(h + identity)


class Bottleneck(nnx.Module):
  """1x1 -> 3x3 (stride) -> 1x1 (x4 channels) residual branch on shift(x), plus the identity."""

  expansion = 4
  takes_shift = True

  def __init__(self, cin: int, planes: int, stride: int = 1, *, rngs: nnx.Rngs,
               dtype: Any = jnp.float32, shift: Shift | None = None,
               zero_init_residual: bool = False):
    cout = planes * self.expansion
    self.conv1 = Conv(cin, planes, 1, rngs=rngs, dtype=dtype)
    self.bn1 = batch_norm(planes, rngs=rngs, dtype=dtype)
    self.conv2 = Conv(planes, planes, 3, stride=stride, rngs=rngs, dtype=dtype)
    self.bn2 = batch_norm(planes, rngs=rngs, dtype=dtype)
    self.conv3 = Conv(planes, cout, 1, rngs=rngs, dtype=dtype)
    self.bn3 = batch_norm(cout, rngs=rngs, dtype=dtype, zero_init=zero_init_residual)
    self.downsample = _downsample(cin, cout, stride, rngs=rngs, dtype=dtype)
    self.shift = maybe_data(shift)

  def __call__(self, x: Array) -> Array:
    identity = x if self.downsample is None else self.downsample(x)
    h = x if self.shift is None else self.shift(x)
    h = jax.nn.relu(self.bn1(self.conv1(h)))
    h = jax.nn.relu(self.bn2(self.conv2(h)))
    h = self.bn3(self.conv3(h))
    return jax.nn.relu(h + identity)


def _downsample(cin: int, cout: int, stride: int, *, rngs: nnx.Rngs, dtype: Any) -> Seq | None:
  """1x1 strided conv + BN on the identity path when the shape changes (torchvision's option B)."""
  if stride == 1 and cin == cout:
    return None
  return Seq([Conv(cin, cout, 1, stride=stride, rngs=rngs, dtype=dtype),
              batch_norm(cout, rngs=rngs, dtype=dtype)])


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nnx.Module):
  """conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2 -> layer1..4 (64, 128, 256, 512 planes)."""

  def __init__(self, block_counts: tuple[int, ...] = (3, 4, 6, 3), *, block: str = "bottleneck",
               rngs: nnx.Rngs, dtype: Any = jnp.float32, num_classes: int | None = None,
               zero_init_residual: bool = False, shift: Shift | None = None):
    if block not in BLOCKS:
      raise ValueError(f"block={block!r}; expected one of {sorted(BLOCKS)}")
    if len(block_counts) != 4:
      raise ValueError(f"block_counts={block_counts} must have 4 entries")
    cls = BLOCKS[block]
    self.conv1 = Conv(3, 64, 7, stride=2, rngs=rngs, dtype=dtype)
    self.bn1 = batch_norm(64, rngs=rngs, dtype=dtype)
    cin = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), block_counts)):
      blocks = []
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(cls(cin, planes, stride, rngs=rngs, dtype=dtype, shift=shift,
                          zero_init_residual=zero_init_residual))
        cin = planes * cls.expansion
      setattr(self, f"layer{i + 1}", Seq(blocks))
    self.num_features = cin
    self.fc = Linear(cin, num_classes, rngs=rngs, dtype=dtype) if num_classes else None

  def features(self, x: Array) -> Array:
    """[N, H, W, 3] -> [N, H/32, W/32, num_features] (in the compute dtype)."""
    h = max_pool(jax.nn.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(h))))

  def pooled(self, x: Array) -> Array:
    """[N, H, W, 3] -> [N, num_features], global average pool in float32."""
    return global_avg_pool(self.features(x))

  def __call__(self, x: Array) -> Array:
    """Logits [N, num_classes] with a classifier, else ``pooled(x)``."""
    h = self.pooled(x)
    return h if self.fc is None else self.fc(h)


class ResNet18(ResNet):
  """ResNet-18: basic blocks (2, 2, 2, 2), 512 features."""

  def __init__(self, *, rngs: nnx.Rngs, dtype: Any = jnp.float32, **kwargs):
    super().__init__((2, 2, 2, 2), block="basic", rngs=rngs, dtype=dtype, **kwargs)


class ResNet34(ResNet):
  """ResNet-34: basic blocks (3, 4, 6, 3), 512 features."""

  def __init__(self, *, rngs: nnx.Rngs, dtype: Any = jnp.float32, **kwargs):
    super().__init__((3, 4, 6, 3), block="basic", rngs=rngs, dtype=dtype, **kwargs)


class ResNet50(ResNet):
  """ResNet-50: bottleneck blocks (3, 4, 6, 3), 2048 features."""

  def __init__(self, *, rngs: nnx.Rngs, dtype: Any = jnp.float32, **kwargs):
    super().__init__((3, 4, 6, 3), block="bottleneck", rngs=rngs, dtype=dtype, **kwargs)
