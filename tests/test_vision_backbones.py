"""jaxvision backbones: torchvision's parameter counts, names, shapes and MACs; batch norm modes;
float64 NumPy references for a bottleneck and an inverted residual; the TSM shift hook.

Full-size models are built abstractly (``nnx.eval_shape``) and, where a forward pass runs, filled
with NumPy random values (eager initialisation compiles one small program per shape: slow on CPU).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from jaxtrain.mesh import shardings_for
from jaxvision.flops import macs, matmul_macs, model_macs
from jaxvision.models import (LOGICAL_AXES, Bottleneck, InvertedResidual, MobileNetV2, ResNet,
                              ResNet18, ResNet50, set_shift)
from jaxvision.models import layers
from jaxvision.models.mobilenet_v2 import SETTINGS

EPS = 1e-5


def abstract(build):
  return nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0)))


def materialise(build, seed: int = 0):
  """The module ``build(rngs=...)`` with NumPy random parameters and batch-norm statistics."""
  graphdef, state = nnx.split(abstract(build))
  rng = np.random.default_rng(seed)

  def fill(path, v):
    name = path[-1]
    if name == "kernel":
      fan = v.shape[0] * v.shape[1] * v.shape[3] / 2 if len(v.shape) == 4 else v.shape[0]
      x = rng.standard_normal(size=v.shape, dtype=np.float32) / np.float32(math.sqrt(fan))
    elif name in ("scale", "var"):
      x = rng.uniform(0.5, 1.5, size=v.shape)
    else:  # bias, mean
      x = rng.normal(size=v.shape) * 0.1
    return jnp.asarray(x, v.dtype)

  state = nnx.from_flat_state(
      [(p, v.replace(fill(p, v.get_value()))) for p, v in nnx.to_flat_state(state)])
  return nnx.merge(graphdef, state)


def shape_of(model, method: str, x):
  """Output ShapeDtypeStruct of ``model.<method>(x)`` for an abstract model (nothing computed)."""
  graphdef, state = nnx.split(model)
  return jax.eval_shape(lambda s, x: getattr(nnx.merge(graphdef, s), method)(x), state, x)


def features_and_pooled(model, x):
  """Abstract outputs of ``model.features(x)`` and of the pooling that ``pooled`` applies."""
  graphdef, state = nnx.split(model)

  def f(s, x):
    h = nnx.merge(graphdef, s).features(x)
    return h, layers.global_avg_pool(h)

  return jax.eval_shape(f, state, x)


def flat(model, kind=nnx.Param) -> dict:
  return dict(nnx.to_flat_state(nnx.state(model, kind)))


def count(model) -> int:
  return sum(int(np.prod(v.get_value().shape)) for v in flat(model).values())


# ---------------------------------------------------------------------- counts, names, shapes


def mobilenet_v2_count() -> int:
  """Parameters of torchvision's MobileNetV2 features, from the architecture table."""
  n = 3 * 3 * 3 * 32 + 2 * 32
  cin = 32
  for t, c, reps, _ in SETTINGS:
    for _ in range(reps):
      hidden = cin * t
      if t != 1:
        n += cin * hidden + 2 * hidden
      n += 9 * hidden + 2 * hidden + hidden * c + 2 * c
      cin = c
  return n + cin * 1280 + 2 * 1280


def resnet50_count() -> int:
  """Parameters of torchvision's ResNet-50 without fc, from the architecture table."""
  n = 7 * 7 * 3 * 64 + 2 * 64
  cin = 64
  for planes, reps in zip((64, 128, 256, 512), (3, 4, 6, 3)):
    for j in range(reps):
      n += cin * planes + 9 * planes * planes + planes * 4 * planes + 2 * (2 * planes + 4 * planes)
      if j == 0:
        n += cin * 4 * planes + 2 * 4 * planes
      cin = 4 * planes
  return n


