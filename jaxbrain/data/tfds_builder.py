"""A TFDS builder (no TensorFlow needed) that turns subjects plus a labels table into array_record
shards of windows, split by subject, readable with random access (``as_data_source``) by grain.

Each example: ``x`` float32 [S, N, L] (segments, ROIs, frames per segment), ``subject`` int32 (index
of the subject in the sorted list of all subject ids), ``start`` int32 (the window's first frame),
``label`` (int32 class, float32 target, or int32 -1 without a labels column) and ``subject_id``
(text). Splits hold disjoint subjects. Within a split, examples are stored unshuffled in the order
of ``jaxbrain.data.windows.window_arrays``: by subject id, then start (the loader shuffles).

Usage::

  cfg = FmriWindowsConfig(name="hcp", source="builtin:hcp", holdout={"test": 2})
  sources = build_dataset(cfg, data_dir="runs/tfds")   # {'train': ..., 'test': ...}
  sources = load_data_source(data_dir="runs/tfds", config_name="hcp")   # later, read only
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds

from jaxbrain.data import hcp
from jaxbrain.data.preprocess import DEFAULT_TAU_S, resample_subject, segment_frames
from jaxbrain.data.sources import Subject, load_subjects, read_labels
from jaxbrain.data.splits import split_subjects
from jaxbrain.data.validation import DataError, check_length
from jaxbrain.data.windows import subject_windows, window_starts
from jaxtrain.data import array_record_splits

BUILTIN_HCP = "builtin:hcp"


@dataclasses.dataclass(eq=False)
class FmriWindowsConfig(tfds.core.BuilderConfig):
  """What to build. ``source``: a folder of subject files, or ``'builtin:hcp'``.

  ``labels_path``/``label_column``/``task`` join a labels table (optional: without it every label
  is -1). ``holdout``: split name -> subject count or fraction (the rest is ``train``).
  ``resample_tr``: resample every subject to this TR (s) first (``preprocess.resample``).
  Windows start every ``stride_frames`` frames (as ``config.data.stride_frames`` and
  ``windows.window_starts``); None: every ``stride_segments`` segments.
  """
  source: str = BUILTIN_HCP
  pattern: str | None = None
  tr: float | None = None
  key: str | None = None
  roi_axis: Any = "auto"
  labels_path: str | None = None
  id_column: str = "subject_id"
  label_column: str | None = None
  task: str = "classification"
  tau_s: float = DEFAULT_TAU_S
  num_segments: int = 4
  stride_segments: int = 1
  stride_frames: int | None = None
  resample_tr: float | None = None
  standardize: bool = True
  band_hz: tuple | None = None
  holdout: Mapping[str, int | float] = dataclasses.field(default_factory=lambda: {"test": 0.2})
  seed: int = 0


@dataclasses.dataclass
class _Prepared:
  subjects: dict[str, Subject]
  index: dict[str, int]
  labels: dict[str, Any]
  splits: dict[str, list[str]]
  num_rois: int
  seg_frames: int
  stride_frames: int
  tr: float
  classes: list[str] | None


def prepare(cfg: FmriWindowsConfig) -> _Prepared:
  """Loads and validates everything a build needs; writes nothing. Raises DataError."""
  if cfg.source == BUILTIN_HCP:
    subjects = hcp.load_hcp()
  else:
    exclude = [cfg.labels_path] if cfg.labels_path else []
    subjects = load_subjects(cfg.source, cfg.pattern, tr=cfg.tr, key=cfg.key, roi_axis=cfg.roi_axis,
                             exclude=exclude)
  if cfg.resample_tr is not None:
    subjects = [resample_subject(s, cfg.resample_tr) for s in subjects]
  trs = {s.tr for s in subjects}
  if len(trs) != 1:
    raise DataError(f"subjects have different TRs {sorted(trs)}; set resample_tr=<seconds> or "
                    "build one dataset per TR")
  tr = trs.pop()
  seg = segment_frames(cfg.tau_s, tr)
  if not isinstance(cfg.stride_segments, int) or cfg.stride_segments < 1:
    raise DataError(f"stride_segments={cfg.stride_segments!r}: expected a positive integer")
  if cfg.stride_frames is not None and cfg.stride_segments != 1:
    raise DataError(f"stride_frames={cfg.stride_frames!r} and stride_segments="
                    f"{cfg.stride_segments!r}: give one of them")
  stride = cfg.stride_segments * seg if cfg.stride_frames is None else cfg.stride_frames
  window_starts(0, seg, cfg.num_segments, stride)  # checks the stride
  for s in subjects:
    check_length(s.num_frames, seg, s.source, tr=tr, what=f"one segment (tau {cfg.tau_s} s)")
    check_length(s.num_frames, seg * cfg.num_segments, s.source, tr=tr,
                 what=f"one window of {cfg.num_segments} segments")
  ids = [s.id for s in subjects]
  classes = None
  if cfg.label_column is not None:
    if cfg.labels_path is None:
      raise DataError(f"label_column={cfg.label_column!r} needs labels_path")
    table = read_labels(cfg.labels_path, id_column=cfg.id_column)
    values = table.values(cfg.label_column, ids, cfg.task)
    if cfg.task == "classification":
      classes = table.classes(cfg.label_column)
    labels = dict(zip(ids, values.tolist()))
  else:
    labels = {i: -1 for i in ids}
  splits = split_subjects(ids, dict(cfg.holdout), seed=cfg.seed)
  return _Prepared(subjects={s.id: s for s in subjects},
                   index={sid: i for i, sid in enumerate(sorted(ids))}, labels=labels,
                   splits=splits, num_rois=subjects[0].num_rois, seg_frames=seg,
                   stride_frames=stride, tr=tr, classes=classes)


def config_fields(cfg: FmriWindowsConfig) -> dict[str, Any]:
  """The settings that determine a build's content, JSON-ready (stored in its metadata)."""
  base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
  out = {}
  for f in dataclasses.fields(cfg):
    if f.name not in base:
      v = getattr(cfg, f.name)
      out[f.name] = (dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, tuple)
                     else v)
  return json.loads(json.dumps(out))


