"""The DSD sweep launcher: n*(eps) over models x k x d (x noise constant), resumable cell by cell.

  python -m theory.sweep --config=configs/dsd.py[:variant] --workdir=DIR [--config.sc.eps=0.05 ...]

Each finished cell is written atomically to DIR/cells/<cell>.json, so a killed sweep resumes where it
stopped without redoing finished cells. At the end: DIR/results.json and results.csv (one row per
cell), DIR/nstar.png (n* against k and against d on log-log axes, one line per model, the theorem's
slope drawn dashed beside it) and DIR/summary.json (per model: fitted slopes in k and d with bootstrap
intervals, theory slopes, n* per cell -- 'not reached' where the grid never got to eps -- and the
LCN/CNN and FCN/LCN sample ratios).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from jaxtrain import config as config_lib
from jaxtrain.metrics import Progress, write_json_atomic, write_summary
from theory import bounds, dsd, gd, models
from theory import sample_complexity as sc

SIGMA_RULES = ("c/sqrt(k)", "const")


def _err(field: str, value: Any, expected: str) -> ValueError:
  return ValueError(f"dsd sweep config: {field} = {value!r}; expected {expected}")


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the field for any bad setting (before any work is done)."""
  for name in ("ks", "ds"):
    vals = tuple(cfg[name])
    if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
      raise _err(name, vals, "a non-empty list of integers >= 1 (k < 1 or d < 1 is not a DSD)")
  for m in cfg.models:
    if m not in models.MODELS:
      raise _err("models", tuple(cfg.models), f"a subset of {models.MODELS}")
  if cfg.design not in ("cross", "grid"):
    raise _err("design", cfg.design, "'cross' or 'grid'")
  if cfg.design == "cross":
    if cfg.k_ref not in cfg.ks:
      raise _err("k_ref", cfg.k_ref, f"one of ks {tuple(cfg.ks)}")
    if cfg.d_ref not in cfg.ds:
      raise _err("d_ref", cfg.d_ref, f"one of ds {tuple(cfg.ds)}")
  if not cfg.data.cs or any(not (isinstance(c, (int, float)) and c > 0) for c in cfg.data.cs):
    raise _err("data.cs", tuple(cfg.data.cs), "a non-empty list of numbers > 0")
  if cfg.data.sigma_rule not in SIGMA_RULES:
    raise _err("data.sigma_rule", cfg.data.sigma_rule, f"one of {SIGMA_RULES}")
  if not isinstance(cfg.sc.eps, (int, float)) or not 0 < cfg.sc.eps < 0.5:
    raise _err("sc.eps", cfg.sc.eps, "a target test error in (0, 0.5)")
  if cfg.sc.num_seeds < 1 or cfg.sc.points < 2 or cfg.sc.n_boot < 1:
    raise _err("sc.num_seeds/points/n_boot", (cfg.sc.num_seeds, cfg.sc.points, cfg.sc.n_boot),
               "num_seeds >= 1, points >= 2, n_boot >= 1")
  if not 0 < cfg.sc.ci < 1:
    raise _err("sc.ci", cfg.sc.ci, "a coverage in (0, 1)")
  if cfg.gd.b_units not in ("sigma", "absolute"):
    raise _err("gd.b_units", cfg.gd.b_units, "'sigma' or 'absolute'")
  for m in cfg.models:
    lo, hi = cfg.sc.n_range[m]
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo < hi):
      raise _err(f"sc.n_range.{m}", (lo, hi), "two integers 1 <= lo < hi")
    if m not in cfg.gd.b:
      raise _err("gd.b", dict(cfg.gd.b), f"a threshold for model {m!r}")
  gd_config(cfg, "cnn", 1.0)  # checks loss, activation, preset, projection


def sigma_of(cfg: ml_collections.ConfigDict, c: float, k: int) -> float:
  return dsd.default_sigma(k, c) if cfg.data.sigma_rule == "c/sqrt(k)" else float(c)


def gd_config(cfg: ml_collections.ConfigDict, model: str, sigma: float) -> gd.GDConfig:
  b = float(cfg.gd.b[model]) * (sigma if cfg.gd.b_units == "sigma" else 1.0)
  section = dict(cfg.gd.to_dict(), b=b)
  return gd.from_config(section)


def n_grid(cfg: ml_collections.ConfigDict, model: str) -> tuple[int, ...]:
  lo, hi = cfg.sc.n_range[model]
  return tuple(int(n) for n in np.unique(np.round(np.geomspace(lo, hi, cfg.sc.points)).astype(int)))


def design_cells(cfg: ml_collections.ConfigDict) -> list[tuple[int, int]]:
  if cfg.design == "grid":
    return [(k, d) for k in cfg.ks for d in cfg.ds]
  cells = [(k, cfg.d_ref) for k in cfg.ks] + [(cfg.k_ref, d) for d in cfg.ds if d != cfg.d_ref]
  return sorted(set(cells))


