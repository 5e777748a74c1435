"""The DSD sweep launcher: n*(eps) over rows x k x d (x noise constant), resumable cell by cell.

  python -m theory.sweep --config=configs/dsd.py[:variant] --workdir=DIR [--config.sc.eps=0.05 ...]

A row is an architecture with its training recipe (``config.rows``). The rows of one (c, k, d) share
the same drawn samples; each finished (row, c, k, d) cell is written atomically to
DIR/cells/<cell>.json, so a killed sweep resumes where it stopped without redoing finished cells. At
the end: DIR/results.json and results.csv (one row per cell: floor, n*, interval, work), DIR/nstar.png
(n* against k and d on log-log axes, the theorem rate dashed beside each row), DIR/curves.png (test
error minus floor against n along the k-line) and DIR/summary.json (per row: fitted slopes in k and d
with bootstrap intervals beside the theorems' rates fitted on the same cells, n* and floors per cell,
and the sample ratios between rows with paired bootstrap intervals).

Launched as several processes (``jax.distributed``: a TPU pod slice, SLURM, or the environment
variables of ``scripts/launch_local.sh``), each process computes every N-th group of cells on its
own devices and writes their cell files into the shared DIR; after a barrier process 0 writes the
results (the same as one process gives: every cell's samples and seeds depend on the cell alone).
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
from jaxtrain.metrics import Progress, write_atomic, write_json_atomic, write_summary
from theory import bounds, dsd, gd, models
from theory import sample_complexity as sc

SIGMA_RULES = ("c/sqrt(k)", "const")
TARGETS = ("excess", "absolute")


def _err(field: str, value: Any, expected: str) -> ValueError:
  return ValueError(f"dsd sweep config: {field} = {value!r}; expected {expected}")


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the field for any bad setting (before any work is done)."""
  for name in ("ks", "ds"):
    vals = tuple(cfg[name])
    if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
      raise _err(name, vals, "a non-empty list of integers >= 1 (k < 1 or d < 1 is not a DSD)")
  if not cfg.models or any(m not in cfg.rows for m in cfg.models):
    raise _err("models", tuple(cfg.models), f"a non-empty subset of the rows {tuple(cfg.rows)}")
  for m in cfg.models:
    if cfg.rows[m].arch not in models.MODELS:
      raise _err(f"rows.{m}.arch", cfg.rows[m].arch, f"one of {models.MODELS}")
    if not cell_ks(cfg, m):
      raise _err(f"rows.{m}.k_max", cfg.rows[m].k_max, "0 (no limit) or at least the smallest k")
  for a, b in cfg.ratios:
    if a not in cfg.rows or b not in cfg.rows:
      raise _err("ratios", (a, b), f"pairs of rows from {tuple(cfg.rows)}")
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
  if cfg.sc.target not in TARGETS:
    raise _err("sc.target", cfg.sc.target, f"one of {TARGETS}")
  if not isinstance(cfg.sc.eps, (int, float)) or not 0 < cfg.sc.eps < 0.5:
    raise _err("sc.eps", cfg.sc.eps, "a target error in (0, 0.5)")
  if cfg.sc.num_seeds < 1 or cfg.sc.points < 2 or cfg.sc.n_boot < 1:
    raise _err("sc.num_seeds/points/n_boot", (cfg.sc.num_seeds, cfg.sc.points, cfg.sc.n_boot),
               "num_seeds >= 1, points >= 2, n_boot >= 1")
  if not 0 < cfg.sc.ci < 1:
    raise _err("sc.ci", cfg.sc.ci, "a coverage in (0, 1)")
  if cfg.gd.b_units not in ("sigma", "absolute"):
    raise _err("gd.b_units", cfg.gd.b_units, "'sigma' or 'absolute'")
  for m in cfg.models:
    if m not in cfg.sc.n_range:
      raise _err("sc.n_range", tuple(cfg.sc.n_range), f"a range for row {m!r}")
    lo, hi = cfg.sc.n_range[m]
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo < hi):
      raise _err(f"sc.n_range.{m}", (lo, hi), "two integers 1 <= lo < hi")
    gd_config(cfg, m, 1.0)  # checks loss, activation, preset, projection and the row's overrides


def sigma_of(cfg: ml_collections.ConfigDict, c: float, k: int) -> float:
  return dsd.default_sigma(k, c) if cfg.data.sigma_rule == "c/sqrt(k)" else float(c)


def arch(cfg: ml_collections.ConfigDict, row: str) -> str:
  return cfg.rows[row].arch


