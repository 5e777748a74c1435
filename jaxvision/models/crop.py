"""Differentiable patch crop of AdaFocusV2, with PyTorch ``affine_grid`` / ``grid_sample`` semantics.

What the official code does (LeapLabTHU/AdaFocusV2, ``Experiments on ActivityNet, FCVID and
Mini-Kinetics/models/adafocus_v2.py``, ``get_patches_frame``; the same code is ``get_patch_grid`` in
``Experiments on Sth-Sth and Jester/main.py``), for square S x S frames, patch size P and the policy's
sigmoid output ``a`` of shape [N, 2]::

  y1, x1 = a[:, 0] * (S - P), a[:, 1] * (S - P)     # a[:, 0] -> rows (y, height), a[:, 1] -> cols (x)
  theta = [[P / S, 0, -1 + (2 * x1 + P) / S],       # row 0 of theta produces grid x (width)
           [0, P / S, -1 + (2 * y1 + P) / S]]       # row 1 produces grid y (height)
  grid = F.affine_grid(theta, (N, 3, P, P))         # output P x P; align_corners default (False)
  patches = F.grid_sample(frames, grid)             # bilinear, zeros padding, align_corners=False

So the scale is s = P/S and the translation is t = -1 + (2*x1 + P)/S = (2a - 1)(1 - s): a = 0 puts the
patch at the top/left edge, a = 1 at the bottom/right edge, and for a in [0, 1] it stays inside the
frame. Here H and W may differ: x uses W and a[..., 1], y uses H and a[..., 0].

Working the formulas through: output column j samples the input at pixel index ix_j = x1 + j (pixel
centres at integer indices), and likewise iy_i = y1 + i. Hence, when y1 = a0*(H-P) and x1 = a1*(W-P)
are integers (and the patch lies inside the frame, as it does for a in [0, 1] and P <= H, W), the crop
equals ``images[..., y1:y1+P, x1:x1+P, :]`` exactly; otherwise it interpolates between neighbours.

Because the grid is axis-aligned, ``crop_patches`` uses the exact separable form
``Wy @ image @ Wx^T`` with [P, H] and [W, P] bilinear weight matrices (two small matmuls per frame);
``grid_sample`` is the general gather-based version for any grid. Layout is NHWC; any leading batch
dims are allowed. Coordinates are computed in float32 (float64 if the inputs are float64); bfloat16 or
float16 images keep their dtype and accumulate in float32.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

__all__ = ["action_to_theta", "affine_grid", "grid_sample", "crop_patches", "patch_boxes"]


def _hw(image_size: int | Sequence[int]) -> tuple[int, int]:
  if isinstance(image_size, int):
    return image_size, image_size
  h, w = (int(v) for v in image_size)
  return h, w


def _coord_dtype(*dtypes) -> jnp.dtype:
  """float32, or float64 when an input is float64 (needs x64)."""
  return jnp.result_type(jnp.float32, *[d if jnp.issubdtype(d, jnp.floating) else jnp.float32
                                        for d in dtypes])


def _out_dtype(dtype) -> jnp.dtype:
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)


def _check_patch(patch_size: int) -> int:
  if int(patch_size) != patch_size or patch_size < 1:
    raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
  return int(patch_size)


def _corners(actions: Array, h: int, w: int, p: int, dtype) -> tuple[Array, Array]:
  """Top-left pixel offsets (y1, x1) of the patch: a[..., 0] * (H - P), a[..., 1] * (W - P)."""
  a = actions.astype(dtype)
  return a[..., 0] * (h - p), a[..., 1] * (w - p)


def action_to_theta(actions: Array, image_size: int | Sequence[int], patch_size: int) -> Array:
  """Policy actions [..., 2] in [0, 1] (row, col) -> affine ``theta`` [..., 2, 3] as in the official code."""
  h, w = _hw(image_size)
  p = _check_patch(patch_size)
  actions = jnp.asarray(actions)
  if actions.shape[-1:] != (2,):
    raise ValueError(f"actions: expected shape [..., 2], got {actions.shape}")
  dt = _coord_dtype(actions.dtype)
  y1, x1 = _corners(actions, h, w, p, dt)
  zero = jnp.zeros_like(x1)
  row_x = jnp.stack([zero + p / w, zero, -1.0 + (2.0 * x1 + p) / w], axis=-1)
  row_y = jnp.stack([zero, zero + p / h, -1.0 + (2.0 * y1 + p) / h], axis=-1)
  return jnp.stack([row_x, row_y], axis=-2)


def affine_grid(theta: Array, out_h: int, out_w: int) -> Array:
  """``F.affine_grid(theta, (B, C, out_h, out_w), align_corners=False)`` in NHWC: [..., out_h, out_w, 2].

  The last axis is (x, y) in normalised [-1, 1] coordinates; base points are pixel centres
  (2k + 1) / n - 1.
  """
  theta = jnp.asarray(theta)
  if theta.shape[-2:] != (2, 3):
    raise ValueError(f"theta: expected shape [..., 2, 3], got {theta.shape}")
  dt = _coord_dtype(theta.dtype)
  theta = theta.astype(dt)
  xs = (2.0 * jnp.arange(out_w, dtype=dt) + 1.0) / out_w - 1.0
  ys = (2.0 * jnp.arange(out_h, dtype=dt) + 1.0) / out_h - 1.0
  t = theta[..., None, None, :, :]                               # [..., 1, 1, 2, 3]
  grid = (t[..., 0] * xs[None, :, None] + t[..., 1] * ys[:, None, None] + t[..., 2])
  return grid                                                     # [..., out_h, out_w, 2]


def grid_sample(images: Array, grid: Array) -> Array:
  """``F.grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False)`` in NHWC.

  images [..., H, W, C], grid [..., h, w, 2] with (x, y) in [-1, 1] and the same leading dims;
  returns [..., h, w, C]. Gathers the 4 neighbours with clamped indices; out-of-frame ones get
  weight 0.
  """
  images, grid = jnp.asarray(images), jnp.asarray(grid)
  if images.ndim < 3 or grid.ndim < 3 or grid.shape[-1] != 2:
    raise ValueError(f"expected images [..., H, W, C] and grid [..., h, w, 2], got {images.shape}, "
                     f"{grid.shape}")
  lead = images.shape[:-3]
  if grid.shape[:-3] != lead:
    raise ValueError(f"leading dims differ: images {images.shape}, grid {grid.shape}")
  hi, wi, c = images.shape[-3:]
  ho, wo = grid.shape[-3:-1]
  dt = _coord_dtype(images.dtype, grid.dtype)
  out_dt = _out_dtype(images.dtype)
  flat = images.reshape((-1, hi * wi, c))
  g = grid.astype(dt).reshape((-1, ho * wo, 2))
  ix = ((g[..., 0] + 1.0) * wi - 1.0) / 2.0
  iy = ((g[..., 1] + 1.0) * hi - 1.0) / 2.0
  x0, y0 = jnp.floor(ix), jnp.floor(iy)
  fx, fy = ix - x0, iy - y0
  out = jnp.zeros(flat.shape[:1] + (ho * wo, c), dt)
  for dy, wy in ((0, 1.0 - fy), (1, fy)):
    for dx, wx in ((0, 1.0 - fx), (1, fx)):
      yy, xx = y0 + dy, x0 + dx
      inside = (yy >= 0) & (yy <= hi - 1) & (xx >= 0) & (xx <= wi - 1)
      idx = (jnp.clip(yy, 0, hi - 1).astype(jnp.int32) * wi + jnp.clip(xx, 0, wi - 1).astype(jnp.int32))
      vals = jnp.take_along_axis(flat, idx[..., None], axis=1).astype(dt)
      out = out + vals * jnp.where(inside, wy * wx, 0.0)[..., None]
  return out.reshape(lead + (ho, wo, c)).astype(out_dt)


def _interp_matrix(pos: Array, n: int) -> Array:
  """Bilinear weights [..., P, n] for sample positions ``pos`` [..., P] (pixel-index units), zeros outside.

  Floor-based like grid_sample: w[floor(p)] = 1 - frac, w[floor(p) + 1] = frac, so values and
  gradients (d/dpos uses the right neighbour at integer positions) match the gather form exactly.
  """
  base = jnp.floor(pos)
  frac = pos - base
  k = jnp.arange(n, dtype=pos.dtype)
  d = k - base[..., None]
  return jnp.where(d == 0, 1.0 - frac[..., None], 0.0) + jnp.where(d == 1, frac[..., None], 0.0)


def crop_patches(images: Array, actions: Array, patch_size: int) -> Array:
  """Bilinear P x P patches at the policy's ``actions`` [..., 2] in [0, 1] (row, col): [..., P, P, C].

  Same result as ``grid_sample(images, affine_grid(action_to_theta(actions, (H, W), P), P, P))`` (up to
  float rounding), computed as ``Wy @ image @ Wx^T``. Differentiable w.r.t. images and actions;
  actions outside [0, 1] move the patch partly out of the frame (zeros there).
  """
  images, actions = jnp.asarray(images), jnp.asarray(actions)
  p = _check_patch(patch_size)
  if images.ndim < 3:
    raise ValueError(f"images: expected [..., H, W, C], got {images.shape}")
  if actions.shape != images.shape[:-3] + (2,):
    raise ValueError(f"actions: expected shape {images.shape[:-3] + (2,)}, got {actions.shape}")
  h, w = images.shape[-3:-1]
  dt = _coord_dtype(images.dtype, actions.dtype)
  out_dt = _out_dtype(images.dtype)
  y1, x1 = _corners(actions, h, w, p, dt)
  offs = jnp.arange(p, dtype=dt)
  wy = _interp_matrix(y1[..., None] + offs, h)                      # [..., P, H]
  wx = _interp_matrix(x1[..., None] + offs, w)                      # [..., P, W]
  if jnp.dtype(out_dt).itemsize < 4:                                # bf16 / f16: low-precision operands,
    mm_dt, prec = out_dt, None                                       # float32 accumulation
  else:                                                             # f32 / f64: no TF32 shortcuts
    mm_dt, prec = dt, lax.Precision.HIGHEST
  x = images.astype(mm_dt)
  wy, wx = wy.astype(mm_dt), wx.astype(mm_dt)
  acc = jnp.promote_types(mm_dt, jnp.float32)
  if w > h:   # contract the larger spatial axis first: cost P*C*(H*W + P*min(H, W))
    t = jnp.einsum("...qw,...hwc->...hqc", wx, x, precision=prec, preferred_element_type=acc)
    out = jnp.einsum("...ph,...hqc->...pqc", wy, t.astype(mm_dt), precision=prec,
                     preferred_element_type=acc)
  else:
    t = jnp.einsum("...ph,...hwc->...pwc", wy, x, precision=prec, preferred_element_type=acc)
    out = jnp.einsum("...qw,...pwc->...pqc", wx, t.astype(mm_dt), precision=prec,
                     preferred_element_type=acc)
  return out.astype(out_dt)


def patch_boxes(actions: Array, image_size: int | Sequence[int], patch_size: int) -> Array:
  """Pixel boxes [..., 4] = (top, left, bottom, right) of the patches, float, bottom/right exclusive.

  Patch pixel (i, j) is sampled at image pixel (top + i, left + j), so the patch covers pixels
  top..bottom-1 by left..right-1 (slice bounds ``[top:bottom, left:right]`` when integer).
  """
  h, w = _hw(image_size)
  p = _check_patch(patch_size)
  actions = jnp.asarray(actions)
  if actions.shape[-1:] != (2,):
    raise ValueError(f"actions: expected shape [..., 2], got {actions.shape}")
  y1, x1 = _corners(actions, h, w, p, _coord_dtype(actions.dtype))
  return jnp.stack([y1, x1, y1 + p, x1 + p], axis=-1)