def all_cells(cfg: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  out = []
  for c in cfg.data.cs:
    for model in cfg.models:
      for k, d in design_cells(cfg):
        out.append({"id": f"{model}_c{c:g}_k{k}_d{d}", "model": model, "c": float(c), "k": k, "d": d})
  return out


def _cell_settings(cfg: ml_collections.ConfigDict, cell: dict[str, Any]) -> dict[str, Any]:
  """Everything a cell's result depends on (compared on resume)."""
  sigma = sigma_of(cfg, cell["c"], cell["k"])
  return {"model": cell["model"], "k": cell["k"], "d": cell["d"], "c": cell["c"], "sigma": sigma,
          "data": cfg.data.to_dict(), "gd": cfg.gd.to_dict(), "eps": cfg.sc.eps,
          "num_seeds": cfg.sc.num_seeds, "n_grid": list(n_grid(cfg, cell["model"])),
          "n_boot": cfg.sc.n_boot, "ci": cfg.sc.ci, "seed": cfg.seed}


def _canon(obj: Any) -> str:
  return json.dumps(json.loads(json.dumps(obj, default=list)), sort_keys=True)


def run_cell(cfg: ml_collections.ConfigDict, cell: dict[str, Any]) -> dict[str, Any]:
  """Computes one cell: the error curve over seeds x n-grid (one compiled call) and n*(eps)."""
  settings = _cell_settings(cfg, cell)
  problem = sc.Problem(cell["model"], cell["k"], cell["d"], settings["sigma"],
                       cfg.data.noise_free_signal, cfg.data.wstar, cfg.data.n_test)
  gcfg = gd_config(cfg, cell["model"], settings["sigma"])
  grid = n_grid(cfg, cell["model"])
  t0 = time.perf_counter()
  base_seed = cfg.seed  # the same seed indices in every cell
  errors = sc.error_curve(problem, gcfg, grid, cfg.sc.num_seeds, base_seed,
                          cfg.sc.num_devices or None)
  wall = time.perf_counter() - t0
  est = sc.estimate(errors, grid, cfg.sc.eps, cfg.sc.n_boot, cfg.sc.ci, seed=cfg.seed)
  return {"id": cell["id"], "settings": settings, "b": gcfg.b_eval, "wall_s": wall,
          "errors": errors.tolist(), **est}


def _cell_path(workdir: str, cell_id: str) -> str:
  return os.path.join(workdir, "cells", cell_id + ".json")


def load_cell(cfg: ml_collections.ConfigDict, workdir: str, cell: dict[str, Any]) -> dict | None:
  path = _cell_path(workdir, cell["id"])
  if not os.path.exists(path):
    return None
  with open(path) as f:
    res = json.load(f)
  if _canon(res.get("settings")) != _canon(_cell_settings(cfg, cell)):
    raise ValueError(f"{path} was computed with different settings than this config; use a new "
                     f"--workdir or delete that file")
  return res


def _value(v: Any) -> float:
  return float(v) if isinstance(v, (int, float)) else math.nan


def fit_model(results: list[dict[str, Any]], ci: float) -> dict[str, Any]:
  """Slopes of log n* in log k and log d over a model's reached cells, with bootstrap intervals."""
  ok = [r for r in results if r["status"] == "ok"]
  out: dict[str, Any] = {"cells_used": len(ok), "cells_total": len(results),
                         "cells_not_reached": [r["id"] for r in results if r["status"] != "ok"]}
  ks = [r["settings"]["k"] for r in ok]
  ds = [r["settings"]["d"] for r in ok]
  if len(ok) < 2 or (len(set(ks)) < 2 and len(set(ds)) < 2):
    out.update(slope_k=None, slope_d=None, note="fewer than 2 reached cells: no fit")
    return out
  _, sk, sd = bounds.fit_loglog(ks, ds, [r["n_star"] for r in ok])
  boots = np.array([[b if isinstance(b, float) else math.nan for b in r["boot_log_n_star"]]
                    for r in ok])  # [cells, n_boot] of log n*; nan = not reached / below grid
  valid = np.all(np.isfinite(boots), axis=0)
  fits = np.array([bounds.fit_loglog(ks, ds, np.exp(boots[:, j]))[1:] for j in np.nonzero(valid)[0]])
  q = [(1 - ci) / 2, (1 + ci) / 2]
  for i, name in enumerate(("k", "d")):
    slope = (sk, sd)[i]
    out[f"slope_{name}"] = None if math.isnan(slope) else slope
    if math.isnan(slope) or len(fits) == 0:
      out[f"slope_{name}_ci"] = None
    else:
      out[f"slope_{name}_ci"] = np.quantile(fits[:, i], q).tolist()
  out["boot_valid_frac"] = float(valid.mean())
  return out


def ratios(by_model: dict[str, list[dict[str, Any]]], num: str, den: str) -> dict[str, Any]:
  """n*(num) / n*(den) per (k, d) cell where both were reached, and their geometric mean."""
  a = {(r["settings"]["k"], r["settings"]["d"]): r for r in by_model.get(num, [])}
  b = {(r["settings"]["k"], r["settings"]["d"]): r for r in by_model.get(den, [])}
  per = {}
  for key in sorted(set(a) & set(b)):
    ra, rb = a[key], b[key]
    if ra["status"] == "ok" and rb["status"] == "ok":
      per[f"k{key[0]}_d{key[1]}"] = ra["n_star"] / rb["n_star"]
    else:
      per[f"k{key[0]}_d{key[1]}"] = f"{num}: {ra['n_star']}, {den}: {rb['n_star']}"
  nums = [v for v in per.values() if isinstance(v, float)]
  return {"per_cell": per, "geomean": float(np.exp(np.mean(np.log(nums)))) if nums else None,
          "min": min(nums) if nums else None, "max": max(nums) if nums else None}


def write_csv(path: str, results: list[dict[str, Any]]) -> None:
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["model", "c", "k", "d", "sigma", "n_star", "status", "ci_low", "ci_high", "wall_s"])
  for r in results:
    s = r["settings"]
    w.writerow([s["model"], s["c"], s["k"], s["d"], f"{s['sigma']:.6g}", r["n_star"], r["status"],
                r["ci_low"], r["ci_high"], f"{r['wall_s']:.3f}"])
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(buf.getvalue())
  os.replace(tmp, path)


