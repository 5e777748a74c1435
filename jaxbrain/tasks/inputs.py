"""From ``config.data`` to subjects, labels and window arrays (the task's view of jaxbrain.data).

Windows come from subjects in memory (``load_data`` + ``memory_windows``) or, for cohorts larger
than memory, from a TFDS array_record build (``tfds_windows``, ``config.data.tfds_dir``).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from jaxbrain.data import hcp, synthetic, windows
from jaxbrain.data.preprocess import resample_subject, segment_frames
from jaxbrain.data.sources import LabelsTable, Subject, load_subjects, read_labels
from jaxbrain.data.splits import split_subjects
from jaxbrain.data.validation import DataError
from jaxtrain.config import get
from jaxtrain.data import InMemorySource, make_loader
from jaxtrain.errors import ConfigError

SOURCES = ("hcp", "synthetic", "folder")


@dataclasses.dataclass
class FmriData:
  """Validated subjects plus what is known about them."""
  subjects: list[Subject]
  labels: LabelsTable | None = None
  region_names: list[str] | None = None
  homologous_pairs: list[tuple[int, int]] | None = None

  @property
  def ids(self) -> list[str]:
    return [s.id for s in self.subjects]

  def select(self, ids: Sequence[str]) -> list[Subject]:
    by_id = {s.id: s for s in self.subjects}
    return [by_id[i] for i in ids]


def load_data(data: ml_collections.ConfigDict) -> FmriData:
  """Loads the subjects named by ``config.data`` (built-in HCP, synthetic, or a folder), each
  resampled to ``data.resample_tr`` seconds when that is set (``preprocess.resample``)."""
  tr = float(get(data, "resample_tr", 0.0))
  if tr < 0:
    raise ConfigError(f"config.data.resample_tr={tr}: expected a TR in seconds, or 0 to keep each "
                      "subject's own TR")
  fmri = _load_source(data)
  if tr > 0:
    fmri.subjects = [resample_subject(s, tr) for s in fmri.subjects]
  return fmri


def _load_source(data: ml_collections.ConfigDict) -> FmriData:
  if data.source == "hcp":
    return FmriData(hcp.load_hcp(), None, hcp.aal2_region_names(), hcp.homologous_pairs())
  if data.source == "synthetic":
    s = data.synthetic
    subjects, labels = synthetic.make_synthetic(
        num_subjects=s.num_subjects, num_rois=s.num_rois, num_frames=s.length, tr=s.tr,
        num_classes=s.num_classes, seed=s.seed)
    return FmriData(subjects, labels)
  if data.source == "folder":
    if not data.path:
      raise DataError("config.data.path is empty; source='folder' needs a folder of subject files")
    exclude = [data.labels_csv] if data.labels_csv else []
    subjects = load_subjects(data.path, data.pattern if data.pattern != "*" else None,
                             tr=data.tr, key=data.key or None, atlas=data.atlas or None,
                             exclude=exclude)
    labels = read_labels(data.labels_csv, id_column=data.id_column) if data.labels_csv else None
    if labels is not None and data.label_column:  # the error names a missing subject and the file
      labels.values(data.label_column, [s.id for s in subjects], task=data.label_task)
    return FmriData(subjects, labels)
  raise DataError(f"config.data.source={data.source!r}; expected one of {SOURCES}")


def frames_per_segment(data: ml_collections.ConfigDict, subjects: Sequence[Subject]) -> int:
  trs = {round(s.tr, 6) for s in subjects}
  if len(trs) != 1:
    raise DataError(f"subjects have different TRs {sorted(trs)} s; set "
                    "--config.data.resample_tr=<seconds> to resample them to one TR")
  return segment_frames(data.tau_s, subjects[0].tr)


def data_shapes(data: ml_collections.ConfigDict, fmri: FmriData) -> tuple[int, int]:
  """(ROIs, frames per ``data.tau_s`` segment) of the subjects: the model's num_rois and seg_len."""
  return fmri.subjects[0].num_rois, frames_per_segment(data, fmri.subjects)