class FmriWindows(tfds.core.GeneratorBasedBuilder):
  """Windows of preprocessed fMRI ROI series, split by subject (see the module docstring)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "start feature, stride_frames, resample_tr, num_frames metadata, "
                            "examples unshuffled."}
  BUILDER_CONFIGS = [FmriWindowsConfig(name="hcp", description="Built-in HCP data, 2 test subjects",
                                       holdout={"test": 2})]

  @functools.cached_property
  def prepared(self) -> _Prepared:
    return prepare(self.builder_config)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg, p = self.builder_config, self.prepared
    label = (tfds.features.Scalar(dtype=np.float32) if cfg.label_column and cfg.task == "regression"
             else tfds.features.Scalar(dtype=np.int32))
    return tfds.core.DatasetInfo(
        builder=self,
        description="Windows [segments, ROIs, frames] of z-scored fMRI ROI time series.",
        features=tfds.features.FeaturesDict({
            "x": tfds.features.Tensor(shape=(cfg.num_segments, p.num_rois, p.seg_frames),
                                      dtype=np.float32),
            "subject": tfds.features.Scalar(dtype=np.int32),
            "start": tfds.features.Scalar(dtype=np.int32),
            "label": label,
            "subject_id": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(
            tr=p.tr, seg_frames=p.seg_frames, stride_frames=p.stride_frames, num_rois=p.num_rois,
            tau_s=cfg.tau_s, subject_ids=sorted(p.index),
            num_frames=[p.subjects[i].num_frames for i in sorted(p.index)], splits=p.splits,
            classes=p.classes, label_column=cfg.label_column, task=cfg.task,
            build_config=config_fields(cfg)),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(ids) for name, ids in self.prepared.splits.items()
            if ids}

  def _generate_examples(self, subject_ids):
    cfg, p = self.builder_config, self.prepared
    for sid in subject_ids:
      s = p.subjects[sid]
      windows = subject_windows(s.timeseries, s.tr, tau_s=cfg.tau_s, num_segments=cfg.num_segments,
                                stride_frames=p.stride_frames, standardize=cfg.standardize,
                                band_hz=cfg.band_hz, source=s.source)
      starts = window_starts(s.num_frames, p.seg_frames, cfg.num_segments, p.stride_frames)
      for j, w in enumerate(windows):
        yield f"{sid}/{j:06d}", {"x": w, "subject": p.index[sid], "start": int(starts[j]),
                                 "label": p.labels[sid], "subject_id": sid}


def build_dataset(config: FmriWindowsConfig | str, data_dir: str | os.PathLike, *,
                  progress: bool = False) -> dict[str, Any]:
  """Validates the inputs, writes array_record shards under ``data_dir`` (nothing on error) and
  returns ``{split: random-access data source}``. Reuses an existing complete build of the same
  config name if its settings match, and raises DataError if they differ.

  ``config``: a config, or the name of a built-in one (``'hcp'``). A custom config must not reuse a
  built-in name."""
  data_dir = Path(data_dir)
  builder = FmriWindows(config=config, data_dir=str(data_dir))  # validates inputs: raises early
  stored = Path(builder.data_dir) / "metadata.json"
  if stored.is_file():
    old = json.loads(stored.read_text()).get("build_config")
    new = config_fields(builder.builder_config)
    if old != new:
      diff = {k: (old.get(k) if old else None, v) for k, v in new.items()
              if not old or old.get(k) != v}
      raise DataError(f"{builder.data_dir} was built with other settings (stored, requested): "
                      f"{diff}; use another config name or delete that folder")
  existed = data_dir.exists()
  download_dir = tempfile.mkdtemp(prefix="tfds_dl_")
  if not progress:
    tfds.disable_progress_bar()
  try:
    builder.download_and_prepare(
        download_dir=download_dir, file_format="array_record",
        download_config=tfds.download.DownloadConfig(download_mode=tfds.download.GenerateMode
                                                     .REUSE_DATASET_IF_EXISTS))
  except BaseException:
    if not existed:
      shutil.rmtree(data_dir, ignore_errors=True)
    raise
  finally:
    shutil.rmtree(download_dir, ignore_errors=True)
  return builder.as_data_source()


def load_data_source(data_dir: str | os.PathLike, config_name: str,
                     version: str = str(FmriWindows.VERSION)) -> dict[str, Any]:
  """Opens a finished build read-only from its files, without the original inputs."""
  return array_record_splits(Path(data_dir) / FmriWindows.name / config_name / version)
