"""Test error as a function of n, vmapped over seeds and an n-grid in one compiled call, and n*(eps).

Per seed we draw ``n_max`` training samples once (plus a test set) and train one model per grid point
with the loss masked to the first ``n`` samples, so all shapes are static. Seeds and grid points are
sharded over a mesh of the available devices (any count, one included). ``n*(eps)`` is read from the
seed-averaged curve by log-linear interpolation at its first crossing of ``eps``; a bootstrap over
seeds gives its confidence interval. A target that the grid never reaches is reported as
'not reached', one already met at the smallest n as 'below grid' -- never as a made-up number.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain import mesh as mesh_lib

from theory import dsd, gd, models

NOT_REACHED = "not reached"
BELOW_GRID = "below grid"
# threefry: the same draws for a seed inside or outside vmap and whatever the sharding ('rbg' compiles
# faster on CPU but its draws change under vmap, which would break the seed-by-seed equality).
PRNG_IMPL = "threefry2x32"


@dataclasses.dataclass(frozen=True)
class Problem:
  """One sweep cell: model and DSD parameters (hashable, a static jit argument)."""
  model: str
  k: int
  d: int
  sigma: float
  noise_free_signal: bool = False
  wstar: str = "fixed"
  n_test: int = 2000

  def __post_init__(self):
    dsd.check_kd(self.k, self.d)
    models.check_model(self.model)
    if not self.sigma >= 0 or not math.isfinite(self.sigma):
      raise ValueError(f"Problem: sigma must be finite and >= 0 (got {self.sigma!r})")
    if self.wstar not in ("fixed", "random"):
      raise ValueError(f"Problem: wstar must be 'fixed' or 'random' (got {self.wstar!r})")
    if self.n_test < 1:
      raise ValueError(f"Problem: n_test must be >= 1 (got {self.n_test!r})")


def check_eps(eps: float) -> None:
  if not isinstance(eps, (int, float)) or not 0.0 < eps < 0.5:
    raise ValueError(f"eps (target test error) must lie in (0, 0.5) (got {eps!r})")


def check_grid(n_grid: Sequence[int]) -> tuple[int, ...]:
  grid = tuple(int(n) for n in n_grid)
  if len(grid) < 1 or any(n < 1 for n in grid) or any(b <= a for a, b in zip(grid, grid[1:])):
    raise ValueError(f"n_grid must be a non-empty strictly increasing list of integers >= 1 (got {grid})")
  return grid


def _seed_data(p: Problem, cfg: gd.GDConfig, n_max: int, base_key: jax.Array, seed: jax.Array):
  key = jax.random.fold_in(base_key, seed)
  kw, kx, kinit, kt = jax.random.split(key, 4)
  wstar = dsd.random_wstar(kw, p.d) if p.wstar == "random" else dsd.fixed_wstar(p.d)
  x, y = dsd.sample(kx, n_max, p.k, p.d, p.sigma, wstar, p.noise_free_signal)
  xt, yt = dsd.sample(kt, p.n_test, p.k, p.d, p.sigma, wstar, p.noise_free_signal)
  w0 = models.init(p.model, kinit, p.k, p.d, cfg.init, cfg.init_scale)
  return x, y, xt, yt, w0


def _fit_eval(p: Problem, cfg: gd.GDConfig, n_max: int, data, n: jax.Array):
  x, y, xt, yt, w0 = data
  mask = (jnp.arange(n_max) < n).astype(jnp.float32)
  w = gd.train(p.model, w0, x, y, mask, cfg)
  return gd.test_error(p.model, w, xt, yt, cfg), w


def single_run(p: Problem, cfg: gd.GDConfig, n_max: int, base_seed: int, seed: int | jax.Array,
               n: int | jax.Array) -> tuple[jax.Array, jax.Array]:
  """(test error, final weights) for one seed and one n; the same computation the vmapped curve does."""
  base_key = jax.random.key(base_seed, impl=PRNG_IMPL)
  data = _seed_data(p, cfg, n_max, base_key, jnp.asarray(seed, jnp.uint32))
  return _fit_eval(p, cfg, n_max, data, jnp.asarray(n, jnp.int32))


single_run_jit = jax.jit(single_run, static_argnames=("p", "cfg", "n_max", "base_seed"))


def _curve(p: Problem, cfg: gd.GDConfig, n_max: int, base_seed: int, seeds: jax.Array,
           n_grid: jax.Array) -> jax.Array:
  base_key = jax.random.key(base_seed, impl=PRNG_IMPL)

  def per_seed(seed):
    data = _seed_data(p, cfg, n_max, base_key, seed)
    return jax.vmap(lambda n: _fit_eval(p, cfg, n_max, data, n)[0])(n_grid)

  return jax.vmap(per_seed)(seeds)


def _largest_divisor(n: int, limit: int) -> int:
  return max(m for m in range(1, min(n, limit) + 1) if n % m == 0)


def mesh_shape(num_seeds: int, num_grid: int, num_devices: int) -> tuple[int, int]:
  """(seed shards, grid shards): as many devices as divide the work evenly."""
  ms = _largest_divisor(num_seeds, num_devices)
  mg = _largest_divisor(num_grid, max(num_devices // ms, 1))
  return ms, mg


@functools.lru_cache(maxsize=64)
def compiled_curve(p: Problem, cfg: gd.GDConfig, n_grid: tuple[int, ...], num_seeds: int,
                   base_seed: int, num_devices: int | None = None):
  """Returns (jitted fn(seeds [S] uint32, grid [G] int32) -> errors [S, G], input shardings)."""
  devices = jax.devices()
  num_devices = len(devices) if num_devices is None else min(num_devices, len(devices))
  ms, mg = mesh_shape(num_seeds, len(n_grid), num_devices)
  mesh = mesh_lib.make_mesh({"shape": {"seeds": ms, "grid": mg}}, devices=devices[:ms * mg])
  s_seed = jax.sharding.NamedSharding(mesh, jax.P("seeds"))
  s_grid = jax.sharding.NamedSharding(mesh, jax.P("grid"))
  s_out = jax.sharding.NamedSharding(mesh, jax.P("seeds", "grid"))
  fn = jax.jit(functools.partial(_curve, p, cfg, max(n_grid), base_seed),
               in_shardings=(s_seed, s_grid), out_shardings=s_out)
  return fn, (s_seed, s_grid)


def curve_inputs(n_grid: Sequence[int], num_seeds: int, shardings) -> tuple[jax.Array, jax.Array]:
  seeds = jax.device_put(np.arange(num_seeds, dtype=np.uint32), shardings[0])
  grid = jax.device_put(np.asarray(n_grid, np.int32), shardings[1])
  return seeds, grid


def error_curve(p: Problem, cfg: gd.GDConfig, n_grid: Sequence[int], num_seeds: int,
                base_seed: int = 0, num_devices: int | None = None) -> np.ndarray:
  """Test errors ``[num_seeds, len(n_grid)]``: one compiled call, sharded over seeds and grid."""
  grid = check_grid(n_grid)
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1 (got {num_seeds})")
  num_devices = len(jax.devices()) if num_devices is None else min(num_devices, len(jax.devices()))
  fn, shardings = compiled_curve(p, cfg, grid, num_seeds, base_seed, num_devices)
  return np.asarray(fn(*curve_inputs(grid, num_seeds, shardings)))


def crossing(n_grid: Sequence[int], err: np.ndarray, eps: float) -> tuple[float, str]:
  """n where ``err`` first falls to ``eps``, log-linearly interpolated, and a status: 'ok',
  'below grid' (already at eps at the smallest n; -inf returned) or 'not reached' (+inf returned)."""
  check_eps(eps)
  n = np.asarray(n_grid, np.float64)
  err = np.asarray(err, np.float64)
  hit = np.nonzero(err <= eps)[0]
  if hit.size == 0:
    return math.inf, NOT_REACHED
  g = int(hit[0])
  if g == 0:
    return -math.inf, BELOW_GRID
  e0, e1 = err[g - 1], err[g]
  t = (e0 - eps) / (e0 - e1)
  return float(math.exp(math.log(n[g - 1]) + t * (math.log(n[g]) - math.log(n[g - 1])))), "ok"


def bootstrap_nstar(errors: np.ndarray, n_grid: Sequence[int], eps: float, n_boot: int,
                    seed: int = 0) -> np.ndarray:
  """n* of seed-resampled mean curves, ``[n_boot]``; -inf below grid, +inf not reached."""
  rng = np.random.default_rng(seed)
  s = errors.shape[0]
  idx = rng.integers(0, s, size=(n_boot, s))
  means = errors[idx].mean(axis=1)
  return np.array([crossing(n_grid, m, eps)[0] for m in means])


def describe(value: float, n_grid: Sequence[int]) -> float | str:
  """A JSON value for an n*: the number, or the explicit 'not reached' / 'below grid (<n_min)'."""
  if value == math.inf:
    return NOT_REACHED
  if value == -math.inf:
    return f"{BELOW_GRID} (<= {n_grid[0]})"
  return float(value)


def estimate(errors: np.ndarray, n_grid: Sequence[int], eps: float, n_boot: int = 1000,
             ci: float = 0.95, seed: int = 0) -> dict[str, Any]:
  """n*(eps) with a bootstrap interval from a ``[seeds, grid]`` error array."""
  check_eps(eps)
  errors = np.asarray(errors, np.float64)
  mean = errors.mean(axis=0)
  value, status = crossing(n_grid, mean, eps)
  boot = bootstrap_nstar(errors, n_grid, eps, n_boot, seed)
  lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2], method="inverted_cdf")
  return {
      "n_star": describe(value, n_grid), "status": status,
      "ci_low": describe(float(lo), n_grid), "ci_high": describe(float(hi), n_grid),
      "boot_reached_frac": float(np.mean(np.isfinite(boot))),
      "mean_error": mean.tolist(),
      "sem_error": (errors.std(axis=0, ddof=1) / math.sqrt(errors.shape[0])).tolist()
                   if errors.shape[0] > 1 else [0.0] * len(mean),
      "boot_log_n_star": [float(np.log(b)) if np.isfinite(b) else (None if b > 0 else "below")
                          for b in boot],
  }
