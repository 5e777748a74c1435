"""jaxvision.models.crop against a float64 NumPy reference of PyTorch's affine_grid + grid_sample.

The reference is written from PyTorch's documented formulas (align_corners=False): base points
(2k + 1)/n - 1, unnormalise x = ((gx + 1) * W - 1) / 2, bilinear with zero padding, one output pixel
at a time.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models import crop


# -- float64 NumPy reference ---------------------------------------------------------------------

def ref_theta(actions: np.ndarray, h: int, w: int, p: int) -> np.ndarray:
  """The official get_patches_frame formula (x1, x2, y1, y2 form), generalised to H != W."""
  a = np.asarray(actions, np.float64)
  x1 = a[:, 1] * (w - p)
  y1 = a[:, 0] * (h - p)
  x2, y2 = x1 + p, y1 + p
  theta = np.zeros((a.shape[0], 2, 3))
  theta[:, 0, 0], theta[:, 1, 1] = p / w, p / h
  theta[:, 0, 2], theta[:, 1, 2] = -1 + (x1 + x2) / w, -1 + (y1 + y2) / h
  return theta


def ref_affine_grid(theta: np.ndarray, oh: int, ow: int) -> np.ndarray:
  theta = np.asarray(theta, np.float64)
  out = np.zeros((theta.shape[0], oh, ow, 2))
  for b in range(theta.shape[0]):
    for i in range(oh):
      for j in range(ow):
        base = np.array([(2 * j + 1) / ow - 1, (2 * i + 1) / oh - 1, 1.0])
        out[b, i, j] = theta[b] @ base
  return out


def ref_grid_sample(images: np.ndarray, grid: np.ndarray) -> np.ndarray:
  images = np.asarray(images, np.float64)
  grid = np.asarray(grid, np.float64)
  bsz, h, w, c = images.shape
  oh, ow = grid.shape[1:3]
  out = np.zeros((bsz, oh, ow, c))
  for b in range(bsz):
    for i in range(oh):
      for j in range(ow):
        x = ((grid[b, i, j, 0] + 1) * w - 1) / 2
        y = ((grid[b, i, j, 1] + 1) * h - 1) / 2
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        for yy in (y0, y0 + 1):
          for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
              out[b, i, j] += (1 - abs(x - xx)) * (1 - abs(y - yy)) * images[b, yy, xx]
  return out


def ref_crop(images, actions, p):
  h, w = images.shape[1:3]
  return ref_grid_sample(images, ref_affine_grid(ref_theta(actions, h, w, p), p, p))


def _rng(seed=0):
  return np.random.default_rng(seed)


def _actions_off_grid(rng, n, h, w, p, lo=-0.3, hi=1.3):
  """Actions whose sample positions are >= 0.1 px from integers (away from bilinear kinks)."""
  pos_y = np.floor(rng.uniform(lo, hi, n) * (h - p)) + rng.uniform(0.1, 0.9, n)
  pos_x = np.floor(rng.uniform(lo, hi, n) * (w - p)) + rng.uniform(0.1, 0.9, n)
  return np.stack([pos_y / (h - p), pos_x / (w - p)], axis=-1)


SIZES = [(13, 17, 6), (16, 12, 5), (10, 10, 4), (9, 14, 7), (11, 8, 8)]


# -- forward -------------------------------------------------------------------------------------

def test_action_to_theta_matches_official_formula():
  rng = _rng(1)
  a = rng.uniform(0, 1, (5, 2))
  for h, w, p in SIZES:
    theta = np.asarray(crop.action_to_theta(jnp.asarray(a, jnp.float32), (h, w), p))
    np.testing.assert_allclose(theta, ref_theta(a, h, w, p), atol=1e-6)
    # Equivalent form: scale s = P/size, translation (2a - 1)(1 - s); a = (row, col).
    np.testing.assert_allclose(theta[:, 0, 2], (2 * a[:, 1] - 1) * (1 - p / w), atol=1e-6)
    np.testing.assert_allclose(theta[:, 1, 2], (2 * a[:, 0] - 1) * (1 - p / h), atol=1e-6)


@pytest.mark.parametrize("oh,ow", [(5, 7), (6, 4), (1, 1), (8, 8)])
def test_affine_grid_matches_reference(oh, ow):
  theta = _rng(2).normal(size=(3, 2, 3))
  got = crop.affine_grid(jnp.asarray(theta, jnp.float32), oh, ow)
  assert got.shape == (3, oh, ow, 2)
  np.testing.assert_allclose(np.asarray(got), ref_affine_grid(theta, oh, ow), atol=2e-6)


@pytest.mark.parametrize("h,w,oh,ow", [(7, 10, 5, 6), (8, 6, 4, 9), (5, 5, 5, 5)])
def test_grid_sample_matches_reference(h, w, oh, ow):
  rng = _rng(3)
  images = rng.normal(size=(4, h, w, 3))
  # Rotations, shears and scales up to 1.6 with shifts: many samples partly or fully outside.
  theta = rng.uniform(-1.6, 1.6, size=(4, 2, 3))
  grid = ref_affine_grid(theta, oh, ow)
  grid[0, 0, 0] = [5.0, -7.0]                       # far outside -> exactly 0
  got = crop.grid_sample(jnp.asarray(images, jnp.float32), jnp.asarray(grid, jnp.float32))
  want = ref_grid_sample(images, grid)
  assert got.shape == (4, oh, ow, 3) and got.dtype == jnp.float32
  assert float(got[0, 0, 0, 0]) == 0.0
  assert np.mean(want == 0) > 0.01                  # the test does reach the padding
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


@pytest.mark.parametrize("h,w,p", SIZES)
def test_crop_patches_matches_reference(h, w, p):
  rng = _rng(4)
  images = rng.normal(size=(6, h, w, 2))
  a = rng.uniform(0, 1, (6, 2))
  a[0] = [0.0, 1.0]
  a[1] = [1.3, -0.25]                               # partly outside the frame
  a[2] = [-0.6, 0.5]
  got = crop.crop_patches(jnp.asarray(images, jnp.float32), jnp.asarray(a, jnp.float32), p)
  assert got.shape == (6, p, p, 2) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), ref_crop(images, a, p), atol=1e-5)
  # ... and the general path agrees with the separable one.
  theta = crop.action_to_theta(jnp.asarray(a, jnp.float32), (h, w), p)
  via_grid = crop.grid_sample(jnp.asarray(images, jnp.float32), crop.affine_grid(theta, p, p))
  np.testing.assert_allclose(np.asarray(got), np.asarray(via_grid), atol=2e-5)


def test_float64_matches_reference_to_rounding():
  rng = _rng(5)
  images = rng.normal(size=(3, 9, 14, 2))
  a = rng.uniform(-0.2, 1.2, (3, 2))
  theta = rng.uniform(-1.3, 1.3, (3, 2, 3))
  with jax.enable_x64(True):
    got = crop.crop_patches(jnp.asarray(images), jnp.asarray(a), 7)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), ref_crop(images, a, 7), atol=1e-12)
    grid = crop.affine_grid(jnp.asarray(theta), 5, 6)
    np.testing.assert_allclose(np.asarray(grid), ref_affine_grid(theta, 5, 6), atol=1e-13)
    gs = crop.grid_sample(jnp.asarray(images), grid)
    np.testing.assert_allclose(np.asarray(gs), ref_grid_sample(images, np.asarray(grid)), atol=1e-12)


def test_integer_aligned_crop_equals_slicing():
  """x1 = a1*(W-P), y1 = a0*(H-P) integers  =>  crop == images[y1:y1+P, x1:x1+P] (sample j at x1 + j)."""
  rng = _rng(6)
  p = 5
  # H - P = 16, W - P = 8: a = k/16, k/8 and the products are exact in float32 -> bit-exact slices.
  images = rng.normal(size=(1, 21, 13, 3)).astype(np.float32)
  for y1, x1 in [(0, 0), (16, 8), (8, 0), (4, 8), (13, 3)]:
    a = np.array([[y1 / 16, x1 / 8]], np.float32)
    out = crop.crop_patches(jnp.asarray(images), jnp.asarray(a), p)
    np.testing.assert_array_equal(np.asarray(out)[0], images[0, y1:y1 + p, x1:x1 + p])
  # Any integer offset (H - P = 15, W - P = 13): equal up to float32 rounding of a * (size - P).
  images = rng.normal(size=(1, 20, 18, 3)).astype(np.float32)
  for y1, x1 in itertools.product([0, 4, 7, 15], [0, 5, 11, 13]):
    a = np.array([[y1 / 15, x1 / 13]], np.float32)
    out = crop.crop_patches(jnp.asarray(images), jnp.asarray(a), p)
    np.testing.assert_allclose(np.asarray(out)[0], images[0, y1:y1 + p, x1:x1 + p], atol=1e-5)
  # Non-integer offset: a true interpolation, not a slice.
  a = np.array([[2.5 / 15, 3.0 / 13]], np.float32)
  out = np.asarray(crop.crop_patches(jnp.asarray(images), jnp.asarray(a), p))[0]
  np.testing.assert_allclose(out, 0.5 * (images[0, 2:2 + p, 3:3 + p] + images[0, 3:3 + p, 3:3 + p]),
                             atol=1e-5)


def test_patch_boxes_consistent_with_crop():
  h, w, p = 15, 19, 6
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  ramp = np.stack([rows, cols], axis=-1).astype(np.float32)[None]   # pixel (r, c) holds (r, c)
  a = _rng(7).uniform(0, 1, (8, 2)).astype(np.float32)
  boxes = np.asarray(crop.patch_boxes(jnp.asarray(a), (h, w), p))
  assert boxes.shape == (8, 4)
  np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], p, atol=1e-5)
  np.testing.assert_allclose(boxes[:, 3] - boxes[:, 1], p, atol=1e-5)
  assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= h) and np.all(boxes[:, 3] <= w)
  patches = np.asarray(crop.crop_patches(jnp.asarray(np.repeat(ramp, 8, 0)), jnp.asarray(a), p))
  # Bilinear sampling reproduces a linear ramp: patch pixel (i, j) sits at (top + i, left + j).
  np.testing.assert_allclose(patches[:, 0, 0], boxes[:, :2], atol=1e-4)
  np.testing.assert_allclose(patches[:, -1, -1], boxes[:, 2:] - 1, atol=1e-4)
  # Integer boxes are the slice bounds.
  a = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
  boxes = np.asarray(crop.patch_boxes(jnp.asarray(a), (h, w), p))
  np.testing.assert_array_equal(boxes, [[0, w - p, p, w], [h - p, 0, h, p]])
  assert crop.patch_boxes(jnp.zeros((2, 3, 2)), 224, 96).shape == (2, 3, 4)


# -- gradients -----------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w,p", [(13, 17, 6), (12, 10, 5)])
def test_grad_actions_matches_finite_differences(h, w, p):
  rng = _rng(8)
  images = rng.normal(size=(4, h, w, 2))
  a = _actions_off_grid(rng, 4, h, w, p)
  weights = rng.normal(size=(4, p, p, 2))

  def loss_jax(act):
    return jnp.sum(crop.crop_patches(jnp.asarray(images, jnp.float32), act, p) * weights)

  g = np.asarray(jax.grad(loss_jax)(jnp.asarray(a, jnp.float32)))
  eps = 1e-6
  fd = np.zeros_like(a)
  for idx in np.ndindex(*a.shape):
    ap, am = a.copy(), a.copy()
    ap[idx] += eps
    am[idx] -= eps
    fd[idx] = np.sum((ref_crop(images, ap, p) - ref_crop(images, am, p)) * weights) / (2 * eps)
  assert np.max(np.abs(fd)) > 1.0
  np.testing.assert_allclose(g, fd, rtol=2e-3, atol=2e-3 * np.max(np.abs(fd)))
  # Same through the general path (gradient w.r.t. the grid).
  def loss_grid(act):
    theta = crop.action_to_theta(act, (h, w), p)
    out = crop.grid_sample(jnp.asarray(images, jnp.float32), crop.affine_grid(theta, p, p))
    return jnp.sum(out * weights)
  g2 = np.asarray(jax.grad(loss_grid)(jnp.asarray(a, jnp.float32)))
  np.testing.assert_allclose(g2, fd, rtol=2e-3, atol=2e-3 * np.max(np.abs(fd)))


def test_grad_images_is_the_reference_adjoint():
  rng = _rng(9)
  h, w, p, c = 7, 9, 4, 2
  a = np.array([[0.3, 0.8], [1.2, -0.1]])
  weights = rng.normal(size=(2, p, p, c))
  # Output is linear in the images: d loss / d image[b, y, x, ch] = <reference crop of e_(b,y,x,ch), weights>.
  want = np.zeros((2, h, w, c))
  for idx in np.ndindex(*want.shape):
    e = np.zeros((2, h, w, c))
    e[idx] = 1.0
    want[idx] = np.sum(ref_crop(e, a, p) * weights)
  f = lambda im: jnp.sum(crop.crop_patches(im, jnp.asarray(a, jnp.float32), p) * weights)
  got = jax.grad(f)(jnp.zeros((2, h, w, c), jnp.float32))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
  theta = jnp.asarray(ref_theta(a, h, w, p), jnp.float32)
  f2 = lambda im: jnp.sum(crop.grid_sample(im, crop.affine_grid(theta, p, p)) * weights)
  np.testing.assert_allclose(np.asarray(jax.grad(f2)(jnp.zeros((2, h, w, c)))), want, atol=1e-5)


def test_grad_at_integer_position_matches_gather_convention():
  """At a kink both paths use floor(): the right neighbour difference, like PyTorch's backward."""
  images = jnp.asarray(_rng(10).normal(size=(1, 8, 8, 1)), jnp.float32)
  a = jnp.asarray([[3 / 4, 2 / 4]], jnp.float32)                       # y1 = 3, x1 = 2, P = 4
  f1 = lambda act: jnp.sum(crop.crop_patches(images, act, 4))
  f2 = lambda act: jnp.sum(crop.grid_sample(images, crop.affine_grid(crop.action_to_theta(act, 8, 4), 4, 4)))
  g1, g2 = np.asarray(jax.grad(f1)(a)), np.asarray(jax.grad(f2)(a))
  im = np.asarray(images)[0, ..., 0]
  want = np.array([4 * (im[7, 2:6].sum() - im[3, 2:6].sum()), 4 * (im[3:7, 6].sum() - im[3:7, 2].sum())])
  np.testing.assert_allclose(g1[0], want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(g2[0], want, rtol=1e-4, atol=1e-4)


# -- transformations and dtypes ------------------------------------------------------------------

def test_jit_vmap_and_leading_dims():
  rng = _rng(11)
  images = jnp.asarray(rng.normal(size=(3, 4, 10, 12, 3)), jnp.float32)   # [T, B, H, W, C]
  a = jnp.asarray(rng.uniform(0, 1, (3, 4, 2)), jnp.float32)
  eager = crop.crop_patches(images, a, 5)                                  # leading dims [T, B]
  jitted = jax.jit(crop.crop_patches, static_argnums=2)(images, a, 5)
  mapped = jax.vmap(crop.crop_patches, in_axes=(0, 0, None))(images, a, 5)
  flat = crop.crop_patches(images.reshape(12, 10, 12, 3), a.reshape(12, 2), 5).reshape(3, 4, 5, 5, 3)
  assert eager.shape == (3, 4, 5, 5, 3)
  for other in (jitted, mapped, flat):
    np.testing.assert_allclose(np.asarray(other), np.asarray(eager), atol=1e-6)
  theta = crop.action_to_theta(a, (10, 12), 5)
  grid = jax.vmap(crop.affine_grid, in_axes=(0, None, None))(theta, 5, 5)
  gs = jax.jit(jax.vmap(crop.grid_sample))(images, grid)
  np.testing.assert_allclose(np.asarray(gs), np.asarray(eager), atol=2e-5)
  # Gradients compose with jit + vmap.
  vcrop = jax.vmap(crop.crop_patches, in_axes=(0, 0, None))
  g = jax.jit(jax.grad(lambda x: jnp.sum(vcrop(images, x, 5) ** 2)))(a)
  assert g.shape == a.shape and bool(jnp.all(jnp.isfinite(g)))


def test_bfloat16():
  rng = _rng(12)
  images = rng.normal(size=(4, 16, 14, 3)).astype(np.float32)
  a = rng.uniform(0, 1, (4, 2)).astype(np.float32)
  ref = np.asarray(crop.crop_patches(jnp.asarray(images), jnp.asarray(a), 6))
  xb = jnp.asarray(images, jnp.bfloat16)
  for act in (jnp.asarray(a), jnp.asarray(a, jnp.bfloat16)):
    out = crop.crop_patches(xb, act, 6)
    assert out.dtype == jnp.bfloat16 and out.shape == (4, 6, 6, 3)
    tol = 0.05 if act.dtype == jnp.float32 else 0.6   # bf16 actions quantise positions (~0.03 px/unit)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=tol)
  gs = crop.grid_sample(xb, crop.affine_grid(crop.action_to_theta(jnp.asarray(a), (16, 14), 6), 6, 6))
  assert gs.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(gs, np.float32), ref, atol=0.05)
  ga = jax.grad(lambda x: jnp.sum(crop.crop_patches(xb, x, 6).astype(jnp.float32)))(jnp.asarray(a))
  gi = jax.grad(lambda im: jnp.sum(crop.crop_patches(im, jnp.asarray(a), 6).astype(jnp.float32)))(xb)
  ga32 = jax.grad(lambda x: jnp.sum(crop.crop_patches(jnp.asarray(images), x, 6)))(jnp.asarray(a))
  assert ga.dtype == jnp.float32 and gi.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(ga), np.asarray(ga32), rtol=0.05,
                             atol=0.05 * float(jnp.abs(ga32).max()))


def test_bad_arguments():
  x = jnp.zeros((2, 8, 8, 3))
  with pytest.raises(ValueError):
    crop.crop_patches(x, jnp.zeros((3, 2)), 4)
  with pytest.raises(ValueError):
    crop.crop_patches(x, jnp.zeros((2, 2)), 0)
  with pytest.raises(ValueError):
    crop.grid_sample(x, jnp.zeros((2, 4, 4, 3)))
  with pytest.raises(ValueError):
    crop.affine_grid(jnp.zeros((2, 3, 3)), 4, 4)
