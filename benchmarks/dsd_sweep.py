"""Benchmark of the DSD sweep: the bucketed vmapped curve vs a fair loop and vs the old single masked
batch, FLOP/s, and whole sweeps' wall time.

  python benchmarks/dsd_sweep.py [--config=configs/dsd.py] [--repeats=3] [--skip_sweep=True]
                                 [--sweeps=configs/dsd.py,configs/dsd.py:paper] [--json=PATH]

1. For a few cells of the config (same seeds, same n-grid, same draws), three ways to get the error
   curve: (a) the sweep's compiled call (``sample_complexity.error_curve``: buckets, each point trained
   on at most twice its n); (b) a fair Python loop: each seed's data drawn once, then for each n a
   jitted training on ``x[:n]`` (compiled once per n); (c) the old single masked batch: every grid
   point trains on all n_max samples with a mask, vmapped. All warmed up (compiled) first, medians of
   ``repeats`` timings, a check that all give the same errors, and the useful fraction of computed
   work (real samples / samples trained on) of (a) and (c).
2. Achieved FLOP/s of the sweep's call at the largest trained-FCN cell of the config (FLOPs from XLA's
   cost analysis), as a fraction of the matmul rate measured in the same run.
3. Wall time of whole sweeps (``--sweeps``) in fresh temporary workdirs (compilation included).
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


def cell_setup(cfg, row: str, k: int, d: int):
  cell = {"model": row, "c": cfg.data.cs[0], "k": k, "d": d}
  p = sweep.problem(cfg, cell)
  return p, sweep.gd_config(cfg, row, p.sigma), sweep.n_grid(cfg, row)


def fair_loop(p, gcfg, grid, num_seeds: int, base_seed: int) -> np.ndarray:
  """Data drawn once per seed; for each n, one jitted training on exactly x[:n] (no masking)."""
  base = jax.random.key(base_seed, impl=sc.PRNG_IMPL)
  out = np.zeros((num_seeds, len(grid)))
  for s in range(num_seeds):
    seed = jnp.uint32(s)
    data = _draw_jit(p, max(grid), base, seed)
    w0 = sc.init_weights(p, gcfg, base, seed)
    for g, n in enumerate(grid):
      sub = dict(data, x=data["x"][:n], y=data["y"][:n])
      out[s, g] = float(_fit_jit(p, gcfg, sub, w0, n, jnp.int32(n))[0])
  return out


_draw_jit = jax.jit(sc.draw, static_argnames=("p", "n_max"))
_fit_jit = jax.jit(sc._fit_eval, static_argnames=("p", "cfg", "cap"))


def masked_batch(p, gcfg, grid, num_seeds: int, base_seed: int):
  """The old evaluation: every grid point trained on all n_max samples, loss masked to n."""
  n_max = max(grid)
  fn = jax.jit(lambda seeds, ns: jax.vmap(lambda s: jax.vmap(
      lambda n: sc.single_run(p, gcfg, n_max, base_seed, s, n)[0])(ns))(seeds))
  seeds, ns = jnp.arange(num_seeds, dtype=jnp.uint32), jnp.asarray(grid, jnp.int32)
  return lambda: np.asarray(fn(seeds, ns))


def compare_paths(cfg, row: str, k: int, d: int, repeats: int) -> dict:
  p, gcfg, grid = cell_setup(cfg, row, k, d)
  seeds = cfg.sc.num_seeds
  run_b = lambda: sc.error_curve(p, gcfg, grid, seeds, cfg.seed)[0]  # noqa: E731
  run_l = lambda: fair_loop(p, gcfg, grid, seeds, cfg.seed)  # noqa: E731
  run_m = masked_batch(p, gcfg, grid, seeds, cfg.seed)
  eb, el, em = run_b(), run_l(), run_m()  # compile
  tb, tl, tm = (median_time(f, repeats) for f in (run_b, run_l, run_m))
  return {"cell": f"{row} k={k} d={d}", "seeds": seeds, "grid_points": len(grid), "n_max": max(grid),
          "bucketed_s": tb, "fair_loop_s": tl, "masked_batch_s": tm,
          "speedup_vs_fair_loop": tl / tb, "speedup_vs_masked_batch": tm / tb,
          "useful_fraction_bucketed": sc.useful_fraction(grid),
          "useful_fraction_masked_batch": sc.useful_fraction(grid, bucketed=False),
          "max_abs_error_diff_loop": float(np.abs(eb - el).max()),
          "max_abs_error_diff_masked": float(np.abs(eb - em).max())}


def matmul_rate(repeats: int, size: int = 2048) -> float:
  a = jnp.ones((size, size), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = median_time(lambda: f(a).block_until_ready(), max(repeats, 5))
  return 2 * size ** 3 / t


def fcn_flops(cfg, repeats: int, row: str = "fcn") -> dict:
  k, d = max(sweep.row_cells(cfg, row), key=lambda kd: kd[0] * kd[0] * kd[1])
  p, gcfg, grid = cell_setup(cfg, row, k, d)
  nd = len(jax.devices())
  data = sc.draw_data(p, max(grid), cfg.sc.num_seeds, cfg.seed, nd)
  seeds = sc.seed_array(cfg.sc.num_seeds, nd)
  compiled = sc.compiled_curve(p, gcfg, grid, cfg.sc.num_seeds, cfg.seed, nd).lower(seeds, data).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan")))
  jax.block_until_ready(compiled(seeds, data))
  t = median_time(lambda: jax.block_until_ready(compiled(seeds, data)), repeats)
  # Hand count of the dominant matmuls at 2 FLOP per multiply-add: per seed, grid point and GD step a
  # forward [cap, kd] x [kd, k] and the weight gradient of the same size, cap the point's bucket size,
  # plus one forward pass on the test set.
  kd, steps = k * d, gcfg.steps
  trained = sum(len(b) * max(b) for b in sc.buckets(grid))
  hand = cfg.sc.num_seeds * (steps * 2 * 2 * trained * kd * k + len(grid) * 2 * p.n_test * kd * k)
  return {"cell": f"{row} k={k} d={d}", "n_max": max(grid), "steps": steps, "time_s": t,
          "xla_flops": flops, "hand_flops": hand, "flops_per_s": flops / t, "hand_flops_per_s": hand / t}


def main(argv: list[str]) -> int:
  flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
  spec = flags.pop("config", "configs/dsd.py")
  repeats = int(flags.pop("repeats", 3))
  skip_sweep = flags.pop("skip_sweep", "False") == "True"
  sweeps = flags.pop("sweeps", spec).split(",")
  out_json = flags.pop("json", None)
  if flags:
    raise SystemExit(f"unknown flags {sorted(flags)}")
  cfg = config_lib.load_config(spec)
  sweep.validate(cfg)
  res = {"device": str(jax.devices()[0]), "num_devices": len(jax.devices()), "config": spec,
         "repeats": repeats}
  k0, d0 = sweep.design_cells(cfg)[0]
  res["paths"] = []
  for m in cfg.models:
    r = compare_paths(cfg, m, k0, d0, repeats)
    res["paths"].append(r)
    print(f"{r['cell']:22s} {r['seeds']} seeds x {r['grid_points']} n (n_max {r['n_max']}): bucketed "
          f"{r['bucketed_s'] * 1e3:8.1f} ms | fair loop {r['fair_loop_s'] * 1e3:9.1f} ms "
          f"({r['speedup_vs_fair_loop']:.1f}x) | masked batch {r['masked_batch_s'] * 1e3:8.1f} ms "
          f"({r['speedup_vs_masked_batch']:.1f}x) | useful work {r['useful_fraction_bucketed']:.2f} vs "
          f"{r['useful_fraction_masked_batch']:.2f} | max |diff| of errors {r['max_abs_error_diff_loop']:.3g}"
          f", {r['max_abs_error_diff_masked']:.3g}", flush=True)
  if "fcn" in cfg.models:
    rate = matmul_rate(repeats)
    f = fcn_flops(cfg, repeats)
    f["matmul_flops_per_s"] = rate
    f["fraction_of_matmul"] = f["flops_per_s"] / rate
    f["hand_fraction_of_matmul"] = f["hand_flops_per_s"] / rate
    res["fcn_flops"] = f
    print(f"largest trained-FCN cell {f['cell']} (n_max {f['n_max']}, {f['steps']} steps): "
          f"{f['time_s']:.2f} s per curve, XLA {f['xla_flops']:.3g} FLOP -> "
          f"{f['flops_per_s'] / 1e9:.2f} GFLOP/s (fraction {f['fraction_of_matmul']:.2f}); hand count "
          f"{f['hand_flops']:.3g} FLOP -> {f['hand_flops_per_s'] / 1e9:.2f} GFLOP/s (fraction "
          f"{f['hand_fraction_of_matmul']:.2f}); measured 2048^2 f32 matmul {rate / 1e9:.2f} GFLOP/s",
          flush=True)
  res["sweeps"] = {}
  for sspec in ([] if skip_sweep else sweeps):
    scfg = config_lib.load_config(sspec)
    with tempfile.TemporaryDirectory() as workdir:
      t0 = time.perf_counter()
      summary = sweep.run_sweep(scfg, workdir)
      wall = time.perf_counter() - t0
    res["sweeps"][sspec] = {"wall_s": wall, "cells": summary["cells_computed"]}
    print(f"whole sweep {sspec}: {wall:.1f} s wall for {summary['cells_computed']} cells "
          f"(fresh workdir, compilation included)", flush=True)
  if out_json:
    from jaxtrain.metrics import write_json_atomic
    write_json_atomic(out_json, res)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
