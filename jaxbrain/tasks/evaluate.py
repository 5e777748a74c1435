"""Evaluations of a pretrained BrainMAE on subjects held out of pretraining.

- masked reconstruction against three baselines (per-ROI mean, linear interpolation in time, ridge
  from the visible ROIs of the same segment), all scored on the same masks;
- subject fingerprinting from frozen embeddings (first half of each scan vs second half);
- interpretability: ROI-embedding similarity and graph-attention maps (npy + PNG) and the test of
  whether homologous (left/right) regions have more similar embeddings than random pairs.
"""
from __future__ import annotations

import os

import ml_collections
import numpy as np
from flax import nnx

from jaxbrain.evaluation import fingerprint as fingerprint_lib
from jaxbrain.evaluation import homology, plots, reconstruction
from jaxbrain.tasks import inference
from jaxbrain.tasks.inputs import FmriData


def reconstruction_eval(model: nnx.Module, test_x: np.ndarray, train_x: np.ndarray,
                        config: ml_collections.ConfigDict) -> dict:
  """Masked-reconstruction MSE of the model and of each baseline on ``test_x`` [W,S,N,L]."""
  mask = reconstruction.random_mask(test_x.shape[:3], config.model.mask_ratio,
                                    seed=config.eval.mask_seed)
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


def fingerprint_eval(model: nnx.Module, arrays: dict[str, np.ndarray], num_frames: np.ndarray,
                     config: ml_collections.ConfigDict) -> dict:
  """Identify held-out subjects: gallery = windows in the first half of each scan, queries = the
  second half (windows that straddle the middle are dropped, so no frame is in both)."""
  x, subj, start = arrays["x"], arrays["subject"], arrays["start"]
  length = x.shape[1] * x.shape[3]
  half = num_frames[subj] // 2
  parts = np.where(start + length <= half, 0, np.where(start >= half, 1, -1))
  keep = parts >= 0
  emb = inference.embed(model, x[keep], config.eval.batch_size, config.eval.fingerprint_embedding)
  res = fingerprint_lib.fingerprint(emb, subj[keep], parts[keep], 0, 1, match="mean")
  return {"fingerprint_accuracy": res["accuracy"], "fingerprint_chance": res["chance"],
          "fingerprint_num_queries": res["n_queries"],
          "fingerprint_num_subjects": len(res["subject_ids"]),
          "fingerprint_embedding": config.eval.fingerprint_embedding}


def interpretability(model: nnx.Module, data: FmriData, workdir: str,
                     config: ml_collections.ConfigDict) -> dict:
  """Exports ROI-embedding similarity and attention maps; tests homologous-pair similarity."""
  folder = os.path.join(workdir, "interpret")
  sim = np.asarray(model.roi_similarity())
  out = {"roi_similarity": plots.save_matrix(os.path.join(folder, "roi_similarity"), sim,
                                             data.region_names, title="ROI-embedding similarity",
                                             cmap="RdBu_r", vmin=-1, vmax=1)["png"]}
  if config.model.embedding_attention:
    for layer in range(len(model.ga_blocks)):
      att = np.asarray(model.roi_attention(layer))
      out[f"roi_attention_{layer}"] = plots.save_matrix(
          os.path.join(folder, f"roi_attention_{layer}"), att, data.region_names,
          title=f"Graph attention, TSE layer {layer}", cmap="viridis")["png"]
  if data.homologous_pairs and config.model.roi_embedding == "learned":
    test = homology.homology_test(sim, data.homologous_pairs, n_perm=config.eval.num_permutations,
                                  seed=config.seed)
    out.update({f"homology_{k}": v for k, v in test.items()})
  return out
