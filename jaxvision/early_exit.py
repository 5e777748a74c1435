"""Early exit for AdaFocusV2 as the official evaluation does it (NumPy, host side).

The official code (LeapLabTHU/AdaFocusV2, ``Experiments on ActivityNet, FCVID and
Mini-Kinetics/ops/early_exit.py``, driven by ``test_early_exit.py``):

* Logits [N, T, C] after every frame t = 1..T (T = 16) on the training set (fitting) and on the
  validation set (evaluation).
* Criterion ``'confidence'`` (the default) is the largest raw *logit*, ``torch.max(logits, -1)``,
  not the largest softmax probability; ``'entropy'`` is sum(p log p) (minus the entropy; higher =
  more confident). Here: ``kind='max_logit'`` (default), ``'entropy'``, plus ``'max_prob'``.
* ``dynamic_eval_find_threshold``: exit fractions p_k = q^k / sum_j q^j (k = 1..T). For each step
  k < T in turn, out_n = floor(N * p_k) of all N samples; the samples not yet exited are sorted by
  confidence at step k (descending), the threshold is the confidence of the out_n-th of them (they
  exit), or +inf (1e8 there) when out_n = 0; the last threshold is -inf (-1e8): everyone left exits.
* ``dynamic_evaluate``: a sample exits at the first step k with confidence >= threshold_k and is
  predicted by that step's logits; the expected cost is sum_k frac_k * flops_k with
  flops_k = k * (per-frame GFLOPs) (``get_flops``: 1.10 / 1.68 / 2.44 / 3.35 GFLOPs per frame for
  patch 96 / 128 / 160 / 192 with the MobileNetV2 glance), no fixed cost. Here ``cost_per_step``
  may also be a sequence of T per-step costs (exiting at step k costs the sum of the first k):
  the Sth-Sth / Jester variant's two stages, glance only then glance + focus, differ in cost.
* Sweep: q = 0.5, 0.6, ..., 3.9 (``OFFICIAL_QS``); metric top-1 accuracy (Mini-Kinetics) or mAP
  (ActivityNet, FCVID) via ``ops/utils.py::cal_map``, which ranks the *softmax* probabilities.

Differences, on purpose: floor(N * p_k) gets a 1e-7 slack so exact integers are not lost to float
rounding; ``mean_average_precision`` skips classes without positives by default (``cal_map``
counts them as AP 0; ``skip_empty=False`` does that); scores are fractions in [0, 1], not percent.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike

from jaxtrain.metrics import write_atomic

KINDS = ("max_logit", "max_prob", "entropy")
METRICS = ("top1", "map")
OFFICIAL_QS = tuple(round(p / 10, 1) for p in range(5, 40))   # test_early_exit.py: p in range(5, 40) / 10


def _logits(name: str, logits: ArrayLike) -> np.ndarray:
  x = np.asarray(logits, np.float64)
  if x.ndim != 3 or 0 in x.shape:
    raise ValueError(f"{name}: expected non-empty logits [N, T, C], got shape {x.shape}")
  return x


def _log_softmax(x: np.ndarray) -> np.ndarray:
  z = x - np.max(x, axis=-1, keepdims=True)
  return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def softmax(x: ArrayLike) -> np.ndarray:
  """Softmax over the last axis, float64."""
  return np.exp(_log_softmax(np.asarray(x, np.float64)))


def confidence(logits: ArrayLike, kind: str = "max_logit") -> np.ndarray:
  """Confidence [N, T] of logits [N, T, C]; higher = more confident.

  'max_logit': largest logit (the official 'confidence'); 'max_prob': largest softmax probability;
  'entropy': sum(p log p), i.e. minus the entropy (the official 'entropy').
  """
  x = _logits("logits", logits)
  if kind == "max_logit":
    return np.max(x, axis=-1)
  logp = _log_softmax(x)
  if kind == "max_prob":
    return np.exp(np.max(logp, axis=-1))
  if kind == "entropy":
    return np.sum(np.exp(logp) * logp, axis=-1)
  raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def exit_proportions(q: float, num_steps: int) -> np.ndarray:
  """p_k = q^k / sum_j q^j for k = 1..T (computed in log space, so any q > 0 works)."""
  q = float(q)
  if not np.isfinite(q) or q <= 0:
    raise ValueError(f"q must be a finite number > 0, got {q}")
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  logw = np.arange(1, num_steps + 1) * np.log(q)
  logw -= np.max(logw)
  w = np.exp(logw)
  return w / w.sum()


def exit_counts(num_samples: int, q: float, num_steps: int) -> np.ndarray:
  """Target exit counts [T]: floor(N * p_k) for k < T, the rest at the last step."""
  n = int(num_samples)
  counts = np.floor(n * exit_proportions(q, num_steps) + 1e-7).astype(np.int64)
  counts[-1] = n - counts[:-1].sum()
  return counts


def fit_thresholds(conf_train: ArrayLike, q: float) -> np.ndarray:
  """Thresholds [T] such that floor(N * p_k) of the fitting samples exit at step k; last = -inf.

  ``conf_train`` [N, T] are the fitting samples' confidences. Step k takes the out_n most confident
  samples still remaining; its threshold is the smallest of their confidences (+inf when out_n = 0).
  """
  conf = np.asarray(conf_train, np.float64)
  if conf.ndim != 2 or 0 in conf.shape:
    raise ValueError(f"conf_train: expected non-empty [N, T], got shape {conf.shape}")
  if not np.all(np.isfinite(conf)):
    raise ValueError("conf_train: expected finite confidences")
  n, t = conf.shape
  counts = exit_counts(n, q, t)
  thresholds = np.full(t, np.inf)
  remaining = np.ones(n, bool)
  for k in range(t - 1):
    out_n = counts[k]
    if out_n == 0:
      continue
    idx = np.flatnonzero(remaining)
    order = idx[np.argsort(-conf[idx, k], kind="stable")]
    thresholds[k] = conf[order[out_n - 1], k]
    remaining[order[:out_n]] = False
  thresholds[-1] = -np.inf
  return thresholds


def exit_steps(conf: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
  """0-based step [N] at which each sample exits: the first k with conf[:, k] >= thresholds[k].

  Samples that never pass a threshold (e.g. NaN confidence) exit at the last step.
  """
  c = np.asarray(conf, np.float64)
  th = np.asarray(thresholds, np.float64)
  if c.ndim != 2 or th.shape != (c.shape[1],):
    raise ValueError(f"expected conf [N, T] and thresholds [T], got {c.shape} and {th.shape}")
  passed = c >= th[None, :]
  passed[:, -1] = True
  return np.argmax(passed, axis=1).astype(np.int64)


def exit_costs(cost_per_step: float | Sequence[float], num_steps: int) -> np.ndarray:
  """Cost [T] of exiting at step k = 1..T: the sum of the first k per-step costs (a number:
  the same cost every step, k * cost)."""
  c = np.asarray(cost_per_step, np.float64)
  if c.ndim == 0:
    c = np.full(num_steps, float(c))
  if c.shape != (num_steps,) or not np.all(np.isfinite(c)):
    raise ValueError(f"cost_per_step: expected a number or {num_steps} finite per-step costs, "
                     f"got {np.asarray(cost_per_step).tolist()}")
  return np.cumsum(c) if np.ndim(cost_per_step) else c * np.arange(1, num_steps + 1)


def _average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  order = np.argsort(-scores, kind="stable")
  truth = positives[order]
  hits = np.cumsum(truth)
  precision = hits / np.arange(1, len(truth) + 1)
  return float(np.sum(precision[truth]) / max(int(truth.sum()), 1))


def mean_average_precision(scores: ArrayLike, labels: ArrayLike, *, skip_empty: bool = True) -> float:
  """mAP in [0, 1]: mean over classes of AP = mean over the class's positives of precision at their rank.

  scores [N, C] (higher = more likely), labels [N, C] multi-hot. Ties are ranked in sample order.
  Classes without positives are skipped (``skip_empty=False`` counts them as 0, like ``cal_map``).
  """
  s = np.asarray(scores, np.float64)
  y = np.asarray(labels)
  if s.ndim != 2 or y.shape != s.shape or 0 in s.shape:
    raise ValueError(f"expected scores and multi-hot labels of one shape [N, C], got {s.shape}, {y.shape}")
  if not np.all((y == 0) | (y == 1)):
    raise ValueError("labels: expected a multi-hot 0/1 array")
  y = y.astype(bool)
  aps = [_average_precision(s[:, c], y[:, c]) for c in range(s.shape[1]) if y[:, c].any() or not skip_empty]
  if not aps:
    raise ValueError("labels: no class has a positive sample")
  return float(np.mean(aps))


def score(outputs: np.ndarray, labels: np.ndarray, metric: str, skip_empty: bool = True) -> float:
  """Top-1 accuracy (integer labels [N]) or mAP (multi-hot [N, C], ranking softmax) of outputs [N, C]."""
  if metric == "top1":
    if labels.shape != outputs.shape[:1]:
      raise ValueError(f"top1 needs integer labels [N={outputs.shape[0]}], got shape {labels.shape}")
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))
  if metric == "map":
    if labels.shape != outputs.shape:
      raise ValueError(f"map needs multi-hot labels {outputs.shape}, got shape {labels.shape}")
    return mean_average_precision(softmax(outputs), labels, skip_empty=skip_empty)
  raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def evaluate(logits_test: ArrayLike, labels: ArrayLike, thresholds: ArrayLike,
             cost_per_step: float | Sequence[float], fixed_cost: float = 0.0, metric: str = "top1",
             *, kind: str = "max_logit", skip_empty: bool = True) -> dict[str, Any]:
  """Early-exit evaluation: each sample is predicted by the logits of its exit step.

  Returns {'metric', 'score' (accuracy or mAP in [0, 1]), 'accuracy' or 'map' (the same), 'avg_cost'
  (fixed_cost + the mean cost of the exit steps, ``exit_costs``: (k + 1) * cost_per_step for a
  number, e.g. GFLOPs per video), 'exit_fractions' [T], 'exit_counts' [T]}. mAP ranks softmax
  probabilities, as the official cal_map does.
  """
  x = _logits("logits_test", logits_test)
  y = np.asarray(labels)
  n, t, _ = x.shape
  costs = exit_costs(cost_per_step, t)
  steps = exit_steps(confidence(x, kind), thresholds)
  outputs = x[np.arange(n), steps]
  value = score(outputs, y, metric, skip_empty)
  counts = np.bincount(steps, minlength=t)
  return {"metric": metric, "score": value, ("accuracy" if metric == "top1" else "map"): value,
          "avg_cost": float(fixed_cost + np.mean(costs[steps])),
          "exit_fractions": (counts / n).tolist(), "exit_counts": counts.tolist()}


def sweep(logits_fit: ArrayLike, logits_test: ArrayLike, labels_test: ArrayLike,
          qs: Sequence[float] = OFFICIAL_QS, cost_per_step: float | Sequence[float] = 1.0,
          fixed_cost: float = 0.0, *,
          kind: str = "max_logit", multilabel: bool = False, skip_empty: bool = True) -> list[dict[str, Any]]:
  """One early-exit operating point per q: thresholds fitted on ``logits_fit``, scored on the test set.

  Each point is ``evaluate``'s dict plus 'q' and 'thresholds' (inf as +-inf floats). The metric is
  mAP for ``multilabel`` (multi-hot labels [N, C]) and top-1 accuracy otherwise (labels [N]);
  ``cost_per_step`` is a number or T per-step costs, as in ``evaluate``.
  """
  fit = _logits("logits_fit", logits_fit)
  test = _logits("logits_test", logits_test)
  if fit.shape[1:] != test.shape[1:]:
    raise ValueError(f"logits_fit {fit.shape} and logits_test {test.shape} differ in [T, C]")
  conf_fit = confidence(fit, kind)
  points = []
  for q in qs:
    th = fit_thresholds(conf_fit, q)
    point = evaluate(test, labels_test, th, cost_per_step, fixed_cost, "map" if multilabel else "top1",
                     kind=kind, skip_empty=skip_empty)
    points.append({"q": float(q), "thresholds": th.tolist(), **point})
  return points


def _jsonable(v: Any) -> Any:
  if isinstance(v, dict):
    return {str(k): _jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple, np.ndarray)):
    return [_jsonable(x) for x in v]
  if isinstance(v, (np.integer, np.bool_)):
    return v.item()
  if isinstance(v, (float, np.floating)):
    v = float(v)
    return v if np.isfinite(v) else (None if np.isnan(v) else ("inf" if v > 0 else "-inf"))
  return v


def save_curve(points: Sequence[dict[str, Any]], path_json: str | os.PathLike, path_png: str | os.PathLike,
               *, title: str | None = None, xlabel: str = "GFLOPs / video",
               reference: dict[str, float] | None = None) -> None:
  """Write the sweep as JSON ({'points': [...]}; infinities as "inf"/"-inf") and a PNG score-vs-cost plot.

  Each file is written to a temporary file and renamed into place. ``reference`` may hold extra
  labelled (cost, score) pairs to mark, e.g. {'all frames': (cost, score)}.
  """
  if not points:
    raise ValueError("points: expected at least one point")
  for p in points:
    if "avg_cost" not in p or "score" not in p:
      raise ValueError("points: each point needs 'avg_cost' and 'score' (as evaluate/sweep return)")
  data = json.dumps(_jsonable({"points": list(points)}), indent=1, allow_nan=False).encode()
  write_atomic(os.fspath(path_json), lambda f: f.write(data))
  write_atomic(os.fspath(path_png), lambda f: _plot(f, points, title, xlabel, reference))


def _plot(f, points, title, xlabel, reference) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  metric = points[0].get("metric", "top1")
  ylabel = "mAP (%)" if metric == "map" else "top-1 accuracy (%)"
  pts = sorted(points, key=lambda p: p["avg_cost"])
  fig = Figure(figsize=(5.5, 4.0))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  ax.plot([p["avg_cost"] for p in pts], [100 * p["score"] for p in pts], "o-", ms=3, label="early exit")
  for name, (cost, score) in (reference or {}).items():
    ax.plot([cost], [100 * score], "*", ms=10, label=str(name))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(True, alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(f, format="png", dpi=110)
