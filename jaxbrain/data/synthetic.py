"""Synthetic fMRI ROI time series with labels that are learnable from the dynamics.

Model, per subject: K network latents follow a stable VAR(1) at the TR,
``z_t = rho z_{t-1} + e_t`` with ``rho = exp(-TR / timescale_s)`` and innovations ``e_t`` whose
correlation matrix carries the subject's labels: the class sets the coupling between networks 0
and 1 (from ``-coupling`` for class 0 to ``+coupling`` for the last class); the regression target
``score`` in [-1, 1] sets the coupling between networks 2 and 3 to ``coupling * score``. Each ROI
belongs to one network (contiguous blocks, shared by all subjects) with a positive loading; the
latents are convolved with the canonical double-gamma HRF at the TR, mixed to ROIs, and ROI noise
(AR(1) plus white) and a per-ROI baseline are added. Deterministic by seed; subject i's data
depend only on (seed, i), so adding subjects does not change earlier ones.
"""
from __future__ import annotations

import math

import numpy as np

from jaxbrain.data.sources import LabelsTable, Subject


def double_gamma_hrf(tr: float, duration_s: float = 32.0, *, peak_s: float = 6.0,
                     undershoot_s: float = 16.0, ratio: float = 1.0 / 6.0) -> np.ndarray:
  """Canonical (SPM) double-gamma HRF sampled every ``tr`` seconds, normalized to unit sum."""
  t = np.arange(0.0, duration_s, tr)

  def gamma_pdf(t, shape):  # scale 1
    return np.where(t > 0, t ** (shape - 1) * np.exp(-t) / math.gamma(shape), 0.0)

  h = gamma_pdf(t, peak_s) - ratio * gamma_pdf(t, undershoot_s)
  return h / h.sum()


def network_assignment(num_rois: int, num_networks: int) -> np.ndarray:
  """Network index of each ROI: contiguous, near-equal blocks. int [num_rois]."""
  return (np.arange(num_rois) * num_networks) // num_rois


def make_synthetic(num_subjects: int = 16, num_rois: int = 32, num_frames: int = 600,
                   tr: float = 0.72, *, num_networks: int = 4, num_classes: int = 2,
                   coupling: float = 0.8, timescale_s: float = 2.0, noise_std: float = 0.5,
                   baseline: float = 100.0, seed: int = 0, id_prefix: str = "sub"
                   ) -> tuple[list[Subject], LabelsTable]:
  """Returns (subjects with float32 [num_rois, num_frames] series, labels table).

  The labels table has id column ``subject_id`` and columns ``class`` (int, balanced over
  ``num_classes`` within every block of ``num_classes`` subjects) and ``score`` (float in [-1, 1]);
  its ``path`` is ``'<synthetic>'``.
  """
  if num_networks < 4:
    raise ValueError(f"num_networks must be >= 4 (networks 0-1 carry the class, 2-3 the score), "
                     f"got {num_networks}")
  if num_rois < num_networks:
    raise ValueError(f"num_rois={num_rois} must be >= num_networks={num_networks}")
  if not 0 <= coupling < 1:
    raise ValueError(f"coupling must lie in [0, 1), got {coupling}")
  if num_classes < 1 or num_subjects < 1 or num_frames < 2:
    raise ValueError("num_classes, num_subjects must be >= 1 and num_frames >= 2")
  root = np.random.SeedSequence(seed)
  shared, per_subject_root, label_root = root.spawn(3)
  rng = np.random.default_rng(shared)
  net = network_assignment(num_rois, num_networks)
  loadings = rng.uniform(0.6, 1.4, num_rois)
  offsets = baseline * rng.uniform(0.8, 1.2, num_rois)
  lrng = np.random.default_rng(label_root)
  num_blocks = -(-num_subjects // num_classes)  # classes balanced within each block of subjects
  classes = np.concatenate([lrng.permutation(num_classes) for _ in range(num_blocks)])
  scores = np.random.default_rng(label_root.spawn(1)[0]).uniform(-1.0, 1.0, num_subjects)
  levels = np.linspace(-coupling, coupling, num_classes) if num_classes > 1 else np.zeros(1)
  rho = math.exp(-tr / timescale_s)
  hrf = double_gamma_hrf(tr)
  burn = len(hrf) + int(5 * timescale_s / tr) + 1
  subjects, rows = [], {}
  for i, ss in enumerate(per_subject_root.spawn(num_subjects)):
    r = np.random.default_rng(ss)
    corr = np.eye(num_networks)
    corr[0, 1] = corr[1, 0] = levels[classes[i]]
    corr[2, 3] = corr[3, 2] = coupling * scores[i]
    chol = np.linalg.cholesky(corr)
    e = r.standard_normal((num_frames + burn, num_networks)) @ chol.T
    z = np.empty_like(e)
    z[0] = e[0]
    for t in range(1, len(e)):
      z[t] = rho * z[t - 1] + e[t]
    bold = np.stack([np.convolve(z[:, k], hrf)[: len(z)] for k in range(num_networks)], 1)
    bold = bold[burn:] / bold[burn:].std(axis=0)  # [T, K], unit variance per network
    noise = r.standard_normal((num_frames, num_rois))
    noise[1:] += 0.5 * noise[:-1]  # mildly coloured ROI noise
    x = loadings[None, :] * bold[:, net] + noise_std * noise + offsets[None, :]
    sid = f"{id_prefix}{i:04d}"
    subjects.append(Subject(id=sid, timeseries=x.T.astype(np.float32), tr=float(tr),
                            source=f"<synthetic seed={seed} subject={i}>"))
    rows[sid] = {"class": str(int(classes[i])), "score": repr(float(scores[i]))}
  return subjects, LabelsTable(path="<synthetic>", id_column="subject_id",
                               columns=["class", "score"], rows=rows)
