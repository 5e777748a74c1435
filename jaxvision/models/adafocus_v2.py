"""AdaFocusV2 (Wang et al., CVPR 2022) for ActivityNet / FCVID / Mini-Kinetics, in Flax NNX.

Per video of T frames [B, T, H, W, 3] (uint8 or float in [0, 255]):
  global CNN (MobileNetV2) on every whole frame -> feature map g [h, w, Cg] and pooled feature
    (``glance_size`` < ``image_size``: on the frame average-pooled to glance_size first; the patch
    is still cut from the full-resolution frame)
  policy (on g with gradients stopped): 1x1 conv to 64, BN, tanh, flatten, linear, BN, tanh, a GRU
    over the T frames, linear to 2, sigmoid -> patch position a_t in [0, 1]^2 (row, column)
  differentiable crop of a P x P patch at a_t (``crop.crop_patches``, grid_sample semantics)
  local CNN (ResNet-50) on the patch -> pooled local feature
  classifier: [global, local] features -> linear 4096, BN, ReLU -> running max over frames ->
    per-step dropout + linear: logits after every frame (early exit reads them)
  auxiliary per-frame heads on the global and on the local features.
Layout and semantics follow the official PyTorch code (models/adafocus_v2.py of
LeapLabTHU/AdaFocusV2): the flatten after the policy's 1x1 conv is channel-major as in NCHW, the
GRU is PyTorch's (gates r, z, n), the classifier has one head per step.

Training runs every batch twice (``two_pass_outputs``): with the policy's patches and with uniformly
random ones; the global CNN runs once for both, and the random pass does not depend on the policy.

Baselines (``config.model.patch_policy``): ``'random'`` has no policy and is trained and run on
uniformly random patches (one pass); ``'none'`` is the global CNN alone (no crop, no local CNN: the
classifier reads the global features).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxtrain.errors import ConfigError
from jaxvision.models import crop as crop_lib
from jaxvision.models import layers, mobilenet_v2, resnet

RESNETS = {"resnet18": resnet.ResNet18, "resnet34": resnet.ResNet34, "resnet50": resnet.ResNet50}

Array = jax.Array

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_model_config() -> ml_collections.ConfigDict:
  """``config.model`` of AdaFocusV2 with the paper's settings (ActivityNet, P = 128)."""
  c = ml_collections.ConfigDict()
  c.name = "adafocus_v2"
  c.num_classes = 200
  c.num_frames = 16            # T
  c.image_size = 224
  c.patch_size = 128           # P
  c.glance_size = 0            # the global CNN's input side; 0: image_size (the paper's setting)
  c.global_arch = "mobilenet_v2"
  c.global_width = 1.0
  c.local_arch = "resnet50"
  c.local_width = 1.0          # width multiplier of a MobileNetV2 local CNN (ResNets: 1.0 only)
  c.policy_hidden = 2048       # --stn_hidden_dim
  c.classifier_hidden = 4096
  c.dropout = 0.2              # classifier heads (--dropout)
  c.fc_dropout = 0.2           # auxiliary global/local heads (--fc_dropout)
  c.sample_order = True        # frames reordered coarse-to-fine (--sample), for early exit
  c.patch_policy = "learned"   # AdaFocusV2; baselines: 'random' patches, 'none' (global CNN only)
  c.dtype = "float32"
  return c


def check_fields(c: ml_collections.ConfigDict, integers: tuple[str, ...], rates: tuple[str, ...]
                 ) -> Callable[[str, str], None]:
  """The checks both AdaFocusV2 variants share: ``integers`` positive (not bool), the patch inside
  the frame, ``rates`` in [0, 1), a known dtype; each failure one ConfigError naming the field.
  Returns the error raiser, for the variant's own checks."""
  def bad(field: str, what: str):
    raise ConfigError(f"config.model.{field}={c[field]!r}: expected {what}")
  for f in integers:
    if isinstance(c[f], bool) or not isinstance(c[f], int) or c[f] < 1:
      bad(f, "a positive integer")
  if c.patch_size > c.image_size:
    bad("patch_size", f"at most config.model.image_size={c.image_size} (the patch is cut from "
        "the frame)")
  for f in rates:
    if not 0.0 <= float(c[f]) < 1.0:
      bad(f, "a rate in [0, 1)")
  if c.dtype not in ("float32", "bfloat16", "float16"):
    bad("dtype", "'float32', 'bfloat16' or 'float16'")
  return bad


