"""Video files (mp4, avi, mkv, ...) with PyAV: frame counts, random-access frame reads, writing.

Frame ``i`` of a file is its ``i``-th frame in presentation order (what a sequential decode yields).
``read_frames`` seeks: the file's packets are listed once (a demux pass without decoding, cached by
path, size and mtime), every needed frame is identified by its timestamp, and the decoder jumps to
the keyframe at or before it and decodes forward (staying put when the next needed frame lies in the
group of pictures already being decoded). When the container cannot seek, timestamps are missing or
duplicated, or a seek does not land where it should, it falls back to one sequential decode.
"""
from __future__ import annotations

import bisect
import functools
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import av
import numpy as np

from jaxtrain.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".avi": "avi", ".mkv": "matroska",
            ".webm": "webm"}


@dataclass(frozen=True)
class _Index:
  """The video stream's frames in presentation order, from one demux pass."""
  count: int
  pts: tuple[int, ...] | None  # sorted presentation timestamps (None: unusable for seeking)
  key_pts: tuple[int, ...]  # sorted timestamps of the keyframes


class _Fallback(Exception):
  """Seeking cannot be trusted for this file: decode sequentially instead."""


def _open(path: Path) -> Any:
  if not path.is_file():
    raise DataError(f"{path}: video file not found")
  try:
    container = av.open(str(path))
  except (av.FFmpegError, OSError, ValueError) as e:
    raise DataError(f"{path}: cannot open video ({_reason(e)})") from e
  if not container.streams.video:
    container.close()
    raise DataError(f"{path}: no video stream")
  return container


def _reason(e: BaseException) -> str:
  return " ".join(str(e).split()) or type(e).__name__


@functools.lru_cache(maxsize=4096)
def _index_cached(path: str, size: int, mtime_ns: int) -> _Index:
  del size, mtime_ns  # cache keys only
  p = Path(path)
  container = _open(p)
  try:
    stream = container.streams.video[0]
    pts, keys, usable = [], [], True
    for packet in container.demux(stream):
      if packet.size == 0 or packet.is_discard:
        continue
      pts.append(packet.pts)
      if packet.pts is None:
        usable = False
      elif packet.is_keyframe:
        keys.append(packet.pts)
  except av.FFmpegError as e:
    raise DataError(f"{p}: cannot read video ({_reason(e)})") from e
  finally:
    container.close()
  count = len(pts)
  if count == 0:
    raise DataError(f"{p}: video stream has no frames")
  if usable and len(set(pts)) == count and keys:
    return _Index(count, tuple(sorted(pts)), tuple(sorted(keys)))
  return _Index(count, None, ())


def _index(path: Path) -> _Index:
  try:
    st = os.stat(path)
  except OSError as e:
    raise DataError(f"{path}: video file not found") from e
  return _index_cached(str(path), st.st_size, st.st_mtime_ns)


def num_frames(path: str | os.PathLike) -> int:
  """The number of frames of the file's (first) video stream."""
  return _index(Path(path)).count


def _rgb(frame: Any) -> np.ndarray:
  return frame.to_ndarray(format="rgb24")


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
  """Every frame of the file in order (uint8 ``[H, W, 3]``), decoded one at a time."""
  p = Path(path)
  container = _open(p)
  try:
    for frame in container.decode(container.streams.video[0]):
      yield _rgb(frame)
  except av.FFmpegError as e:
    raise DataError(f"{p}: cannot decode video ({_reason(e)})") from e
  finally:
    container.close()


def _sequential(path: Path, wanted: Sequence[int], stats: dict) -> dict[int, np.ndarray]:
  """Decodes from the start up to the last wanted frame."""
  need, last, out = set(wanted), max(wanted), {}
  container = _open(path)
  try:
    for i, frame in enumerate(container.decode(container.streams.video[0])):
      stats["decoded"] += 1
      if i in need:
        out[i] = _rgb(frame)
      if i >= last:
        break
  except av.FFmpegError as e:
    raise DataError(f"{path}: cannot decode video ({_reason(e)})") from e
  finally:
    container.close()
  if len(out) != len(need):
    missing = sorted(need - set(out))
    raise DataError(f"{path}: frame {missing[0]} could not be decoded (the decoder stopped after "
                    f"{stats['decoded']} frames)")
  return out


