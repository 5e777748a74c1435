"""``VideoClips``: a random-access source of sampled, transformed clips for ``jaxtrain.data``.

Item ``j`` is ``{"frames": uint8 [T, S, S, 3], "label": int32 (or multi-hot float32 [C]), "index":
int32 video index}``. Training items draw their frames (TSN sampling) and their crop and flip from a
Generator seeded by ``(seed, video, epoch)``, so an item is a pure function of its index: shuffling,
several hosts and ``get_state``/``set_state`` resumption of ``make_loader`` all reproduce it. With
``epochs=E`` a training source has ``E * len(videos)`` items, item ``j`` being video ``j % n`` with
augmentation epoch ``j // n``: one pass of the loader then shows every video E times with E
different augmentations (a loader that repeats the source repeats those E draws). Evaluation items
are deterministic (segment centres, short side to ``scale_size``, centre crop), one per video.

With ``focus_frames=Tf`` (the Sth-Sth / Jester variant, as the official ``TSNDataSet`` with
``num_segments_glancer`` and ``num_segments_focuser``) an item holds ``glance`` [T, S, S, 3] and
``focus`` [Tf, S, S, 3] instead of ``frames``: two TSN samples of the whole clip, drawn one after
the other (random offsets in training, segment centres in evaluation), under ONE spatial transform
(the same multi-scale crop and flip, or the same resize and centre crop).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from jaxtrain.errors import DataError
from jaxvision.data import lists, sampling, transforms
from jaxvision.data.lists import DEFAULT_TEMPLATE, VideoRecord


class VideoClips:
  """Clips of T frames from a list file (path) or a sequence of ``VideoRecord``s."""

  def __init__(self, items: str | os.PathLike | Sequence[VideoRecord], num_frames: int = 16,
               train: bool = True, seed: int = 0, *, epochs: int = 1,
               num_classes: int | None = None, multi_label: bool | None = None,
               input_size: int = 224, scale_size: int | None = None,
               scales: Sequence[float] = transforms.SCALES, flip: bool = True,
               repeat_short: bool = False, root: str | os.PathLike | None = None,
               template: str = DEFAULT_TEMPLATE, start_index: int = 1, check_files: bool = True,
               focus_frames: int | None = None):
    """``multi_label=None`` decides from the data (any entry with several labels); pass it
    explicitly so that train and validation splits agree. ``flip=False`` for direction-sensitive
    classes (Something-Something). ``focus_frames``: items give ``glance`` (``num_frames``) and
    ``focus`` (``focus_frames``) samples (module docstring). Other arguments as in
    ``lists.parse_list``, ``sampling`` and ``transforms``."""
    if isinstance(items, (str, os.PathLike)):
      records = lists.parse_list(items, root=root, num_classes=num_classes, template=template,
                                 start_index=start_index, check_files=check_files)
    else:
      records = list(items)
      if not records or not all(isinstance(r, VideoRecord) for r in records):
        raise DataError("VideoClips needs a list file or a non-empty sequence of VideoRecords")
    if int(num_frames) < 1 or int(epochs) < 1 or int(seed) < 0:
      raise DataError(f"VideoClips: num_frames={num_frames} and epochs={epochs} must be >= 1 and "
                      f"seed={seed} >= 0")
    if focus_frames is not None and (isinstance(focus_frames, bool) or int(focus_frames) < 1):
      raise DataError(f"VideoClips: focus_frames={focus_frames!r} must be an integer >= 1 or None")
    counts = (int(num_frames),) + (() if focus_frames is None else (int(focus_frames),))
    if multi_label is None:
      multi_label = any(len(r.labels) > 1 for r in records)
    for r in records:
      if not multi_label and len(r.labels) > 1:
        raise DataError(f"{r.source or r.path}: {len(r.labels)} labels {list(r.labels)} but "
                        f"multi_label=False")
      if num_classes is not None and max(r.labels) >= num_classes:
        raise DataError(f"{r.source or r.path}: label {max(r.labels)} >= num_classes={num_classes}")
      if not repeat_short and r.num_frames < max(counts):
        field = "num_frames" if counts[0] == max(counts) else "focus_frames"
        raise DataError(f"{r.source or r.path}: has {r.num_frames} frames, fewer than "
                        f"{field}={max(counts)} (pass repeat_short=True to repeat frames)")
    if multi_label and num_classes is None:
      raise DataError("multi-label VideoClips need num_classes (the multi-hot label length)")
    self.records = records
    self.num_frames, self.train, self.seed = int(num_frames), bool(train), int(seed)
    self.focus_frames, self.counts = None if focus_frames is None else counts[1], counts
    self.epochs = int(epochs) if train else 1
    self.num_classes, self.multi_label = num_classes, bool(multi_label)
    self.input_size, self.scale_size = int(input_size), scale_size
    self.scales, self.flip, self.repeat_short = tuple(scales), bool(flip), bool(repeat_short)

  @property
  def num_videos(self) -> int:
    return len(self.records)

  def __len__(self) -> int:
    return self.epochs * len(self.records)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    j = int(index)
    if not 0 <= j < len(self):
      raise IndexError(f"VideoClips index {j} out of range [0, {len(self)})")
    return self.get(j % len(self.records), epoch=j // len(self.records))

  def _rng(self, video: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([self.seed, int(video), int(epoch)])

  def _indices(self, video: int, rng: np.random.Generator | None) -> np.ndarray:
    r = self.records[video]
    return sampling.clip_indices(r.num_frames, self.counts, train=self.train, rng=rng,
                                 repeat_short=self.repeat_short, name=r.source or str(r.path))

  def frame_indices(self, video: int, epoch: int = 0) -> np.ndarray:
    """The 0-based frame indices item ``(video, epoch)`` samples (with ``focus_frames``: the
    glance frames' then the focus frames', ``[num_frames + focus_frames]``)."""
    return self._indices(video, self._rng(video, epoch) if self.train else None)

  def label(self, video: int) -> np.ndarray:
    """int32 label, or float32 multi-hot ``[num_classes]`` for multi-label data."""
    r = self.records[video]
    if not self.multi_label:
      return np.int32(r.label)
    hot = np.zeros(self.num_classes, np.float32)
    hot[list(r.labels)] = 1.0
    return hot

  def get(self, video: int, epoch: int = 0) -> dict[str, Any]:
    """The clip of video ``video`` with the augmentation of ``epoch`` (ignored for evaluation)."""
    rng = self._rng(video, epoch) if self.train else None
    frames = lists.read_clip(self.records[video], self._indices(video, rng))
    if self.train:  # the same rng draws the frames, then the crop and flip
      frames = transforms.train_transform(frames, rng, input_size=self.input_size,
                                          scales=self.scales, flip=self.flip)
    else:
      frames = transforms.eval_transform(frames, input_size=self.input_size,
                                         scale_size=self.scale_size)
    if self.focus_frames is None:
      clip = {"frames": frames}
    else:
      clip = {"glance": frames[:self.num_frames], "focus": frames[self.num_frames:]}
    return {**clip, "label": self.label(video), "index": np.int32(video)}

  def __repr__(self) -> str:
    mode = f"train, epochs={self.epochs}" if self.train else "eval"
    focus = "" if self.focus_frames is None else f", Tf={self.focus_frames}"
    return (f"VideoClips({len(self.records)} videos, T={self.num_frames}{focus}, "
            f"{self.input_size}px, {mode}, seed={self.seed})")
