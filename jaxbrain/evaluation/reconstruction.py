"""Baselines for masked-segment reconstruction, and the masked MSE they are scored by.

Layout: windows ``x`` float [W, S, N, L] (windows, segments, ROIs, frames per segment); ``mask`` bool
[W, S, N], True where that ROI's signal in that segment is hidden. Segments of a window are consecutive
in time. Every baseline returns an array shaped like ``x``: visible cells copied from ``x``, hidden cells
predicted without reading their values (they may hold anything, NaN included).

- ``roi_mean``: each ROI's mean over the training windows.
- ``linear_interp``: per ROI, a line in time between the nearest visible frames of the same ROI in the
  neighbouring segments of the same window; the nearest visible value at the edges; a fallback value
  (the ROI mean) where the ROI is hidden in the whole window.
- ``ridge``: from the visible ROIs of the same segment, frame by frame, with the training mean ``mu``
  and covariance ``C`` (1/n normalisation) across ROIs:
  ``x_M = mu_M + C_MV (C_VV + lam I)^-1 (x_V - mu_V)``, which is the ridge regression of x_M on x_V
  (unpenalised intercept) with penalty ``n * lam`` fitted on the n training frames, for every split at once.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike

from jaxbrain.data.masking import num_masked

DEFAULT_LAMS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)


def _check_x(name: str, x: ArrayLike, *, finite: bool = True) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 4:
    raise ValueError(f"{name}: expected windows of shape [W, S, N, L], got shape {x.shape}")
  if 0 in x.shape:
    raise ValueError(f"{name}: empty array of shape {x.shape}")
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{name}: expected a float array, got dtype {x.dtype}")
  if finite and not np.all(np.isfinite(x)):
    raise ValueError(f"{name}: contains {np.sum(~np.isfinite(x))} NaN/inf values")
  return x


def _check_pair(x: ArrayLike, mask: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  x = _check_x("x", x, finite=False)
  mask = np.asarray(mask)
  if mask.dtype != np.bool_:
    raise ValueError(f"mask: expected a bool array, got dtype {mask.dtype}")
  if mask.shape != x.shape[:3]:
    raise ValueError(f"mask: expected shape {x.shape[:3]} (= x.shape[:3]), got {mask.shape}")
  if not np.all(np.isfinite(x[~mask])):
    raise ValueError("x: visible (unmasked) cells contain NaN/inf values")
  return x, mask


def _fill(x: np.ndarray, mask: np.ndarray, pred: np.ndarray) -> np.ndarray:
  """x with hidden cells replaced by pred (both [W, S, N, L])."""
  return np.where(mask[..., None], pred, x).astype(x.dtype, copy=False)


def masked_mse(recon: ArrayLike, x: ArrayLike, mask: ArrayLike) -> float:
  """Mean squared error over the hidden cells (all their frames) only."""
  x, mask = _check_pair(x, mask)
  recon = np.asarray(recon)
  if recon.shape != x.shape:
    raise ValueError(f"recon: expected shape {x.shape} (= x.shape), got {recon.shape}")
  if not mask.any():
    raise ValueError("mask: no cell is masked, the masked MSE is undefined")
  diff = recon.astype(np.float64)[mask] - x.astype(np.float64)[mask]  # [n_masked, L]
  if not np.all(np.isfinite(diff)):
    raise ValueError("recon or x: NaN/inf in masked cells")
  return float(np.mean(diff * diff))


def masked_mse_per_window(recon: ArrayLike, x: ArrayLike, mask: ArrayLike) -> np.ndarray:
  """Masked MSE of each window [W] (float64), over its hidden cells' frames (NaN for a window with
  no hidden cell)."""
  x, mask = _check_pair(x, mask)
  recon = np.asarray(recon)
  if recon.shape != x.shape:
    raise ValueError(f"recon: expected shape {x.shape} (= x.shape), got {recon.shape}")
  err = np.square(recon.astype(np.float64) - np.where(mask[..., None], x, 0.0).astype(np.float64))
  hidden = mask.sum(axis=(1, 2)) * x.shape[3]
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(mask[..., None], err, 0.0).sum(axis=(1, 2, 3)) / hidden


def random_mask(shape: tuple[int, int, int], ratio: float, seed: int = 0) -> np.ndarray:
  """Segment-wise ROI mask bool [W, S, N]: in every segment ``num_masked(N, ratio)`` random ROIs are
  hidden (the model's rule: round(ratio * N), halves up), kept within [1, N - 1] so that a masked
  score exists and something stays visible."""
  w, s, n = shape
  if not 0.0 < ratio < 1.0:
    raise ValueError(f"ratio: expected a value in (0, 1), got {ratio}")
  k = min(max(num_masked(n, ratio), 1), n - 1) if n > 1 else 1
  rng = np.random.default_rng(seed)
  order = np.argsort(rng.random((w, s, n)), axis=-1)
  mask = np.zeros((w, s, n), bool)
  np.put_along_axis(mask, order[..., :k], True, axis=-1)
  return mask


# ---------------------------------------------------------------------------------------------------
# Per-ROI mean.

def roi_means(train_x: ArrayLike) -> np.ndarray:
  """Per-ROI mean [N] (float64) over all training windows, segments and frames."""
  t = _check_x("train_x", train_x)
  return t.astype(np.float64).mean(axis=(0, 1, 3))


def roi_mean(x: ArrayLike, mask: ArrayLike, train_x: ArrayLike) -> np.ndarray:
  """Hidden cells predicted by the ROI's mean over the training windows."""
  x, mask = _check_pair(x, mask)
  mu = roi_means(train_x)
  if mu.shape[0] != x.shape[2]:
    raise ValueError(f"train_x has {mu.shape[0]} ROIs but x has {x.shape[2]}")
  return _fill(x, mask, np.broadcast_to(mu[None, None, :, None], x.shape))


# ---------------------------------------------------------------------------------------------------
# Linear interpolation in time.

def linear_interp(x: ArrayLike, mask: ArrayLike, fallback: ArrayLike | None = None) -> np.ndarray:
  """Hidden segments of a ROI interpolated in time from the ROI's neighbouring visible segments.

  A hidden run of segments lies between the last frame of the previous visible segment (time
  ``s_prev * L + L - 1``) and the first frame of the next one (``s_next * L``); before the first or
  after the last visible segment the nearest visible frame is repeated. ``fallback`` [N] fills a ROI
  hidden in the whole window; by default it is the ROI's mean over all visible cells of ``x``.
  """
  x, mask = _check_pair(x, mask)
  w, s, n, length = x.shape
  vis = ~mask
  if fallback is None:
    counts = vis.sum(axis=(0, 1)) * length  # [N]
    xv = np.where(vis[..., None], x.astype(np.float64), 0.0)
    sums = xv.sum(axis=(0, 1, 3))
    fallback = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
  fallback = np.asarray(fallback, np.float64)
  if fallback.shape != (n,):
    raise ValueError(f"fallback: expected shape ({n},), got {fallback.shape}")
  seg = np.arange(s)
  # Index of the previous / next visible segment for every (w, s, n); -1 / s where there is none.
  prev = np.maximum.accumulate(np.where(vis, seg[None, :, None], -1), axis=1)
  nxt = np.flip(np.minimum.accumulate(np.flip(np.where(vis, seg[None, :, None], s), 1), axis=1), 1)
  has_prev, has_next = prev >= 0, nxt < s
  wi, ni = np.arange(w)[:, None, None], np.arange(n)[None, None, :]
  xd = np.where(mask[..., None], 0.0, x.astype(np.float64))  # never read hidden values
  left_val = xd[wi, np.clip(prev, 0, s - 1), ni, length - 1]  # [W, S, N]
  right_val = xd[wi, np.clip(nxt, 0, s - 1), ni, 0]
  t = seg[None, :, None, None] * length + np.arange(length)  # [1, S, 1, L] absolute frame times
  t0 = (prev * length + length - 1)[..., None].astype(np.float64)
  t1 = (nxt * length)[..., None].astype(np.float64)
  both = (has_prev & has_next)[..., None]
  frac = np.where(both, (t - t0) / np.where(both, t1 - t0, 1.0), 0.0)
  inner = left_val[..., None] + frac * (right_val - left_val)[..., None]
  pred = np.where(both, inner,
                  np.where(has_prev[..., None], left_val[..., None],
                           np.where(has_next[..., None], right_val[..., None],
                                    fallback[None, None, :, None])))
  return _fill(x, mask, np.broadcast_to(pred, x.shape))


# ---------------------------------------------------------------------------------------------------
# Ridge regression from the visible ROIs of the same segment.

@dataclasses.dataclass(frozen=True)
class RidgeModel:
  """Training mean [N] and covariance [N, N] across ROIs (float64), and the penalty lam."""
  mean: np.ndarray
  cov: np.ndarray
  lam: float
  val_mse: dict[float, float] | None = None  # validation MSE per candidate lam, when lam was chosen


def _moments(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  frames = np.moveaxis(train, 2, -1).reshape(-1, train.shape[2]).astype(np.float64)  # [n, N]
  mu = frames.mean(axis=0)
  c = frames - mu
  return mu, (c.T @ c) / frames.shape[0]


def _ridge_predictions(x: np.ndarray, mask: np.ndarray, mu: np.ndarray, cov: np.ndarray,
                       lams: tuple[float, ...], chunk: int = 256) -> list[np.ndarray]:
  """Ridge predictions [W, S, N, L] of every cell for each penalty in ``lams`` (visible cells too).

  One eigendecomposition per mask pattern serves every penalty: with C_VV = Q diag(w) Q^T,
  C_MV (C_VV + lam I)^-1 (x_V - mu_V) = (C_MV Q) diag(1 / (w + lam)) Q^T (x_V - mu_V).
  """
  n, length = x.shape[2], x.shape[3]
  flat_mask = mask.reshape(-1, n)  # [B, N] one pattern per segment
  flat_x = np.moveaxis(x, 2, -1).reshape(-1, length, n)  # [B, L, N]
  patterns, inverse = np.unique(flat_mask, axis=0, return_inverse=True)
  inverse = inverse.reshape(-1)
  by_pattern = np.argsort(inverse, kind="stable")
  bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=patterns.shape[0]))])
  preds = [np.broadcast_to(mu, flat_x.shape).copy() for _ in lams]  # default: the mean
  frames = np.arange(length)
  for start in range(0, patterns.shape[0], chunk):
    pats = patterns[start:start + chunk]  # [P, N]
    vis = ~pats
    # C_VV embedded in an N x N matrix whose hidden block is -I: its eigenvalues (>= 0 for the
    # visible block, -1 for the hidden one) never coincide, so every eigenvector lies in one block.
    a = np.where(vis[:, :, None] & vis[:, None, :], cov, -np.eye(n))
    w, q = np.linalg.eigh(a)  # [P, N], [P, N, N]
    for p in range(pats.shape[0]):
      hidden = pats[p]
      if not hidden.any() or hidden.all():
        continue  # nothing to predict, or nothing visible: the mean
      rows = by_pattern[bounds[start + p]:bounds[start + p + 1]]
      keep = w[p] > -0.5
      qv = q[p][~hidden][:, keep]  # [|V|, |V|] eigenvectors of C_VV
      z = (flat_x[rows][:, :, ~hidden].astype(np.float64) - mu[~hidden]) @ qv  # [r, L, |V|]
      b = cov[np.ix_(hidden, ~hidden)] @ qv  # [|M|, |V|]
      where = np.ix_(rows, frames, np.nonzero(hidden)[0])
      for pred, lam in zip(preds, lams):
        pred[where] = mu[hidden] + (z / (w[p][keep] + lam)) @ b.T
  return [np.moveaxis(p.reshape(x.shape[0], x.shape[1], length, n), -1, 2) for p in preds]