def test_parameter_counts_match_torchvision():
  assert mobilenet_v2_count() == 2_223_872
  assert resnet50_count() == 23_508_032
  assert count(abstract(MobileNetV2)) == 2_223_872
  assert count(abstract(ResNet50)) == 23_508_032
  # With classifiers: torchvision's totals (3,504,872; 25,557,032; 11,689,512).
  assert count(abstract(lambda rngs: MobileNetV2(rngs=rngs, num_classes=1000))) == 3_504_872
  assert count(abstract(lambda rngs: ResNet50(rngs=rngs, num_classes=1000))) == 25_557_032
  assert count(abstract(lambda rngs: ResNet18(rngs=rngs, num_classes=1000))) == 11_689_512


def test_names_mirror_torchvision_and_carry_logical_axes():
  mb, rn = flat(abstract(MobileNetV2)), flat(abstract(ResNet50))
  shapes = {  # torchvision key (with '.' -> '/') : NHWC shape
      ("features", 0, 0, "kernel"): (3, 3, 3, 32),
      ("features", 1, "conv", 0, 0, "kernel"): (3, 3, 1, 32),  # depthwise, no expansion
      ("features", 1, "conv", 1, "kernel"): (1, 1, 32, 16),
      ("features", 1, "conv", 2, "scale"): (16,),
      ("features", 2, "conv", 0, 0, "kernel"): (1, 1, 16, 96),
      ("features", 2, "conv", 1, 0, "kernel"): (3, 3, 1, 96),
      ("features", 2, "conv", 3, "bias"): (24,),
      ("features", 18, 0, "kernel"): (1, 1, 320, 1280),
  }
  for k, s in shapes.items():
    assert mb[k].get_value().shape == s, k
  shapes = {
      ("conv1", "kernel"): (7, 7, 3, 64),
      ("layer1", 0, "downsample", 0, "kernel"): (1, 1, 64, 256),
      ("layer2", 0, "conv2", "kernel"): (3, 3, 128, 128),
      ("layer4", 2, "bn3", "scale"): (2048,),
  }
  for k, s in shapes.items():
    assert rn[k].get_value().shape == s, k
  # torchvision: 52 convs + 52 BNs (MobileNetV2), 53 + 53 (ResNet-50).
  for params, n in ((mb, 52), (rn, 53)):
    assert sum(p[-1] == "kernel" for p in params) == n
    assert sum(p[-1] == "scale" for p in params) == n
  for params in (mb, rn):
    for p, v in params.items():
      names = v.get_metadata()["out_sharding"]
      assert len(names) == len(v.get_value().shape) and set(names) <= set(LOGICAL_AXES) | {None}, p
  assert mb[("features", 2, "conv", 1, 0, "kernel")].get_metadata()["out_sharding"] == (
      None, None, None, "conv_out")
  # The engine's sharding rules apply (names -> mesh axes).
  mesh = jax.make_mesh((4, 2), ("data", "model"))
  rules = (("conv_in", None), ("conv_out", "model"), ("embed", None), ("mlp", "model"))
  sh = dict(nnx.to_flat_state(shardings_for(nnx.state(abstract(ResNet50)), mesh, rules)))
  assert sh[("layer1", 0, "conv2", "kernel")].get_value().spec == PartitionSpec(
      None, None, None, "model")
  assert sh[("bn1", "mean")].get_value().spec == PartitionSpec()


def test_feature_shapes_at_224_and_dtype():
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  for build, c in ((MobileNetV2, 1280), (ResNet50, 2048), (ResNet18, 512)):
    m = abstract(build)
    feats, pooled = features_and_pooled(m, x)
    assert feats.shape == (2, 7, 7, c)
    assert pooled.shape == (2, c) and pooled.dtype == jnp.float32 and m.num_features == c
  m = abstract(lambda rngs: ResNet18(rngs=rngs, dtype=jnp.bfloat16, num_classes=10))
  assert shape_of(m, "features", x).dtype == jnp.bfloat16
  assert shape_of(m, "__call__", x).shape == (2, 10)
  assert all(v.get_value().dtype == jnp.float32 for v in flat(m).values())


