"""Convolution, batch-norm and pooling helpers shared by the vision backbones (NHWC layout).

Parameters are float32 with logical axis names in their ``out_sharding`` metadata (no eager
sharding); ``dtype`` is the compute dtype (e.g. bfloat16 on GPU/TPU).

Logical axis names (``LOGICAL_AXES``):

- conv kernel ``[kh, kw, cin, cout]``: ``(None, None, "conv_in", "conv_out")``; a depthwise
  kernel ``[kh, kw, 1, c]``: ``(None, None, None, "conv_out")``.
- batch-norm scale and bias ``[c]``: ``("conv_out",)`` (running mean/var: ``nnx.BatchStat``,
  no names, replicated).
- linear kernel ``[din, dout]``: ``("embed", "mlp")``, bias ``("mlp",)``.

Layers follow PyTorch: symmetric padding ``(k - 1) // 2`` (not XLA's 'SAME', which pads stride-2
convolutions asymmetrically), convolutions without bias, BN eps 1e-5 and flax momentum 0.9
(PyTorch 0.1). One difference: flax updates the running variance with the biased batch variance,
PyTorch with the unbiased one (a factor n/(n-1), n = batch * height * width).

``Seq`` is an ``nnx.List`` that applies its items in order, so state paths mirror torchvision's
``nn.Sequential`` keys (``features.1.conv.0.0.weight`` <-> ``features/1/conv/0/0/kernel``).
Torch -> here: conv ``weight`` [O, I, kh, kw] -> ``kernel`` [kh, kw, I, O]; BN ``weight``, ``bias``,
``running_mean``, ``running_var`` -> ``scale``, ``bias``, ``mean``, ``var`` (``num_batches_tracked``
has no counterpart); linear ``weight`` [O, I] -> ``kernel`` [I, O].
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array

LOGICAL_AXES = ("conv_in", "conv_out", "embed", "mlp")

BN_MOMENTUM = 0.9  # flax convention: new = m * old + (1 - m) * batch; PyTorch momentum 0.1
BN_EPS = 1e-5

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"): N(0, 2 / (cout * kh * kw)),
# not truncated; for a depthwise kernel [kh, kw, 1, c] fan_out is c * kh * kw, as in PyTorch.
conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
zeros = nnx.initializers.zeros_init()
ones = nnx.initializers.ones_init()


def param(rngs: nnx.Rngs, init: Callable, shape: tuple, names: tuple) -> nnx.Param:
  """A float32 parameter initialised by ``init`` with logical axis ``names``."""
  value = init(rngs.params(), shape, jnp.float32)
  return nnx.Param(value, out_sharding=names, eager_sharding=False)


def torch_linear_init(fan_in: int) -> Callable:
  """PyTorch's default nn.Linear init for weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)


def maybe_data(value: Any) -> Any:
  """``nnx.data(value)`` for a Module (a stateful hook), else ``value`` (a function: static)."""
  return nnx.data(value) if isinstance(value, nnx.Module) else value


class Seq(nnx.List):
  """A list of layers applied in order (torch's ``nn.Sequential``; items at paths 0, 1, ...)."""

  def __call__(self, x: Array) -> Array:
    for layer in self:
      x = layer(x)
    return x


