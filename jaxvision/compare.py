"""Compare finished AdaFocusV2 runs on the same test split, with paired bootstrap intervals.

  python -m jaxvision.compare --runs=RUN_A,RUN_B[,...] [--out=DIR] [--resamples=10000]

Each RUN is a finished ``python -m jaxvision.main`` workdir (``summary.json`` and
``test_outputs.npz``). Runs of the same config (``summary.json``'s name, e.g. several seeds) form
one model: its score on a set of videos is the mean of its seeds' scores. The first model is the
reference. Resampling the test videos with replacement (the same draw for every model) gives a 95%
percentile interval for each model's score and for the paired difference reference - model; a
difference counts as a win or a loss only when its interval excludes 0. Prints a Markdown table,
writes ``compare.json`` and ``compare.png`` (score against GFLOPs per video, with the reference's
early-exit curve) to ``--out`` (default: the reference run). Bad input prints one line, exits 2.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

import numpy as np
from absl import flags

from jaxtrain import cli
from jaxtrain.errors import DataError, UserError
from jaxtrain.metrics import write_atomic, write_json_atomic
from jaxvision import early_exit


def load_run(workdir: str) -> dict[str, Any]:
  """A run's summary and final-step test logits [N, C], labels and patch positions (if any)."""
  summary_path = os.path.join(workdir, "summary.json")
  outputs_path = os.path.join(workdir, "test_outputs.npz")
  for path in (summary_path, outputs_path):
    if not os.path.exists(path):
      raise DataError(f"{path}: missing (a finished python -m jaxvision.main run writes it)")
  with open(summary_path) as f:
    summary = json.load(f)
  try:
    with np.load(outputs_path, allow_pickle=False) as z:
      outputs = {k: z[k] for k in z.files}
  except (ValueError, OSError) as e:
    raise DataError(f"{outputs_path}: not a readable .npz ({e})") from e
  if "logits" not in outputs or "labels" not in outputs:
    raise DataError(f"{outputs_path}: expected arrays 'logits' and 'labels', found "
                    f"{sorted(outputs)}")
  ev = summary.get("eval", {})
  return {"dir": workdir, "name": summary.get("name", workdir), "seed": summary["config"]["seed"],
          "gflops_per_video": summary.get("gflops_per_video"), "eval": ev,
          "logits": outputs["logits"][:, -1], "labels": outputs["labels"],
          "multilabel": ev.get("metric") == "map"}


def group_runs(runs: Sequence[dict]) -> list[dict]:
  """Runs grouped by config name, in first-seen order; every run must share the test labels."""
  ref = runs[0]
  groups: dict[str, dict] = {}
  for r in runs:
    if r["labels"].shape != ref["labels"].shape or not np.array_equal(r["labels"], ref["labels"]):
      raise DataError(f"{r['dir']}: its test labels differ from {ref['dir']}'s (compare runs on "
                      "the same test split)")
    g = groups.setdefault(r["name"], {"name": r["name"], "runs": []})
    g["runs"].append(r)
  return list(groups.values())


def compare(runs: Sequence[dict], resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
  """Scores with 95% bootstrap intervals (over test videos) and paired differences to the first
  model. Returns {'metric', 'num_videos', 'models': [...]} (scores as fractions)."""
  groups = group_runs(runs)
  labels, multilabel = runs[0]["labels"], runs[0]["multilabel"]
  metric = "map" if multilabel else "top1"
  n = len(labels)

  def score(g, idx):
    return float(np.mean([early_exit.score(r["logits"][idx], labels[idx], metric)
                          for r in g["runs"]]))

  draws = np.random.default_rng(seed).integers(0, n, (resamples, n))
  full = np.arange(n)
  boot = np.array([[score(g, idx) for g in groups] for idx in draws])   # [resamples, models]
  ci = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]  # noqa: E731
  models = []
  for k, g in enumerate(groups):
    diff = boot[:, 0] - boot[:, k]
    lo, hi = ci(diff)
    hits = [r["eval"].get("patch_contains_digit") for r in g["runs"]]
    models.append({
        "name": g["name"], "runs": [r["dir"] for r in g["runs"]],
        "seeds": [r["seed"] for r in g["runs"]],
        "score": score(g, full), "score_ci": ci(boot[:, k]),
        "score_per_seed": [early_exit.score(r["logits"], labels, metric) for r in g["runs"]],
        "gflops_per_video": g["runs"][0]["gflops_per_video"],
        "patch_contains_digit": None if None in hits else float(np.mean(hits)),
        "reference_minus_this": score(groups[0], full) - score(g, full),
        "reference_minus_this_ci": [lo, hi],
        "verdict": ("reference" if k == 0 else "reference wins" if lo > 0
                    else "reference loses" if hi < 0 else "no significant difference")})
  return {"metric": metric, "num_videos": n, "resamples": resamples, "models": models}


