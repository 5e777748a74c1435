"""AdaFocusV2 for Something-Something V1/V2 and Jester: TSM backbones, one patch per video.

Per video, two frame samples of the same clip (as the official Sth-Sth code's data set gives):
``glance`` [B, Tg, H, W, 3] (default Tg = 8) and ``focus`` [B, Tf, H, W, 3] (Tf = 12 = 1.5 Tg),
uint8 or float in [0, 255]:
  global CNN: MobileNetV2 with the temporal shift (``tsm.TemporalShift(Tg)``, offline) on every
    glance frame -> feature maps [B*Tg, h, w, 1280] and pooled features
  policy (on the feature maps with gradients stopped, the Tg maps stacked on channels frame-major
    as the official ``view(-1, T * 1280, 7, 7)``): 1x1 conv to 64, BN, tanh, flatten
    (channel-major, as NCHW), linear 1024, BN, tanh, linear 512, BN, tanh, linear 2, sigmoid
    -> one patch position a in [0, 1]^2 (row, column) per video
  local CNN: ResNet-50 with the temporal shift (Tf) on the P x P patch at a of every focus frame
  heads, per backbone as TSM's TSN: dropout on the pooled per-frame features, then ``fc`` on the
    features with gradients stopped (the classification logits) and ``aux_fc`` on them unstopped
    (the auxiliary logits that train the backbone), each averaged over frames.
Outputs: ``logits`` = global ``fc`` + local ``fc`` [B, C], ``global_aux_logits`` and
``local_aux_logits`` [B, C], ``actions`` [B, 2]. Training (``train_loss``) runs the policy's patch
and a uniformly random one and averages the two passes' CE(logits) + CE(global aux) + CE(local aux),
as the official ``main.py``.

The official recipe trains with batch norm in its usual mode (``--npb``: TSN's partial BN off) and
clips gradients at norm 20 (``--gd 20``).

Data, training and evaluation: ``jaxvision.data.VideoClips(..., focus_frames=Tf)`` gives the two
samples of each clip under one spatial transform; ``jaxvision.main`` trains and evaluates this
variant (``configs/adafocusv2_tsm.py``). Evaluation steps: this model has no per-frame steps (TSN
averages over frames, and the offline shift reads future frames), so early exit and
``jaxvision.predict`` use 2 stages: 1 = glance only, ``global_aux_logits`` (the global CNN's own
head, trained by its own cross-entropy), costing the global CNN on the glance frames; 2 = glance +
focus, ``logits``, costing the whole model (``jaxvision.train``).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jaxvision.models import crop as crop_lib
from jaxvision.models import layers
from jaxvision.models.adafocus_v2 import (IMAGENET_MEAN, IMAGENET_STD, Dense, build_backbone,
                                          check_fields)
from jaxvision.models.tsm import TemporalShift

Array = jax.Array


def default_model_config() -> ml_collections.ConfigDict:
  """``config.model`` of the Sth-Sth / Jester variant (Something-Something V1: 174 classes)."""
  c = ml_collections.ConfigDict()
  c.name = "adafocus_v2_tsm"
  c.num_classes = 174
  c.glance_frames = 8          # Tg, global CNN (--num_segments)
  c.focus_frames = 12          # Tf, local CNN (1.5 x num_segments in the official code)
  c.image_size = 224
  c.patch_size = 128           # P: 128 / 144 / 160 / 176 in the paper
  c.global_arch = "mobilenet_v2"
  c.global_width = 1.0
  c.local_arch = "resnet50"
  c.shift_div = 8              # 1/8 of the channels shifted each way (--shift_div)
  c.dropout = 0.5              # before the heads (--dropout of the official training script)
  c.dtype = "float32"
  return c


def check_config(c: ml_collections.ConfigDict) -> None:
  bad = check_fields(c, ("num_classes", "glance_frames", "focus_frames", "image_size", "patch_size",
                         "shift_div"), ("dropout",))
  if c.image_size % 32:
    bad("image_size", "a multiple of 32 (the policy reads the global CNN's stride-32 map)")


class PolicyMLP(nnx.Module):
  """Stacked global feature maps [B, h, w, Tg*C] -> one patch position [B, 2] in [0, 1]."""

  def __init__(self, channels: int, spatial: int, *, rngs: nnx.Rngs, dtype: Any):
    self.conv = Dense(channels, 64, ("conv_in", None), rngs=rngs, dtype=dtype, use_bias=False)
    self.bn0 = layers.batch_norm(64, rngs=rngs, dtype=dtype)
    self.fc1 = Dense(64 * spatial, 1024, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.bn1 = layers.batch_norm(1024, rngs=rngs, dtype=dtype)
    self.fc2 = Dense(1024, 512, ("mlp", None), rngs=rngs, dtype=dtype)
    self.bn2 = layers.batch_norm(512, rngs=rngs, dtype=dtype)
    self.out = Dense(512, 2, (None, None), rngs=rngs, dtype=dtype)

  def __call__(self, fmap: Array) -> Array:
    h = jnp.tanh(self.bn0(self.conv(fmap)))                          # 1x1 conv = per-pixel linear
    h = jnp.transpose(h, (0, 3, 1, 2)).reshape(fmap.shape[0], -1)     # channel-major flatten
    h = jnp.tanh(self.bn1(self.fc1(h)))
    h = jnp.tanh(self.bn2(self.fc2(h)))
    return jax.nn.sigmoid(self.out(h).astype(jnp.float32))


class TSNHeads(nnx.Module):
  """Per-frame pooled features [B*T, D] -> (``fc`` on stopped features, ``aux_fc``), each the
  mean over a video's T frames [B, C]; weights N(0, 0.001), biases 0, as TSM's TSN."""

  def __init__(self, din: int, num_classes: int, num_frames: int, dropout: float, *,
               rngs: nnx.Rngs, dtype: Any):
    init = dict(kernel_init=nnx.initializers.normal(0.001), bias_init=nnx.initializers.zeros_init())
    self.drop = nnx.Dropout(dropout)
    self.fc = layers.Linear(din, num_classes, rngs=rngs, dtype=dtype, **init)
    self.aux_fc = layers.Linear(din, num_classes, rngs=rngs, dtype=dtype, **init)
    self.num_frames = num_frames

  def __call__(self, feat: Array, rngs: nnx.Rngs | None = None) -> tuple[Array, Array]:
    h = self.drop(feat, rngs=rngs)
    b = feat.shape[0] // self.num_frames

    def per_video(y):
      return jnp.mean(y.astype(jnp.float32).reshape(b, self.num_frames, -1), axis=1)
    return per_video(self.fc(jax.lax.stop_gradient(h))), per_video(self.aux_fc(h))


class AdaFocusV2TSM(nnx.Module):
  """``AdaFocusV2TSM(config_or_config.model, rngs=...)``; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    c = config.model if "model" in config else config
    check_config(c)
    self.config = ml_collections.FrozenConfigDict(c)
    dt = jnp.dtype(c.dtype)
    self.global_cnn = build_backbone(c.global_arch, rngs=rngs, dtype=dt, width=c.global_width)
    self.local_cnn = build_backbone(c.local_arch, rngs=rngs, dtype=dt)
    layers.set_shift(self.global_cnn, TemporalShift(c.glance_frames, c.shift_div))
    layers.set_shift(self.local_cnn, TemporalShift(c.focus_frames, c.shift_div))
    cg, cl = self.global_cnn.num_features, self.local_cnn.num_features
    fmap = c.image_size // 32
    self.policy = PolicyMLP(c.glance_frames * cg, fmap * fmap, rngs=rngs, dtype=dt)
    self.global_heads = TSNHeads(cg, c.num_classes, c.glance_frames, c.dropout, rngs=rngs, dtype=dt)
    self.local_heads = TSNHeads(cl, c.num_classes, c.focus_frames, c.dropout, rngs=rngs, dtype=dt)
    self.dtype = dt

  def normalize(self, frames: Array, num_frames: int, name: str) -> Array:
    """[B, T, H, W, 3] in [0, 255] -> [B*T, H, W, 3] ImageNet-normalised."""
    s = self.config.image_size
    if frames.ndim != 5 or frames.shape[1:] != (num_frames, s, s, 3):
      raise ValueError(f"AdaFocusV2TSM {name} input has shape {tuple(frames.shape)}; expected "
                       f"[B, {num_frames}, {s}, {s}, 3]")
    x = (frames.astype(jnp.float32) / 255.0 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    return x.reshape((-1,) + x.shape[2:]).astype(self.dtype)

  def glance(self, glance: Array, rngs: nnx.Rngs | None = None) -> dict:
    """Global CNN: ``fmap`` (the Tg maps stacked on channels, frame-major) [B, h, w, Tg*C] and
    the heads' ``global_logits``, ``global_aux_logits`` [B, C]."""
    c = self.config
    x = self.normalize(glance, c.glance_frames, "glance")
    fmap = self.global_cnn.features(x)  # [B*Tg, h, w, C]
    logits, aux = self.global_heads(jnp.mean(fmap.astype(jnp.float32), axis=(1, 2)), rngs)
    n, h, w, ch = fmap.shape
    stacked = jnp.transpose(fmap.reshape(n // c.glance_frames, c.glance_frames, h, w, ch),
                            (0, 2, 3, 1, 4)).reshape(n // c.glance_frames, h, w, -1)
    return {"fmap": stacked, "global_logits": logits, "global_aux_logits": aux}

  def focus(self, focus: Array, actions: Array, rngs: nnx.Rngs | None = None) -> dict:
    """Local CNN on the patch at ``actions`` [B, 2] of every focus frame: ``local_logits``,
    ``local_aux_logits`` [B, C]."""
    c = self.config
    x = self.normalize(focus, c.focus_frames, "focus")
    per_frame = jnp.repeat(actions.astype(jnp.float32), c.focus_frames, axis=0)
    patches = crop_lib.crop_patches(x, per_frame, c.patch_size)
    feat = jnp.mean(self.local_cnn.features(patches).astype(jnp.float32), axis=(1, 2))
    logits, aux = self.local_heads(feat, rngs)
    return {"local_logits": logits, "local_aux_logits": aux}

  def __call__(self, glance: Array, focus: Array, *, rngs: nnx.Rngs | None = None,
               actions: Array | None = None) -> dict:
    """One pass with the policy's patch (or the given ``actions`` [B, 2])."""
    g = self.glance(glance, rngs)
    a = self.policy(jax.lax.stop_gradient(g["fmap"])) if actions is None else actions
    out = self.focus(focus, a, rngs)
    return {"logits": g["global_logits"] + out["local_logits"], "actions": a,
            "global_aux_logits": g["global_aux_logits"], **out}

  def two_pass_outputs(self, glance: Array, focus: Array, key: Array,
                       rngs: nnx.Rngs | None = None) -> tuple[dict, dict]:
    """Training: (policy pass, random-patch pass); the global CNN runs once for both."""
    g = self.glance(glance, rngs)
    actions = self.policy(jax.lax.stop_gradient(g["fmap"]))
    outs = []
    for a in (actions, jax.random.uniform(key, actions.shape, jnp.float32)):
      out = self.focus(focus, a, rngs)
      outs.append({"logits": g["global_logits"] + out["local_logits"], "actions": a,
                   "global_aux_logits": g["global_aux_logits"], **out})
    return outs[0], outs[1]


def pass_loss(out: dict, labels: Array) -> Array:
  """CE(logits) + CE(global aux) + CE(local aux), each a mean over the batch."""
  ce = optax.softmax_cross_entropy_with_integer_labels
  return sum(ce(out[k], labels).mean() for k in ("logits", "global_aux_logits", "local_aux_logits"))


def train_loss(model: AdaFocusV2TSM, batch: dict, rng: Array, step: Array) -> tuple[Array, dict]:
  """The engine's loss: the policy pass and the random-patch pass, averaged. ``batch``:
  ``glance`` [B, Tg, H, W, 3], ``focus`` [B, Tf, H, W, 3], ``label`` [B] int32."""
  del step
  patch_key, drop_key = jax.random.split(rng)
  out, random_out = model.two_pass_outputs(batch["glance"], batch["focus"], patch_key,
                                           nnx.Rngs(dropout=drop_key))
  lp, lr = pass_loss(out, batch["label"]), pass_loss(random_out, batch["label"])
  loss = 0.5 * (lp + lr)
  return loss, {"loss": loss, "loss_policy_pass": lp, "loss_random_pass": lr}
