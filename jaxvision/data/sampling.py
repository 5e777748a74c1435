"""TSN-style temporal sampling: one frame from each of T equal segments of a video.

The ``n`` frames are cut into ``T`` contiguous segments ``[floor(k n / T), floor((k+1) n / T))``
(lengths differ by at most one; every frame belongs to one). Training draws a uniform random frame
in each segment; evaluation takes each segment's centre ``start + length // 2`` (for ``n`` a
multiple of ``T`` this is the official TSN/TSM/AdaFocus ``int(tick / 2 + tick * k)``). A video with
fewer than ``T`` frames is an error naming it unless ``repeat_short=True``, which repeats frames in
order (``floor(k n / T)``, each frame ``T / n`` times, for training and evaluation alike).
``clip_indices`` draws several such samples of one video in turn (the Sth-Sth / Jester variant's
glance and focus frames, each over the whole video).
"""
from __future__ import annotations

import numpy as np

from typing import Sequence

from jaxtrain.errors import DataError


def segment_bounds(num_frames: int, num_segments: int) -> np.ndarray:
  """``[T + 1]`` segment boundaries ``floor(k n / T)`` (0-based, the last is ``n``)."""
  k = np.arange(num_segments + 1, dtype=np.int64)
  return (k * int(num_frames)) // int(num_segments)


def segment_indices(num_frames: int, num_segments: int, *, train: bool,
                    rng: np.random.Generator | None = None, repeat_short: bool = False,
                    name: str = "video") -> np.ndarray:
  """``[T]`` int64 frame indices (0-based, non-decreasing). ``rng`` is needed when ``train``."""
  n, t = int(num_frames), int(num_segments)
  if t < 1:
    raise DataError(f"num_segments must be >= 1, got {t}")
  if n < 1:
    raise DataError(f"{name}: has {n} frames")
  if n < t:
    if not repeat_short:
      raise DataError(f"{name}: has {n} frames, fewer than num_segments={t} (pass "
                      f"repeat_short=True to repeat frames)")
    return (np.arange(t, dtype=np.int64) * n) // t
  bounds = segment_bounds(n, t)
  starts, lengths = bounds[:-1], np.diff(bounds)
  if not train:
    return starts + lengths // 2
  if rng is None:
    raise DataError("training sampling needs a numpy Generator (rng)")
  return starts + rng.integers(0, lengths)


def clip_indices(num_frames: int, counts: Sequence[int], *, train: bool,
                 rng: np.random.Generator | None = None, repeat_short: bool = False,
                 name: str = "video") -> np.ndarray:
  """``segment_indices`` for each of ``counts`` in turn (one ``rng``), concatenated:
  ``[sum(counts)]`` int64. ``counts=(T,)`` is ``segment_indices(..., T)`` with the same draws."""
  return np.concatenate([segment_indices(num_frames, t, train=train, rng=rng,
                                         repeat_short=repeat_short, name=name) for t in counts])