class Conv(nnx.Module):
  """2-D convolution without bias, NHWC, PyTorch padding ``(k - 1) // 2``, torch's ``groups``."""

  def __init__(self, cin: int, cout: int, kernel_size: int, *, stride: int = 1, groups: int = 1,
               rngs: nnx.Rngs, dtype: Any = jnp.float32):
    if cin % groups or cout % groups:
      raise ValueError(f"groups={groups} does not divide cin={cin} and cout={cout}")
    names = (None, None, None if cin == groups else "conv_in", "conv_out")
    self.kernel = param(rngs, conv_init, (kernel_size, kernel_size, cin // groups, cout), names)
    self.stride = stride
    self.groups = groups
    self.padding = (kernel_size - 1) // 2
    self.dtype = dtype

  def __call__(self, x: Array) -> Array:
    p = self.padding
    depthwise = self.groups > 1 and self.kernel.shape[2] == 1 and self.groups == self.kernel.shape[3]
    if depthwise and _cpu_rewrites():
      return depthwise_taps(x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.stride, p)
    if self.kernel.shape[:2] == (1, 1) and self.groups == 1:
      # A pointwise convolution (padding 0) is a matmul over the channels of every stride-th
      # pixel: the same MACs, and on CPU faster to differentiate than XLA's convolution
      # (with ResNet's strided downsampling ones: the paper-setting training step -11%, RESULTS).
      s = self.stride
      x, kernel = x[:, ::s, ::s].astype(self.dtype), self.kernel[0, 0].astype(self.dtype)
      if _cpu_rewrites():
        return pointwise_matmul(x, kernel)
      return jnp.dot(x, kernel)
    if self.groups == 1 and min(x.shape[1:3]) <= self.kernel.shape[0] and _cpu_rewrites():
      # A map no larger than the kernel (ResNet's last stage on small patches): XLA's CPU
      # convolution swaps the operands here into a layout that runs ~100x slower than kh*kw matmuls.
      return conv_taps_matmul(x.astype(self.dtype), self.kernel[...].astype(self.dtype),
                              self.stride, p)
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), self.kernel[...].astype(self.dtype),
        window_strides=(self.stride, self.stride), padding=((p, p), (p, p)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.groups)


_CPU_REWRITES = [True]


def _cpu_rewrites() -> bool:
  """Whether to trace the CPU's faster forms (off on other backends and in
  ``standard_convolutions``)."""
  return _CPU_REWRITES[0] and jax.default_backend() == "cpu"


@contextlib.contextmanager
def standard_convolutions():
  """Within this context, trace every convolution as an XLA convolution on every backend (what
  FLOP counts read), not as the CPU's faster shifted sums and matmuls."""
  _CPU_REWRITES[0] = False
  try:
    yield
  finally:
    _CPU_REWRITES[0] = True


def _tap(xp: Array, i: int, j: int, stride: int, out_hw: tuple[int, int]) -> Array:
  """The view xp[:, s*h + i, s*w + j, :] (h < ho, w < wo) of a padded input: kernel tap (i, j)."""
  n, _, _, c = xp.shape
  ho, wo = out_hw
  return jax.lax.slice(xp, (0, i, j, 0), (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                       (1, stride, stride, 1))


def _shifted_sum(xp: Array, kernel: Array, stride: int, out_hw: tuple[int, int]) -> Array:
  """sum_{i,j} xp[:, s*h + i, s*w + j, :] * kernel[i, j, 0] for an already padded ``xp``."""
  kh, kw = kernel.shape[:2]
  return sum(_tap(xp, i, j, stride, out_hw) * kernel[i, j, 0] for i in range(kh) for j in range(kw))


def _taps_out_hw(x: Array, kernel: Array, stride: int, padding: int) -> tuple[int, int]:
  return tuple((size + 2 * padding - k) // stride + 1 for size, k in zip(x.shape[1:3], kernel.shape[:2]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_taps(x: Array, kernel: Array, stride: int, padding: int) -> Array:
  """Depthwise convolution x [N,H,W,C] * kernel [kh,kw,1,C] as a sum of kh*kw shifted, strided
  products (zero padding ``padding``). The same result as ``conv_general_dilated`` with
  ``feature_group_count=C``; on CPU, where XLA's grouped convolution is slow (MobileNetV2 at 224:
  9.5 GFLOP/s forward), these fuse into one elementwise loop. The derivative is written out too:
  the input gradient is one more shifted sum (over the stride-dilated output gradient, with the
  flipped kernel) instead of kh*kw separately padded copies that XLA would not fuse."""
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  return _shifted_sum(jnp.pad(x, pad), kernel, stride, _taps_out_hw(x, kernel, stride, padding))


def _taps_fwd(x, kernel, stride, padding):
  return depthwise_taps(x, kernel, stride, padding), (x, kernel)


def _taps_bwd(stride, padding, res, dy):
  x, kernel = res
  kh, kw = kernel.shape[:2]
  h, w = x.shape[1:3]
  ho, wo = dy.shape[1:3]
  # dx[a] = sum_i dy'[a + padding - i] k[i], dy' = dy dilated by the stride: a stride-1 shifted sum
  # with the flipped kernel over dy' padded by kh-1-padding below (and cut or padded to fit above).
  zero = jnp.zeros((), dy.dtype)
  pads = [(0, 0, 0)]
  for size, k, o in ((h, kh, ho), (w, kw, wo)):
    lo = k - 1 - padding
    pads.append((lo, size + k - 1 - lo - ((o - 1) * stride + 1), stride - 1))
  z = jax.lax.pad(dy, zero, pads + [(0, 0, 0)])
  dx = _shifted_sum(z, kernel[::-1, ::-1], 1, (h, w))
  # dk[i, j] = sum over n, h, w of the (i, j) tap of the padded input times dy, as one variadic
  # reduction (one pass over x and dy instead of kh*kw).
  acc = jnp.promote_types(dy.dtype, jnp.float32)
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0))).astype(acc)
  products = [_tap(xp, i, j, stride, (ho, wo)) * dy.astype(acc)
              for i in range(kh) for j in range(kw)]
  sums = jax.lax.reduce(products, [np.zeros((), acc)] * len(products),
                        lambda a, b: tuple(u + v for u, v in zip(a, b)), (0, 1, 2))
  dk = jnp.stack(sums).reshape(kernel.shape)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


