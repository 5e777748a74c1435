"""The official video datasets' layout: list files over frame folders or video files.

Frame folders (TSN/TSM/AdaFocus layout): ``<root>/<folder>/img_00001.jpg ... img_<N>.jpg`` (the
template and the first index are configurable) and list lines ``folder num_frames label[,label...]``
(several labels for multi-label sets such as ActivityNet and FCVID). Lists may also point at video
files: ``path num_frames label[,...]`` or ``path label[,...]`` (the frame count is then read from
the file). Relative paths are relative to ``root`` (default: the list file's folder). Blank lines
and lines starting with ``#`` are skipped. Every problem is a ``DataError`` naming the list file,
the line number and the value.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from PIL import Image

from jaxtrain.errors import DataError
from jaxvision.data import video

DEFAULT_TEMPLATE = "img_{:05d}.jpg"
_INT = re.compile(r"[0-9]+")
Kind = Literal["auto", "frames", "video"]


@dataclass(frozen=True)
class VideoRecord:
  """One list entry: a frame folder (``kind='frames'``) or a video file (``kind='video'``)."""
  path: Path
  num_frames: int
  labels: tuple[int, ...]
  kind: str = "frames"
  template: str = DEFAULT_TEMPLATE
  start_index: int = 1
  source: str = ""  # "<list file>:<line>" for messages

  @property
  def label(self) -> int:
    """The first label (the only one in single-label sets)."""
    return self.labels[0]

  def frame_path(self, i: int) -> Path:
    """The image file of frame ``i`` (0-based) of a frame folder."""
    return self.path / self.template.format(self.start_index + int(i))


def _is_video(path: str) -> bool:
  return path.lower().endswith(video.VIDEO_EXTENSIONS)


def _labels(text: str, where: str, num_classes: int | None) -> tuple[int, ...]:
  out = []
  for part in text.split(","):
    if not _INT.fullmatch(part):
      raise DataError(f"{where}: bad label {part!r} (a non-negative integer, several separated by "
                      f"commas)")
    value = int(part)
    if num_classes is not None and value >= num_classes:
      raise DataError(f"{where}: label {value} >= num_classes={num_classes}")
    out.append(value)
  return tuple(dict.fromkeys(out))


def _count(text: str, where: str) -> int:
  value = int(text) if _INT.fullmatch(text) else 0
  if value < 1:
    raise DataError(f"{where}: bad frame count {text!r} (a positive integer)")
  return value


def parse_list(list_file: str | os.PathLike, *, root: str | os.PathLike | None = None,
               num_classes: int | None = None, kind: Kind = "auto",
               template: str = DEFAULT_TEMPLATE, start_index: int = 1,
               check_files: bool = True) -> list[VideoRecord]:
  """Parses and validates a list file into ``VideoRecord``s.

  ``kind='auto'`` treats paths with a video suffix (.mp4, .avi, .mkv, ...) as video files and the
  rest as frame folders. ``check_files`` checks that every folder holds its first and last frame
  (a stat each, no decoding) and that every video file exists (2-field video lines open the file to
  count its frames either way).
  """
  lf = Path(list_file)
  base = Path(root) if root is not None else lf.parent
  try:
    lines = lf.read_text().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{lf}: cannot read list file ({e.__class__.__name__}: {e})") from e
  if kind not in ("auto", "frames", "video"):
    raise DataError(f"{lf}: kind must be 'auto', 'frames' or 'video', got {kind!r}")
  try:
    template.format(start_index)
  except (IndexError, KeyError, ValueError) as e:
    raise DataError(f"bad frame template {template!r} ({e})") from e
  records = []
  for number, line in enumerate(lines, start=1):
    text = line.strip()
    if not text or text.startswith("#"):
      continue
    where = f"{lf}:{number}"
    fields = text.split()
    is_video = kind == "video" or (kind == "auto" and _is_video(fields[0]))
    if is_video and len(fields) not in (2, 3):
      raise DataError(f"{where}: expected 'path [num_frames] label[,label...]', got {text!r}")
    if not is_video and len(fields) != 3:
      raise DataError(f"{where}: expected 'folder num_frames label[,label...]', got {text!r}")
    path = Path(fields[0]) if os.path.isabs(fields[0]) else base / fields[0]
    labels = _labels(fields[-1], where, num_classes)
    if is_video:
      if (check_files or len(fields) == 2) and not path.is_file():
        raise DataError(f"{where}: video file {str(path)!r} not found")
      if len(fields) == 3:
        count = _count(fields[1], where)
      else:
        try:
          count = video.num_frames(path)
        except DataError as e:
          raise DataError(f"{where}: {e}") from e
      records.append(VideoRecord(path, count, labels, "video", template, start_index, where))
      continue
    count = _count(fields[1], where)
    record = VideoRecord(path, count, labels, "frames", template, start_index, where)
    if check_files:
      if not path.is_dir():
        raise DataError(f"{where}: frame folder {str(path)!r} not found")
      for i in (0, count - 1):
        if not record.frame_path(i).is_file():
          raise DataError(f"{where}: frame {str(record.frame_path(i))!r} not found (the line says "
                          f"{count} frames)")
    records.append(record)
  if not records:
    raise DataError(f"{lf}: list file has no entries")
  return records


def read_clip(record: VideoRecord, indices: Sequence[int] | np.ndarray) -> np.ndarray:
  """Frames ``indices`` (0-based) of a record as uint8 ``[len(indices), H, W, 3]``."""
  idx = [int(i) for i in np.asarray(indices).reshape(-1)]
  bad = [i for i in idx if not 0 <= i < record.num_frames]
  if bad:
    raise DataError(f"{record.source or record.path}: frame index {bad[0]} out of range "
                    f"[0, {record.num_frames})")
  if record.kind == "video":
    return video.read_frames(record.path, idx)
  cache: dict[int, np.ndarray] = {}
  for i in dict.fromkeys(idx):
    path = record.frame_path(i)
    try:
      with Image.open(path) as im:
        cache[i] = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      raise DataError(f"{path}: cannot read frame ({e.__class__.__name__}: {e})") from e
  shapes = {a.shape for a in cache.values()}
  if len(shapes) != 1:
    raise DataError(f"{record.path}: frames differ in size ({sorted(shapes)})")
  return np.stack([cache[i] for i in idx])


def write_list(list_file: str | os.PathLike,
               entries: Sequence[tuple[str, int, Sequence[int]]]) -> None:
  """Writes ``(folder or path, num_frames, labels)`` entries as list lines."""
  lines = [f"{p} {n} {','.join(str(int(l)) for l in labels)}\n" for p, n, labels in entries]
  Path(list_file).write_text("".join(lines))
