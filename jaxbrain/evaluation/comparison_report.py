"""The benchmark's numbers from its cells: intervals, paired contrasts, the table and the plot.

Cells (``jaxbrain.compare``) hold per-item scores: per held-out window (mean over its mask draws) for
reconstruction, per query for fingerprinting, per subject for the labelled tasks. Items are pooled
over folds and resampled by ``statistics.resample_weights`` (subjects, then their items); every
method is scored on the same resamples, so differences are paired.
"""
from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np

from jaxbrain.evaluation import metrics, statistics
from jaxtrain import metrics as metrics_lib

FAMILIES = ("brainmae", "stmae")  # model families a row may name; config.<family> holds its settings


def row_family(config: ml_collections.ConfigDict, row: str) -> str:
  """The model family of ``config.rows[row]``: its 'name' override, 'brainmae' by default."""
  return str(config.rows[row].get("name", "brainmae"))


def rows_of(config: ml_collections.ConfigDict, family: str) -> list[str]:
  """The rows of one family, in config order."""
  return [r for r in config.rows if row_family(config, r) == family]


def _pool(cells: dict, methods: list[str], key: str) -> dict[str, np.ndarray]:
  folds = sorted(cells)
  return {m: np.concatenate([np.asarray(cells[f][m][key], np.float64) for f in folds])
          for m in methods}


def _contrast(a: np.ndarray, b: np.ndarray, w: np.ndarray, level: float, lower_is_better: bool,
              relative: bool) -> dict:
  """a - b (and, with ``relative``, 100 (a - b) / b) with intervals and the verdict of a over b."""
  return statistics.paired_contrast(a, b, w, level, lower_is_better=lower_is_better,
                                    relative=relative)


def reconstruction_summary(config: ml_collections.ConfigDict, cells: dict, set_name: str) -> dict:
  """MSE of every method on one held-out set, and every model row against every baseline."""
  p = config.protocol
  baselines, rows = list(config.baselines), rows_of(config, "brainmae")
  key = f"mse/{set_name}"
  values = _pool(cells, baselines + rows, key)
  groups = np.concatenate([cells[f]["items"][key] for f in sorted(cells)])
  w = statistics.resample_weights(groups, int(p.bootstrap), seed=int(config.seed))
  level = float(p.level)
  methods = {}
  for m, v in values.items():
    fold_mean = lambda k: float(np.mean([float(cells[f][m].get(k, np.nan)) for f in cells]))  # noqa: E731
    methods[m] = {"mse": statistics.interval(v.mean(), statistics.resampled_means(v, w), level),
                  "val_mse": fold_mean("val_mse"), "train_mse": fold_mean("train_mse")}
  bar = min(baselines, key=lambda b: methods[b]["val_mse"])  # chosen on validation data
  contrasts = {r: {b: _contrast(values[r], values[b], w, level, True, True) for b in baselines}
               for r in rows}
  return {"methods": methods, "bar": bar, "contrasts": contrasts,
          "num_windows": int(len(groups)), "num_subjects": int(len(np.unique(groups)))}


def fingerprint_summary(config: ml_collections.ConfigDict, cells: dict, k: str) -> dict:
  """Identification accuracy of every representation (every row; '<row>_untrained' for the rows
  scored untrained too; raw FC), each row against raw FC and against its untrained encoder."""
  p = config.protocol
  key = f"fp/{k}"
  folds = sorted(cells)
  values = _pool(cells, list(config.rows) + ["raw_fc"], key)
  twins = [r for r in config.rows if "untrained" in cells[folds[0]][r]]
  for r in twins:
    values[f"{r}_untrained"] = np.concatenate([np.asarray(cells[f][r]["untrained"][key], np.float64)
                                               for f in folds])
  groups = np.concatenate([cells[f]["items"][key] for f in folds])
  w = statistics.resample_weights(groups, int(p.bootstrap), seed=int(config.seed))
  level = float(p.level)
  chance = float(np.mean([1.0 / len(np.unique(cells[f]["items"][key])) for f in cells]))
  contrasts = {r: {"raw_fc": _contrast(values[r], values["raw_fc"], w, level, False, False)}
               for r in values if r != "raw_fc"}
  for r in twins:
    contrasts[r]["untrained"] = _contrast(values[r], values[f"{r}_untrained"], w, level, False,
                                          False)
  return {"methods": {m: statistics.interval(v.mean(), statistics.resampled_means(v, w), level)
                      for m, v in values.items()},
          "contrasts": contrasts, "chance": chance, "num_queries": int(len(groups))}