def ridge_predict(x: ArrayLike, mask: ArrayLike, model: RidgeModel,
                  chunk: int = 256) -> np.ndarray:
  """Reconstruction of the hidden cells of ``x`` by ``model`` (see the module docstring)."""
  x, mask = _check_pair(x, mask)
  n = x.shape[2]
  if model.mean.shape != (n,):
    raise ValueError(f"ridge model has {model.mean.shape[0]} ROIs but x has {n}")
  [pred] = _ridge_predictions(x, mask, model.mean, model.cov, (float(model.lam),), chunk)
  return _fill(x, mask, pred)


def fit_ridge(train_x: ArrayLike, lam: float | None = None, *, mask_ratio: float = 0.5,
              lams: tuple[float, ...] = DEFAULT_LAMS, val_fraction: float = 0.2,
              max_val_windows: int = 256, seed: int = 0) -> RidgeModel:
  """Fit the ridge baseline on training windows [W, S, N, L].

  With ``lam`` None, the penalty is chosen from ``lams`` by the masked MSE on a held-out
  ``val_fraction`` of the training windows (at most ``max_val_windows``, random ``mask_ratio`` masks),
  then refitted on all windows.
  """
  t = _check_x("train_x", train_x)
  if lam is not None:
    if not lam >= 0:
      raise ValueError(f"lam: expected a value >= 0, got {lam}")
    mu, cov = _moments(t)
    return RidgeModel(mu, cov, float(lam))
  if not lams:
    raise ValueError("lams: expected at least one candidate penalty")
  w = t.shape[0]
  if w < 2:
    raise ValueError(f"train_x: choosing lam needs at least 2 training windows, got {w}")
  rng = np.random.default_rng(seed)
  order = rng.permutation(w)
  if not 0.0 < val_fraction < 1.0:
    raise ValueError(f"val_fraction: expected a value in (0, 1), got {val_fraction}")
  n_val = min(max(int(round(val_fraction * w)), 1), w - 1, max(int(max_val_windows), 1))
  val = t[order[:n_val]]
  chosen = choose_ridge(t[order[n_val:]], val, random_mask(val.shape[:3], mask_ratio, seed), lams)
  mu, cov = _moments(t)
  return RidgeModel(mu, cov, chosen.lam, chosen.val_mse)


