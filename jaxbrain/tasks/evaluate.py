"""Evaluations of a pretrained BrainMAE on subjects held out of pretraining.

- masked reconstruction against three baselines (per-ROI mean, linear interpolation in time, ridge
  from the visible ROIs of the same segment), all scored on the same masks (``summary.json``); and,
  for notebooks and reports, per-window errors of the model and four baselines (the same three and
  the spatio-temporal ridge) with paired bootstrap intervals (``reconstruction_errors``,
  ``reconstruction_intervals``);
- subject fingerprinting from frozen embeddings (first half of each scan vs second half);
- interpretability: ROI-embedding similarity and graph-attention maps (``interpretation_maps``;
  written as npy + PNG by ``interpretability``) and the test of
  whether homologous (left/right) regions have more similar embeddings than random pairs.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np
from flax import nnx

from jaxbrain.evaluation import fingerprint as fingerprint_lib
from jaxbrain.evaluation import homology, plots, reconstruction, statistics
from jaxbrain.tasks import inference
from jaxbrain.tasks.inputs import FmriData
from jaxtrain.errors import ConfigError


def eval_mask(shape: tuple[int, int, int], config: ml_collections.ConfigDict) -> np.ndarray:
  """The fixed evaluation masks bool [W, S, N]: ``config.eval.mask_ratio`` of the ROIs of every
  segment (independent of the training ratio ``model.mask_ratio``, which may be 0), drawn with
  ``config.eval.mask_seed``."""
  ratio = config.eval.mask_ratio
  if not 0 < ratio < 1:
    raise ConfigError(f"config.eval.mask_ratio={ratio}: expected a ratio in (0, 1)")
  return reconstruction.random_mask(shape, ratio, seed=config.eval.mask_seed)


def reconstruction_eval(model: nnx.Module, test_x: np.ndarray, train_x: np.ndarray,
                        config: ml_collections.ConfigDict) -> dict:
  """Masked-reconstruction MSE of the model and of each baseline on ``test_x`` [W,S,N,L], with the
  baselines fitted on ``train_x``."""
  mask = eval_mask(test_x.shape[:3], config)
  recon = inference.reconstruct(model, test_x, mask, config.eval.batch_size)
  lam = None if config.eval.ridge_lambda < 0 else config.eval.ridge_lambda
  out = reconstruction.baseline_errors(test_x, mask, train_x, lam=lam)
  out["recon_mse_model"] = reconstruction.masked_mse(recon, test_x, mask)
  out["recon_num_windows"] = int(len(test_x))
  out["recon_mask_ratio"] = float(mask.mean())
  baselines = [k for k in out if k.startswith("recon_mse_") and k != "recon_mse_model"]
  out["recon_model_beats_all_baselines"] = bool(
      all(out["recon_mse_model"] < out[k] for k in baselines))
  return out


RECONSTRUCTION_BASELINES = ("roi_mean", "linear_interp", "ridge", "st_ridge")


def reconstruction_errors(model: nnx.Module, test_x: np.ndarray, train_x: np.ndarray,
                          config: ml_collections.ConfigDict, *,
                          baselines: Sequence[str] = RECONSTRUCTION_BASELINES,
                          mask_draws: int = 1, st_ridge_kwargs: Mapping[str, Any] | None = None
                          ) -> dict[str, np.ndarray]:
  """Per-window masked-reconstruction MSE (float64 [W]) of the model (key ``'model'``) and of
  each baseline on windows ``test_x`` [W, S, N, L], all scored on the same masks.

  Every window is masked ``mask_draws`` times (``eval_mask``: ``config.eval.mask_ratio`` of the
  ROIs of every segment, seed ``config.eval.mask_seed``; the draws of a window are consecutive) and
  its error is the mean over its draws. Baselines (``RECONSTRUCTION_BASELINES``), fitted on
  ``train_x`` only: ``'roi_mean'`` (each ROI's training mean), ``'linear_interp'`` (in time, from
  the ROI's neighbouring visible segments; ROI means where it is hidden throughout), ``'ridge'``
  (from the visible ROIs of the same frame; penalty ``config.eval.ridge_lambda``, or chosen on a
  held-out fifth of ``train_x`` when it is negative) and ``'st_ridge'`` (the spatio-temporal ridge,
  which adds the ROI's own nearest visible frames; lags and penalty chosen on a held-out fifth of
  ``train_x``). With ``mask_draws=1`` the means of 'model', 'roi_mean', 'linear_interp' and 'ridge'
  are ``reconstruction_eval``'s numbers (every window hides the same number of cells).
  """
  from jaxbrain.evaluation import st_ridge
  unknown = [b for b in baselines if b not in RECONSTRUCTION_BASELINES]
  if unknown:
    raise ValueError(f"baselines {unknown}: expected names from {RECONSTRUCTION_BASELINES}")
  if mask_draws < 1:
    raise ValueError(f"mask_draws={mask_draws}: expected a positive integer")
  x = np.repeat(np.asarray(test_x), int(mask_draws), axis=0)
  mask = eval_mask(x.shape[:3], config)
  ratio = float(config.eval.mask_ratio)
  lam = None if config.eval.ridge_lambda < 0 else float(config.eval.ridge_lambda)

  def ridge_fit():
    kw = {} if lam is not None else {"mask_ratio": float(mask.mean())}  # as baseline_errors
    return reconstruction.fit_ridge(train_x, lam, **kw)

  predict = {
      "roi_mean": lambda: reconstruction.roi_mean(x, mask, train_x),
      "linear_interp": lambda: reconstruction.linear_interp(
          x, mask, fallback=reconstruction.roi_means(train_x)),
      "ridge": lambda: reconstruction.ridge_predict(x, mask, ridge_fit()),
      "st_ridge": lambda: st_ridge.st_ridge_predict(x, mask, st_ridge.fit_st_ridge(
          train_x, **{"mask_ratio": ratio, "seed": int(config.eval.mask_seed),
                   **(st_ridge_kwargs or {})})),
      "model": lambda: inference.reconstruct(model, x, mask, int(config.eval.batch_size)),
  }
  out = {}
  for name in ("model", *baselines):
    per_draw = reconstruction.masked_mse_per_window(predict[name](), x, mask)
    out[name] = per_draw.reshape(-1, int(mask_draws)).mean(axis=1)
  return out


def reconstruction_intervals(errors: Mapping[str, np.ndarray], groups: np.ndarray, *,
                             reference: str = "model", num_resamples: int = 10000,
                             level: float = 0.95, seed: int = 0) -> dict:
  """Bootstrap intervals of per-window errors (``reconstruction_errors``): resamples of the
  subjects, then of each drawn subject's windows (``statistics.resample_weights`` with
  ``groups`` [W], each window's subject), shared by every method so that differences are paired.

  Returns {'methods': {method: {'mean', 'lo', 'hi'}}, 'contrasts': {other method: reference
  minus it, ``statistics.paired_contrast``: 'diff', 'relative_pct' (% of the other's MSE) and
  'verdict' ('win' / 'loss' only when the interval of the difference excludes 0, else 'tie')},
  'num_windows', 'num_subjects'}.
  """
  if reference not in errors:
    raise ValueError(f"reference {reference!r} is not one of the methods {list(errors)}")
  groups = np.asarray(groups)
  for name, v in errors.items():
    if np.shape(v) != groups.shape:
      raise ValueError(f"errors[{name!r}] has shape {np.shape(v)} but groups has {groups.shape}")
  w = statistics.resample_weights(groups, num_resamples, seed)
  methods = {m: statistics.interval(float(np.mean(v)), statistics.resampled_means(v, w), level)
             for m, v in errors.items()}
  contrasts = {m: statistics.paired_contrast(errors[reference], v, w, level, relative=True)
               for m, v in errors.items() if m != reference}
  return {"methods": methods, "contrasts": contrasts, "num_windows": int(groups.size),
          "num_subjects": int(len(np.unique(groups)))}


def _prepare_fingerprint(emb: np.ndarray, subj: np.ndarray, parts: np.ndarray, start: np.ndarray,
                         query_windows: int, center: bool
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Queries: each subject's second-half windows, in time order, averaged in consecutive groups of
  ``query_windows`` (one query = a part of a scan; a short last group is dropped unless it is the
  only one). ``center``: subtract the mean gallery embedding (all subjects) from every row."""
  emb = np.asarray(emb, np.float64).reshape(len(emb), -1)
  if center:
    emb = emb - emb[parts == 0].mean(axis=0)
  rows_e, rows_s, rows_p = [emb[parts == 0]], [subj[parts == 0]], [parts[parts == 0]]
  for s in np.unique(subj[parts == 1]):
    idx = np.nonzero((subj == s) & (parts == 1))[0]
    idx = idx[np.argsort(start[idx], kind="stable")]
    groups = max(len(idx) // query_windows, 1)
    for g in range(groups):
      rows_e.append(emb[idx[g * query_windows:(g + 1) * query_windows]].mean(axis=0, keepdims=True))
      rows_s.append(subj[idx[:1]])
      rows_p.append(np.ones(1, parts.dtype))
  return np.concatenate(rows_e), np.concatenate(rows_s), np.concatenate(rows_p)


def fingerprint_eval(model: nnx.Module, arrays: dict[str, np.ndarray], num_frames: np.ndarray,
                     config: ml_collections.ConfigDict) -> dict:
  """Identify held-out subjects: gallery = windows in the first half of each scan, queries = the
  second half (windows that straddle the middle are dropped, so no frame is in both), each query
  the average of ``eval.fingerprint_query_windows`` consecutive windows. The same protocol on the raw
  signal's functional connectivity is reported as context (``fingerprint_accuracy_raw_fc``)."""
  x, subj, start = arrays["x"], arrays["subject"], arrays["start"]
  length = x.shape[1] * x.shape[3]
  parts = fingerprint_lib.scan_halves(start, length, num_frames[subj])
  keep = parts >= 0
  x, subj, start, parts = x[keep], subj[keep], start[keep], parts[keep]
  kind = config.eval.fingerprint_embedding
  k = int(config.eval.get("fingerprint_query_windows", 1))
  center = bool(config.eval.get("fingerprint_center", False))
  if k < 1:
    raise ConfigError(f"config.eval.fingerprint_query_windows={k}: expected a positive integer")
  out = {}
  for name, emb in (("", inference.embed(model, x, config.eval.batch_size, kind)),
                    ("_raw_fc", inference.raw_fc(x))):
    e, s, p = _prepare_fingerprint(emb, subj, parts, start, k, center)
    res = fingerprint_lib.fingerprint(e, s, p, 0, 1, match="mean")
    out[f"fingerprint_accuracy{name}"] = res["accuracy"]
  out.update({"fingerprint_chance": res["chance"], "fingerprint_num_queries": res["n_queries"],
              "fingerprint_num_subjects": len(res["subject_ids"]),
              "fingerprint_embedding": kind, "fingerprint_query_windows": k,
              "fingerprint_query_frames": int(length + (k - 1) * x.shape[3]),
              "fingerprint_center": center})
  return out


def interpretation_maps(model: nnx.Module, config: ml_collections.ConfigDict
                        ) -> dict[str, np.ndarray]:
  """The model's input-independent ROI x ROI maps, float32 [N, N] each: ``'roi_similarity'``
  (cosine similarity of the learned ROI embeddings, ``model.roi_similarity()``) and, when
  ``config.model.embedding_attention`` is on (BrainMAE), ``'roi_attention_<layer>'`` for every
  graph-attention layer of the transient-state encoder (head-averaged softmax of
  q(e_i).k(e_j) / sqrt(d), self-loops removed: ``model.roi_attention(layer)``; row i is where ROI i
  attends, rows sum to 1). ``interpretability`` writes these maps as .npy and .png."""
  out = {"roi_similarity": np.asarray(model.roi_similarity(), np.float32)}
  if config.model.get("embedding_attention", False):
    for layer in range(len(model.ga_blocks)):
      out[f"roi_attention_{layer}"] = np.asarray(model.roi_attention(layer), np.float32)
  return out


def interpretability(model: nnx.Module, data: FmriData, workdir: str,
                     config: ml_collections.ConfigDict) -> dict:
  """Exports ROI-embedding similarity and attention maps (``interpretation_maps``); tests
  homologous-pair similarity."""
  folder = os.path.join(workdir, "interpret")
  maps = interpretation_maps(model, config)
  sim = maps.pop("roi_similarity")
  out = {"roi_similarity": plots.save_matrix(os.path.join(folder, "roi_similarity"), sim,
                                             data.region_names, title="ROI-embedding similarity",
                                             cmap="RdBu_r", vmin=-1, vmax=1)["png"]}
  for name, att in maps.items():
    layer = name.rsplit("_", 1)[1]
    out[name] = plots.save_matrix(os.path.join(folder, name), att, data.region_names,
                                  title=f"Graph attention, TSE layer {layer}", cmap="viridis")["png"]
  if data.homologous_pairs and config.model.get("roi_embedding", "learned") == "learned":
    test = homology.homology_test(sim, data.homologous_pairs, n_perm=config.eval.num_permutations,
                                  seed=config.seed)
    out.update({f"homology_{k}": v for k, v in test.items()})
  return out


# ---------------------------------------------------------------------------------------------------
# ST-MAE: masked reconstruction of dynamic FC.

def fc_masks(num: int, config: ml_collections.ConfigDict, seed: int | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
  """Fixed evaluation masks for ``num`` windows, drawn with ``seed`` (default
  ``config.eval.mask_seed``) at the model's ratios: (node mask bool [num, N], window mask bool
  [num, W])."""
  import jax
  from jaxbrain.data.dynamic_fc import num_windows
  from jaxbrain.models.stmae import random_masks
  c = config.model
  w = num_windows(c.num_segments * c.seg_len, c.fc_window, c.fc_stride)
  seed = int(config.eval.mask_seed) if seed is None else int(seed)
  node, window = random_masks(jax.random.key(seed), num, c.num_rois, w,
                              c.node_mask_ratio, c.window_mask_ratio)
  return np.asarray(node), np.asarray(window)


def fc_reconstruction_errors(model: nnx.Module, x: np.ndarray, masks: tuple[np.ndarray, np.ndarray],
                             batch_size: int, baseline: tuple[np.ndarray, np.ndarray] | None = None
                             ) -> dict[str, np.ndarray]:
  """Per window of ``x`` [W, S, N, L]: the FC-row MSE and edge BCE of the hidden cells, by the
  model (eval mode) or, with ``baseline`` = (mean FC [N, N], edge frequency [N, N]) of the
  training windows, by predicting those for every window."""
  import jax.numpy as jnp
  from jaxbrain.models.stmae import reconstruction_losses
  from jaxtrain.inference import batched_apply

  def fn(m, xb, nm, wm):
    fc, adj = m.dynamic_fc(xb)
    if baseline is None:
      out = m(xb, nm, wm, fc=fc)
    else:
      p = jnp.clip(jnp.asarray(baseline[1], jnp.float32), 1e-4, 1 - 1e-4)
      out = {"fc_rows": jnp.broadcast_to(jnp.asarray(baseline[0], jnp.float32), fc.shape),
             "edge_logits": jnp.broadcast_to(jnp.log(p) - jnp.log1p(-p), fc.shape)}
    r = reconstruction_losses(out, fc, adj, nm, wm, per_sample=True)
    return jnp.stack([r["feature_mse"], r["edge_bce"]], axis=-1)
  err = np.asarray(batched_apply(model, fn, (x, *masks), batch_size), np.float64)
  return {"feature_mse": err[:, 0], "edge_bce": err[:, 1]}


def fc_baseline(model: nnx.Module, train_x: np.ndarray, batch_size: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """(mean FC [N, N], edge frequency [N, N]) over the windows of ``train_x``: the baseline that
  predicts every hidden cell from the training cohort's average graph."""
  from jaxtrain.inference import batched_apply
  import jax.numpy as jnp

  def fn(m, xb):
    fc, adj = m.dynamic_fc(xb)
    return jnp.stack([jnp.mean(fc, 1), jnp.mean(adj, 1)], axis=1)
  out = np.asarray(batched_apply(model, fn, (train_x,), batch_size), np.float64).mean(0)
  return out[0], out[1]


def fc_reconstruction_eval(model: nnx.Module, test_x: np.ndarray, train_x: np.ndarray,
                           config: ml_collections.ConfigDict) -> dict:
  """Held-out masked FC reconstruction of ST-MAE and of the training-mean-graph baseline, on the
  same fixed masks."""
  bs = int(config.eval.batch_size)
  masks = fc_masks(len(test_x), config)
  ours = fc_reconstruction_errors(model, test_x, masks, bs)
  base = fc_reconstruction_errors(model, test_x, masks, bs, fc_baseline(model, train_x, bs))
  out = {f"fc_{k}_model": float(v.mean()) for k, v in ours.items()}
  out.update({f"fc_{k}_mean_graph": float(v.mean()) for k, v in base.items()})
  out["fc_num_windows"] = int(len(test_x))
  return out