FC_METRICS = ("fc_mse", "fc_bce")  # masked FC reconstruction: FC-row MSE, edge BCE


def fc_reconstruction_summary(config: ml_collections.ConfigDict, cells: dict, set_name: str
                              ) -> dict:
  """Per ST-MAE row, on one held-out set: the row, its untrained encoder and the training-mean
  graph (same windows and masks), each metric with intervals; the row minus each of the other two."""
  p = config.protocol
  level = float(p.level)
  folds = sorted(cells)
  out = {}
  for r in rows_of(config, "stmae"):
    groups = np.concatenate([cells[f][r]["items"][f"fc/{set_name}"] for f in folds])
    w = statistics.resample_weights(groups, int(p.bootstrap), seed=int(config.seed))
    methods: dict = {"model": {}, "untrained": {}, "mean_graph": {}}
    contrasts: dict = {"untrained": {}, "mean_graph": {}}
    for metric in FC_METRICS:
      key = f"{metric}/{set_name}"
      v = {m: np.concatenate([np.asarray((cells[f][r] if m == "model" else cells[f][r][m])[key],
                                         np.float64) for f in folds]) for m in methods}
      for m in methods:
        methods[m][metric] = statistics.interval(v[m].mean(), statistics.resampled_means(v[m], w),
                                                 level)
      for m in contrasts:
        contrasts[m][metric] = _contrast(v["model"], v[m], w, level, True, True)
    out[r] = {"methods": methods, "contrasts": contrasts, "num_windows": int(len(groups)),
              "num_subjects": int(len(np.unique(groups))),
              "val_fc_mse": float(np.mean([float(cells[f][r]["val_fc_mse"]) for f in folds]))}
  return out