def gd_config(cfg: ml_collections.ConfigDict, row: str, sigma: float) -> gd.GDConfig:
  """The row's GD settings: the base ``gd`` section updated by the row's ``gd``, threshold b."""
  spec = cfg.rows[row]
  unknown = set(spec.gd) - set(cfg.gd)
  if unknown:
    raise _err(f"rows.{row}.gd", sorted(unknown), f"keys of the gd section {sorted(cfg.gd)}")
  b = float(spec.b) * (sigma if cfg.gd.b_units == "sigma" else 1.0)
  return gd.from_config(dict(cfg.gd.to_dict(), **spec.gd.to_dict(), b=b))


def n_grid(cfg: ml_collections.ConfigDict, row: str) -> tuple[int, ...]:
  lo, hi = cfg.sc.n_range[row]
  return tuple(int(n) for n in np.unique(np.round(np.geomspace(lo, hi, cfg.sc.points)).astype(int)))


def design_cells(cfg: ml_collections.ConfigDict) -> list[tuple[int, int]]:
  if cfg.design == "grid":
    return [(k, d) for k in cfg.ks for d in cfg.ds]
  cells = [(k, cfg.d_ref) for k in cfg.ks] + [(cfg.k_ref, d) for d in cfg.ds if d != cfg.d_ref]
  return sorted(set(cells))


def cell_ks(cfg: ml_collections.ConfigDict, row: str) -> list[int]:
  k_max = cfg.rows[row].k_max
  return [k for k in cfg.ks if not k_max or k <= k_max]


def row_cells(cfg: ml_collections.ConfigDict, row: str) -> list[tuple[int, int]]:
  """The design cells a row runs (those with k <= its ``k_max``)."""
  ks = set(cell_ks(cfg, row))
  return [(k, d) for k, d in design_cells(cfg) if k in ks]


