"""Spatio-temporal ridge baseline for masked-segment reconstruction (layout as in ``reconstruction``).

Every hidden cell (ROI n, absolute frame t = s * L + j of its window) is predicted by the Gaussian
conditional mean, i.e. the best linear predictor, given the conditioning set c made of
  (a) the visible ROIs V of the same segment at the same frame t, and
  (b) ROI n's own visible frames nearest to its hidden run: the last K frames of the nearest visible
      segment before the run and the first K frames of the nearest visible segment after it, where
      such a segment exists in the window (at most L frames per side; the run may span several
      segments, the lags are the true frame distances),
under a stationary spatio-temporal covariance estimated on training windows [W, S, N, L] (T = S L
frames per window, pairs taken within a window only):
  mu[a]             = mean of x_a over all training frames,
  Gamma(tau)[a, b]  = Cov(x_a(t), x_b(t + tau)), tau = 0..T-1, the sum over windows and
                      t = 0..T-1-tau of (x_a(t) - mu_a)(x_b(t + tau) - mu_b) divided by the number of
                      such pairs, W (T - tau) (each lag the mean of its own pairs).
Gamma(0) is the covariance of ``reconstruction.ridge`` (1/n normalisation), so K = 0 is that ridge.
Per-lag normalisation keeps long lags unshrunk (a hidden run may be 2-3 segments long) at the price
of no guaranteed positive semi-definiteness of the joint covariance; the penalty lam covers that.

Prediction: x_t = mu_n + Sigma_tc (Sigma_cc + lam I)^-1 (x_c - mu_c), Sigma read off Gamma:
Cov(x_a(t1), x_b(t2)) = Gamma(t2 - t1)[a, b] for t2 >= t1, Gamma(t1 - t2)[b, a] otherwise. This is the
ridge regression of x_t on x_c (unpenalised intercept) with penalty ``m * lam`` on m training rows whose
sample moments are these. K and lam are chosen from small grids by the masked MSE on validation
windows with random masks.

Computation: with c = V + E (E: the <= 2K own frames), Sigma_cc + lam I = [[A, B], [B^T, D]], where
A = Gamma(0)[V, V] + lam I is shared by every hidden ROI and frame of a segment. One eigendecomposition
of Gamma(0)[V, V] per segment serves every lam, and E enters through the Schur complement
S = D - B^T A^-1 B (2K x 2K per cell):
  x_t - mu_n = g_V A^-1 r_V + (g_E - B^T A^-1 g_V)^T S^-1 (r_E - B^T A^-1 r_V),
with g = Sigma_tc, r = x_c - mu_c. The columns of B are Gamma rows at L + K - 1 distinct lags per side
and hidden ROI, shared by the L frames of the segment; their A^-1 inner products are one Gram matrix.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike

from jaxbrain.evaluation.reconstruction import (DEFAULT_LAMS, _check_pair, _check_x, _fill,
                                                random_mask)

DEFAULT_KS = (0, 1, 3, 6)


@dataclasses.dataclass(frozen=True)
class StRidgeModel:
  """Training mean [N], lagged covariances ``gamma`` [T, N, N] (float64; gamma[tau][a, b] =
  Cov(x_a(t), x_b(t + tau))), own frames per side ``k`` and penalty ``lam``."""
  mean: np.ndarray
  gamma: np.ndarray
  k: int
  lam: float
  val_mse: dict[tuple[int, float], float] | None = None  # validation MSE per (k, lam), when chosen


def _series(x: np.ndarray) -> np.ndarray:
  """[W, S, N, L] -> [W, S * L, N]: frame s * L + j of a window is frame j of segment s."""
  w, s, n, length = x.shape
  return np.moveaxis(x, 2, -1).reshape(w, s * length, n)


def st_moments(train_x: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  """Per-ROI mean [N] and lagged covariances [T, N, N] (see the module docstring), float64."""
  z = _series(_check_x("train_x", train_x)).astype(np.float64)
  w, t_len, n = z.shape
  mu = z.mean(axis=(0, 1))
  z -= mu
  gamma = np.empty((t_len, n, n))
  for tau in range(t_len):
    a = z[:, :t_len - tau].reshape(-1, n)
    b = z[:, tau:].reshape(-1, n)
    gamma[tau] = (a.T @ b) / a.shape[0]
  return mu, gamma


def _check_model(model: StRidgeModel, n: int, t_len: int) -> None:
  if model.mean.shape != (n,):
    raise ValueError(f"model: has {model.mean.shape[0]} ROIs but x has {n}")
  g = model.gamma
  if g.ndim != 3 or g.shape[1:] != (n, n) or g.shape[0] < t_len:
    raise ValueError(f"model: gamma of shape {g.shape} does not cover lags 0..{t_len - 1} of "
                     f"{n} ROIs (expected [>= {t_len}, {n}, {n}])")
  if not (isinstance(model.k, (int, np.integer)) and model.k >= 0):
    raise ValueError(f"model: k must be an int >= 0, got {model.k!r}")


def _st_chunks(x: np.ndarray, mask: np.ndarray, mu: np.ndarray, gamma: np.ndarray,
               ks: Sequence[int], lams: Sequence[float], budget: int = 1 << 21
               ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, dict]]:
  """Predictions of the hidden cells for every (k, lam), a chunk of segments at a time.

  Yields (wi [B], si [B], hid [B, M], {(k, lam): pred [B, M, L]}): window and segment indices of B
  segments with M hidden ROIs each, those ROIs (ascending), and their predicted frames. Hidden values
  of ``x`` are never read.
  """
  _, ns, n, length = x.shape
  t_len = ns * length
  kmax = min(max(ks), length)  # at most the L frames of the neighbouring segment per side
  nm = length + kmax - 1  # distinct lags per side between a segment's frames and the K own frames
  vis = ~mask
  seg = np.arange(ns)
  prev = np.maximum.accumulate(np.where(vis, seg[None, :, None], -1), axis=1)  # [W, S, N]
  nxt = np.flip(np.minimum.accumulate(np.flip(np.where(vis, seg[None, :, None], ns), 1), axis=1), 1)
  r = _series(np.where(mask[..., None], 0.0, x.astype(np.float64))) - mu  # [W, T, N]; hidden unused
  diag = gamma[:, np.arange(n), np.arange(n)]  # [T', N] autocovariances
  frames = np.arange(length)
  i = np.arange(kmax)
  # Own-frame slot j (kmax before the run, then kmax after it) for target frame t -> the row of the
  # per-ROI lag vectors holding Cov(x_V(t), x_n(f_j)): rows 0..nm-1 before, nm..2 nm-1 after.
  slot = np.concatenate([frames[:, None] - i + kmax - 1, nm + length - 1 + i - frames[:, None]], 1)
  counts = mask.sum(-1)
  for m in np.unique(counts[counts > 0]):
    m = int(m)
    v = n - m
    wi_all, si_all = np.nonzero(counts == m)
    per_seg = m * max(length * (2 * kmax) ** 2, (2 * nm) ** 2, 2 * nm * max(v, 1), length * v, 1)
    step = max(1, budget // per_seg)
    for start in range(0, wi_all.shape[0], step):
      wi, si = wi_all[start:start + step], si_all[start:start + step]
      b = wi.shape[0]
      pat = mask[wi, si]  # [B, N]
      hid = np.nonzero(pat)[1].reshape(b, m)
      vix = np.nonzero(~pat)[1].reshape(b, v)
      ev, q = np.linalg.eigh(gamma[0][vix[:, :, None], vix[:, None, :]])  # [B, V], [B, V, V]
      tt = si[:, None] * length + frames  # [B, L] absolute frames
      qr = r[wi[:, None, None], tt[:, :, None], vix[:, None, :]] @ q  # [B, L, V] residuals, eigenbasis
      qg = gamma[0][hid[:, :, None], vix[:, None, :]] @ q  # [B, M, V] Cov(x_n, x_V)
      mu_h = mu[hid][..., None]  # [B, M, 1]
      if kmax > 0:
        sp = prev[wi[:, None], si[:, None], hid]  # [B, M] nearest visible segment before, -1: none
        sn = nxt[wi[:, None], si[:, None], hid]  # after, S: none
        # A side without a visible segment: zero lag vectors, own values and target covariances,
        # identity own block, so that its slots decouple with weight 0.
        ok = np.repeat(np.stack([sp >= 0, sn < ns], -1), kmax, -1)  # [B, M, 2 kmax]
        mm = np.arange(nm)
        lag_p = np.clip(((si[:, None] - sp - 1) * length + 1)[..., None] + mm, 0, t_len - 1)
        lag_n = np.clip(((sn - si[:, None] - 1) * length + 1)[..., None] + mm, 0, t_len - 1)
        # Cov(x_V(t), x_n(f)): Gamma(t - f)[n, V] for f before t, Gamma(f - t)[V, n] after.
        u = np.concatenate([gamma[lag_p[..., None], hid[:, :, None, None], vix[:, None, None, :]],
                            gamma[lag_n[..., None], vix[:, None, None, :], hid[:, :, None, None]]], 2)
        on = np.repeat(ok[..., [0, -1]], nm, -1)  # [B, M, 2 nm]
        qu = (u * on[..., None]) @ q[:, None]  # [B, M, 2 nm, V]
        g_own = diag[np.concatenate([lag_p, lag_n], -1), hid[..., None]] * on  # [B, M, 2 nm]
        f = np.concatenate([(sp * length)[..., None] + length - kmax + i,
                            (sn * length)[..., None] + i], -1)  # [B, M, 2 kmax] own frames
        fc = np.clip(f, 0, t_len - 1)
        r_own = r[wi[:, None, None], fc, hid[..., None]] * ok  # [B, M, 2 kmax]
        d_own = diag[np.clip(np.abs(f[..., :, None] - f[..., None, :]), 0, t_len - 1),
                     hid[..., None, None]]  # [B, M, 2 kmax, 2 kmax]
        d_own = np.where(ok[..., :, None] & ok[..., None, :], d_own, np.eye(2 * kmax))
      out = {}
      for lam in lams:
        winv = 1.0 / (ev + lam)  # [B, V]
        p0 = mu_h + np.einsum("bmv,bv,blv->bml", qg, winv, qr)  # spatial ridge
        if kmax > 0:
          quw = qu * winv[:, None, None, :]
          gram = (quw @ np.swapaxes(qu, -1, -2)).reshape(b, m, -1)  # B^T A^-1 B, [B, M, (2 nm)^2]
          rr = (quw @ np.swapaxes(qr, -1, -2)[:, None]).reshape(b, m, -1)  # B^T A^-1 r_V, [.., 2 nm L]
          hg = g_own - np.einsum("bmav,bmv->bma", quw, qg)  # g_E - B^T A^-1 g_V, [B, M, 2 nm]
        for k in ks:
          ke = min(k, length)
          if ke == 0:
            out[(k, lam)] = p0
            continue
          js = np.concatenate([np.arange(kmax - ke, kmax), kmax + np.arange(ke)])
          a = slot[:, js]  # [L, E]
          e = js.shape[0]
          schur = (d_own[..., js[:, None], js][:, :, None] + lam * np.eye(e)
                   - np.take(gram, a[:, :, None] * (2 * nm) + a[:, None, :], -1))  # [B, M, L, E, E]
          rhs = r_own[..., js][:, :, None, :] - np.take(rr, a * length + frames[:, None], -1)
          y = np.linalg.solve(schur, rhs[..., None])[..., 0]  # [B, M, L, E]
          out[(k, lam)] = p0 + np.sum(np.take(hg, a, -1) * y, -1)
      yield wi, si, hid, out


def st_ridge_predict(x: ArrayLike, mask: ArrayLike, model: StRidgeModel) -> np.ndarray:
  """Reconstruction of the hidden cells of ``x`` by ``model`` (see the module docstring)."""
  x, mask = _check_pair(x, mask)
  _check_model(model, x.shape[2], x.shape[1] * x.shape[3])
  pred = np.moveaxis(np.zeros(x.shape), 2, -1)  # [W, S, L, N]
  key = (int(model.k), float(model.lam))
  for wi, si, hid, out in _st_chunks(x, mask, model.mean, model.gamma, (key[0],), (key[1],)):
    pred[wi[:, None], si[:, None], :, hid] = out[key]
  return _fill(x, mask, np.moveaxis(pred, -1, 2))


def _val_scores(val: np.ndarray, mask: np.ndarray, mu: np.ndarray, gamma: np.ndarray,
                ks: Sequence[int], lams: Sequence[float]) -> dict[tuple[int, float], float]:
  """Masked MSE on ``val`` for every (k, lam)."""
  sse = {(k, lam): 0.0 for k in ks for lam in lams}
  for wi, si, hid, out in _st_chunks(val, mask, mu, gamma, ks, lams):
    truth = val[wi[:, None], si[:, None], hid].astype(np.float64)  # [B, M, L]
    for key, p in out.items():
      sse[key] += float(np.sum((p - truth) ** 2))
  count = int(mask.sum()) * val.shape[3]
  return {key: float(s / count) for key, s in sse.items()}


def fit_st_ridge(train_x: ArrayLike, k: int | None = None, lam: float | None = None, *,
                 val_x: ArrayLike | None = None, mask_ratio: float = 0.5,
                 ks: Sequence[int] = DEFAULT_KS, lams: Sequence[float] = DEFAULT_LAMS,
                 val_fraction: float = 0.2, max_val_windows: int = 256,
                 seed: int = 0) -> StRidgeModel:
  """Fit the spatio-temporal ridge on training windows [W, S, N, L].

  ``k`` / ``lam`` None are chosen from ``ks`` / ``lams`` by the masked MSE on validation windows with
  ``random_mask(..., mask_ratio, seed)`` masks: ``val_x`` when given (moments from ``train_x`` only),
  else a random ``val_fraction`` of the training windows (at most ``max_val_windows``), after which
  the moments are refitted on all training windows.
  """
  t = _check_x("train_x", train_x)
  ks = (int(k),) if k is not None else tuple(sorted({int(c) for c in ks}))
  lams = (float(lam),) if lam is not None else tuple(float(c) for c in lams)
  if not ks or min(ks) < 0:
    raise ValueError(f"k/ks: expected ints >= 0, got {k if k is not None else ks}")
  if not lams or not all(c >= 0 for c in lams):
    raise ValueError(f"lam/lams: expected values >= 0, got {lam if lam is not None else lams}")
  if len(ks) == 1 and len(lams) == 1:
    mu, gamma = st_moments(t)
    return StRidgeModel(mu, gamma, ks[0], lams[0])
  if val_x is not None:
    val = _check_x("val_x", val_x)
    if val.shape[2] != t.shape[2] or val.shape[1] * val.shape[3] > t.shape[1] * t.shape[3]:
      raise ValueError(f"val_x: shape {val.shape} does not match train_x {t.shape} (same ROIs, "
                       "at most as many frames per window)")
    fit = t
  else:
    w = t.shape[0]
    if w < 2:
      raise ValueError(f"train_x: choosing k/lam needs at least 2 training windows, got {w}")
    if not 0.0 < val_fraction < 1.0:
      raise ValueError(f"val_fraction: expected a value in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(w)
    n_val = min(max(int(round(val_fraction * w)), 1), w - 1, max(int(max_val_windows), 1))
    val, fit = t[order[:n_val]], t[order[n_val:]]
  mu, gamma = st_moments(fit)
  scores = _val_scores(val, random_mask(val.shape[:3], mask_ratio, seed), mu, gamma, ks, lams)
  best_k, best_lam = min(scores, key=scores.get)
  if val_x is None:
    mu, gamma = st_moments(t)
  return StRidgeModel(mu, gamma, best_k, best_lam, scores)


def st_ridge(x: ArrayLike, mask: ArrayLike, train_x: ArrayLike, **fit_kwargs) -> np.ndarray:
  """Fit on ``train_x`` (k, lam chosen at the mask ratio of ``mask`` unless given) and predict."""
  x, mask = _check_pair(x, mask)
  if "mask_ratio" not in fit_kwargs and 0 < mask.mean() < 1:
    fit_kwargs["mask_ratio"] = float(mask.mean())
  return st_ridge_predict(x, mask, fit_st_ridge(train_x, **fit_kwargs))
