"""jaxvision.data: video files, list layout, TSN sampling, transforms, VideoClips, built-in set."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxtrain.data import make_loader
from jaxtrain.errors import DataError
from jaxvision.data import builtin, lists, sampling, sources, transforms, video

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--train=6", "--val=2", "--test=2", "--size=64", "--frames=4"]


def _pattern(n: int = 20, size: int = 64) -> np.ndarray:
  """Frames that differ from one another: a gradient, a moving block and a per-frame level."""
  frames = np.zeros((n, size, size, 3), np.uint8)
  for k in range(n):
    frames[k, :, :, 0] = np.linspace(0, 255, size, dtype=np.uint8)[None, :]
    frames[k, 8 * (k % 6):8 * (k % 6) + 16, 2 * k:2 * k + 16, 1] = 255
    frames[k, size // 2:, :, 2] = 10 * k
  return frames


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> tuple[Path, np.ndarray]:
  frames = _pattern()
  path = video.write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=25, gop=4)
  return path, frames


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
  out = tmp_path_factory.mktemp("builtin") / "data"
  assert builtin.main([f"--out={out}", *TINY]) == 0
  return out


# ---------------------------------------------------------------------------------------- video


def test_video_roundtrip_and_seeking_matches_sequential(mp4):
  path, frames = mp4
  assert video.num_frames(path) == len(frames)
  stats = {}
  full = video.read_frames(path, range(len(frames)), seek=False, stats=stats)
  assert stats["method"] == "sequential" and full.dtype == np.uint8 and full.shape == frames.shape
  assert np.abs(full.astype(int) - frames).mean() < 3.0  # codec error only
  rng = np.random.default_rng(0)
  for _ in range(10):
    idx = rng.integers(0, len(frames), size=5)
    stats = {}
    np.testing.assert_array_equal(video.read_frames(path, idx, stats=stats), full[idx])
    assert stats["method"] == "seek"
  stats = {}
  last = video.read_frames(path, [19], stats=stats)  # keyframes every 4: decode 16..19 only
  np.testing.assert_array_equal(last[0], full[19])
  assert stats["method"] == "seek" and stats["seeks"] == 1 and stats["decoded"] <= 8
  got = video.read_frames(path, [5, 1, 5, 19])  # any order, repeats
  np.testing.assert_array_equal(got, full[[5, 1, 5, 19]])
  assert len(list(video.iter_frames(path))) == len(frames)


@pytest.mark.parametrize("suffix, codec", [(".mkv", None), (".avi", "mpeg4")])
def test_video_other_containers(tmp_path, suffix, codec):
  frames = _pattern(12)
  path = video.write_video(tmp_path / f"v{suffix}", frames, fps=10, codec=codec, gop=5)
  full = video.read_frames(path, range(12), seek=False)
  assert np.abs(full.astype(int) - frames).mean() < 4.0
  stats = {}
  np.testing.assert_array_equal(video.read_frames(path, [11, 3, 7], stats=stats), full[[11, 3, 7]])
  assert stats["method"] == "seek"


def test_video_falls_back_to_sequential(mp4, monkeypatch):
  path, _ = mp4
  full = video.read_frames(path, [2, 17], seek=False)

  def broken(*args, **kwargs):
    raise video._Fallback  # what a container that cannot seek reports

  monkeypatch.setattr(video, "_seeking", broken)
  stats = {}
  np.testing.assert_array_equal(video.read_frames(path, [2, 17], stats=stats), full)
  assert stats["method"] == "sequential"


def test_video_errors_name_the_file(tmp_path, mp4):
  missing = tmp_path / "missing.mp4"
  with pytest.raises(DataError, match="missing.mp4"):
    video.read_frames(missing, [0])
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
  with pytest.raises(DataError, match="corrupt.mp4"):
    video.num_frames(corrupt)
  truncated = tmp_path / "truncated.mp4"
  data = Path(mp4[0]).read_bytes()
  truncated.write_bytes(data[:len(data) // 2])
  with pytest.raises(DataError, match="truncated.mp4"):
    video.read_frames(truncated, [0, 10])
  with pytest.raises(DataError, match=r"clip.mp4: frame index 20 out of range \[0, 20\)"):
    video.read_frames(mp4[0], [3, 20])
  with pytest.raises(DataError, match="must be even"):
    video.write_video(tmp_path / "odd.mp4", np.zeros((2, 5, 6, 3), np.uint8))


# ---------------------------------------------------------------------------------------- lists


def _frame_folder(root: Path, name: str, n: int, template: str = "img_{:05d}.png") -> np.ndarray:
  frames = _pattern(n, 32)
  (root / name).mkdir(parents=True)
  for i, f in enumerate(frames):
    Image.fromarray(f).save(root / name / template.format(i + 1))
  return frames


def test_parse_frame_list_and_read_clip(tmp_path):
  frames = _frame_folder(tmp_path, "a", 6)
  _frame_folder(tmp_path, "b", 4)
  other = tmp_path / "elsewhere"
  _frame_folder(other, "c", 5)
  (tmp_path / "train.txt").write_text(
      f"# comment\n\na 6 3\nb 4 1,7,1\n{other / 'c'} 5 0\n")
  recs = lists.parse_list(tmp_path / "train.txt", num_classes=10, template="img_{:05d}.png")
  assert [r.num_frames for r in recs] == [6, 4, 5]
  assert [r.labels for r in recs] == [(3,), (1, 7), (0,)]
  assert recs[0].source.endswith("train.txt:3") and recs[0].kind == "frames"
  np.testing.assert_array_equal(lists.read_clip(recs[0], [5, 0, 2]), frames[[5, 0, 2]])
  with pytest.raises(DataError, match=r"train.txt:3: frame index 6 out of range"):
    lists.read_clip(recs[0], [6])


BAD_LINES = [
    ("a 0 1", "bad frame count '0'"),
    ("a x 1", "bad frame count 'x'"),
    ("a -3 1", "bad frame count '-3'"),
    ("a 4 y", "bad label 'y'"),
    ("a 4 -1", "bad label '-1'"),
    ("a 4 1,z", "bad label 'z'"),
    ("a 4 12", "label 12 >= num_classes=10"),
    ("a 4 3,10", "label 10 >= num_classes=10"),
    ("nowhere 4 1", "frame folder '.*nowhere' not found"),
    ("a 9 1", "img_00009.png' not found"),
    ("a 4", "expected 'folder num_frames label.*got 'a 4'"),
    ("a 4 1 2", "expected 'folder num_frames label.*got 'a 4 1 2'"),
]


@pytest.mark.parametrize("line, message", BAD_LINES)
def test_parse_list_rejects_bad_lines(tmp_path, line, message):
  _frame_folder(tmp_path, "a", 4)
  list_file = tmp_path / "bad_list.txt"
  list_file.write_text(f"a 4 0\na 4 1\n{line}\n")
  with pytest.raises(DataError) as e:
    lists.parse_list(list_file, num_classes=10, template="img_{:05d}.png")
  text = str(e.value)
  assert "\n" not in text and text.startswith(f"{list_file}:3: ")
  assert re.search(message, text), text


def test_parse_list_file_errors(tmp_path):
  with pytest.raises(DataError, match="nothing.txt: cannot read list file"):
    lists.parse_list(tmp_path / "nothing.txt")
  (tmp_path / "empty.txt").write_text("# only a comment\n\n")
  with pytest.raises(DataError, match="empty.txt: list file has no entries"):
    lists.parse_list(tmp_path / "empty.txt")


def test_parse_video_list(tmp_path, mp4):
  path, frames = mp4
  (tmp_path / "corrupt.avi").write_bytes(b"not a video at all" * 100)
  (tmp_path / "v.txt").write_text(f"{path} 3\n{path} 20 1,2\n")
  recs = lists.parse_list(tmp_path / "v.txt")
  assert [(r.kind, r.num_frames, r.labels) for r in recs] == [("video", 20, (3,)),
                                                              ("video", 20, (1, 2))]
  np.testing.assert_array_equal(lists.read_clip(recs[0], [4, 2]),
                                video.read_frames(path, [4, 2]))
  for line, message in [("missing.mp4 1", r"v2.txt:2: video file '.*missing.mp4' not found"),
                        ("corrupt.avi 1", r"v2.txt:2: .*corrupt.avi: cannot open video"),
                        (f"{path} 0 1", r"v2.txt:2: bad frame count '0'"),
                        (f"{path} 2 3 4", r"v2.txt:2: expected 'path \[num_frames\]")]:
    (tmp_path / "v2.txt").write_text(f"{path} 3\n{line}\n")
    with pytest.raises(DataError, match=message):
      lists.parse_list(tmp_path / "v2.txt")


# ------------------------------------------------------------------------------------- sampling


def test_tsn_train_indices_lie_in_their_segments():
  rng = np.random.default_rng(0)
  for t in (1, 3, 8):
    for n in range(t, 50):
      bounds = sampling.segment_bounds(n, t)
      assert bounds[0] == 0 and bounds[-1] == n and np.all(np.diff(bounds) >= 1)
      for _ in range(5):
        idx = sampling.segment_indices(n, t, train=True, rng=rng)
        assert idx.shape == (t,) and np.all(idx >= bounds[:-1]) and np.all(idx < bounds[1:])
  draws = np.stack([sampling.segment_indices(40, 4, train=True, rng=rng) for _ in range(400)])
  for k in range(4):  # every frame of each segment is drawn
    assert set(draws[:, k]) == set(range(10 * k, 10 * k + 10))


def test_tsn_eval_centres():
  np.testing.assert_array_equal(sampling.segment_indices(32, 8, train=False), 4 * np.arange(8) + 2)
  np.testing.assert_array_equal(sampling.segment_indices(16, 8, train=False),  # official formula
                                [int(1 + 2 * k) for k in range(8)])
  np.testing.assert_array_equal(sampling.segment_indices(8, 8, train=False), np.arange(8))
  for n in range(8, 60):
    bounds = sampling.segment_bounds(n, 8)
    idx = sampling.segment_indices(n, 8, train=False)
    assert np.all(idx >= bounds[:-1]) and np.all(idx < bounds[1:])
    assert np.all(np.abs(idx - (bounds[:-1] + bounds[1:] - 1) / 2) <= 0.5)


def test_tsn_short_videos():
  with pytest.raises(DataError, match=r"clip7: has 3 frames, fewer than num_segments=8"):
    sampling.segment_indices(3, 8, train=False, name="clip7")
  rng = np.random.default_rng(0)
  for train in (True, False):
    idx = sampling.segment_indices(3, 8, train=train, rng=rng, repeat_short=True)
    np.testing.assert_array_equal(idx, [0, 0, 0, 1, 1, 1, 2, 2])
  with pytest.raises(DataError, match="needs a numpy Generator"):
    sampling.segment_indices(10, 4, train=True)


# ----------------------------------------------------------------------------------- transforms


def _clip(t: int = 4, h: int = 60, w: int = 90, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_multiscale_crop_candidates_and_determinism():
  h, w, size = 60, 90, 32
  allowed = {int(60 * s) for s in transforms.SCALES}
  order = sorted(allowed, reverse=True)
  rng = np.random.default_rng(0)
  seen = set()
  for _ in range(300):
    c = transforms.sample_train_crop(h, w, rng, input_size=size)
    assert c.height in allowed and c.width in allowed
    assert abs(order.index(c.height) - order.index(c.width)) <= 1
    assert (c.top, c.left) in transforms.fixed_offsets(h, w, c.height, c.width)
    seen.add((c.height, c.width, c.flip))
  assert len(seen) == 2 * 10  # 10 (h, w) pairs within one scale step, flipped or not
  a = transforms.train_transform(_clip(), np.random.default_rng(5), input_size=size)
  b = transforms.train_transform(_clip(), np.random.default_rng(5), input_size=size)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (4, size, size, 3) and a.dtype == np.uint8
  # sizes within 3 px of input_size snap to it (TSN)
  c = transforms.sample_train_crop(226, 300, np.random.default_rng(0), input_size=224, scales=(1,))
  assert (c.height, c.width) == (224, 224)


def test_train_transform_same_crop_for_all_frames_and_flip():
  clip = _clip()
  crop = transforms.sample_train_crop(60, 90, np.random.default_rng(3), input_size=32)
  out = transforms.train_transform(clip, np.random.default_rng(3), input_size=32)
  np.testing.assert_array_equal(out, transforms.apply_crop(clip, crop, 32))
  for t in range(4):  # frame by frame with the one crop: the same
    np.testing.assert_array_equal(out[t], transforms.apply_crop(clip[t:t + 1], crop, 32)[0])
  same = transforms.train_transform(np.repeat(clip[:1], 4, 0), np.random.default_rng(9),
                                    input_size=32)
  assert all(np.array_equal(same[0], f) for f in same)
  box = transforms.Crop(10, 20, 30, 45, flip=False)
  flipped = transforms.apply_crop(clip, transforms.Crop(10, 20, 30, 45, flip=True), 32)
  np.testing.assert_array_equal(flipped, transforms.apply_crop(clip, box, 32)[:, :, ::-1])
  assert transforms.apply_crop(clip, transforms.Crop(0, 0, 32, 32), 32).tolist() == \
      clip[:, :32, :32].tolist()
  flips = {transforms.sample_train_crop(60, 90, np.random.default_rng(s)).flip for s in range(20)}
  assert flips == {True, False}
  assert not any(transforms.sample_train_crop(60, 90, np.random.default_rng(s), flip=False).flip
                 for s in range(20))


def _centroid(frame: np.ndarray) -> np.ndarray:
  mass = frame[..., 1].astype(np.float64)
  ys, xs = np.indices(mass.shape)
  return np.array([(ys * mass).sum(), (xs * mass).sum()]) / mass.sum() + 0.5


def test_eval_transform_and_point_mapping():
  clip = np.zeros((2, 60, 90, 3), np.uint8)
  clip[:, 20:30, 50:60, 1] = 255  # a block centred at (25, 55)
  out = transforms.eval_transform(clip, input_size=32)  # short side 36, then the centre 32
  assert out.shape == (2, 32, 32, 3)
  expect = transforms.eval_points(np.array([25.0, 55.0]), 60, 90, input_size=32)
  np.testing.assert_allclose(_centroid(out[0]), expect, atol=0.3)
  crop = transforms.Crop(5, 30, 45, 45, flip=True)
  out = transforms.apply_crop(clip, crop, 32)
  np.testing.assert_allclose(_centroid(out[0]), transforms.crop_points(np.array([25.0, 55.0]), crop,
                                                                       32), atol=0.3)
  plain = np.random.default_rng(0).integers(0, 256, (1, 37, 36, 3), dtype=np.uint8)
  np.testing.assert_array_equal(transforms.eval_transform(plain, input_size=32, scale_size=36),
                                plain[:, 2:34, 2:34])  # torchvision rounding of the centre crop
  with pytest.raises(DataError, match="uint8"):
    transforms.eval_transform(plain.astype(np.float32))


# ------------------------------------------------------------------------------------- built-in


def _read_json(path: Path):
  return json.loads(path.read_text())


def test_builtin_layout(tiny):
  meta = builtin.load_meta(tiny)
  assert meta["splits"] == {"train": 6, "val": 2, "test": 2} and meta["num_classes"] == 10
  assert meta["frames"] == 4 and meta["size"] == 64 and meta["seed"] == 0
  assert meta["digit_size"] == [21, 30]  # 72/224 and 104/224 of 64 px
  for name, src in meta["sources"]["backgrounds"].items():
    assert src["sha256"] == builtin.BACKGROUNDS[name]
  for split, n in meta["splits"].items():
    recs = lists.parse_list(tiny / f"{split}.txt", num_classes=10)
    assert len(recs) == n and all(r.num_frames == 4 for r in recs)
    clip = lists.read_clip(recs[0], range(4))
    assert clip.shape == (4, 64, 64, 3) and clip.dtype == np.uint8
    centres = builtin.load_centers(tiny, split)
    assert centres.shape == (n, 4, 2) and centres.dtype == np.float32
    assert all(21 <= i["digit_size"] <= 30 for i in _read_json(tiny / split / "clips.json"))
    assert np.all(centres > 0) and np.all(centres < 64)
  with pytest.raises(DataError, match="not a built-in video dataset"):
    builtin.load_meta(tiny / "train")


def test_builtin_splits_share_no_background_and_no_digit(tiny):
  meta = builtin.load_meta(tiny)
  chunks = meta["sources"]["chunks"]
  for scene, plan in chunks.items():
    spans = sorted(plan.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), (scene, spans)
  rows = {}
  for split in meta["splits"]:
    infos = _read_json(tiny / split / "clips.json")
    rows[split] = {i["mnist_row"] for i in infos}
    assert len(rows[split]) == len(infos)
    for info in infos:
      scene = meta["sources"]["backgrounds"][info["background"]]["scene"]
      lo, hi = chunks[scene][split]
      assert lo <= info["frames"][0] and info["frames"][1] <= hi
  assert not (rows["train"] & rows["val"] or rows["train"] & rows["test"]
              or rows["val"] & rows["test"])


def test_builtin_labels_and_centres_match_the_digits(tiny):
  _, mnist_labels = builtin.load_mnist()
  backgrounds = builtin.load_backgrounds(64)
  for split in ("train", "val", "test"):
    recs = lists.parse_list(tiny / f"{split}.txt")
    infos = _read_json(tiny / split / "clips.json")
    centres = builtin.load_centers(tiny, split)
    for r, info, centre in zip(recs, infos, centres):
      assert r.label == info["label"] == mnist_labels[info["mnist_row"]]
      frames = lists.read_clip(r, range(4)).astype(np.float64)
      (top, left), (start, end) = info["window"], info["frames"]
      bg = backgrounds[info["background"]][start:end, top:top + 64, left:left + 64]
      for t in range(4):  # where the frame is brighter than its background: the digit
        diff = np.clip(frames[t] - bg[t], 0, None).mean(-1)
        diff[diff < 40] = 0
        ys, xs = np.indices(diff.shape)
        got = np.array([(ys * diff).sum(), (xs * diff).sum()]) / diff.sum() + 0.5
        assert np.abs(got - centre[t]).max() < 3.5, (split, info, t, got, centre[t])


def test_builtin_load_example_is_the_stored_clip(tiny):
  """``load_example``: every frame of a stored example in time order, its centres and label, as
  the list file, the frame folder and centers.npy hold them; a bad split or index is one error."""
  recs = lists.parse_list(tiny / "test.txt")
  centres = builtin.load_centers(tiny, "test")
  for i, r in enumerate(recs):
    ex = builtin.load_example(tiny, "test", i)
    assert ex["frames"].shape == (4, 64, 64, 3) and ex["frames"].dtype == np.uint8
    np.testing.assert_array_equal(ex["frames"], lists.read_clip(r, range(4)))
    np.testing.assert_array_equal(ex["centers"], centres[i])
    assert ex["label"] == r.label and isinstance(ex["label"], int)
  with pytest.raises(DataError, match="no index 2"):
    builtin.load_example(tiny, "test", 2)
  with pytest.raises(DataError, match="no split 'dev'"):
    builtin.load_example(tiny, "dev", 0)


def _files(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_builtin_rebuild_is_byte_identical(tiny, tmp_path):
  again = tmp_path / "again"
  builtin.build(again, train=6, val=2, test=2, size=64, frames=4)
  assert _files(again) == _files(tiny)
  other = tmp_path / "other"
  builtin.build(other, train=6, val=2, test=2, size=64, frames=4, seed=1)
  assert _files(other)["train/000000/img_00001.jpg"] != _files(tiny)["train/000000/img_00001.jpg"]
  with pytest.raises(DataError, match="already exists"):
    builtin.build(other, train=6, val=2, test=2, size=64, frames=4)
  builtin.build(other, train=6, val=2, test=2, size=64, frames=4, overwrite=True)
  assert _files(other) == _files(tiny)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]


def test_builtin_failed_build_leaves_nothing(tmp_path, monkeypatch):
  real = builtin._write_split

  def fail_on_val(root, split, *args, **kwargs):
    if split == "val":
      raise RuntimeError("disk full")
    return real(root, split, *args, **kwargs)

  monkeypatch.setattr(builtin, "_write_split", fail_on_val)
  with pytest.raises(RuntimeError, match="disk full"):
    builtin.build(tmp_path / "out", train=6, val=2, test=2, size=64, frames=4)
  assert list(tmp_path.iterdir()) == []


def test_builtin_killed_build_leaves_nothing(tmp_path):
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  cmd = [sys.executable, "-m", "jaxvision.data.builtin", f"--out={out}", "--train=3000",
         "--val=10", "--test=10", "--size=64", "--frames=8"]
  for sig in (signal.SIGKILL, signal.SIGTERM):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tmp = tmp_path / f".out.building-{proc.pid}"
    deadline = time.time() + 60
    while not (tmp / "train").is_dir() and time.time() < deadline and proc.poll() is None:
      time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert not out.exists()
    if sig == signal.SIGTERM:  # the handler cleaned up
      assert proc.returncode == 128 + signal.SIGTERM and not tmp.exists()
    else:
      assert tmp.exists()  # a SIGKILL leaves the temp folder, never `out`
  builtin.build(out, train=6, val=2, test=2, size=64, frames=4)  # removes the dead build's leftover
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_builtin_cli_errors(tmp_path, capsys, tiny):
  assert builtin.main([f"--out={tiny}", *TINY]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "already exists" in err and str(tiny) in err
  assert builtin.main([f"--out={tmp_path / 'x'}", "--frames=60", "--size=64"]) == 2
  assert "bigbuckbunny: 132 frames cannot hold 3 disjoint chunks of 60" in capsys.readouterr().err
  assert builtin.main([f"--out={tmp_path / 'x'}", "--train=4990", "--size=64"]) == 2
  assert "at most 5000 videos" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()


def test_builtin_folder_built_with_other_settings_is_an_error(tiny):
  from jaxtrain.config import load_config
  from jaxvision.train import ensure_builtin
  config = load_config(str(ROOT / "configs/adafocusv2.py:smoke"))
  config.data.dir = str(tiny)
  config.data.builtin = dict(train=6, val=2, test=2, frames=4, size=64, seed=0)
  ensure_builtin(config)  # matches: used as it is
  config.data.builtin.digit_size = (40 / 224, 64 / 224)
  with pytest.raises(DataError, match=r"built with .*'digit_size': \[21, 30\].* asks for .*"
                                      r"'digit_size': \[11, 18\]"):
    ensure_builtin(config)


# ---------------------------------------------------------------------------------- VideoClips


def test_video_clips_with_the_loader_resume_exactly(tiny):
  train = builtin.clips(tiny, "train", num_frames=4, seed=3, input_size=32, epochs=2)
  assert len(train) == 12 and train.num_videos == 6
  item = train[7]
  assert item["frames"].shape == (4, 32, 32, 3) and item["frames"].dtype == np.uint8
  assert item["label"].dtype == np.int32 and item["index"] == 1
  np.testing.assert_array_equal(train[7]["frames"], item["frames"])  # a pure function of the index
  assert any(not np.array_equal(train[i]["frames"], train[i + 6]["frames"]) for i in range(6))

  def loader():
    return make_loader(train, global_batch_size=4, seed=0)

  it = loader()
  for _ in range(2):
    batch = next(it)
  assert batch["frames"].shape == (4, 4, 32, 32, 3) and batch["frames"].dtype == np.uint8
  assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
  state = it.get_state()
  rest = [next(it) for _ in range(4)]  # crosses the end of a pass
  resumed = loader()
  resumed.set_state(state)
  for a in rest:
    b = next(resumed)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])

  val = builtin.clips(tiny, "val", input_size=32)
  assert len(val) == 2 and not val.train
  a, b = val[1], val[1]
  np.testing.assert_array_equal(a["frames"], b["frames"])
  assert int(a["label"]) == lists.parse_list(tiny / "val.txt")[1].label
  batch = next(make_loader(val, global_batch_size=2, shuffle=False, num_epochs=1))
  assert batch["frames"].shape == (2, 4, 32, 32, 3)


def test_video_clips_multilabel_video_files_and_short_videos(tmp_path, mp4):
  path, _ = mp4
  (tmp_path / "list.txt").write_text(f"{path} 1,3\n{path} 20 2\n")
  clips = sources.VideoClips(tmp_path / "list.txt", num_frames=4, train=False, num_classes=5,
                             input_size=32)
  assert clips.multi_label
  item = clips[0]
  assert item["frames"].shape == (4, 32, 32, 3)
  np.testing.assert_array_equal(item["label"], np.array([0, 1, 0, 1, 0], np.float32))
  np.testing.assert_array_equal(clips.frame_indices(0), [2, 7, 12, 17])
  with pytest.raises(DataError, match="need num_classes"):
    sources.VideoClips(tmp_path / "list.txt", num_frames=4)
  with pytest.raises(DataError, match=r"list.txt:1: 2 labels \[1, 3\] but multi_label=False"):
    sources.VideoClips(tmp_path / "list.txt", num_frames=4, multi_label=False)
  with pytest.raises(DataError, match=r"list.txt:1: has 20 frames, fewer than num_frames=24"):
    sources.VideoClips(tmp_path / "list.txt", num_frames=24, num_classes=5)
  long = sources.VideoClips(tmp_path / "list.txt", num_frames=24, num_classes=5, input_size=32,
                            repeat_short=True, seed=1)
  assert long[1]["frames"].shape == (24, 32, 32, 3)


def test_video_clips_glance_and_focus_share_one_crop(tmp_path):
  """The Sth-Sth / Jester sampling: Tg glance and Tf focus frames, each a TSN sample of the whole
  clip, under one crop and flip (training) or one resize and centre crop (evaluation, fixed)."""
  n, tg, tf = 24, 4, 6
  still = np.random.default_rng(0).integers(0, 256, (40, 60, 2), dtype=np.uint8)
  raw = np.stack([np.concatenate([still, np.full((40, 60, 1), 10 * k, np.uint8)], -1)
                  for k in range(n)])                     # blue = 10 x frame index, the rest still
  (tmp_path / "v").mkdir()
  for k, frame in enumerate(raw):
    Image.fromarray(frame).save(tmp_path / "v" / f"img_{k + 1:05d}.png")
  (tmp_path / "list.txt").write_text(f"v {n} 3\n")

  def clips(train, **kw):
    kw = dict(num_frames=tg, focus_frames=tf, train=train, template="img_{:05d}.png",
              input_size=32, **kw)
    return sources.VideoClips(tmp_path / "list.txt", **kw)

  train = clips(True, epochs=8, seed=1)
  crops = set()
  for epoch in range(8):
    item = train[epoch]
    assert sorted(item) == ["focus", "glance", "index", "label"] and int(item["label"]) == 3
    assert item["glance"].shape == (tg, 32, 32, 3) and item["focus"].shape == (tf, 32, 32, 3)
    idx = train.frame_indices(0, epoch)
    for part, t in ((idx[:tg], tg), (idx[tg:], tf)):  # each a TSN sample over the whole clip
      bounds = sampling.segment_bounds(n, t)
      assert np.all(part >= bounds[:-1]) and np.all(part < bounds[1:])
    both = np.concatenate([item["glance"], item["focus"]])
    np.testing.assert_allclose(both[..., 2].mean((1, 2)), 10 * idx, atol=0.5)  # those frames
    assert (both[..., :2] == both[:1, ..., :2]).all()  # one crop and flip for all Tg + Tf frames
    crops.add(both[0, ..., :2].tobytes())
  assert len(crops) > 1  # the crop changes with the epoch
  # Without focus_frames (the ActivityNet path) the same generator draws the same glance frames.
  plain = sources.VideoClips(tmp_path / "list.txt", num_frames=tg, seed=1, epochs=8,
                             template="img_{:05d}.png", input_size=32)
  np.testing.assert_array_equal(plain.frame_indices(0, 5), train.frame_indices(0, 5)[:tg])
  assert sorted(plain[5]) == ["frames", "index", "label"]

  val = clips(False)
  a, b = val[0], val[0]
  want = np.concatenate([sampling.segment_indices(n, t, train=False) for t in (tg, tf)])
  np.testing.assert_array_equal(val.frame_indices(0), want)
  np.testing.assert_array_equal(np.concatenate([a["glance"], a["focus"]]),
                                transforms.eval_transform(raw[want], input_size=32))
  for k in ("glance", "focus"):
    np.testing.assert_array_equal(a[k], b[k])
  batch = next(make_loader(val, global_batch_size=1, shuffle=False, num_epochs=1,
                           fields=("glance", "focus", "label")))
  assert batch["glance"].shape == (1, tg, 32, 32, 3) and batch["focus"].shape == (1, tf, 32, 32, 3)
  with pytest.raises(DataError, match=r"list.txt:1: has 24 frames, fewer than focus_frames=30"):
    sources.VideoClips(tmp_path / "list.txt", num_frames=tg, focus_frames=30,
                       template="img_{:05d}.png")
  with pytest.raises(DataError, match=r"focus_frames=0 must be an integer >= 1"):
    sources.VideoClips(tmp_path / "list.txt", num_frames=tg, focus_frames=0,
                       template="img_{:05d}.png")