def table(result: dict) -> str:
  unit = "mAP" if result["metric"] == "map" else "top-1"
  rows = [f"| model | seeds | GFLOPs/video | test {unit} (95% CI) | reference - model (95% CI) "
          "| patch on digit | verdict |", "|---|---|---|---|---|---|---|"]
  for m in result["models"]:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    hit = "-" if m["patch_contains_digit"] is None else pct(m["patch_contains_digit"]) + "%"
    rows.append(
        f"| {m['name']} | {len(m['seeds'])} | {m['gflops_per_video']:.2f} | {pct(m['score'])}% "
        f"({pct(m['score_ci'][0])}, {pct(m['score_ci'][1])}) | "
        + ("-" if m["verdict"] == "reference" else
           f"{100 * m['reference_minus_this']:+.1f} ({100 * m['reference_minus_this_ci'][0]:+.1f}, "
           f"{100 * m['reference_minus_this_ci'][1]:+.1f})")
        + f" | {hit} | {m['verdict']} |")
  return "\n".join(rows)


def plot(result: dict, early_exit_points: Sequence[dict] | None, path: str) -> None:
  """Score against GFLOPs per video with 95% intervals; the reference's early-exit curve."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(6.0, 4.2))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  if early_exit_points:
    pts = sorted(early_exit_points, key=lambda p: p["avg_cost"])
    ax.plot([p["avg_cost"] for p in pts], [100 * p["score"] for p in pts], "-", color="0.6",
            label=f"{result['models'][0]['name']}: early exit (first run)")
  for m in result["models"]:
    lo, hi = m["score_ci"]
    ax.errorbar([m["gflops_per_video"]], [100 * m["score"]],
                yerr=[[100 * (m["score"] - lo)], [100 * (hi - m["score"])]], fmt="o", capsize=4,
                label=m["name"])
  ax.set_xlabel("GFLOPs (multiply-accumulates) / video")
  ax.set_ylabel("test mAP (%)" if result["metric"] == "map" else "test top-1 accuracy (%)")
  ax.set_title(f"{result['num_videos']} test videos, 95% bootstrap intervals", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  fig.tight_layout()
  write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))


def _define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_list("runs", None, "finished run workdirs; the first config is the reference",
                    flag_values=fv)
  flags.DEFINE_string("out", "", "output folder (default: the first run)", flag_values=fv)
  flags.DEFINE_integer("resamples", 10000, "bootstrap resamples of the test videos",
                       flag_values=fv)


def _run(fv: flags.FlagValues) -> None:
  if not fv.runs or len(fv.runs) < 2:
    raise UserError("expected --runs=RUN_A,RUN_B[,...] (at least two finished runs)")
  if fv.resamples < 100:
    raise UserError(f"--resamples={fv.resamples}: expected at least 100")
  result = compare([load_run(d) for d in fv.runs], fv.resamples)
  out = fv.out or fv.runs[0]
  curve_path = os.path.join(fv.runs[0], "early_exit.json")
  points = None
  if os.path.exists(curve_path):
    with open(curve_path) as f:
      points = json.load(f)["points"]
  write_json_atomic(os.path.join(out, "compare.json"), result)
  plot(result, points, os.path.join(out, "compare.png"))
  print(table(result))
  print(json.dumps({"compare.json": os.path.join(out, "compare.json"),
                    "compare.png": os.path.join(out, "compare.png")}))


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run_tool(_run, _define_flags, argv=argv, prog="python -m jaxvision.compare",
                      doc=__doc__)

if __name__ == "__main__":
  sys.exit(main())