def _metric_samples(task: str, y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> dict:
  """Each metric's value and its resampled values (subjects drawn with the counts ``w``)."""
  out = {}
  if task == "classification":
    correct = (np.argmax(pred, axis=1) == y).astype(np.float64)
    out["accuracy"] = (correct.mean(), statistics.resampled_means(correct, w))
    fn = lambda idx: metrics.auroc(y[idx], pred[idx])  # noqa: E731
    name = "auroc"
  else:
    err = np.abs(pred.reshape(-1) - y)
    out["mae"] = (err.mean(), statistics.resampled_means(err, w))
    fn = lambda idx: float(np.corrcoef(y[idx], pred.reshape(-1)[idx])[0, 1])  # noqa: E731
    name = "pearson_r"
  samples = []
  for counts in w.astype(np.int64):
    idx = np.repeat(np.arange(len(y)), counts)
    try:
      samples.append(fn(idx))
    except ValueError:  # a resample with one class only: no AUROC
      samples.append(np.nan)
  out[name] = (fn(np.arange(len(y))), np.asarray(samples))
  return out


def labelled_summary(config: ml_collections.ConfigDict, labelled: dict) -> dict:
  """Per target: every method's metrics with intervals over subjects, and each pretrained
  encoder's method ('<row>_pretrained_<mode>') minus every other method."""
  p = config.protocol
  level = float(p.level)
  out = {}
  for target, cell in labelled.items():
    task = str(cell["task"])
    y = np.asarray(cell["label"])
    w = statistics.resample_weights(np.asarray(cell["subject"]), min(int(p.bootstrap), 2000),
                                    seed=int(config.seed))
    per_method = {m: _metric_samples(task, y, np.asarray(v), w)
                  for m, v in cell["predictions"].items()}
    methods = {m: {k: statistics.interval(est, s[np.isfinite(s)], level) for k, (est, s) in d.items()}
               for m, d in per_method.items()}
    main = "accuracy" if task == "classification" else "mae"
    refs = [m for m in per_method if "pretrained" in m.split("_")]
    contrasts: dict = {}
    for ref in refs:
      for m in per_method:
        if m == ref:
          continue
        (ea, sa), (eb, sb) = per_method[ref][main], per_method[m][main]
        diff = statistics.interval(ea - eb, sa - sb, level)
        contrasts.setdefault(ref, {})[m] = {
            "diff": diff, "verdict": statistics.verdict(diff, lower_is_better=main == "mae")}
    out[target] = {"task": task, "num_subjects": int(len(y)), "methods": methods,
                   "references": refs, "metric": main, "contrasts": contrasts}
  return out


def summarise(config: ml_collections.ConfigDict, splits: list, cells: dict,
              labelled: dict | None, ids: list[str]) -> dict:
  """All sections of comparison.json."""
  sets = ["native", *[f"tr{t:g}" for t in config.cross_tr]]
  return {
      "config": config.to_dict(),
      "folds": [{k: list(v) for k, v in s.items()} for s in splits],
      "subjects": list(ids),
      "reconstruction": {s: reconstruction_summary(config, cells, s) for s in sets},
      "fc_reconstruction": ({s: fc_reconstruction_summary(config, cells, s) for s in sets}
                            if rows_of(config, "stmae") else {}),
      "fingerprint": {f"{k}seg": fingerprint_summary(config, cells, f"{k}seg")
                      for k in config.fingerprint_segments},
      "labelled": None if labelled is None else labelled_summary(config, labelled),
  }


# ---------------------------------------------------------------------------------------------------
# Table and plot.

def _ci(c: dict, fmt: str = "{:.3f}") -> str:
  return f"{fmt.format(c['mean'])} ({fmt.format(c['lo'])}, {fmt.format(c['hi'])})"


def _set_title(name: str, tr: float = 0.72) -> str:
  """A held-out set's column title: the subjects' TR (summary['tr_s']), or a cross-TR set."""
  return f"native TR {tr:g} s" if name == "native" else f"TR {name[2:]} s, resampled back"


def markdown(summary: dict) -> str:
  """comparison.md: the reconstruction, contrast, fingerprinting and labelled tables."""
  rec = summary["reconstruction"]
  sets = list(rec)
  tr = float(summary.get("tr_s", 0.72))
  lines = ["### Masked reconstruction of held-out subjects (MSE, lower is better; 95% CI)", "",
           "| method | " + " | ".join(_set_title(s, tr) for s in sets)
           + " | validation MSE | training MSE |", "|---" * (len(sets) + 3) + "|"]
  for m, v in rec["native"]["methods"].items():
    lines.append(f"| {m} | " + " | ".join(_ci(rec[s]["methods"][m]["mse"]) for s in sets)
                 + f" | {v['val_mse']:.3f} | {v['train_mse']:.3f} |")
  bar = rec["native"]["bar"]
  n = rec["native"]
  lines += ["", f"{n['num_windows']} held-out windows of {n['num_subjects']} subjects. "
            f"The bar (the baseline with the lowest validation error): **{bar}**. Validation and "
            "training MSE: means over folds (validation subjects; training windows, masked).", "",
            f"### Each model row minus the bar ({bar}): relative MSE change in % (95% CI), verdict",
            "", "| row | " + " | ".join(_set_title(s, tr) for s in sets) + " |",
            "|---" * (len(sets) + 1) + "|"]
  for r in rec["native"]["contrasts"]:
    cells = []
    for s in sets:
      c = rec[s]["contrasts"][r][rec[s]["bar"]]
      cells.append(f"{_ci(c['relative_pct'], '{:+.1f}')} {c['verdict']}")
    lines.append(f"| {r} | " + " | ".join(cells) + " |")
  fcr = summary.get("fc_reconstruction") or {}
  for r in (fcr.get("native") or {}):
    n = fcr["native"][r]
    lines += ["", f"### Masked reconstruction of held-out dynamic FC: {r} (lower is better; 95% CI)",
              "", "| method | " + " | ".join(f"{m}, {_set_title(s, tr)}" for s in fcr
                                             for m in ("FC-row MSE", "edge BCE")) + " |",
              "|---" * (2 * len(fcr) + 1) + "|"]
    for m in n["methods"]:
      lines.append(f"| {r if m == 'model' else f'{r} {m}'} | " + " | ".join(
          _ci(fcr[s][r]["methods"][m][k]) for s in fcr for k in FC_METRICS) + " |")
    lines += ["", f"{r} minus each (relative change in %, 95% CI, verdict):", "",
              "| minus | " + " | ".join(f"{m}, {_set_title(s, tr)}" for s in fcr
                                        for m in ("FC-row MSE", "edge BCE")) + " |",
              "|---" * (2 * len(fcr) + 1) + "|"]
    for m in n["contrasts"]:
      lines.append(f"| {m} | " + " | ".join(
          f"{_ci(c['relative_pct'], '{:+.1f}')} {c['verdict']}"
          for s in fcr for c in (fcr[s][r]["contrasts"][m][k] for k in FC_METRICS)) + " |")
    lines += ["", f"{n['num_windows']} held-out windows of {n['num_subjects']} subjects, each "
              "masked as in pretraining (ROIs in every FC window and a block of FC windows); "
              "mean_graph predicts every hidden cell with the pretraining windows' mean FC and "
              "edge frequency."]
  fp = summary["fingerprint"]
  if fp:
    keys = list(fp)
    lines += ["", "### Fingerprinting held-out subjects from short windows (accuracy; 95% CI)", "",
              "| representation | " + " | ".join(f"{k[:-3]} segment(s) of 15 s" for k in keys) + " |",
              "|---" * (len(keys) + 1) + "|"]
    for m in fp[keys[0]]["methods"]:
      row = []
      for k in keys:
        c = fp[k]["contrasts"].get(m, {})
        row.append(_ci(fp[k]["methods"][m]) + "".join(
            f"; vs {'raw FC' if o == 'raw_fc' else o} {v['verdict']}" for o, v in c.items()))
      lines.append(f"| {m} | " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Chance: " + ", ".join(f"{fp[k]['chance']:.2f} ({fp[k]['num_queries']} queries)"
                                        for k in keys) + ".")
  lab = summary.get("labelled")
  if lab:
    lines += ["", "### Synthetic labelled cohort (out-of-fold, per subject; 95% CI over subjects)"]
    for target, t in lab.items():
      names = list(next(iter(t["methods"].values())))
      refs = t["references"]
      lines += ["", f"**{target}** ({t['task']}, {t['num_subjects']} subjects; differences in "
                f"{t['metric']})", "",
                "| method | " + " | ".join(names + [f"{r} minus method" for r in refs]) + " |",
                "|---" * (len(names) + len(refs) + 1) + "|"]
      for m, d in t["methods"].items():
        diffs = [t["contrasts"][r].get(m) for r in refs]
        lines.append(f"| {m} | " + " | ".join(
            [_ci(d[k]) for k in names]
            + ["" if c is None else f"{_ci(c['diff'])} {c['verdict']}" for c in diffs]) + " |")
  lines += ["", f"Wall time: {metrics_lib.format_duration(summary.get('wall_time_s', 0.0))}."]
  return "\n".join(lines) + "\n"


