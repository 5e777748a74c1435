"""Clip transforms of the official AdaFocusV2 / TSN code, in NumPy + PIL, on uint8 ``[T, H, W, 3]``.

Training: ``GroupMultiScaleCrop(input_size, scales=(1, .875, .75, .66))`` (crop sides ``scale x
short side``, snapped to ``input_size`` within 3 px, width and height scales at most one step apart,
offsets from the 13 fixed positions of ``more_fix_crop``) then a bilinear resize to ``input_size``
and a horizontal flip with probability 1/2; one crop and one flip for all T frames of a clip.
Evaluation: ``GroupScale(scale_size)`` (short side to ``scale_size``, default ``input_size * 256 //
224``, bilinear) then ``GroupCenterCrop(input_size)``. Randomness comes from a numpy Generator only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from jaxtrain.errors import DataError

SCALES = (1.0, 0.875, 0.75, 0.66)


@dataclass(frozen=True)
class Crop:
  """A crop box ``[top, top + height) x [left, left + width)`` and whether to flip afterwards."""
  top: int
  left: int
  height: int
  width: int
  flip: bool = False


def _check(frames: np.ndarray) -> np.ndarray:
  arr = np.asarray(frames)
  if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
    raise DataError(f"a clip must be uint8 [T, H, W, 3], got {arr.dtype} {list(arr.shape)}")
  return arr


def fixed_offsets(height: int, width: int, crop_h: int, crop_w: int,
                  more_fix_crop: bool = True) -> list[tuple[int, int]]:
  """TSN's ``fill_fix_offset``: candidate ``(top, left)`` offsets of a crop (5, or 13 with more)."""
  h, w = (height - crop_h) // 4, (width - crop_w) // 4
  grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
  if more_fix_crop:
    grid += [(2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
  return [(i * h, j * w) for i, j in grid]


def sample_train_crop(height: int, width: int, rng: np.random.Generator, *,
                      input_size: int = 224, scales: Sequence[float] = SCALES,
                      max_distort: int = 1, more_fix_crop: bool = True,
                      flip: bool = True) -> Crop:
  """Draws one ``GroupMultiScaleCrop`` box (and flip) for a clip of ``height x width`` frames."""
  base = min(height, width)
  sizes = [int(base * s) for s in scales]
  sizes = [input_size if abs(s - input_size) < 3 else s for s in sizes]
  pairs = [(sizes[i], sizes[j]) for i in range(len(sizes)) for j in range(len(sizes))
           if abs(i - j) <= max_distort]  # (crop_h, crop_w)
  crop_h, crop_w = pairs[int(rng.integers(len(pairs)))]
  crop_h, crop_w = min(crop_h, height), min(crop_w, width)
  if crop_h < 1 or crop_w < 1:
    raise DataError(f"frames of {height}x{width} are too small to crop")
  offsets = fixed_offsets(height, width, crop_h, crop_w, more_fix_crop)
  top, left = offsets[int(rng.integers(len(offsets)))]
  do_flip = bool(rng.integers(2)) if flip else False
  return Crop(top, left, crop_h, crop_w, do_flip)


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
  if frame.shape[:2] == (height, width):
    return frame
  return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def apply_crop(frames: np.ndarray, crop: Crop, input_size: int = 224) -> np.ndarray:
  """Crops every frame with ``crop``, resizes to ``input_size`` (bilinear), flips if asked."""
  arr = _check(frames)
  box = arr[:, crop.top:crop.top + crop.height, crop.left:crop.left + crop.width]
  out = np.stack([_resize(np.ascontiguousarray(f), input_size, input_size) for f in box])
  return np.ascontiguousarray(out[:, :, ::-1]) if crop.flip else out


def train_transform(frames: np.ndarray, rng: np.random.Generator, *, input_size: int = 224,
                    scales: Sequence[float] = SCALES, flip: bool = True) -> np.ndarray:
  """Training augmentation of a clip: uint8 ``[T, input_size, input_size, 3]``."""
  arr = _check(frames)
  crop = sample_train_crop(arr.shape[1], arr.shape[2], rng, input_size=input_size,
                           scales=scales, flip=flip)
  return apply_crop(arr, crop, input_size)


def _center(size: int, crop: int) -> int:
  return int(round((size - crop) / 2.0))  # torchvision CenterCrop


def eval_points(points_yx: np.ndarray, height: int, width: int, *, input_size: int = 224,
                scale_size: int | None = None) -> np.ndarray:
  """Maps ``[..., 2]`` points ``(y, x)`` of ``height x width`` frames (pixel-edge coordinates:
  pixel (0, 0) covers [0, 1)^2) to the evaluation crop's coordinates."""
  scale_size = scale_size or input_size * 256 // 224
  new_h, new_w = _short_side(height, width, scale_size)
  scale = np.array([new_h / height, new_w / width])
  offset = np.array([_center(new_h, input_size), _center(new_w, input_size)], dtype=np.float64)
  return np.asarray(points_yx, dtype=np.float64) * scale - offset


def _short_side(height: int, width: int, size: int) -> tuple[int, int]:
  """torchvision ``Resize(size)``: the short side becomes ``size``, the long one ``int(size * l /
  s)``."""
  if height <= width:
    return size, int(size * width / height)
  return int(size * height / width), size


def eval_transform(frames: np.ndarray, *, input_size: int = 224,
                   scale_size: int | None = None) -> np.ndarray:
  """Evaluation preprocessing: short side to ``scale_size`` then the centre ``input_size`` crop."""
  arr = _check(frames)
  scale_size = scale_size or input_size * 256 // 224
  if scale_size < input_size:
    raise DataError(f"scale_size={scale_size} must be >= input_size={input_size}")
  new_h, new_w = _short_side(arr.shape[1], arr.shape[2], scale_size)
  top, left = _center(new_h, input_size), _center(new_w, input_size)
  out = np.stack([_resize(f, new_h, new_w)[top:top + input_size, left:left + input_size]
                  for f in arr])
  return np.ascontiguousarray(out)


def crop_points(points_yx: np.ndarray, crop: Crop, input_size: int = 224) -> np.ndarray:
  """Maps ``[..., 2]`` points ``(y, x)`` (pixel-edge coordinates) through ``apply_crop``."""
  p = np.asarray(points_yx, dtype=np.float64)
  y = (p[..., 0] - crop.top) * input_size / crop.height
  x = (p[..., 1] - crop.left) * input_size / crop.width
  return np.stack([y, input_size - x if crop.flip else x], axis=-1)
