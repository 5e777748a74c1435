"""Benchmark of the DSD sweep: vmapped curve vs a Python loop, FLOP/s, and the default sweep's wall time.

  python benchmarks/dsd_sweep.py [--config=configs/dsd.py] [--repeats=3] [--skip_sweep=True]
                                 [--json=PATH] [--sweep_workdir=DIR (default: a temporary one)]

1. For a few cells of the config (same seeds, same n-grid), the one compiled vmapped call
   (``sample_complexity.error_curve``) against a Python loop over seeds and n that calls the same
   jitted single run (``single_run_jit``) and fetches each error; both warmed up (compiled) first,
   medians of ``repeats`` timings, and a check that both give the same errors.
2. Achieved FLOP/s of the vmapped call at the largest FCN cell of the config (FLOPs from XLA's cost
   analysis of the compiled program), as a fraction of the matmul rate measured in the same run
   (a jitted float32 square matmul, median of ``repeats``).
3. Wall time of the whole sweep of the config in a fresh temporary workdir (compilation included).
Prints numbers only; no thresholds.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxtrain import config as config_lib  # noqa: E402
from theory import sample_complexity as sc  # noqa: E402
from theory import sweep  # noqa: E402


def median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def cell_setup(cfg, model: str, k: int, d: int):
  sigma = sweep.sigma_of(cfg, cfg.data.cs[0], k)
  p = sc.Problem(model, k, d, sigma, cfg.data.noise_free_signal, cfg.data.wstar, cfg.data.n_test)
  return p, sweep.gd_config(cfg, model, sigma), sweep.n_grid(cfg, model)


def vmap_vs_loop(cfg, model: str, k: int, d: int, repeats: int) -> dict:
  p, gcfg, grid = cell_setup(cfg, model, k, d)
  seeds, n_max = cfg.sc.num_seeds, max(grid)
  run_v = lambda: sc.error_curve(p, gcfg, grid, seeds, cfg.seed)  # noqa: E731
  ev = run_v()  # compile
  def run_loop():
    return np.array([[float(sc.single_run_jit(p, gcfg, n_max, cfg.seed, s, n)[0]) for n in grid]
                     for s in range(seeds)])
  el = run_loop()  # compile
  tv, tl = median_time(run_v, repeats), median_time(run_loop, repeats)
  return {"cell": f"{model} k={k} d={d}", "seeds": seeds, "grid_points": len(grid), "n_max": n_max,
          "vmapped_s": tv, "loop_s": tl, "speedup": tl / tv,
          "max_abs_error_diff": float(np.abs(ev - el).max())}


def matmul_rate(repeats: int, size: int = 2048) -> float:
  a = jnp.ones((size, size), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = median_time(lambda: f(a).block_until_ready(), max(repeats, 5))
  return 2 * size ** 3 / t


def fcn_flops(cfg, repeats: int) -> dict:
  k, d = max(sweep.design_cells(cfg), key=lambda kd: kd[0] * kd[0] * kd[1])
  p, gcfg, grid = cell_setup(cfg, "fcn", k, d)
  num_dev = len(jax.devices())
  fn, shardings = sc.compiled_curve(p, gcfg, grid, cfg.sc.num_seeds, cfg.seed, num_dev)
  args = sc.curve_inputs(grid, cfg.sc.num_seeds, shardings)
  compiled = fn.lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan")))
  compiled(*args).block_until_ready()
  t = median_time(lambda: compiled(*args).block_until_ready(), repeats)
  # Hand count of the dominant matmuls at 2 FLOP per multiply-add (the convention of the matmul rate):
  # per seed, grid point and GD step a forward [n, kd] x [kd, k] and the weight gradient of the same
  # size (no input gradient is needed), plus one forward pass on the test set. XLA's CPU cost analysis
  # may count a multiply-add as one FLOP, so both numbers are printed.
  n_max, kd = max(grid), k * d
  hand = cfg.sc.num_seeds * len(grid) * (gcfg.steps * 2 * 2 * n_max * kd * k + 2 * p.n_test * kd * k)
  return {"cell": f"fcn k={k} d={d}", "n_max": n_max, "time_s": t, "xla_flops": flops,
          "hand_flops": hand, "flops_per_s": flops / t, "hand_flops_per_s": hand / t}


def main(argv: list[str]) -> int:
  flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
  spec = flags.pop("config", "configs/dsd.py")
  repeats = int(flags.pop("repeats", 3))
  skip_sweep = flags.pop("skip_sweep", "False") == "True"
  out_json = flags.pop("json", None)
  sweep_workdir = flags.pop("sweep_workdir", None)
  if flags:
    raise SystemExit(f"unknown flags {sorted(flags)}")
  cfg = config_lib.load_config(spec)
  sweep.validate(cfg)
  res = {"device": str(jax.devices()[0]), "num_devices": len(jax.devices()), "config": spec,
         "repeats": repeats}
  cells = sweep.design_cells(cfg)
  k0, d0 = cells[0]
  picks = [(m, k0, d0) for m in cfg.models]
  res["vmap_vs_loop"] = [vmap_vs_loop(cfg, m, k, d, repeats) for m, k, d in picks]
  for r in res["vmap_vs_loop"]:
    print(f"{r['cell']:18s} {r['seeds']} seeds x {r['grid_points']} n (n_max {r['n_max']}): "
          f"vmapped {r['vmapped_s'] * 1e3:8.1f} ms  loop {r['loop_s'] * 1e3:9.1f} ms  "
          f"speedup {r['speedup']:6.1f}x  (max |diff| of errors {r['max_abs_error_diff']:.3g})",
          flush=True)
  if "fcn" in cfg.models:
    rate = matmul_rate(repeats)
    f = fcn_flops(cfg, repeats)
    f["matmul_flops_per_s"] = rate
    f["fraction_of_matmul"] = f["flops_per_s"] / rate
    f["hand_fraction_of_matmul"] = f["hand_flops_per_s"] / rate
    res["fcn_flops"] = f
    print(f"largest FCN cell {f['cell']}: {f['time_s']:.3f} s per curve, XLA {f['xla_flops']:.3g} FLOP "
          f"-> {f['flops_per_s'] / 1e9:.2f} GFLOP/s (fraction {f['fraction_of_matmul']:.2f}); hand count "
          f"{f['hand_flops']:.3g} FLOP -> {f['hand_flops_per_s'] / 1e9:.2f} GFLOP/s (fraction "
          f"{f['hand_fraction_of_matmul']:.2f}); measured 2048^2 f32 matmul {rate / 1e9:.2f} GFLOP/s",
          flush=True)
  if not skip_sweep:
    with tempfile.TemporaryDirectory() as tmp:
      workdir = sweep_workdir or tmp
      if os.path.exists(os.path.join(workdir, "cells")) and os.listdir(os.path.join(workdir, "cells")):
        raise SystemExit(f"--sweep_workdir={workdir} already has cells; the timing needs a fresh one")
      t0 = time.perf_counter()
      summary = sweep.run_sweep(cfg, workdir)
      res["sweep_wall_s"] = time.perf_counter() - t0
      res["sweep_cells"] = summary["cells_computed"]
    print(f"whole sweep {spec}: {res['sweep_wall_s']:.1f} s wall for {res['sweep_cells']} cells "
          f"(fresh workdir, compilation included)", flush=True)
  if out_json:
    from jaxtrain.metrics import write_json_atomic
    write_json_atomic(out_json, res)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
