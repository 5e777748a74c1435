"""From ``config.data`` to subjects, labels and window arrays (the task's view of jaxbrain.data)."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import ml_collections
import numpy as np

from jaxbrain.data import hcp, synthetic, windows
from jaxbrain.data.preprocess import segment_frames
from jaxbrain.data.sources import LabelsTable, Subject, load_subjects, read_labels
from jaxbrain.data.validation import DataError

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
  """Loads the subjects named by ``config.data`` (built-in HCP, synthetic, or a folder)."""
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
    raise DataError(f"subjects have different TRs {sorted(trs)}; resample them to one TR first")
  return segment_frames(data.tau_s, subjects[0].tr)


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