def window_arrays(subjects: Sequence[Subject], data: ml_collections.ConfigDict, *,
                  stride_frames: int | None = None, subject_index: Sequence[int] | None = None,
                  labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Windows of all subjects as ``config.data`` describes them (``jaxbrain.data.windows``):
  ``x`` float32 [W, S, N, L], ``subject`` int32, ``label``, ``start`` (the window's first frame).

  Each series is preprocessed once (z-scoring, optional band-pass); windows of
  ``data.num_segments`` segments start every ``stride_frames`` frames (default: one segment).
  """
  band = tuple(data.bandpass_hz)
  band = None if not any(band) else (band[0] or None, band[1] or None)
  return windows.window_arrays(subjects, tau_s=data.tau_s, num_segments=data.num_segments,
                               stride_frames=stride_frames, standardize=data.zscore, band_hz=band,
                               labels=labels, subject_index=subject_index)


@dataclasses.dataclass
class Windows:
  """The windows of one experiment by subject split (``'train'``, ``'val'``, ``'heldout'``)."""
  splits: dict[str, list[str]]  # subject ids of each split
  train: Any                    # random-access source of the training windows (field ``x``)
  num_rois: int
  seg_len: int                  # frames per segment of ``data.tau_s`` seconds
  num_frames: np.ndarray        # frames of each subject's series, indexed by a window's ``subject``
  data: FmriData                # subjects (none for a TFDS build), labels, region names
  # (split, stride in frames) -> that split's windows starting every stride frames, in memory, as
  # ``window_arrays`` gives them
  arrays: Callable[[str, int], dict[str, np.ndarray]]

  def train_sample(self, max_windows: int, seed: int) -> np.ndarray:
    """All training windows ``x``, in order, or ``max_windows`` of them drawn at random."""
    return sample_windows(self.train, max_windows, seed)


def sample_windows(source: Any, max_windows: int, seed: int) -> np.ndarray:
  """Windows ``x`` of a random-access source: all, in order, or ``max_windows`` drawn at random
  (in order)."""
  n = len(source)
  idx = np.arange(n) if n <= max_windows else np.sort(
      np.random.default_rng(seed).choice(n, max_windows, replace=False))
  return np.stack([source[int(i)]["x"] for i in idx])


def memory_windows(config: ml_collections.ConfigDict, data: FmriData) -> Windows:
  """Windows of subjects in memory: ``config.data.holdout_subjects`` held out (reported), then
  ``config.data.val_subjects`` of the rest for validation, by ``config.seed``; training windows
  every ``config.data.stride_frames`` frames. A window's ``subject`` is its position in the sorted
  ids (as in a TFDS build)."""
  num_rois, seg_len = data_shapes(config.data, data)
  holdout = {"heldout": config.data.holdout_subjects,
             "val": int(config.data.get("val_subjects", 0) or 0)}
  splits = split_subjects(data.ids, holdout, seed=config.seed)
  ids = sorted(data.ids)
  index = {sid: i for i, sid in enumerate(ids)}

  def read(split: str, stride: int) -> dict[str, np.ndarray]:
    return window_arrays(data.select(splits[split]), config.data, stride_frames=stride,
                         subject_index=[index[i] for i in splits[split]])

  train = InMemorySource({"x": read("train", config.data.stride_frames)["x"]})
  return Windows(splits, train, num_rois, seg_len,
                 np.array([s.num_frames for s in data.select(ids)]), data, read)


TFDS_SPLITS = {"train": "train", "val": "val", "heldout": "test"}  # ours -> the build's


def tfds_windows(config: ml_collections.ConfigDict) -> Windows:
  """Windows of the TFDS array_record build ``config.data.tfds_config`` in ``config.data.tfds_dir``
  (``jaxbrain.data.tfds_builder``). Its splits decide the subjects: ``train`` (pretraining, read
  example by example, never all in memory), ``val`` (validation) and ``test`` (held out); the
  latter two are read into memory when evaluated. The build's settings must match
  ``config.data`` (tau_s, num_segments, stride_frames, zscore, bandpass_hz, resample_tr)."""
  from jaxbrain.data import tfds_builder  # tensorflow_datasets, only for this path
  d = config.data
  sources = tfds_builder.load_data_source(d.tfds_dir, d.tfds_config)
  if "train" not in sources:
    raise DataError(f"{d.tfds_dir}: TFDS build {d.tfds_config!r} has no 'train' split (it has "
                    f"{sorted(sources)})")
  meta = sources["train"].dataset_info.metadata
  built = meta["build_config"]
  band = tuple(float(f or 0) for f in built["band_hz"] or (0, 0))  # as config.data.bandpass_hz
  checks = {"tau_s": (d.tau_s, meta["tau_s"]),
            "num_segments": (d.num_segments, built["num_segments"]),
            "stride_frames": (d.stride_frames, meta["stride_frames"]),
            "zscore": (d.zscore, built["standardize"]),
            "bandpass_hz": (tuple(float(f) for f in d.bandpass_hz), band)}
  if get(d, "resample_tr", 0.0):
    checks["resample_tr"] = (d.resample_tr, meta["tr"])
  for field, (value, have) in checks.items():
    if value != have and not (isinstance(have, float) and np.isclose(value, have, rtol=1e-9)):
      raise ConfigError(f"config.data.{field}={value!r} but the TFDS build {d.tfds_config!r} in "
                        f"{d.tfds_dir} has {have!r}; set --config.data.{field}={have!r} or rebuild")
  splits = {ours: list(meta["splits"].get(theirs, [])) for ours, theirs in TFDS_SPLITS.items()}

  @functools.cache
  def whole(split: str) -> dict[str, np.ndarray]:  # read once, by every host
    src = sources[TFDS_SPLITS[split]]
    return next(make_loader(src, global_batch_size=len(src), shuffle=False, num_epochs=1,
                            drop_remainder=False, process_index=0, process_count=1,
                            fields=("x", "subject", "start", "label")))

  def read(split: str, stride: int) -> dict[str, np.ndarray]:
    # The build's windows that start on that stride: all that window_arrays gives when the build's
    # own stride is at most one segment (evaluation strides are whole segments).
    a = whole(split)
    keep = np.flatnonzero(a["start"] % stride == 0)
    keep = keep[np.lexsort((a["start"][keep], a["subject"][keep]))]
    return {k: v[keep] for k, v in a.items()}

  names = pairs = None
  if built["source"] == tfds_builder.BUILTIN_HCP:
    names, pairs = hcp.aal2_region_names(), hcp.homologous_pairs()
  return Windows(splits, sources["train"], int(meta["num_rois"]), int(meta["seg_frames"]),
                 np.asarray(meta["num_frames"]), FmriData([], None, names, pairs), read)