def test_tiny_forward_full_models_train_and_eval():
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  fwd = nnx.jit(lambda m, x: m.pooled(x))
  for build, c in ((MobileNetV2, 1280), (ResNet50, 2048)):
    m = materialise(build)
    stats = {k: np.asarray(v.get_value()) for k, v in flat(m, nnx.BatchStat).items()}
    m.eval()
    y_eval = fwd(m, x)
    m.train()
    y_train = fwd(m, x)
    assert y_eval.shape == y_train.shape == (2, c)
    assert np.all(np.isfinite(y_eval)) and np.all(np.isfinite(y_train))
    assert not np.allclose(y_eval, y_train)
    # Train mode moved every running mean (52 / 53 BN layers).
    new = flat(m, nnx.BatchStat)
    assert all(not np.array_equal(new[k].get_value(), v) for k, v in stats.items()
               if k[-1] == "mean")


def test_bfloat16_compute_close_to_float32():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  ys = []
  for dt in (jnp.float32, jnp.bfloat16):
    m = materialise(lambda rngs: ResNet((1, 1, 1, 1), block="basic", rngs=rngs, dtype=dt))
    m.eval()
    ys.append(np.asarray(nnx.jit(lambda m, x: m.pooled(x))(m, x)))
  np.testing.assert_allclose(ys[1], ys[0], rtol=0.1, atol=0.1 * np.abs(ys[0]).mean())


# ---------------------------------------------------------------------- MACs


def test_macs_match_published_figures_and_patch_scaling():
  def both(build, size, method=None):
    m = abstract(build)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return model_macs(m, x, method, count="matmul"), model_macs(m, x, method)

  # With the 1000-way classifiers, as torchvision's docs count (0.30 and 4.09 GFLOPS = GMACs).
  mb_mm, mb_xla = both(lambda rngs: MobileNetV2(rngs=rngs, num_classes=1000), 224)
  rn_mm, rn_xla = both(lambda rngs: ResNet50(rngs=rngs, num_classes=1000), 224)
  assert abs(mb_mm / 0.300e9 - 1) < 0.03 and abs(rn_mm / 4.09e9 - 1) < 0.03
  # XLA: padding taps skipped, elementwise work added (about -2% ResNet-50, +4% MobileNetV2).
  assert abs(mb_xla / mb_mm - 1) < 0.06 and abs(rn_xla / rn_mm - 1) < 0.03
  # Backbones (no classifier) on patches: exactly (P / 224)^2 for P a multiple of 32; XLA below.
  base, _ = both(ResNet50, 224, "features")
  assert abs(base / 4.087e9 - 1) < 0.001
  for p in (96, 128, 160):
    mm = model_macs(abstract(ResNet50), jax.ShapeDtypeStruct((1, p, p, 3), jnp.float32),
                    "features", count="matmul")
    assert mm == pytest.approx(base * (p / 224) ** 2, rel=1e-9)
  mm, xla = both(ResNet50, 96, "features")  # XLA skips more padding taps on small inputs
  assert 0.90 < xla / mm < 0.97


def test_macs_helpers_on_one_conv():
  f = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
      x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  x = jax.ShapeDtypeStruct((1, 7, 7, 8), jnp.float32)
  k = jax.ShapeDtypeStruct((3, 3, 8, 16), jnp.float32)
  assert matmul_macs(f, x, k) == 7 * 7 * 9 * 8 * 16
  assert macs(f, x, k) == 16 * 8 * 19 ** 2  # XLA: only taps inside the 7x7 input
  s = jax.ShapeDtypeStruct
  assert matmul_macs(lambda a, b: a @ b, s((3, 4), jnp.float32), s((4, 5), jnp.float32)) == 60
  # Nested programs: jit, scan (x length), checkpoint, cond (costliest branch).
  g = jax.jit(lambda a, b: a @ b)

  def nested(a, b):
    c, _ = jax.lax.scan(lambda c, _: (g(c, b), None), a, None, length=3)
    return jax.checkpoint(g)(c, b) + jax.lax.cond(True, g, lambda a, b: a, a, b)

  assert matmul_macs(nested, s((4, 4), jnp.float32), s((4, 4), jnp.float32)) == 5 * 64


# ---------------------------------------------------------------------- batch norm


