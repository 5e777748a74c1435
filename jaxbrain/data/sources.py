"""ROI time-series sources: file readers, the Subject record, folders of subjects, labels tables.

Every reader returns float32 ``[N_roi, T]``. Supported files: ``.npy``, ``.npz`` (``key``),
``.mat`` (``key``, default ``'tc'``; MATLAB v7.3 files are read with h5py), ``.csv``/``.tsv`` (ROIs
as columns, optional header row), ``.h5``/``.hdf5`` (dataset ``key``), and 4-D NIfTI
(``.nii``/``.nii.gz``) plus an atlas label image, reduced to the mean signal of each labelled region
(label 0 is background).

Orientation (``roi_axis``): 0 means rows are ROIs, 1 means columns are ROIs. ``'auto'`` uses, in
order: tables (csv/tsv) have ROIs as columns; if ``num_rois`` is given, the axis of that size;
otherwise the shorter axis is ROIs (a scan usually has more volumes than regions). A square array
is ambiguous and an error: pass ``roi_axis`` explicitly.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from jaxbrain.data.validation import DataError, check_same_rois, check_timeseries, check_tr

ARRAY_SUFFIXES = (".npy", ".npz", ".mat", ".h5", ".hdf5")
TABLE_SUFFIXES = (".csv", ".tsv")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SUFFIXES = ARRAY_SUFFIXES + TABLE_SUFFIXES + NIFTI_SUFFIXES


@dataclasses.dataclass(eq=False)
class Subject:
  """One scan: ``timeseries`` float32 [N_roi, T], repetition time ``tr`` (s), ``source`` path."""
  id: str
  timeseries: np.ndarray
  tr: float
  source: str

  @property
  def num_rois(self) -> int:
    return int(self.timeseries.shape[0])

  @property
  def num_frames(self) -> int:
    return int(self.timeseries.shape[1])


def _suffix(path: str | os.PathLike) -> str:
  name = str(path).lower()
  for s in sorted(SUFFIXES, key=len, reverse=True):
    if name.endswith(s):
      return s
  return Path(name).suffix


def file_stem(path: str | os.PathLike) -> str:
  """File name without its (possibly double, ``.nii.gz``) extension."""
  name = Path(path).name
  s = _suffix(name)
  return name[: len(name) - len(s)] if s and name.lower().endswith(s) else Path(name).stem


def _orient(x: np.ndarray, source: str, roi_axis: int | str, num_rois: int | None,
            tabular: bool = False) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == 1:
    raise DataError(f"{source}: expected a 2-D [ROI, time] array, got 1-D shape {x.shape}")
  x = np.squeeze(x) if x.ndim > 2 else x
  if x.ndim != 2:
    raise DataError(f"{source}: expected a 2-D [ROI, time] array, got shape {x.shape}")
  if roi_axis == "auto":
    if tabular:
      roi_axis = 1
    elif num_rois is not None and (x.shape[0] == num_rois) != (x.shape[1] == num_rois):
      roi_axis = 0 if x.shape[0] == num_rois else 1
    elif x.shape[0] != x.shape[1]:
      roi_axis = 0 if x.shape[0] < x.shape[1] else 1
    else:
      raise DataError(f"{source}: square array {x.shape}; cannot tell ROIs from time, "
                      f"pass roi_axis=0 (rows are ROIs) or roi_axis=1")
  if roi_axis not in (0, 1):
    raise DataError(f"{source}: roi_axis must be 0, 1 or 'auto', got {roi_axis!r}")
  x = x if roi_axis == 0 else x.T
  if num_rois is not None and x.shape[0] != num_rois:
    raise DataError(f"{source}: expected {num_rois} ROIs, got {x.shape[0]} (array shape "
                    f"{x.shape} after orientation)")
  return x


def _pick_key(keys: Sequence[str], key: str | None, source: str, what: str) -> str:
  if key is not None:
    if key not in keys:
      raise DataError(f"{source}: no {what} {key!r}; available: {sorted(keys)}")
    return key
  if len(keys) == 1:
    return keys[0]
  raise DataError(f"{source}: {len(keys)} {what}s {sorted(keys)}; pass key=<name>")


def _read_mat(path: str, key: str) -> np.ndarray:
  import scipy.io
  try:
    mat = scipy.io.loadmat(path)
  except NotImplementedError:  # MATLAB v7.3 = HDF5, stored column-major.
    import h5py
    with h5py.File(path, "r") as f:
      k = _pick_key([k for k in f.keys() if not k.startswith("#")], key, path, "variable")
      return np.asarray(f[k]).T
  k = _pick_key([k for k in mat if not k.startswith("__")], key, path, "variable")
  return np.asarray(mat[k])


def _is_number(text: str) -> bool:
  try:
    float(text)
    return True
  except ValueError:
    return False


def _read_table(path: str, header: bool | str, delimiter: str | None) -> np.ndarray:
  delim = delimiter or ("\t" if path.lower().endswith(".tsv") else ",")
  with open(path, newline="") as f:
    rows = [r for r in csv.reader(f, delimiter=delim) if any(c.strip() for c in r)]
  if not rows:
    raise DataError(f"{path}: empty table")
  if header == "auto":
    header = not all(_is_number(c) for c in rows[0] if c.strip())
  body = rows[1:] if header else rows
  if not body:
    raise DataError(f"{path}: table has a header but no rows")
  width = len(body[0])
  out = np.empty((len(body), width), np.float64)
  for i, row in enumerate(body):
    line = i + 1 + int(bool(header))
    if len(row) != width:
      raise DataError(f"{path}: line {line} has {len(row)} columns, expected {width}")
    for j, cell in enumerate(row):
      cell = cell.strip()
      try:
        out[i, j] = float(cell) if cell else np.nan
      except ValueError:
        raise DataError(f"{path}: line {line}, column {j + 1}: {cell!r} is not a number") from None
  return out


def read_nifti_rois(bold: str | os.PathLike, atlas: str | os.PathLike, *,
                    labels: Sequence[int] | None = None, chunk_frames: int = 64
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Mean signal of each atlas region of a 4-D NIfTI: (float32 [N_roi, T], label values [N_roi]).

  ``atlas``: a 3-D integer label image on the same grid (shape and affine) as ``bold``; label 0 is
  background. ROIs are ordered by ascending label value, or as given in ``labels``.
  """
  import nibabel as nib
  bold, atlas = str(bold), str(atlas)
  for p in (bold, atlas):
    if not os.path.isfile(p):
      raise DataError(f"{p}: file not found")
  try:
    img, lab_img = nib.load(bold), nib.load(atlas)
    lab = np.asarray(lab_img.dataobj)
  except Exception as e:  # nibabel raises many types for corrupt files
    raise DataError(f"cannot read NIfTI {bold} / atlas {atlas}: {e}") from e
  if len(img.shape) != 4:
    raise DataError(f"{bold}: expected a 4-D (x, y, z, time) image, got shape {img.shape}")
  if lab.ndim == 4 and lab.shape[3] == 1:
    lab = lab[..., 0]
  if lab.shape != img.shape[:3]:
    raise DataError(f"atlas {atlas} has shape {lab.shape} but {bold} has spatial shape "
                    f"{img.shape[:3]}; resample the atlas to the scan's grid")
  if not np.allclose(lab_img.affine, img.affine, atol=1e-3):
    raise DataError(f"atlas {atlas} and {bold} have different affines:\n{lab_img.affine}\nvs\n"
                    f"{img.affine}")
  if not np.all(np.isfinite(lab)) or not np.allclose(lab, np.round(lab)):
    raise DataError(f"atlas {atlas}: labels must be integers")
  lab = np.round(lab).astype(np.int64).reshape(-1)
  present = np.unique(lab[lab != 0])
  values = present if labels is None else np.asarray(labels, np.int64)
  if values.size == 0:
    raise DataError(f"atlas {atlas}: no non-zero labels")
  missing = np.setdiff1d(values, present)
  if missing.size:
    raise DataError(f"atlas {atlas}: label value(s) {missing.tolist()} have no voxels")
  inside = np.flatnonzero(np.isin(lab, values))
  order = inside[np.argsort(lab[inside], kind="stable")]
  if np.unique(values).size != values.size:
    raise DataError(f"atlas {atlas}: requested labels contain duplicates: {values.tolist()}")
  sorted_values = np.sort(values)
  sorted_labels = lab[order]
  starts = np.searchsorted(sorted_labels, sorted_values)
  counts = np.bincount(np.searchsorted(sorted_values, sorted_labels), minlength=values.size)
  num_t = img.shape[3]
  sums = np.zeros((values.size, num_t), np.float64)
  for t0 in range(0, num_t, chunk_frames):
    t1 = min(num_t, t0 + chunk_frames)
    block = np.asarray(img.dataobj[..., t0:t1], np.float64).reshape(-1, t1 - t0)
    sums[:, t0:t1] = np.add.reduceat(block[order], starts, axis=0)
  means = sums / counts[:, None]
  means = means[np.searchsorted(sorted_values, values)]  # rows in the requested label order
  return means.astype(np.float32), values