def check_config(c: ml_collections.ConfigDict) -> None:
  bad = check_fields(c, ("num_classes", "num_frames", "image_size", "patch_size", "policy_hidden",
                         "classifier_hidden"), ("dropout", "fc_dropout"))
  g = glance_size(c)
  if isinstance(c.get("glance_size", 0), bool) or g < 1 or c.image_size % g:
    bad("glance_size", f"0 or a divisor of config.model.image_size={c.image_size} (the global "
        "CNN sees the frame average-pooled by image_size / glance_size)")
  if c.patch_policy not in PATCH_POLICIES:
    bad("patch_policy", " or ".join(map(repr, PATCH_POLICIES)))


PATCH_POLICIES = ("learned", "random", "none")


def glance_size(c: ml_collections.ConfigDict) -> int:
  """The side of the frames the global CNN sees: ``c.glance_size``, or ``c.image_size`` if 0."""
  return int(c.get("glance_size", 0) or c.image_size)


def input_order(num_frames: int) -> list[int]:
  """Coarse-to-fine frame order (the official ``--sample``): the middle frame, the first and the
  last, then the midpoints of ever finer intervals, so early steps see the whole video."""
  order = [(num_frames - 1) // 2, 0, num_frames - 1]
  parts = 2
  while len(set(order)) < num_frames:
    edges = np.floor(np.linspace(0, num_frames - 1, parts + 1)).astype(int)
    for a, b in zip(edges[:-1], edges[1:]):
      mid = (a + b) // 2
      if mid not in order:
        order.append(int(mid))
    parts *= 2
  seen, out = set(), []
  for i in order:  # T = 1 or 2: the first three entries repeat
    if i not in seen:
      seen.add(i)
      out.append(i)
  return out


def downsample(x: Array, size: int) -> Array:
  """Frames [N, H, H, C] -> [N, size, size, C] by the mean over each (H/size)^2 block (area
  resampling: the low-pass a downscale needs, and no multiplies); H a multiple of size."""
  f = x.shape[1] // size
  if f == 1:
    return x
  n, h, w, ch = x.shape
  return x.reshape(n, h // f, f, w // f, f, ch).astype(jnp.float32).mean(axis=(2, 4)).astype(x.dtype)


class Dense(nnx.Module):
  def __init__(self, din: int, dout: int, names: tuple, *, rngs: nnx.Rngs, dtype: Any,
               use_bias: bool = True):
    init = layers.torch_linear_init(din)
    self.kernel = layers.param(rngs, init, (din, dout), names)
    self.bias = layers.param(rngs, init, (dout,), (names[1],)) if use_bias else None
    self.dtype = dtype

  def __call__(self, x: Array) -> Array:
    y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    return y if self.bias is None else y + self.bias[...].astype(self.dtype)


class GRU(nnx.Module):
  """PyTorch's single-layer GRU (gates r, z, n; h0 = 0) over axis 1 of x [B, T, din]."""

  def __init__(self, din: int, hidden: int, *, rngs: nnx.Rngs, dtype: Any):
    init = layers.torch_linear_init(hidden)
    self.w_ih = layers.param(rngs, init, (din, 3, hidden), ("embed", None, "mlp"))
    self.w_hh = layers.param(rngs, init, (hidden, 3, hidden), ("embed", None, "mlp"))
    self.b_ih = layers.param(rngs, init, (3, hidden), (None, "mlp"))
    self.b_hh = layers.param(rngs, init, (3, hidden), (None, "mlp"))
    self.hidden, self.dtype = hidden, dtype

  def __call__(self, x: Array) -> Array:
    dt = self.dtype
    b, t, _ = x.shape
    # Input projections of every step in one matmul; only the recurrence is sequential.
    gi = jnp.einsum("btd,dgh->btgh", x.astype(dt), self.w_ih[...].astype(dt)) + self.b_ih[...]
    w_hh, b_hh = self.w_hh[...].astype(dt), self.b_hh[...]

    def step(h, gi_t):
      gh = jnp.einsum("bd,dgh->bgh", h.astype(dt), w_hh) + b_hh
      r = jax.nn.sigmoid(gi_t[:, 0] + gh[:, 0])
      z = jax.nn.sigmoid(gi_t[:, 1] + gh[:, 1])
      n = jnp.tanh(gi_t[:, 2] + r * gh[:, 2])
      h = (1.0 - z) * n + z * h
      return h, h

    h0 = jnp.zeros((b, self.hidden), gi.dtype)
    _, hs = jax.lax.scan(step, h0, jnp.swapaxes(gi, 0, 1))
    return jnp.swapaxes(hs, 0, 1)


class PolicySTN(nnx.Module):
  """Global feature maps [B*T, h, w, C] -> patch positions [B*T, 2] in [0, 1] (row, column)."""

  def __init__(self, channels: int, spatial: int, hidden: int, num_frames: int, *,
               rngs: nnx.Rngs, dtype: Any):
    self.conv = Dense(channels, 64, ("conv_in", None), rngs=rngs, dtype=dtype, use_bias=False)
    self.bn1 = layers.batch_norm(64, rngs=rngs, dtype=dtype)
    self.fc = Dense(64 * spatial, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.bn2 = layers.batch_norm(hidden, rngs=rngs, dtype=dtype)
    self.gru = GRU(hidden, hidden, rngs=rngs, dtype=dtype)
    self.out = Dense(hidden, 2, ("mlp", None), rngs=rngs, dtype=dtype)
    self.num_frames = num_frames

  def __call__(self, fmap: Array) -> Array:
    n = fmap.shape[0]
    h = jnp.tanh(self.bn1(self.conv(fmap)))                       # 1x1 conv = per-pixel linear
    h = jnp.transpose(h, (0, 3, 1, 2)).reshape(n, -1)              # channel-major, as NCHW flatten
    h = jnp.tanh(self.bn2(self.fc(h)))
    h = self.gru(h.reshape(n // self.num_frames, self.num_frames, -1))
    return jax.nn.sigmoid(self.out(h.reshape(n, -1)).astype(jnp.float32))


class PoolingClassifier(nnx.Module):
  """Per-frame features [B, T, D] -> logits after every frame [B, T, C]: linear, BN, ReLU, a
  running max over frames, and one dropout + linear head per step."""

  def __init__(self, din: int, hidden: int, num_frames: int, num_classes: int, dropout: float, *,
               rngs: nnx.Rngs, dtype: Any):
    self.fc = Dense(din, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.bn = layers.batch_norm(hidden, rngs=rngs, dtype=dtype)
    self.drop = nnx.Dropout(dropout)
    init = layers.torch_linear_init(hidden)
    self.heads_kernel = layers.param(rngs, init, (num_frames, hidden, num_classes), (None, "mlp", "vocab"))
    self.heads_bias = layers.param(rngs, init, (num_frames, num_classes), (None, "vocab"))
    self.dtype = dtype

  def __call__(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
    b, t, d = x.shape
    z = jax.nn.relu(self.bn(self.fc(x.reshape(b * t, d)))).reshape(b, t, -1)
    z = self.drop(jax.lax.cummax(z, axis=1), rngs=rngs)
    logits = jnp.einsum("btd,tdc->btc", z.astype(self.dtype), self.heads_kernel[:t].astype(self.dtype))
    return (logits + self.heads_bias[:t]).astype(jnp.float32)


class Head(nnx.Module):
  """Dropout + linear (the auxiliary per-frame heads)."""

  def __init__(self, din: int, num_classes: int, dropout: float, *, rngs: nnx.Rngs, dtype: Any):
    self.drop = nnx.Dropout(dropout)
    self.fc = Dense(din, num_classes, ("embed", "vocab"), rngs=rngs, dtype=dtype)

  def __call__(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
    return self.fc(self.drop(x, rngs=rngs)).astype(jnp.float32)


def build_backbone(arch: str, *, rngs: nnx.Rngs, dtype: Any, width: float = 1.0) -> nnx.Module:
  """A backbone with ``features(x [N,H,W,3]) -> [N,h,w,C]`` and ``num_features`` (= C)."""
  if arch == "mobilenet_v2":
    return mobilenet_v2.MobileNetV2(rngs=rngs, width=width, dtype=dtype)
  if arch in RESNETS:
    if width != 1.0:
      raise ConfigError(f"backbone {arch!r}: width={width!r}, expected 1.0 (width multipliers "
                        "are for mobilenet_v2)")
    return RESNETS[arch](rngs=rngs, dtype=dtype)
  raise ConfigError(f"backbone {arch!r}: expected 'mobilenet_v2' or one of {sorted(RESNETS)}")


class AdaFocusV2(nnx.Module):
  """``AdaFocusV2(config_or_config.model, rngs=...)``; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    c = config.model if "model" in config else config
    check_config(c)
    self.config = ml_collections.FrozenConfigDict(c)
    dt = jnp.dtype(c.dtype)
    self.global_cnn = build_backbone(c.global_arch, rngs=rngs, dtype=dt, width=c.global_width)
    local = c.patch_policy != "none"
    self.local_cnn = (build_backbone(c.local_arch, rngs=rngs, dtype=dt,
                                     width=c.get("local_width", 1.0)) if local else None)
    cg, cl = self.global_cnn.num_features, self.local_cnn.num_features if local else 0
    self.local_head = Head(cl, c.num_classes, c.fc_dropout, rngs=rngs, dtype=dt) if local else None
    fmap = -(-glance_size(c) // 32)  # the global CNN's stride-32 map (PyTorch padding: ceil)
    self.policy = (PolicySTN(cg, fmap * fmap, c.policy_hidden, c.num_frames, rngs=rngs, dtype=dt)
                   if c.patch_policy == "learned" else None)
    self.global_head = Head(cg, c.num_classes, c.fc_dropout, rngs=rngs, dtype=dt)
    self.classifier = PoolingClassifier(cg + cl, c.classifier_hidden, c.num_frames, c.num_classes,
                                        c.dropout, rngs=rngs, dtype=dt)
    self.dtype = dt

  # -- pieces -------------------------------------------------------------------------------------
  def normalize(self, frames: Array) -> Array:
    """[B, T, H, W, 3] in [0, 255] -> [B*T, H, W, 3] ImageNet-normalised, frames in model order."""
    c = self.config
    if frames.ndim != 5 or frames.shape[1] != c.num_frames or frames.shape[-1] != 3 or \
       frames.shape[2] != c.image_size or frames.shape[3] != c.image_size:
      raise ValueError(f"AdaFocusV2 input has shape {tuple(frames.shape)}; expected [B, "
                       f"T={c.num_frames}, {c.image_size}, {c.image_size}, 3]")
    if c.sample_order:
      frames = frames[:, np.asarray(input_order(c.num_frames))]
    x = frames.astype(jnp.float32) / 255.0
    x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    return x.reshape((-1,) + x.shape[2:]).astype(self.dtype)

  def glance(self, x: Array) -> tuple[Array, Array]:
    """Normalised frames [N, H, W, 3] -> (global feature maps [N,h,w,C], pooled [N, C]), the
    frames average-pooled to ``glance_size`` first when it is smaller."""
    fmap = self.global_cnn.features(downsample(x, glance_size(self.config)))
    return fmap, jnp.mean(fmap.astype(jnp.float32), axis=(1, 2))

  def focus(self, x: Array, actions: Array | None, global_feat: Array, rngs: nnx.Rngs | None
            ) -> dict:
    """Crops the patches at ``actions`` [N, 2] and classifies; per-frame outputs [B, T, ...]
    (the global-only baseline, ``actions`` None: classifies the global features alone)."""
    c = self.config
    b = x.shape[0] // c.num_frames
    if self.local_cnn is None:
      return {"logits": self.classifier(global_feat.reshape(b, c.num_frames, -1), rngs)}
    patches = crop_lib.crop_patches(x, actions, c.patch_size)  # positions stay float32
    local_feat = jnp.mean(self.local_cnn.features(patches).astype(jnp.float32), axis=(1, 2))
    both = jnp.concatenate([global_feat, local_feat], axis=-1).reshape(b, c.num_frames, -1)
    return {"logits": self.classifier(both, rngs),
            "local_logits": self.local_head(local_feat, rngs).reshape(b, c.num_frames, -1),
            "actions": actions.reshape(b, c.num_frames, 2)}

  # -- forward ------------------------------------------------------------------------------------
  def positions(self, fmap: Array, key: Array | None = None) -> Array | None:
    """Patch positions [N, 2]: the policy's, uniformly random ones (``patch_policy='random'``;
    from ``key``, a fixed key if None), or None (global only)."""
    if self.config.patch_policy == "none":
      return None
    if self.policy is not None:
      return self.policy(fmap)
    key = jax.random.key(0) if key is None else key
    return jax.random.uniform(key, (fmap.shape[0], 2), jnp.float32)

  def __call__(self, frames: Array, *, rngs: nnx.Rngs | None = None,
               actions: Array | None = None, key: Array | None = None) -> dict:
    """One pass with the policy's patches (or the given ``actions`` [B, T, 2], model order; or
    random ones drawn from ``key``, ``patch_policy='random'``): ``logits`` [B, T, C] after every
    frame (in model order), ``global_logits`` and ``local_logits`` per frame, ``actions``
    [B, T, 2] (the last two absent when global-only)."""
    x = self.normalize(frames)
    fmap, global_feat = self.glance(x)
    a = self.positions(fmap, key) if actions is None else actions.reshape(-1, 2).astype(jnp.float32)
    out = self.focus(x, a, global_feat, rngs)
    out["global_logits"] = self.global_head(global_feat, rngs).reshape(out["logits"].shape)
    return out

  def two_pass_outputs(self, frames: Array, key: Array, rngs: nnx.Rngs | None = None
                       ) -> tuple[dict, dict]:
    """Training: (policy pass, random-patch pass). The policy sees the global feature maps with
    gradients stopped; the random pass draws positions uniformly in [0, 1]^2 from ``key``."""
    x = self.normalize(frames)
    fmap, global_feat = self.glance(x)
    global_logits = self.global_head(global_feat, rngs)
    actions = self.policy(jax.lax.stop_gradient(fmap))
    random_actions = jax.random.uniform(key, actions.shape, jnp.float32)
    outs = []
    for a in (actions, random_actions):
      out = self.focus(x, a, global_feat, rngs)
      out["global_logits"] = global_logits.reshape(out["logits"].shape)
      outs.append(out)
    return outs[0], outs[1]


def _cross_entropy(logits: Array, labels: Array) -> Array:
  """Mean cross-entropy of logits [B, T, C] against labels [B] (every step or frame)."""
  labels = jnp.broadcast_to(labels[:, None], logits.shape[:2])
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def pass_loss(out: dict, labels: Array) -> Array:
  """Cross-entropy on every step's logits plus the per-frame global and local heads."""
  return sum(_cross_entropy(out[k], labels)
             for k in ("logits", "global_logits", "local_logits") if k in out)


def train_loss(model: AdaFocusV2, batch: dict, rng: Array, step: Array) -> tuple[Array, dict]:
  """The engine's loss: both passes, averaged (as the official training). ``batch``: ``frames``
  [B, T, H, W, 3] uint8, ``label`` [B] int32 or multi-hot [B, C] (multi-label datasets train with
  cross-entropy on one label, as the official code does; here the lowest-numbered one). The
  baselines (``patch_policy`` 'random' or 'none') train on their one pass."""
  del step
  patch_key, drop_key = jax.random.split(rng)
  labels = batch["label"]
  if labels.ndim == 2:
    labels = jnp.argmax(labels, axis=-1)
  rngs = nnx.Rngs(dropout=drop_key)
  if model.policy is None:
    out = model(batch["frames"], rngs=rngs, key=patch_key)
    loss, metrics = pass_loss(out, labels), {}
  else:
    out, random_out = model.two_pass_outputs(batch["frames"], patch_key, rngs)
    loss_policy, loss_random = pass_loss(out, labels), pass_loss(random_out, labels)
    loss = 0.5 * (loss_policy + loss_random)
    metrics = {"loss_policy_pass": loss_policy, "loss_random_pass": loss_random}
  correct = jnp.argmax(out["logits"], -1) == labels[:, None]
  metrics["accuracy_per_step"] = jnp.mean(correct.astype(jnp.float32), axis=0)
  return loss, metrics


REDUCTIONS = {"accuracy_per_step": "none"}
