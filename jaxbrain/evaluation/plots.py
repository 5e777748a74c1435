"""Save a matrix as ``.npy`` plus a PNG heatmap, atomically (temporary files, then rename).

Uses Matplotlib's object API with the Agg canvas: no pyplot, no global backend change.
"""
from __future__ import annotations

import os
import tempfile
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike


def _base(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  root, ext = os.path.splitext(path)
  return root if ext.lower() in (".npy", ".png") else path


def save_matrix(path: str | os.PathLike, matrix: ArrayLike, names: Sequence[str] | None = None, *,
                title: str | None = None, cmap: str = "viridis", vmin: float | None = None,
                vmax: float | None = None, colorbar_label: str | None = None) -> dict[str, str]:
  """Write ``<path>.npy`` (the matrix as given) and ``<path>.png`` (a heatmap).

  ``path`` may end in .npy or .png or have no extension. ``names`` label the rows and, for a square
  matrix, the columns. Both files appear together or not at all; existing files are replaced.
  Returns {'npy': path, 'png': path}.
  """
  m = np.asarray(matrix)
  if m.ndim != 2 or 0 in m.shape:
    raise ValueError(f"matrix: expected a non-empty 2-D array, got shape {m.shape}")
  if not np.issubdtype(m.dtype, np.number) and m.dtype != np.bool_:
    raise ValueError(f"matrix: expected numbers, got dtype {m.dtype}")
  if names is not None:
    names = [str(n) for n in names]
    if len(names) != m.shape[0]:
      raise ValueError(f"names: expected {m.shape[0]} names (one per row), got {len(names)}")
  base = _base(path)
  folder = os.path.dirname(os.path.abspath(base))
  os.makedirs(folder, exist_ok=True)
  out = {"npy": base + ".npy", "png": base + ".png"}
  tmps = []
  try:
    for kind in ("npy", "png"):
      fd, tmp = tempfile.mkstemp(prefix=os.path.basename(base) + ".", suffix=".tmp." + kind, dir=folder)
      tmps.append(tmp)
      with os.fdopen(fd, "wb") as f:
        if kind == "npy":
          np.save(f, m)
        else:
          _heatmap(f, m, names, title, cmap, vmin, vmax, colorbar_label)
        f.flush()
        os.fsync(f.fileno())
    for kind, tmp in zip(("npy", "png"), tmps):
      os.replace(tmp, out[kind])
  finally:
    for tmp in tmps:
      if os.path.exists(tmp):
        os.remove(tmp)
  return out


def _heatmap(f, m, names, title, cmap, vmin, vmax, colorbar_label) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  rows, cols = m.shape
  side = min(max(4.0, 0.12 * max(rows, cols) + 2.0), 20.0)
  fig = Figure(figsize=(side * min(1.0, cols / rows) + 1.5, side * min(1.0, rows / cols)))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  image = ax.imshow(m.astype(np.float64), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
                    aspect="auto")
  bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  if colorbar_label:
    bar.set_label(colorbar_label)
  if names is not None:
    size = max(2.0, min(8.0, 400.0 / max(rows, 1)))
    ax.set_yticks(np.arange(rows))
    ax.set_yticklabels(names, fontsize=size)
    if cols == rows:
      ax.set_xticks(np.arange(cols))
      ax.set_xticklabels(names, fontsize=size, rotation=90)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(f, format="png", dpi=150)