def nifti_tr(path: str | os.PathLike) -> float | None:
  """TR in seconds from a 4-D NIfTI header (pixdim[4], honouring ms units), or None."""
  import nibabel as nib
  hdr = nib.load(str(path)).header
  zooms = hdr.get_zooms()
  if len(zooms) < 4 or not zooms[3] or zooms[3] <= 0:
    return None
  unit = hdr.get_xyzt_units()[1]
  return float(zooms[3]) / (1000.0 if unit == "msec" else 1e6 if unit == "usec" else 1.0)


def read_timeseries(path: str | os.PathLike, *, key: str | None = None,
                    roi_axis: int | str = "auto", num_rois: int | None = None,
                    atlas: str | os.PathLike | None = None, header: bool | str = "auto",
                    delimiter: str | None = None) -> np.ndarray:
  """Reads one subject's ROI time series as float32 [N_roi, T] (see the module doc for formats).

  ``key``: array name in .npz/.mat/.h5 (default: the only one; ``'tc'`` for .mat).
  Raises DataError for a missing or unreadable file or a wrong shape; values are not validated here.
  """
  path = str(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found")
  suffix = _suffix(path)
  try:
    if suffix in NIFTI_SUFFIXES:
      if atlas is None:
        raise DataError(f"{path}: a NIfTI scan needs atlas=<label image> to reduce it to ROIs")
      return read_nifti_rois(path, atlas)[0]
    if suffix in TABLE_SUFFIXES:
      return _orient(_read_table(path, header, delimiter), path, roi_axis, num_rois, tabular=True
                     ).astype(np.float32)
    if suffix == ".npy":
      x = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
      with np.load(path, allow_pickle=False) as z:
        x = z[_pick_key(list(z.keys()), key, path, "array")]
    elif suffix == ".mat":
      x = _read_mat(path, key or "tc")
    elif suffix in (".h5", ".hdf5"):
      import h5py
      with h5py.File(path, "r") as f:
        names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
        x = np.asarray(f[_pick_key(names, key, path, "dataset")])
    else:
      raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of {SUFFIXES}")
  except DataError:
    raise
  except Exception as e:  # corrupt/unreadable file: say which one
    raise DataError(f"{path}: cannot read file ({type(e).__name__}: {e})") from e
  x = np.asarray(x)
  if x.dtype.kind not in "fiub":
    raise DataError(f"{path}: expected numeric values, got dtype {x.dtype}")
  return _orient(x, path, roi_axis, num_rois).astype(np.float32)


def _list_files(folder: Path, pattern: str | None, recursive: bool, exclude: set[Path]
                ) -> list[Path]:
  globber = folder.rglob if recursive else folder.glob
  files = [p for p in globber(pattern or "*") if p.is_file()]
  if pattern is None:
    files = [p for p in files if _suffix(p) in SUFFIXES]
  return sorted(p for p in files if p.resolve() not in exclude)


def load_subjects(paths: str | os.PathLike | Sequence[str | os.PathLike],
                  pattern: str | None = None, *, tr: float | None = None,
                  key: str | None = None, roi_axis: int | str = "auto",
                  num_rois: int | None = None, atlas: str | os.PathLike | None = None,
                  subject_id: str | Callable[[Path], str] = "stem", recursive: bool = False,
                  exclude: Iterable[str | os.PathLike] = (), min_frames: int = 2) -> list[Subject]:
  """Loads and validates subjects from a folder (files matching ``pattern``) or a list of files.

  With ``pattern=None`` a folder yields every file with a supported suffix. ``subject_id``:
  ``'stem'`` (file name without extension), ``'parent'`` (the folder name) or a function of the
  path. ``tr`` is required unless every file is a NIfTI with the TR in its header. The atlas and
  ``exclude`` paths (e.g. the labels table) are skipped. Raises DataError on any bad file, duplicate
  ids, differing ROI counts, or an empty folder.
  """
  exclude_set = {Path(p).resolve() for p in exclude}
  if atlas is not None:
    exclude_set.add(Path(atlas).resolve())
  if isinstance(paths, (str, os.PathLike)):
    root = Path(paths)
    if root.is_dir():
      files = _list_files(root, pattern, recursive, exclude_set)
      if not files:
        wanted = pattern or "*" + "|*".join(SUFFIXES)
        raise DataError(f"{root}: no subject files match pattern {wanted!r}")
    else:
      files = [root]
  else:
    files = [Path(p) for p in paths]
    if not files:
      raise DataError("load_subjects: empty list of files")
  subjects: list[Subject] = []
  seen: dict[str, str] = {}
  for f in files:
    src = str(f)
    sid = (file_stem(f) if subject_id == "stem" else f.parent.name if subject_id == "parent"
           else subject_id(f))
    if sid in seen:
      raise DataError(f"duplicate subject id {sid!r}: {seen[sid]} and {src}")
    seen[sid] = src
    x = read_timeseries(f, key=key, roi_axis=roi_axis, num_rois=num_rois, atlas=atlas)
    t = tr if tr is not None or _suffix(f) not in NIFTI_SUFFIXES else nifti_tr(f)
    t = check_tr(t, src)
    x = check_timeseries(x, src, min_frames=min_frames, tr=t)
    subjects.append(Subject(id=str(sid), timeseries=x, tr=t, source=src))
  check_same_rois([(s.source, s.num_rois) for s in subjects])
  return subjects


@dataclasses.dataclass
class LabelsTable:
  """A phenotype table: ``rows[subject_id][column]`` -> text cell; ``path`` names the file."""
  path: str
  id_column: str
  columns: list[str]
  rows: dict[str, dict[str, str]]

  def _column(self, column: str) -> None:
    if column not in self.columns:
      raise DataError(f"labels table {self.path}: no column {column!r}; columns are {self.columns}")

  def _cells(self, column: str, subject_ids: Sequence[str]) -> list[str]:
    self._column(column)
    cells = []
    for sid in subject_ids:
      if sid not in self.rows:
        raise DataError(f"subject {sid!r} is missing from labels table {self.path} "
                        f"(id column {self.id_column!r})")
      cell = self.rows[sid].get(column, "").strip()
      if not cell:
        raise DataError(f"labels table {self.path}: subject {sid!r} has an empty {column!r}")
      cells.append(cell)
    return cells

  def classes(self, column: str) -> list[str]:
    """Class names of a classification column, in code order (integers sorted numerically)."""
    self._column(column)
    values = {r.get(column, "").strip() for r in self.rows.values()} - {""}
    if all(_is_int(v) for v in values):
      return [str(v) for v in sorted(int(v) for v in values)]
    return sorted(values)

  def values(self, column: str, subject_ids: Sequence[str], task: str = "classification"
             ) -> np.ndarray:
    """Targets for ``subject_ids``: int32 class codes or float32 regression values.

    Classification: integer cells are used as they are; text cells become indices into
    ``classes(column)``. Raises DataError naming the subject and this table's file if one is
    missing.
    """
    cells = self._cells(column, subject_ids)
    if task == "regression":
      out = []
      for sid, c in zip(subject_ids, cells):
        if not _is_number(c) or not np.isfinite(float(c)):
          raise DataError(f"labels table {self.path}: subject {sid!r}, column {column!r}: {c!r} "
                          f"is not a finite number")
        out.append(float(c))
      return np.asarray(out, np.float32)
    if task != "classification":
      raise DataError(f"task must be 'classification' or 'regression', got {task!r}")
    names = self.classes(column)
    if all(_is_int(v) for v in names):
      return np.asarray([int(c) for c in cells], np.int32)
    return np.asarray([names.index(c) for c in cells], np.int32)

  def write_csv(self, path: str | os.PathLike) -> None:
    """Writes the table as CSV (id column first)."""
    with open(path, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow([self.id_column] + self.columns)
      for sid, row in self.rows.items():
        w.writerow([sid] + [row.get(c, "") for c in self.columns])


def _is_int(text: str) -> bool:
  try:
    int(text)
    return True
  except ValueError:
    return False


def read_labels(path: str | os.PathLike, *, id_column: str = "subject_id",
                delimiter: str | None = None) -> LabelsTable:
  """Reads a CSV/TSV labels table with a header: one subject id column plus phenotype columns."""
  path = str(path)
  if not os.path.isfile(path):
    raise DataError(f"labels table {path}: file not found")
  delim = delimiter or ("\t" if path.lower().endswith(".tsv") else ",")
  try:
    with open(path, newline="") as f:
      rows = [r for r in csv.reader(f, delimiter=delim) if any(c.strip() for c in r)]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DataError(f"labels table {path}: cannot read ({e})") from e
  if not rows:
    raise DataError(f"labels table {path}: empty file")
  header = [h.strip() for h in rows[0]]
  if id_column not in header:
    raise DataError(f"labels table {path}: no id column {id_column!r}; header is {header}")
  id_at = header.index(id_column)
  columns = [h for h in header if h != id_column]
  table: dict[str, dict[str, str]] = {}
  for n, r in enumerate(rows[1:], start=2):
    if len(r) != len(header):
      raise DataError(f"labels table {path}: line {n} has {len(r)} fields, expected {len(header)}")
    sid = r[id_at].strip()
    if sid in table:
      raise DataError(f"labels table {path}: subject {sid!r} appears twice (line {n})")
    table[sid] = {h: c.strip() for h, c in zip(header, r) if h != id_column}
  return LabelsTable(path=path, id_column=id_column, columns=columns, rows=table)
