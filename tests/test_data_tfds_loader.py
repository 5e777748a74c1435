"""TFDS array_record build and read-back (no TensorFlow) and the grain loader: resume, sharding."""
import sys

import numpy as np
import pytest

from jaxbrain.data import DataError
from jaxbrain.data.preprocess import resample_subject
from jaxbrain.data.synthetic import make_synthetic
from jaxbrain.data.tfds_builder import FmriWindowsConfig, build_dataset, load_data_source
from jaxbrain.data.windows import subject_windows, window_arrays
from jaxtrain.data import InMemorySource, make_loader

TR, TAU, S = 1.0, 5.0, 2  # 5 frames per segment


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("subjects")
  subjects, labels = make_synthetic(num_subjects=5, num_rois=8, num_frames=60, tr=TR, seed=0)
  for s in subjects:
    np.save(root / f"{s.id}.npy", s.timeseries)
  labels.write_csv(root / "labels.csv")
  return root, subjects, labels


def _config(root, **kw):
  base = dict(name="tiny", source=str(root), tr=TR, labels_path=str(root / "labels.csv"),
              label_column="class", tau_s=TAU, num_segments=S, stride_segments=1,
              holdout={"test": 2}, seed=0)
  base.update(kw)
  return FmriWindowsConfig(**base)


def test_tfds_build_and_read_back(folder, tmp_path):
  root, subjects, labels = folder
  sources = build_dataset(_config(root), tmp_path / "tfds")
  assert "tensorflow" not in sys.modules
  assert set(sources) == {"train", "test"}
  by_id = {s.id: s for s in subjects}
  ids_sorted = sorted(by_id)
  seen = {}
  for split, src in sources.items():
    assert len(src) == {"train": 3, "test": 2}[split] * 11  # (60 // 5 - 2) + 1 windows each
    for i in range(len(src)):
      ex = src[i]
      sid = ex["subject_id"].decode()
      seen.setdefault(sid, set()).add(split)
      s = by_id[sid]
      ref = subject_windows(s.timeseries, TR, tau_s=TAU, num_segments=S)
      assert ex["x"].shape == (S, 8, 5) and ex["x"].dtype == np.float32
      assert any(np.array_equal(ex["x"], r) for r in ref)
      assert ex["subject"] == ids_sorted.index(sid)
      assert ex["label"] == labels.values("class", [sid])[0]
  assert all(len(v) == 1 for v in seen.values()) and len(seen) == 5  # no subject in two splits
  import tensorflow_datasets as tfds
  named = tfds.data_source("fmri_windows/tiny", data_dir=str(tmp_path / "tfds"))
  assert len(named["train"]) == 33
  assert len(build_dataset(_config(root), tmp_path / "tfds")["train"]) == 33  # reused
  with pytest.raises(DataError, match=r"other settings .*'num_segments': \(2, 3\)"):
    build_dataset(_config(root, num_segments=3), tmp_path / "tfds")
  with pytest.raises(DataError, match="not a finished TFDS build"):
    load_data_source(tmp_path / "nowhere", "tiny")
  again = load_data_source(tmp_path / "tfds", "tiny")  # from files alone (jaxtrain.data)
  assert len(again["test"]) == 22
  assert again["train"].dataset_info.metadata["seg_frames"] == 5
  it = make_loader(again["train"], global_batch_size=4, seed=0, process_index=0, process_count=1)
  batch = next(it)
  assert batch["x"].shape == (4, S, 8, 5) and batch["label"].dtype == np.int32
  assert batch["subject"].dtype == np.int32


def test_tfds_build_stores_window_arrays_in_order(folder, tmp_path):
  """With ``stride_frames`` (as config.data.stride_frames) and ``resample_tr``, a split holds
  exactly ``window_arrays`` of its subjects (resampled first), in order: by subject id, then start."""
  root, subjects, _ = folder
  for name, resample_tr in (("stride2", None), ("tr05", 0.5)):
    sources = build_dataset(_config(root, name=name, stride_frames=2, label_column=None,
                                    resample_tr=resample_tr), tmp_path / "tfds")
    meta = sources["train"].dataset_info.metadata
    assert meta["stride_frames"] == 2 and meta["tr"] == (resample_tr or TR)
    by_id = {s.id: s if resample_tr is None else resample_subject(s, resample_tr) for s in subjects}
    assert meta["num_frames"] == [by_id[i].num_frames for i in sorted(by_id)]
    for split, src in sources.items():
      ids = meta["splits"][split]
      ref = window_arrays([by_id[i] for i in ids], tau_s=TAU, num_segments=S, stride_frames=2,
                          subject_index=[sorted(by_id).index(i) for i in ids])
      got = next(make_loader(src, global_batch_size=len(src), shuffle=False, num_epochs=1,
                             process_index=0, process_count=1, fields=("x", "subject", "start")))
      for key in ("x", "subject", "start"):
        np.testing.assert_array_equal(got[key], ref[key])
  with pytest.raises(DataError, match=r"stride_frames=2 and stride_segments=2: give one of them"):
    build_dataset(_config(root, name="both", stride_frames=2, stride_segments=2), tmp_path / "x")


def test_tfds_bad_inputs_leave_nothing(folder, tmp_path):
  root, subjects, _ = folder
  bad = tmp_path / "bad"
  bad.mkdir()
  for s in subjects:
    np.save(bad / f"{s.id}.npy", s.timeseries)
  (bad / "labels.csv").write_text("subject_id,class\nsub0000,0\nsub0001,1\n")
  out = tmp_path / "out"
  with pytest.raises(DataError,
                     match=r"subject 'sub0002' is missing from labels table .*labels\.csv"):
    build_dataset(_config(bad), out)
  assert not out.exists()
  x = subjects[0].timeseries.copy()
  x[1, 3] = np.nan
  np.save(bad / "sub0000.npy", x)
  with pytest.raises(DataError, match=r"sub0000\.npy: 1 NaN"):
    build_dataset(_config(bad, label_column=None), out)  # labels file still excluded
  assert not out.exists()