depthwise_taps.defvjp(_taps_fwd, _taps_bwd)


@jax.custom_vjp
def pointwise_matmul(x: Array, kernel: Array) -> Array:
  """x [..., Cin] @ kernel [Cin, Cout], with a derivative that suits XLA's CPU matmuls.

  The kernel gradient contracts the N*H*W pixels of x and dy; XLA's CPU matmul wants the
  contracted axis minor in its right operand, so one of them is transposed, and XLA fuses that
  transpose into the op producing it. Fused into dy's batch-norm backward with few channels it ran
  ~4x slower than on the wider operand, so the wider one is put on the right (ResNet-50 at 128 on
  64 patches, forward+backward: 6.9 -> 5.8 s; RESULTS)."""
  return jnp.dot(x, kernel)


def _pointwise_fwd(x, kernel):
  return pointwise_matmul(x, kernel), (x, kernel)


def _pointwise_bwd(res, dy):
  x, kernel = res
  pixels = (tuple(range(x.ndim - 1)),) * 2
  if x.shape[-1] > dy.shape[-1]:
    dk = jnp.tensordot(dy, x, axes=pixels).T
  else:
    dk = jnp.tensordot(x, dy, axes=pixels)
  return jnp.dot(dy, kernel.T), dk


pointwise_matmul.defvjp(_pointwise_fwd, _pointwise_bwd)


def conv_taps_matmul(x: Array, kernel: Array, stride: int, padding: int) -> Array:
  """A dense convolution x [N,H,W,Cin] * kernel [kh,kw,Cin,Cout] as a sum of kh*kw matmuls of
  shifted, strided views of the zero-padded input (same result as ``conv_general_dilated``)."""
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  out_hw = _taps_out_hw(x, kernel, stride, padding)
  return sum(jnp.dot(_tap(xp, i, j, stride, out_hw), kernel[i, j])
             for i in range(kernel.shape[0]) for j in range(kernel.shape[1]))


class Linear(nnx.Module):
  """y = x W + b with W [din, dout] named ("embed", "mlp")."""

  def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               kernel_init: Callable | None = None, bias_init: Callable | None = None):
    self.kernel = param(rngs, kernel_init or torch_linear_init(din), (din, dout), ("embed", "mlp"))
    self.bias = param(rngs, bias_init or torch_linear_init(din), (dout,), ("mlp",))
    self.dtype = dtype

  def __call__(self, x: Array) -> Array:
    y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    return y + self.bias[...].astype(self.dtype)


def batch_norm(num_features: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               zero_init: bool = False) -> nnx.BatchNorm:
  """``nnx.BatchNorm`` over channels with PyTorch's eps and momentum; scale 1 (or 0), bias 0."""
  meta = {"out_sharding": ("conv_out",), "eager_sharding": False}
  return nnx.BatchNorm(num_features, momentum=BN_MOMENTUM, epsilon=BN_EPS, dtype=dtype,
                       scale_init=zeros if zero_init else ones, bias_init=zeros,
                       scale_metadata=meta, bias_metadata=meta, rngs=rngs)


def conv_bn_act(cin: int, cout: int, kernel_size: int, *, stride: int = 1, groups: int = 1,
                act: Callable[[Array], Array] = jax.nn.relu, rngs: nnx.Rngs,
                dtype: Any = jnp.float32) -> Seq:
  """conv -> BN -> activation (torchvision's ``Conv2dNormActivation``: items 0, 1, 2)."""
  return Seq([Conv(cin, cout, kernel_size, stride=stride, groups=groups, rngs=rngs, dtype=dtype),
              batch_norm(cout, rngs=rngs, dtype=dtype), act])


def max_pool(x: Array, window: int = 3, stride: int = 2, padding: int = 1) -> Array:
  """Max pooling over H and W with PyTorch's implicit -inf padding."""
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  # A NumPy scalar, not a jax array: under jit with a mesh a jax constant is traced, and
  # reduce_window's derivative needs a known initial value.
  init = np.array(-np.inf, x.dtype)
  return jax.lax.reduce_window(x, init, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1),
                               pad)


def global_avg_pool(x: Array) -> Array:
  """[N, H, W, C] -> [N, C], averaged in float32."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def set_shift(model: nnx.Module, shift: Callable[[Array], Array] | None) -> int:
  """Sets ``shift`` as the residual-branch hook of every block that takes one; returns the count.

  ``shift`` is a function (kept static) or an ``nnx.Module`` (kept as data), or None to remove it.
  Parameters and their names do not change.
  """
  n = 0
  for _, m in nnx.iter_graph(model):
    if isinstance(m, nnx.Module) and getattr(m, "takes_shift", False):
      m.shift = maybe_data(shift)
      n += 1
  return n