def _seeking(path: Path, index: _Index, wanted: Sequence[int],
             stats: dict) -> dict[int, np.ndarray]:
  """Seeks to the keyframe before each wanted frame (unless it is reachable by decoding on)."""
  assert index.pts is not None
  out: dict[int, np.ndarray] = {}
  container = _open(path)
  try:
    stream = container.streams.video[0]
    frames, current = None, None  # live decoder generator and the pts it last produced
    for i in sorted(set(wanted)):
      target = index.pts[i]
      key = index.key_pts[max(bisect.bisect_right(index.key_pts, target) - 1, 0)]
      if key > target:
        raise _Fallback  # no keyframe at or before this frame
      if frames is None or current is None or key > current:
        try:
          container.seek(key, stream=stream, backward=True, any_frame=False)
        except (av.FFmpegError, OSError) as e:
          raise _Fallback from e
        frames, current, started = container.decode(stream), None, False
        stats["seeks"] += 1
      else:
        started = True
      for frame in frames:
        stats["decoded"] += 1
        if frame.pts is None:
          raise _Fallback
        if frame.pts < key:
          continue  # leading pictures of an open group of pictures
        if not started:
          if frame.pts != key:
            raise _Fallback  # the seek did not land on the keyframe asked for
          started = True
        current = frame.pts
        if frame.pts == target:
          out[i] = _rgb(frame)
          break
        if frame.pts > target:
          raise _Fallback
      else:
        raise _Fallback  # stream ended before the frame
  except av.FFmpegError as e:
    raise _Fallback from e
  finally:
    container.close()
  return out


def read_frames(path: str | os.PathLike, indices: Sequence[int] | np.ndarray, *,
                seek: bool = True, stats: dict | None = None) -> np.ndarray:
  """Frames ``indices`` (0-based, any order, repeats allowed) as uint8 ``[len(indices), H, W, 3]``.

  ``seek=False`` forces one sequential decode. ``stats`` (a dict, optional) receives ``method``
  (``'seek'`` or ``'sequential'``), ``decoded`` (frames decoded) and ``seeks``.
  """
  p = Path(path)
  idx = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
  if not idx:
    raise DataError(f"{p}: no frame indices asked for")
  index = _index(p)
  bad = [i for i in idx if not 0 <= i < index.count]
  if bad:
    raise DataError(f"{p}: frame index {bad[0]} out of range [0, {index.count})")
  info = {"method": "seek", "decoded": 0, "seeks": 0}
  got = None
  if seek and index.pts is not None:
    try:
      got = _seeking(p, index, idx, info)
    except _Fallback:
      got = None
  if got is None:
    info.update(method="sequential", seeks=0)
    got = _sequential(p, idx, info)
  if stats is not None:
    stats.update(info)
  shapes = {got[i].shape for i in idx}
  if len(shapes) != 1:
    raise DataError(f"{p}: frames change size within the file ({sorted(shapes)})")
  return np.stack([got[i] for i in idx])


def _codec(preferred: Sequence[str]) -> str:
  for name in preferred:
    if name in av.codecs_available:
      try:
        av.Codec(name, "w")
        return name
      except (av.FFmpegError, ValueError):
        continue
  raise DataError(f"none of the video encoders {list(preferred)} is available in PyAV's ffmpeg")


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 25, *,
                codec: str | None = None, gop: int = 12, crf: int = 18) -> Path:
  """Writes uint8 ``[N, H, W, 3]`` frames (H and W even) as a video; the container follows the
  suffix (.mp4, .mkv, .avi, ...). The codec defaults to h264 (libx264), else mpeg4; ``gop`` is the
  keyframe interval, ``crf`` the h264 quality (lower is better). Written atomically."""
  p = Path(path)
  arr = np.asarray(frames)
  if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0:
    raise DataError(f"{p}: frames must be uint8 [N, H, W, 3] with N > 0, got {arr.dtype} "
                    f"{list(arr.shape)}")
  height, width = arr.shape[1:3]
  if height % 2 or width % 2:
    raise DataError(f"{p}: frame size {height}x{width} must be even (yuv420p)")
  fmt = _FORMATS.get(p.suffix.lower())
  if fmt is None:
    raise DataError(f"{p}: unknown video suffix {p.suffix!r}; use one of {sorted(_FORMATS)}")
  name = codec or _codec(("libx264", "h264", "mpeg4"))
  tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
  p.parent.mkdir(parents=True, exist_ok=True)
  try:
    with av.open(str(tmp), "w", format=fmt) as container:
      stream = container.add_stream(name, rate=Fraction(fps).limit_denominator(1001))
      stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
      stream.codec_context.gop_size = int(gop)
      if name in ("libx264", "h264"):
        stream.options = {"crf": str(int(crf))}
      else:
        stream.codec_context.qmax = 4  # mpeg4: near-lossless quantiser
      for frame in arr:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
          container.mux(packet)
      for packet in stream.encode():
        container.mux(packet)
    os.replace(tmp, p)
  except av.FFmpegError as e:
    raise DataError(f"{p}: cannot write video ({_reason(e)})") from e
  finally:
    if tmp.exists():
      tmp.unlink()
  return p