class _PlainSource:
  """A generic random-access source (like TFDS's): exercises the per-example grain path."""

  def __init__(self, inner):
    self.inner = inner

  def __len__(self):
    return len(self.inner)

  def __getitem__(self, i):
    return {k: v.item() if v.ndim == 0 else v for k, v in self.inner[i].items()}


@pytest.fixture(params=["in_memory", "plain"])
def _indexed_source(request):
  def make(n):
    src = InMemorySource({"x": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
                          "idx": np.arange(n, dtype=np.int32)})
    return src if request.param == "in_memory" else _PlainSource(src)
  return make


def test_in_memory_source_from_window_arrays():
  subjects, labels = make_synthetic(num_subjects=3, num_rois=6, num_frames=40, tr=TR, seed=1)
  y = labels.values("score", [s.id for s in subjects], "regression")
  src = InMemorySource(window_arrays(subjects, tau_s=TAU, num_segments=S, labels=y))
  per = (40 // 5 - S) + 1
  assert len(src) == 3 * per
  np.testing.assert_array_equal(src[per]["x"], subject_windows(subjects[1].timeseries, TR,
                                                               tau_s=TAU, num_segments=S)[0])
  assert src[per]["subject"] == 1 and src[per]["start"] == 0
  assert src[per]["label"] == pytest.approx(y[1])
  assert src.arrays["label"].dtype == y.dtype
  with pytest.raises(DataError, match="labels must be 3 numbers"):
    window_arrays(subjects, tau_s=TAU, num_segments=S, labels=["a", "b", "c"])
  batch = next(make_loader(src, global_batch_size=4, seed=0, process_index=0, process_count=1))
  assert batch["x"].shape == (4, S, 6, 5) and batch["subject"].dtype == np.int32


def test_loader_resume_gives_identical_batches(_indexed_source):
  src = _indexed_source(37)
  kw = dict(global_batch_size=6, seed=7, process_index=0, process_count=1, fields=None)
  it = make_loader(src, **kw)
  for _ in range(4):
    next(it)
  state = it.get_state()
  rest = [next(it) for _ in range(9)]  # crosses the epoch boundary (6 batches/epoch)
  fresh = make_loader(src, **kw)
  fresh.set_state(state)
  for a, b in zip(rest, (next(fresh) for _ in range(9))):
    np.testing.assert_array_equal(a["idx"], b["idx"])
    np.testing.assert_array_equal(a["x"], b["x"])
  replay = make_loader(src, **kw)
  first = [next(replay)["idx"] for _ in range(12)]
  assert sorted(np.concatenate(first[:6])) != list(range(36))  # 37 examples, 1 dropped per epoch
  assert not np.array_equal(np.concatenate(first[:6]), np.concatenate(first[6:]))  # reshuffled


def test_hosts_split_the_single_host_batches(_indexed_source):
  """Two hosts read disjoint halves of exactly the global batches one host sees (one epoch, a short
  last batch split as evenly as possible), so the batches do not depend on the host count."""
  src = _indexed_source(41)
  kw = dict(global_batch_size=4, seed=3, num_epochs=1, drop_remainder=False, fields=("idx",))
  single = [b["idx"] for b in make_loader(src, process_index=0, process_count=1, **kw)]
  hosts = [[b["idx"] for b in make_loader(src, process_index=h, process_count=2, **kw)]
           for h in range(2)]
  assert len(single) == len(hosts[0]) == len(hosts[1]) == 11
  for whole, first, second in zip(single, *hosts):
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)
    assert len(first) - len(second) in (0, 1)
  assert sorted(np.concatenate(single)) == list(range(41))
  assert not np.array_equal(np.concatenate(single), np.arange(41))  # shuffled
  unshuffled = list(make_loader(src, global_batch_size=4, shuffle=False, process_index=1,
                                process_count=2, num_epochs=1, fields=("idx",)))
  np.testing.assert_array_equal(unshuffled[0]["idx"], [2, 3])
  assert len(unshuffled) == 10  # drop_remainder: the short last batch is dropped


def test_loader_argument_errors(_indexed_source):
  src = _indexed_source(10)
  with pytest.raises(DataError, match="multiple of the process count 4"):
    make_loader(src, global_batch_size=6, process_index=0, process_count=4)
  with pytest.raises(DataError, match="fewer than one batch of 12"):
    make_loader(src, global_batch_size=12, process_index=0, process_count=1)
  with pytest.raises(DataError, match=r"no field\(s\) \['subject', 'label'\]"):
    next(make_loader(src, global_batch_size=2, process_index=0, process_count=1,
                     fields=("x", "subject", "label")))


def test_in_memory_and_generic_paths_agree(_indexed_source):
  kw = dict(global_batch_size=4, seed=5, process_index=1, process_count=2, fields=("idx", "x"))
  fast = make_loader(InMemorySource({"x": np.arange(60, dtype=np.float32).reshape(20, 3),
                                     "idx": np.arange(20, dtype=np.int32)}), **kw)
  slow = make_loader(_indexed_source(20), **kw)
  for _ in range(7):
    a, b = next(fast), next(slow)
    assert a.keys() == b.keys() and a["idx"].dtype == b["idx"].dtype == np.int32
    np.testing.assert_array_equal(a["idx"], b["idx"])
    np.testing.assert_array_equal(a["x"], b["x"])