def test_batch_norm_eval_uses_running_stats_train_updates_them():
  rng = np.random.default_rng(0)
  bn = materialise(lambda rngs: layers.batch_norm(3, rngs=rngs))
  scale, bias = (np.asarray(bn.scale[...], np.float64), np.asarray(bn.bias[...], np.float64))
  mean0, var0 = np.asarray(bn.mean[...], np.float64), np.asarray(bn.var[...], np.float64)
  x = rng.normal(size=(4, 2, 2, 3)) * 2 + 1

  bn.eval()
  y = np.asarray(bn(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(y, (x - mean0) / np.sqrt(var0 + EPS) * scale + bias, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(bn(jnp.asarray(x[:1], jnp.float32))), y[:1], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(bn.mean[...]), mean0.astype(np.float32))

  bn.train()
  y = np.asarray(bn(jnp.asarray(x, jnp.float32)))
  mu, var = x.mean((0, 1, 2)), x.var((0, 1, 2))  # biased variance (flax; PyTorch stores unbiased)
  np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + EPS) * scale + bias, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.9 * mean0 + 0.1 * mu, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(bn.var[...]), 0.9 * var0 + 0.1 * var, rtol=1e-5)


def test_batch_norm_statistics_over_the_global_sharded_batch():
  bn = materialise(lambda rngs: layers.batch_norm(3, rngs=rngs))
  x = np.random.default_rng(1).normal(size=(8, 2, 2, 3)).astype(np.float32)
  mesh = jax.make_mesh((8,), ("data",))
  xs = jax.device_put(x, jax.NamedSharding(mesh, PartitionSpec("data")))
  mean0 = np.asarray(bn.mean[...])
  graphdef, state = nnx.split(bn)

  @jax.jit
  def step(state, x):
    m = nnx.merge(graphdef, state)
    m(x)
    return nnx.state(m)

  new = step(state, xs)
  np.testing.assert_allclose(np.asarray(new["mean"][...]), 0.9 * mean0 + 0.1 * x.mean((0, 1, 2)),
                             rtol=1e-5)


# ---------------------------------------------------------------------- float64 references


def np_conv(x, w, stride=1, groups=1):
  """NHWC x [N, H, W, C], HWIO w [k, k, C / groups, O], PyTorch padding (k - 1) // 2."""
  k = w.shape[0]
  p = (k - 1) // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  ho = (x.shape[1] + 2 * p - k) // stride + 1
  wo = (x.shape[2] + 2 * p - k) // stride + 1
  cg, og = x.shape[3] // groups, w.shape[3] // groups
  out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
  for g in range(groups):
    for i in range(k):
      for j in range(k):
        patch = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride, g * cg:(g + 1) * cg]
        out[..., g * og:(g + 1) * og] += patch @ w[i, j, :, g * og:(g + 1) * og]
  return out


def np_depthwise_vjp(x, w, dy, stride):
  """Gradients of the depthwise convolution w.r.t. x and w [k, k, 1, C] by scattering every output's
  gradient back to the inputs and kernel taps it read (float64)."""
  k = w.shape[0]
  p = (k - 1) // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  dxp, dw = np.zeros_like(xp), np.zeros_like(w)
  ho, wo = dy.shape[1:3]
  for i in range(k):
    for j in range(k):
      rows, cols = slice(i, i + stride * ho, stride), slice(j, j + stride * wo, stride)
      dxp[:, rows, cols, :] += dy * w[i, j, 0]
      dw[i, j, 0] = np.sum(xp[:, rows, cols, :] * dy, axis=(0, 1, 2))
  return dxp[:, p:p + x.shape[1], p:p + x.shape[2]], dw


