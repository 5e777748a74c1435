"""MobileNetV2 (Sandler et al., 2018) as in torchvision, NHWC, ReLU6, any width multiplier.

``MobileNetV2(*, rngs, width=1.0)``: ``features`` is the torchvision ``features`` stack and is
callable, ``features(x [N, H, W, 3]) -> [N, H/32, W/32, 1280]`` (1280 * max(1, width), rounded to
a multiple of 8); ``pooled(x) -> [N, 1280]`` (global average, float32); ``__call__`` -> logits
when ``num_classes`` is set (``classifier``: dropout, linear), else ``pooled``.

Names mirror torchvision's state dict (per-tensor mapping in ``jaxvision.models.layers``):
``features/0/{0,1}`` (stem conv, BN), ``features/{1..17}/conv/...`` (inverted residuals: with
expansion ``conv/0/{0,1}`` 1x1 expand, ``conv/1/{0,1}`` 3x3 depthwise, ``conv/2`` 1x1 project,
``conv/3`` BN; without (block 1) ``conv/0`` depthwise, ``conv/1`` project, ``conv/2`` BN),
``features/18/{0,1}`` (1x1 to 1280), ``classifier/1`` (linear).

Init as torchvision: kaiming-normal (fan_out) convs, BN scale 1 bias 0 (no zero-init of the last
BN), linear N(0, 0.01) with zero bias.

TSM hook: an inverted residual with a skip connection (stride 1, same channels) calls
``self.shift`` (None by default) on the input of its residual branch, before its first conv;
the skip path is untouched. Blocks without a skip never shift. Pass ``shift=`` to the
constructor or use ``jaxvision.models.layers.set_shift``; parameter names do not change.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvision.models.layers import (Conv, Linear, Seq, batch_norm, conv_bn_act, global_avg_pool,
                                     maybe_data)

Array = jax.Array
Shift = Callable[[Array], Array]

# (expansion t, output channels c, repeats n, first stride s), torchvision's table.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
  """Nearest multiple of ``divisor`` (at least ``divisor``), rounded up if it loses over 10%."""
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


class InvertedResidual(nnx.Module):
  """[1x1 expand, BN, ReLU6] -> 3x3 depthwise (stride), BN, ReLU6 -> 1x1 project, BN (+ skip)."""

  def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, *, rngs: nnx.Rngs,
               dtype: Any = jnp.float32, shift: Shift | None = None):
    if stride not in (1, 2):
      raise ValueError(f"stride={stride}; expected 1 or 2")
    hidden = int(round(cin * expand_ratio))
    self.use_res_connect = stride == 1 and cin == cout
    self.takes_shift = self.use_res_connect
    layers = []
    if expand_ratio != 1:
      layers.append(conv_bn_act(cin, hidden, 1, act=jax.nn.relu6, rngs=rngs, dtype=dtype))
    layers += [
        conv_bn_act(hidden, hidden, 3, stride=stride, groups=hidden, act=jax.nn.relu6, rngs=rngs,
                    dtype=dtype),
        Conv(hidden, cout, 1, rngs=rngs, dtype=dtype),
        batch_norm(cout, rngs=rngs, dtype=dtype),
    ]
    self.conv = Seq(layers)
    self.shift = maybe_data(shift) if self.use_res_connect else None

  def __call__(self, x: Array) -> Array:
    if not self.use_res_connect:
      return self.conv(x)
    h = x if self.shift is None else self.shift(x)
    return x + self.conv(h)


class MobileNetV2(nnx.Module):
  """Stem 3x3/2 conv (32) -> 17 inverted residuals -> 1x1 conv (1280), all with BN + ReLU6."""

  def __init__(self, *, rngs: nnx.Rngs, width: float = 1.0, dtype: Any = jnp.float32,
               num_classes: int | None = None, dropout: float = 0.2, shift: Shift | None = None):
    cin = make_divisible(32 * width)
    last = make_divisible(1280 * max(1.0, width))
    layers = [conv_bn_act(3, cin, 3, stride=2, act=jax.nn.relu6, rngs=rngs, dtype=dtype)]
    for t, c, n, s in SETTINGS:
      cout = make_divisible(c * width)
      for i in range(n):
        layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, rngs=rngs, dtype=dtype,
                                       shift=shift))
        cin = cout
    layers.append(conv_bn_act(cin, last, 1, act=jax.nn.relu6, rngs=rngs, dtype=dtype))
    self.features = Seq(layers)
    self.num_features = last
    self.classifier = Seq([
        nnx.Dropout(dropout),
        Linear(last, num_classes, rngs=rngs, dtype=dtype, kernel_init=nnx.initializers.normal(0.01),
               bias_init=nnx.initializers.zeros_init()),
    ]) if num_classes else None

  def pooled(self, x: Array) -> Array:
    """[N, H, W, 3] -> [N, num_features], global average pool in float32."""
    return global_avg_pool(self.features(x))

  def __call__(self, x: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    """Logits [N, num_classes] with a classifier (dropout keys: ``rngs``), else ``pooled(x)``."""
    h = self.pooled(x)
    if self.classifier is None:
      return h
    return self.classifier[1](self.classifier[0](h, rngs=rngs))