def all_cells(cfg: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  out = []
  for c in cfg.data.cs:
    for row in cfg.models:
      for k, d in row_cells(cfg, row):
        out.append({"id": f"{row}_c{c:g}_k{k}_d{d}", "model": row, "c": float(c), "k": k, "d": d})
  return out


def _cell_settings(cfg: ml_collections.ConfigDict, cell: dict[str, Any]) -> dict[str, Any]:
  """Everything a cell's result depends on (compared on resume)."""
  sigma = sigma_of(cfg, cell["c"], cell["k"])
  row = cell["model"]
  return {"model": row, "k": cell["k"], "d": cell["d"], "c": cell["c"], "sigma": sigma,
          "row": {k: v for k, v in cfg.rows[row].to_dict().items() if k != "k_max"},  # not a
          "data": cfg.data.to_dict(), "gd": cfg.gd.to_dict(),  # dependency: which cells run, not how
          "target": cfg.sc.target, "eps": cfg.sc.eps, "num_seeds": cfg.sc.num_seeds,
          "n_grid": list(n_grid(cfg, row)), "n_boot": cfg.sc.n_boot, "ci": cfg.sc.ci,
          "seed": cfg.seed}


def _canon(obj: Any) -> str:
  return json.dumps(json.loads(json.dumps(obj, default=list)), sort_keys=True)


def problem(cfg: ml_collections.ConfigDict, cell: dict[str, Any]) -> sc.Problem:
  return sc.Problem(arch(cfg, cell["model"]), cell["k"], cell["d"], sigma_of(cfg, cell["c"], cell["k"]),
                    cfg.data.noise_free_signal, cfg.data.wstar, cfg.data.n_test)


def launch_cell(cfg: ml_collections.ConfigDict, cell: dict[str, Any],
                data: dict[str, Any] | None = None) -> dict[str, Any]:
  """Dispatches one cell's curve (compiling it first) without waiting for the result. ``data``: the
  cell's samples from :func:`theory.sample_complexity.draw_data`, shared by the rows of one
  (c, k, d); drawn here if not given."""
  p = problem(cfg, cell)
  gcfg, grid = gd_config(cfg, cell["model"], p.sigma), n_grid(cfg, cell["model"])
  t0 = time.perf_counter()
  out = sc.launch_curve(p, gcfg, grid, cfg.sc.num_seeds, cfg.seed, cfg.sc.num_devices or None, data)
  return {"cell": cell, "gcfg": gcfg, "grid": grid, "t0": t0, "out": out}


def finish_cell(cfg: ml_collections.ConfigDict, launched: dict[str, Any]) -> dict[str, Any]:
  """Waits for a launched cell and reads n*(eps) off its curve. ``wall_s`` runs from its launch to
  its result (compilation included; cells launched together overlap)."""
  cell = launched["cell"]
  errors, floors = (np.asarray(a) for a in launched["out"])
  wall = time.perf_counter() - launched["t0"]
  grid = launched["grid"]
  curve = errors - floors[:, None] if cfg.sc.target == "excess" else errors
  est = sc.estimate(curve, grid, cfg.sc.eps, cfg.sc.n_boot, cfg.sc.ci, seed=cfg.seed)
  floor_sem = float(floors.std(ddof=1) / math.sqrt(len(floors))) if len(floors) > 1 else 0.0
  return {"id": cell["id"], "settings": _cell_settings(cfg, cell), "b": launched["gcfg"].b_eval,
          "wall_s": wall,
          "floor": float(floors.mean()), "floor_sem": floor_sem, "floors": floors.tolist(),
          "buckets": [list(b) for b in sc.buckets(grid)],
          "useful_fraction": sc.useful_fraction(grid),
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
  """Slopes of log n* in log k and log d over a model's reached cells, with bootstrap intervals: the
  fit redone on each replicate's n*; no interval unless a fraction ``ci`` of the replicates reached
  eps within the grid in every fitted cell."""
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
    if math.isnan(slope) or valid.mean() < ci:  # too few replicates reached every cell
      out[f"slope_{name}_ci"] = None
    else:
      out[f"slope_{name}_ci"] = np.quantile(fits[:, i], q).tolist()
  out["boot_valid_frac"] = float(valid.mean())
  return out


def _log_boot(r: dict[str, Any]) -> np.ndarray:
  return np.array([b if isinstance(b, float) else math.nan for b in r["boot_log_n_star"]])


def ratios(by_model: dict[str, list[dict[str, Any]]], num: str, den: str, ci: float) -> dict[str, Any]:
  """n*(num) / n*(den) per (k, d) cell where both were reached, and their geometric mean, each with a
  bootstrap interval. The rows of a cell share their samples and their bootstrap draws of seeds (same
  seed and seed count), so a replicate's ratio is paired."""
  a = {(r["settings"]["k"], r["settings"]["d"]): r for r in by_model.get(num, [])}
  b = {(r["settings"]["k"], r["settings"]["d"]): r for r in by_model.get(den, [])}
  q = [(1 - ci) / 2, (1 + ci) / 2]
  per, per_ci, logs = {}, {}, []
  for key in sorted(set(a) & set(b)):
    ra, rb, name = a[key], b[key], f"k{key[0]}_d{key[1]}"
    if ra["status"] == "ok" and rb["status"] == "ok":
      per[name] = ra["n_star"] / rb["n_star"]
      lr = _log_boot(ra) - _log_boot(rb)  # nan where either replicate did not reach eps
      logs.append(lr)
      ok = np.isfinite(lr)
      per_ci[name] = np.exp(np.quantile(lr[ok], q)).tolist() if ok.mean() >= ci else None
    else:
      per[name] = f"{num}: {ra['n_star']}, {den}: {rb['n_star']}"
  nums = [v for v in per.values() if isinstance(v, float)]
  out = {"per_cell": per, "per_cell_ci": per_ci,
         "geomean": float(np.exp(np.mean(np.log(nums)))) if nums else None,
         "geomean_ci": None, "min": min(nums) if nums else None, "max": max(nums) if nums else None}
  if logs:
    g = np.mean(np.stack(logs), axis=0)
    ok = np.isfinite(g)
    if ok.mean() >= ci:
      out["geomean_ci"] = np.exp(np.quantile(g[ok], q)).tolist()
  return out


def write_csv(path: str, results: list[dict[str, Any]]) -> None:
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["model", "arch", "c", "k", "d", "sigma", "floor", "n_star", "status", "ci_low", "ci_high",
              "useful_fraction", "wall_s"])
  for r in results:
    s = r["settings"]
    w.writerow([s["model"], s["row"]["arch"], s["c"], s["k"], s["d"], f"{s['sigma']:.6g}",
                f"{r['floor']:.4f}", r["n_star"], r["status"], r["ci_low"], r["ci_high"],
                f"{r['useful_fraction']:.3f}", f"{r['wall_s']:.3f}"])
  write_atomic(path, lambda f: f.write(buf.getvalue()), mode="w")


COLORS = {"cnn": "tab:blue", "lcn": "tab:orange", "fcn": "tab:green", "fcn_linear": "tab:red"}


def _figure(**kwargs: Any):
  """A matplotlib Figure on its own Agg canvas: nothing goes through pyplot, so writing the plots
  neither switches the process's backend nor touches its figures (a notebook's inline display)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(**kwargs)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str) -> None:
  write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=80))


def plot(path: str, cfg: ml_collections.ConfigDict, results: list[dict[str, Any]]) -> None:
  """n* vs k (at d_ref) and vs d (at k_ref), log-log, one line per row and noise constant, the
  theorem rate dashed through each line's geometric centre; not-reached cells as open triangles."""
  fig = _figure(figsize=(10, 3.8))
  axes = fig.subplots(1, 2)
  for ax, (axis, fixed_name, fixed) in zip(axes, (("k", "d", cfg.d_ref), ("d", "k", cfg.k_ref))):
    for c in cfg.data.cs:
      for model in cfg.models:
        rows = sorted((r for r in results if r["settings"]["model"] == model and r["settings"]["c"] == c
                       and r["settings"][fixed_name] == fixed), key=lambda r: r["settings"][axis])
        ok = [r for r in rows if r["status"] == "ok"]
        label = model.upper() + (f" c={c:g}" if len(cfg.data.cs) > 1 else "")
        color = COLORS.get(model)
        if ok:
          xs = np.array([r["settings"][axis] for r in ok], float)
          ys = np.array([r["n_star"] for r in ok])
          lo = np.array([_value(r["ci_low"]) for r in ok])
          hi = np.array([_value(r["ci_high"]) for r in ok])
          yerr = np.stack([ys - np.where(np.isnan(lo), ys, lo), np.where(np.isnan(hi), ys, hi) - ys])
          ax.errorbar(xs, ys, yerr=np.maximum(yerr, 0), marker="o", color=color, label=label,
                      capsize=2)
          th = np.array([bounds.model_rate(arch(cfg, model), *((x, fixed) if axis == "k" else (fixed, x)),
                                           sigma=sigma_of(cfg, c, int(x) if axis == "k" else fixed))
                         for x in xs])
          th *= np.exp(np.mean(np.log(ys)) - np.mean(np.log(th)))
          ax.plot(xs, th, "--", color=color, alpha=0.6, lw=1)
        miss = [r for r in rows if r["status"] == "not reached"]
        if miss:
          top = max(n_grid(cfg, model))
          ax.scatter([r["settings"][axis] for r in miss], [top] * len(miss), marker="^",
                     facecolors="none", edgecolors=color, label=f"{label} not reached")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(axis)
    ax.set_ylabel(f"n* ({cfg.sc.target} error {cfg.sc.eps:g})")
    ax.set_title(f"n* vs {axis} at {fixed_name}={fixed}; dashed: theorem rate", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
  if axes[0].get_legend_handles_labels()[0]:
    axes[0].legend(fontsize=7)
  fig.tight_layout()
  _save(fig, path)


def plot_curves(path: str, cfg: ml_collections.ConfigDict, results: list[dict[str, Any]]) -> None:
  """Seed-mean test error minus floor against n, one panel per row, one line per k at d_ref (first
  noise constant); the target eps dotted. Shows where each curve flattens onto its floor."""
  import matplotlib
  c0 = cfg.data.cs[0]
  fig = _figure(figsize=(3.2 * len(cfg.models), 3.2))
  axes = fig.subplots(1, len(cfg.models), squeeze=False)
  for ax, model in zip(axes[0], cfg.models):
    rows = sorted((r for r in results if r["settings"]["model"] == model and r["settings"]["c"] == c0
                   and r["settings"]["d"] == cfg.d_ref), key=lambda r: r["settings"]["k"])
    for i, r in enumerate(rows):
      grid = r["settings"]["n_grid"]
      excess = np.mean(r["errors"], axis=0) - r["floor"]
      ax.plot(grid, excess, marker=".", color=matplotlib.colormaps["viridis"](i / max(len(rows) - 1, 1)),
              label=f"k={r['settings']['k']} (floor {r['floor']:.3f})")
    if cfg.sc.target == "excess":
      ax.axhline(cfg.sc.eps, ls=":", color="k", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_title(f"{model.upper()}, d={cfg.d_ref}", fontsize=9)
    ax.set_xlabel("n")
    ax.grid(True, alpha=0.3)
    if rows:
      ax.legend(fontsize=6)
  axes[0][0].set_ylabel("test error - floor")
  fig.tight_layout()
  _save(fig, path)


def summarize(cfg: ml_collections.ConfigDict, results: list[dict[str, Any]], wall_s: float,
              counts: dict[str, int]) -> dict[str, Any]:
  per_c = {}
  for c in cfg.data.cs:
    by_model = {m: [r for r in results if r["settings"]["model"] == m and r["settings"]["c"] == c]
                for m in cfg.models}
    fits = {}
    for m, rs in by_model.items():
      f = fit_model(rs, cfg.sc.ci)
      fitted = [(r["settings"]["k"], r["settings"]["d"]) for r in rs if r["status"] == "ok"]
      f["theory"] = bounds.theory_slopes(arch(cfg, m), fitted if len(fitted) >= 2 else row_cells(cfg, m),
                                         lambda k: sigma_of(cfg, c, k))
      for axis in ("k", "d"):
        f[f"agreement_{axis}"] = bounds.agreement(
            f.get(f"slope_{axis}_ci"), [t[f"slope_{axis}"] for t in f["theory"].values()])
      key = lambda r: f"k{r['settings']['k']}_d{r['settings']['d']}"  # noqa: E731
      f["n_star"] = {key(r): r["n_star"] for r in rs}
      f["n_star_ci"] = {key(r): [r["ci_low"], r["ci_high"]] for r in rs}
      f["floor"] = {key(r): [r["floor"], r["floor_sem"]] for r in rs}
      f["useful_fraction"] = {key(r): r["useful_fraction"] for r in rs}
      fits[m] = f
    per_c[f"c={c:g}"] = {"models": fits, "ratios": {
        f"{a}/{b}": ratios(by_model, a, b, cfg.sc.ci) for a, b in cfg.ratios
        if a in by_model and b in by_model}}
  return {"name": cfg.name, "eps": cfg.sc.eps, "target": cfg.sc.target,
          "sigma_rule": cfg.data.sigma_rule, "design": cfg.design,
          "cells": [list(x) for x in design_cells(cfg)], "results": per_c,
          "wall_time_s": wall_s, **counts, "config": cfg.to_dict()}


def run_sweep(cfg: ml_collections.ConfigDict, workdir: str,
              on_cell: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
  """Runs (or resumes) the sweep in ``workdir``; returns the summary dict (also in summary.json)."""
  validate(cfg)
  t0 = time.perf_counter()
  os.makedirs(os.path.join(workdir, "cells"), exist_ok=True)
  cells = all_cells(cfg)
  results, todo = {}, {}
  for cell in cells:
    res = load_cell(cfg, workdir, cell)
    if res is None:  # grouped by (c, k, d): the rows of a group share one draw of the samples
      todo.setdefault((cell["c"], cell["k"], cell["d"]), []).append(cell)
    else:
      results[cell["id"]] = res
  loaded = len(results)
  prog = Progress(len(cells), desc=cfg.name, unit="cell", start=loaded)
  prog.update(loaded, force=True)

  def finish(launched):
    for item in launched:
      res = finish_cell(cfg, item)
      write_json_atomic(_cell_path(workdir, res["id"]), res)
      results[res["id"]] = res
      n_star = res["n_star"] if isinstance(res["n_star"], float) else math.nan
      prog.update(len(results), force=True, n_star=n_star, cell_s=res["wall_s"])
      if on_cell is not None:
        on_cell(res)

  import jax

  from jaxtrain import distributed
  pending: list[dict[str, Any]] = []
  mine = list(todo.values())[jax.process_index()::jax.process_count()]
  for group in mine:
    # Dispatch this group (its draw and every row; compiling them while the previous group still
    # runs), then collect the previous group: compilation and computation overlap.
    n_max = max(max(n_grid(cfg, cell["model"])) for cell in group)
    data = sc.draw_data(problem(cfg, group[0]), n_max, cfg.sc.num_seeds, cfg.seed,
                        cfg.sc.num_devices or None)
    launched = [launch_cell(cfg, cell, data) for cell in group]
    del data
    finish(pending)
    pending = launched
  finish(pending)
  if jax.process_count() > 1:  # the other processes' cells, from the shared workdir
    distributed.barrier("sweep cells written")
    for cell in cells:
      if cell["id"] not in results:
        results[cell["id"]] = load_cell(cfg, workdir, cell)
  ordered = [results[c["id"]] for c in cells]
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, "results.json"), ordered)
    write_csv(os.path.join(workdir, "results.csv"), ordered)
    plot(os.path.join(workdir, "nstar.png"), cfg, ordered)
    plot_curves(os.path.join(workdir, "curves.png"), cfg, ordered)
  summary = summarize(cfg, ordered, time.perf_counter() - t0,
                      {"cells_computed": len(cells) - loaded, "cells_resumed": loaded})
  return write_summary(workdir, **summary)


def print_table(summary: dict[str, Any], stream=sys.stdout) -> None:
  from theory import report
  stream.write(report.markdown(summary) + "\n")


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