def choose_ridge(train_x: ArrayLike, val_x: ArrayLike, val_mask: ArrayLike,
                 lams: tuple[float, ...] = DEFAULT_LAMS) -> RidgeModel:
  """The ridge fitted on ``train_x`` with the penalty from ``lams`` that has the lowest masked MSE
  on the validation windows ``val_x`` under ``val_mask`` (one eigendecomposition per mask pattern
  serves every candidate)."""
  t = _check_x("train_x", train_x)
  val, val_mask = _check_pair(val_x, val_mask)
  if not lams:
    raise ValueError("lams: expected at least one candidate penalty")
  mu, cov = _moments(t)
  preds = _ridge_predictions(val, val_mask, mu, cov, tuple(float(c) for c in lams))
  scores = {float(c): masked_mse(_fill(val, val_mask, p), val, val_mask) for c, p in zip(lams, preds)}
  return RidgeModel(mu, cov, min(scores, key=scores.get), scores)


def ridge(x: ArrayLike, mask: ArrayLike, train_x: ArrayLike, lam: float | None = None,
          **fit_kwargs) -> np.ndarray:
  """Fit on ``train_x`` (lam chosen by validation when None, at the mask ratio of ``mask``) and predict."""
  x, mask = _check_pair(x, mask)
  if lam is None and "mask_ratio" not in fit_kwargs and 0 < mask.mean() < 1:
    fit_kwargs["mask_ratio"] = float(mask.mean())
  return ridge_predict(x, mask, fit_ridge(train_x, lam, **fit_kwargs))


def baseline_errors(x: ArrayLike, mask: ArrayLike, train_x: ArrayLike,
                    lam: float | None = None) -> dict[str, float]:
  """Masked MSE of the three baselines, under the keys summary.json uses.

  Returns {'recon_mse_roi_mean', 'recon_mse_linear_interp', 'recon_mse_ridge', 'ridge_lam'}.
  """
  x, mask = _check_pair(x, mask)
  train = _check_x("train_x", train_x)
  if train.shape[2] != x.shape[2]:
    raise ValueError(f"train_x has {train.shape[2]} ROIs but x has {x.shape[2]}")
  fb = roi_means(train)
  kw = {} if lam is not None or not 0 < mask.mean() < 1 else {"mask_ratio": float(mask.mean())}
  model = fit_ridge(train, lam, **kw)
  return {
      "recon_mse_roi_mean": masked_mse(roi_mean(x, mask, train), x, mask),
      "recon_mse_linear_interp": masked_mse(linear_interp(x, mask, fallback=fb), x, mask),
      "recon_mse_ridge": masked_mse(ridge_predict(x, mask, model), x, mask),
      "ridge_lam": float(model.lam),
  }