def plot(path: str, summary: dict) -> None:
  """comparison.png: bars with 95% intervals for each reconstruction set and fingerprint length."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  tr = float(summary.get("tr_s", 0.72))
  panels = [(f"Reconstruction MSE, {_set_title(s, tr)}", {m: v["mse"] for m, v in r["methods"].items()})
            for s, r in summary["reconstruction"].items()]
  panels += [(f"Dynamic-FC reconstruction MSE, {_set_title(s, tr)}",
              {f"{r} {m}": v["fc_mse"] for r, rv in rs.items() for m, v in rv["methods"].items()})
             for s, rs in (summary.get("fc_reconstruction") or {}).items() if s == "native"]
  panels += [(f"Fingerprinting accuracy, {k[:-3]} x 15 s", dict(f["methods"]))
             for k, f in summary["fingerprint"].items()]
  fig = Figure(figsize=(4.2 * len(panels), 4.2))
  FigureCanvasAgg(fig)
  for i, (title, vals) in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), i + 1)
    names = list(vals)
    mean = np.array([vals[n]["mean"] for n in names])
    err = np.array([[vals[n]["mean"] - vals[n]["lo"] for n in names],
                    [vals[n]["hi"] - vals[n]["mean"] for n in names]])
    ax.barh(np.arange(len(names)), mean, xerr=err, color="tab:blue", alpha=0.75, capsize=3)
    ax.set_yticks(np.arange(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    lo = min(vals[n]["lo"] for n in names)
    ax.set_xlim(left=max(0.0, lo - 0.1 * (max(vals[n]["hi"] for n in names) - lo)))
  fig.tight_layout()
  metrics_lib.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))


def write(workdir: str, config: Any, summary: dict) -> None:
  """comparison.json, comparison.md and comparison.png in ``workdir`` (each written atomically)."""
  metrics_lib.write_json_atomic(os.path.join(workdir, "comparison.json"), summary)
  md = markdown(summary)
  metrics_lib.write_atomic(os.path.join(workdir, "comparison.md"), lambda f: f.write(md), mode="w")
  plot(os.path.join(workdir, "comparison.png"), summary)
