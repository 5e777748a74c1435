"""Temporal shift (TSM, Lin, Gan and Han, ICCV 2019) for the backbones' residual-branch hook.

A backbone sees a batch of videos as frames [N*T, H, W, C], each video's T frames consecutive.
``TemporalShift(num_frames)`` moves a fraction of the channels along time before a residual
branch's first conv, at zero FLOPs:

- offline (bidirectional, the SSv1/SSv2/Jester models): channels [0, C/fold_div) take the next
  frame's values, channels [C/fold_div, 2C/fold_div) the previous frame's, the rest stay; frames
  past either end contribute zeros;
- online (causal, for streaming): channels [0, C/fold_div) take the previous frame's values
  (zeros at the first frame), the rest stay; no frame reads the future.

Install with ``jaxvision.models.layers.set_shift(backbone, TemporalShift(T))`` or the
backbone's ``shift=`` argument; parameters and their names do not change, so checkpoints of
TSM models load into the same modules.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array

MODES = ("offline", "online")


@dataclasses.dataclass(frozen=True)
class TemporalShift:
  """x [N*T, H, W, C] -> the same shape with ``C // fold_div`` channels shifted per direction."""

  num_frames: int
  fold_div: int = 8
  mode: str = "offline"

  def __post_init__(self):
    for name in ("num_frames", "fold_div"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"TemporalShift.{name}={v!r}: expected a positive integer")
    if self.mode not in MODES:
      raise ValueError(f"TemporalShift.mode={self.mode!r}: expected one of {MODES}")

  def __call__(self, x: Array) -> Array:
    nt, t = x.shape[0], self.num_frames
    if nt % t:
      raise ValueError(f"TemporalShift: {nt} frames in the batch is not a multiple of "
                       f"num_frames={t}")
    v = x.reshape(nt // t, t, *x.shape[1:])
    fold = x.shape[-1] // self.fold_div
    zero = jnp.zeros_like(v[:, :1, ..., :fold])
    past = jnp.concatenate([zero, v[:, :-1, ..., :fold]], axis=1)  # frame t reads t - 1
    if self.mode == "online":
      out = jnp.concatenate([past, v[..., fold:]], axis=-1)
    else:
      future = jnp.concatenate([v[:, 1:, ..., :fold], zero], axis=1)  # frame t reads t + 1
      prev = jnp.concatenate([zero, v[:, :-1, ..., fold:2 * fold]], axis=1)
      out = jnp.concatenate([future, prev, v[..., 2 * fold:]], axis=-1)
    return out.reshape(x.shape)