@pytest.mark.parametrize("size,k,stride", [(7, 3, 1), (8, 3, 2), (9, 3, 2), (6, 5, 2), (5, 1, 1)])
def test_depthwise_taps_and_their_gradients_match_numpy_float64(size, k, stride):
  rng = np.random.default_rng(size + k + stride)
  x, w = rng.normal(size=(2, size, size + 1, 4)), rng.normal(size=(k, k, 1, 4))
  y, vjp = jax.vjp(lambda a, b: layers.depthwise_taps(a, b, stride, (k - 1) // 2),
                   jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(np.asarray(y), np_conv(x, w, stride, groups=4), rtol=1e-5, atol=1e-5)
  dy = rng.normal(size=y.shape)
  dx, dw = vjp(jnp.asarray(dy, jnp.float32))
  ref_dx, ref_dw = np_depthwise_vjp(x, w, dy, stride)
  np.testing.assert_allclose(np.asarray(dx), ref_dx, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(dw), ref_dw, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("size,k,stride", [(2, 3, 1), (3, 3, 2), (4, 3, 1), (3, 7, 2)])
def test_conv_as_tap_matmuls_matches_numpy_float64(size, k, stride):
  # What ``Conv`` runs on CPU for a map no larger than its kernel; gradients through autodiff.
  rng = np.random.default_rng(size + k)
  x, w = rng.normal(size=(2, size, size, 5)), rng.normal(size=(k, k, 5, 6))
  conv = layers.Conv(5, 6, k, stride=stride, rngs=nnx.Rngs(0))
  conv.kernel.set_value(jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(np.asarray(conv(jnp.asarray(x, jnp.float32))), np_conv(x, w, stride),
                             rtol=1e-4, atol=1e-4)
  y, vjp = jax.vjp(lambda a, b: layers.conv_taps_matmul(a, b, stride, (k - 1) // 2),
                   jnp.asarray(x), jnp.asarray(w))
  dy = rng.normal(size=y.shape)
  xla = jax.vjp(lambda a, b: jax.lax.conv_general_dilated(
      a, b, (stride, stride), [((k - 1) // 2,) * 2] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")),
      jnp.asarray(x), jnp.asarray(w))[1](jnp.asarray(dy))
  for got, ref in zip(vjp(jnp.asarray(dy)), xla):
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size,stride,cin,cout", [(8, 2, 5, 6), (7, 2, 5, 6), (5, 1, 5, 6),
                                                  (5, 1, 6, 5), (7, 2, 6, 5)])
def test_pointwise_conv_as_matmul_matches_xla_conv_with_gradients(size, stride, cin, cout):
  # ``Conv`` runs 1x1 convolutions (ResNet's strided downsampling too) as a matmul; on CPU its
  # kernel gradient contracts in the order that depends on which side is wider (both tried).
  rng = np.random.default_rng(size + stride + cin)
  x, w = rng.normal(size=(2, size, size + 1, cin)), rng.normal(size=(1, 1, cin, cout))
  graphdef, params = nnx.split(layers.Conv(cin, cout, 1, stride=stride, rngs=nnx.Rngs(0)))

  def ours(a, b):  # the module with kernel b: params hold the kernel alone
    return nnx.merge(graphdef, jax.tree.map(lambda _: b, params))(a)

  y, vjp = jax.vjp(ours, jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(np.asarray(y), np_conv(x, w, stride), rtol=1e-5, atol=1e-5)
  dy = rng.normal(size=y.shape)
  xla = jax.vjp(lambda a, b: jax.lax.conv_general_dilated(
      a, b, (stride, stride), [(0, 0)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")),
      jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))[1](jnp.asarray(dy, jnp.float32))
  for got, ref in zip(vjp(jnp.asarray(dy, jnp.float32)), xla):
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-4)


def np_params(module) -> dict:
  return {p: np.asarray(v.get_value(), np.float64)
          for p, v in nnx.to_flat_state(nnx.state(module, nnx.Variable))}


def np_bn(x, p, prefix):
  g = lambda n: p[prefix + (n,)]  # noqa: E731
  return (x - g("mean")) / np.sqrt(g("var") + EPS) * g("scale") + g("bias")


def np_bottleneck(x, branch_in, p, stride):
  relu = lambda a: np.maximum(a, 0)  # noqa: E731
  h = relu(np_bn(np_conv(branch_in, p[("conv1", "kernel")]), p, ("bn1",)))
  h = relu(np_bn(np_conv(h, p[("conv2", "kernel")], stride), p, ("bn2",)))
  h = np_bn(np_conv(h, p[("conv3", "kernel")]), p, ("bn3",))
  ident = np_bn(np_conv(x, p[("downsample", 0, "kernel")], stride), p, ("downsample", 1))
  return relu(h + ident)


def np_inverted_residual(x, branch_in, p, stride, hidden, skip):
  relu6 = lambda a: np.clip(a, 0, 6)  # noqa: E731
  h = relu6(np_bn(np_conv(branch_in, p[("conv", 0, 0, "kernel")]), p, ("conv", 0, 1)))
  h = np_conv(h, p[("conv", 1, 0, "kernel")], stride, groups=hidden)
  h = relu6(np_bn(h, p, ("conv", 1, 1)))
  h = np_bn(np_conv(h, p[("conv", 2, "kernel")]), p, ("conv", 3))
  return x + h if skip else h


def negate(h):
  return -h


@pytest.mark.parametrize("shift", [None, negate])
def test_bottleneck_matches_numpy_float64(shift):
  block = materialise(lambda rngs: Bottleneck(8, 4, 2, rngs=rngs, shift=shift))
  block.eval()
  x = np.random.default_rng(2).normal(size=(2, 6, 6, 8))
  y = np.asarray(block(jnp.asarray(x, jnp.float32)), np.float64)
  ref = np_bottleneck(x, x if shift is None else -x, np_params(block), 2)
  assert y.shape == (2, 3, 3, 16)
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("stride,cout,shift", [(1, 8, None), (1, 8, negate), (2, 16, negate)])
def test_inverted_residual_matches_numpy_float64(stride, cout, shift):
  block = materialise(lambda rngs: InvertedResidual(8, cout, stride, 6, rngs=rngs, shift=shift))
  block.eval()
  x = np.random.default_rng(3).normal(size=(2, 6, 6, 8))
  y = np.asarray(block(jnp.asarray(x, jnp.float32)), np.float64)
  skip = stride == 1
  branch_in = -x if (skip and shift is not None) else x  # no skip: the hook is never called
  ref = np_inverted_residual(x, branch_in, np_params(block), stride, 48, skip)
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


# ---------------------------------------------------------------------- shift hook and init


def test_shift_hook_sees_every_residual_branch_input():
  x = jnp.ones((2, 32, 32, 3))
  for build, n, first in ((ResNet50, 16, (2, 8, 8, 64)), (MobileNetV2, 10, (2, 8, 8, 24))):
    model = abstract(build)
    before = jax.tree.map(lambda v: v.shape, nnx.state(model))
    seen = []
    assert set_shift(model, lambda h: seen.append(h.shape) or h) == n
    shape_of(model, "features", x)
    assert len(seen) == n and seen[0] == first
    assert jax.tree.map(lambda v: v.shape, nnx.state(model)) == before
    assert set_shift(model, None) == n


def test_shift_hook_module_is_traced_under_jit():
  class Negate(nnx.Module):
    def __init__(self, frames: int):
      self.frames = frames

    def __call__(self, h):
      return -h

  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 6, 6, 8)), jnp.float32)
  block = materialise(lambda rngs: Bottleneck(8, 4, 2, rngs=rngs))
  block.eval()
  fwd = nnx.jit(lambda m, x: m(x))
  plain = fwd(block, x)
  assert set_shift(block, Negate(8)) == 1
  y = np.asarray(fwd(block, x), np.float64)
  ref = np_bottleneck(np.asarray(x, np.float64), -np.asarray(x, np.float64), np_params(block), 2)
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
  assert not np.allclose(y, plain)


def test_initialisation_like_torchvision():
  conv = layers.Conv(64, 256, 3, rngs=nnx.Rngs(0))
  std = float(np.std(np.asarray(conv.kernel[...])))
  assert std == pytest.approx(math.sqrt(2.0 / (256 * 9)), rel=0.02)
  bn = layers.batch_norm(8, rngs=nnx.Rngs(0))
  assert np.all(np.asarray(bn.scale[...]) == 1) and np.all(np.asarray(bn.bias[...]) == 0)
  assert bn.momentum == 0.9 and bn.epsilon == 1e-5
  block = Bottleneck(64, 16, rngs=nnx.Rngs(0), zero_init_residual=True)
  assert np.all(np.asarray(block.bn3.scale[...]) == 0)
  assert np.all(np.asarray(block.bn1.scale[...]) == 1)