COLORS = {"cnn": "tab:blue", "lcn": "tab:orange", "fcn": "tab:green"}


def plot(path: str, cfg: ml_collections.ConfigDict, results: list[dict[str, Any]]) -> None:
  """n* vs k (at d_ref) and vs d (at k_ref), log-log, one line per model and noise constant,
  theorem slopes dashed through each line's geometric centre; not-reached cells as open triangles."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for ax, (axis, fixed_name, fixed) in zip(axes, (("k", "d", cfg.d_ref), ("d", "k", cfg.k_ref))):
    for c in cfg.data.cs:
      for model in cfg.models:
        rows = sorted((r for r in results if r["settings"]["model"] == model and r["settings"]["c"] == c
                       and r["settings"][fixed_name] == fixed), key=lambda r: r["settings"][axis])
        ok = [r for r in rows if r["status"] == "ok"]
        label = model.upper() + (f" c={c:g}" if len(cfg.data.cs) > 1 else "")
        if ok:
          xs = np.array([r["settings"][axis] for r in ok], float)
          ys = np.array([r["n_star"] for r in ok])
          lo = np.array([_value(r["ci_low"]) for r in ok])
          hi = np.array([_value(r["ci_high"]) for r in ok])
          yerr = np.stack([ys - np.where(np.isnan(lo), ys, lo), np.where(np.isnan(hi), ys, hi) - ys])
          ax.errorbar(xs, ys, yerr=np.maximum(yerr, 0), marker="o", color=COLORS[model], label=label,
                      capsize=2)
          th = np.array([bounds.model_rate(model, *((x, fixed) if axis == "k" else (fixed, x)),
                                           sigma=sigma_of(cfg, c, int(x) if axis == "k" else fixed))
                         for x in xs])
          th *= np.exp(np.mean(np.log(ys)) - np.mean(np.log(th)))
          ax.plot(xs, th, "--", color=COLORS[model], alpha=0.6, lw=1)
        miss = [r for r in rows if r["status"] == "not reached"]
        if miss:
          top = max(n_grid(cfg, model))
          ax.scatter([r["settings"][axis] for r in miss], [top] * len(miss), marker="^",
                     facecolors="none", edgecolors=COLORS[model], label=f"{label} not reached")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(axis)
    ax.set_ylabel(f"n*(eps={cfg.sc.eps:g})")
    ax.set_title(f"n* vs {axis} at {fixed_name}={fixed}; dashed: theorem rate x sigma^2", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
  if axes[0].get_legend_handles_labels()[0]:
    axes[0].legend(fontsize=7)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=80)
  plt.close(fig)
  os.replace(tmp, path)


def summarize(cfg: ml_collections.ConfigDict, results: list[dict[str, Any]], wall_s: float,
              counts: dict[str, int]) -> dict[str, Any]:
  cells = design_cells(cfg)
  per_c = {}
  for c in cfg.data.cs:
    by_model = {m: [r for r in results if r["settings"]["model"] == m and r["settings"]["c"] == c]
                for m in cfg.models}
    fits = {}
    for m, rs in by_model.items():
      fits[m] = fit_model(rs, cfg.sc.ci)
      fits[m]["theory"] = bounds.theory_slopes(m, cells, lambda k: sigma_of(cfg, c, k))
      fits[m]["n_star"] = {f"k{r['settings']['k']}_d{r['settings']['d']}": r["n_star"] for r in rs}
      fits[m]["n_star_ci"] = {f"k{r['settings']['k']}_d{r['settings']['d']}": [r["ci_low"], r["ci_high"]]
                              for r in rs}
    per_c[f"c={c:g}"] = {"models": fits, "ratio_lcn_over_cnn": ratios(by_model, "lcn", "cnn"),
                         "ratio_fcn_over_lcn": ratios(by_model, "fcn", "lcn")}
  return {"name": cfg.name, "eps": cfg.sc.eps, "sigma_rule": cfg.data.sigma_rule,
          "design": cfg.design, "cells": [list(x) for x in cells], "results": per_c,
          "wall_time_s": wall_s, **counts, "config": cfg.to_dict()}


def run_sweep(cfg: ml_collections.ConfigDict, workdir: str,
              on_cell: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
  """Runs (or resumes) the sweep in ``workdir``; returns the summary dict (also in summary.json)."""
  validate(cfg)
  t0 = time.perf_counter()
  os.makedirs(os.path.join(workdir, "cells"), exist_ok=True)
  cells = all_cells(cfg)
  results, todo = {}, []
  for cell in cells:
    res = load_cell(cfg, workdir, cell)
    if res is None:
      todo.append(cell)
    else:
      results[cell["id"]] = res
  loaded = len(results)
  prog = Progress(len(cells), desc=cfg.name, unit="cell", start=loaded)
  prog.update(loaded, force=True)
  for cell in todo:
    res = run_cell(cfg, cell)
    write_json_atomic(_cell_path(workdir, cell["id"]), res)
    results[cell["id"]] = res
    n_star = res["n_star"] if isinstance(res["n_star"], float) else math.nan
    prog.update(len(results), force=True, n_star=n_star, cell_s=res["wall_s"])
    if on_cell is not None:
      on_cell(res)
  ordered = [results[c["id"]] for c in cells]
  write_json_atomic(os.path.join(workdir, "results.json"), ordered)
  write_csv(os.path.join(workdir, "results.csv"), ordered)
  plot(os.path.join(workdir, "nstar.png"), cfg, ordered)
  summary = summarize(cfg, ordered, time.perf_counter() - t0,
                      {"cells_computed": len(todo), "cells_resumed": loaded})
  return write_summary(workdir, **summary)


def print_table(summary: dict[str, Any], stream=sys.stdout) -> None:
  for ckey, block in summary["results"].items():
    stream.write(f"[{ckey}, eps={summary['eps']}] model  slope_k [CI]            slope_d [CI]"
                 f"            theory (k, d) nominal | this sigma rule\n")
    for m, f in block["models"].items():
      def fmt(name):
        s, ci = f.get(f"slope_{name}"), f.get(f"slope_{name}_ci")
        if s is None:
          return "n/a".ljust(24)
        return (f"{s:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{s:.2f}").ljust(24)
      th = f["theory"]
      stream.write(f"  {m:5s} {fmt('k')} {fmt('d')} ({th['nominal_slope_k']:.0f}, "
                   f"{th['nominal_slope_d']:.0f}) | ({th['slope_k']:.2f}, {th['slope_d']:.2f})"
                   f"  not reached: {len(f['cells_not_reached'])}\n")
    for name in ("ratio_lcn_over_cnn", "ratio_fcn_over_lcn"):
      r = block[name]
      if r["geomean"] is not None:
        stream.write(f"  {name}: geomean {r['geomean']:.2f} (min {r['min']:.2f}, max {r['max']:.2f})\n")
      else:
        stream.write(f"  {name}: no cell where both were reached\n")


def main(argv: Sequence[str] | None = None) -> int:
  """The command line (see the module docstring); returns the exit code."""
  from jaxtrain import cli

  def sweep(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    try:
      validate(cfg)
    except ValueError as e:  # a bad setting: one line, exit 2, before any work
      raise config_lib.ConfigError(str(e)) from e
    summary = run_sweep(cfg, workdir)
    print_table(summary)
    print(f"wall time {summary['wall_time_s']:.1f} s ({summary['cells_computed']} cells computed, "
          f"{summary['cells_resumed']} resumed); plot {os.path.join(workdir, 'nstar.png')}")
    return summary

  return cli.run(sweep, argv=argv, prog="python -m theory.sweep", doc=__doc__)


if __name__ == "__main__":
  sys.exit(main())
