"""Test error as a function of n, vmapped over seeds and an n-grid, its floor, and n*(eps).

Per seed we draw ``n_max`` training samples once (plus a test set) and train one model per grid point
on the first ``n`` of them. The grid is split into buckets whose largest n is at most twice their
smallest; a bucket is one vmapped computation over its points, each trained on the bucket's largest n
with the loss masked to its own n, so all shapes are static and no point costs more than 2n (a
single masked batch of n_max, as before, spent most of its work on masked-out samples). Seeds are
sharded over the available devices. Every seed also gives the test error of the planted solution
(the floor). ``n*(eps)`` is read from the seed-averaged curve of the test error (target 'absolute')
or of the excess error over the floor (target 'excess') by log-linear interpolation at its first
crossing of ``eps``; a bootstrap over seeds gives its interval. A target that the grid never reaches
is reported as 'not reached', one already met at the smallest n as 'below grid' -- never as a
made-up number.
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


def buckets(n_grid: Sequence[int]) -> tuple[tuple[int, ...], ...]:
  """Splits a sorted grid into consecutive buckets whose largest n is at most twice their smallest.

  A bucket trains each of its grid points on its own largest n (masked), so no grid point costs more
  than twice its own n; each bucket is one vmapped computation over its points.
  """
  grid, out = check_grid(n_grid), []
  for n in grid:
    if out and n <= 2 * out[-1][0]:
      out[-1].append(n)
    else:
      out.append([n])
  return tuple(tuple(b) for b in out)


def useful_fraction(n_grid: Sequence[int], bucketed: bool = True) -> float:
  """Real samples over computed samples: sum of n over the sum of the sizes actually trained on
  (the bucket's largest n when ``bucketed``, else n_max for every point, as a single masked batch)."""
  grid = check_grid(n_grid)
  cost = sum(len(b) * max(b) for b in buckets(grid)) if bucketed else len(grid) * max(grid)
  return sum(grid) / cost


def _keys(base_key: jax.Array, seed: jax.Array) -> tuple[jax.Array, ...]:
  """(w*, training set, init, test set) keys of one seed: the same in every cell and model."""
  return tuple(jax.random.split(jax.random.fold_in(base_key, seed), 4))


def draw(p: Problem, n_max: int, base_key: jax.Array, seed: jax.Array) -> dict[str, jax.Array]:
  """One seed's data: ``n_max`` training samples, the test set and w*.

  The draws do not depend on ``p.model`` and are prefix-consistent (the first n of n_max samples are
  the samples drawn with n_max = n), so every model of a cell and every n-grid sees the same samples.
  """
  kw, kx, _, kt = _keys(base_key, seed)
  wstar = dsd.random_wstar(kw, p.d) if p.wstar == "random" else dsd.fixed_wstar(p.d)
  x, y = dsd.sample(kx, n_max, p.k, p.d, p.sigma, wstar, p.noise_free_signal)
  xt, yt = dsd.sample(kt, p.n_test, p.k, p.d, p.sigma, wstar, p.noise_free_signal)
  return {"x": x, "y": y, "xt": xt, "yt": yt, "wstar": wstar}


def init_weights(p: Problem, cfg: gd.GDConfig, base_key: jax.Array, seed: jax.Array) -> jax.Array:
  return models.init(p.model, _keys(base_key, seed)[2], p.k, p.d, cfg.init, cfg.init_scale)


def floor_error(cfg: gd.GDConfig, data: dict[str, jax.Array]) -> jax.Array:
  """Test error of the planted solution f*(x) = sum_i phi_b(<w*, x_i>) at the model's threshold.

  Every architecture holds it (CNN: w*; LCN: w* in every row; FCN: w* on unit j's own patch j; with
  b = 0 it is the linear classifier <w* tiled, x>, the best linear one), and it is what GD reaches as
  n grows: the error floor that no sample size removes.
  """
  return gd.test_error("cnn", data["wstar"], data["xt"], data["yt"], cfg)


def _fit_eval(p: Problem, cfg: gd.GDConfig, data: dict[str, jax.Array], w0: jax.Array, cap: int,
              n: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Trains on the first ``n`` of the first ``cap`` samples (masked) and returns (test error, w)."""
  mask = (jnp.arange(cap) < n).astype(jnp.float32)
  w = gd.train(p.model, w0, data["x"][:cap], data["y"][:cap], mask, cfg)
  return gd.test_error(p.model, w, data["xt"], data["yt"], cfg), w


def single_run(p: Problem, cfg: gd.GDConfig, n_max: int, base_seed: int, seed: int | jax.Array,
               n: int | jax.Array) -> tuple[jax.Array, jax.Array]:
  """(test error, final weights) for one seed and one n, trained on all ``n_max`` drawn samples with
  the loss masked to the first n: the reference that the bucketed curve must reproduce."""
  base_key = jax.random.key(base_seed, impl=PRNG_IMPL)
  seed = jnp.asarray(seed, jnp.uint32)
  data = draw(p, n_max, base_key, seed)
  return _fit_eval(p, cfg, data, init_weights(p, cfg, base_key, seed), n_max,
                   jnp.asarray(n, jnp.int32))


single_run_jit = jax.jit(single_run, static_argnames=("p", "cfg", "n_max", "base_seed"))


def _draw_all(p: Problem, n_max: int, base_seed: int, seeds: jax.Array) -> dict[str, jax.Array]:
  base_key = jax.random.key(base_seed, impl=PRNG_IMPL)
  return jax.vmap(lambda s: draw(p, n_max, base_key, s))(seeds)


def _curve(p: Problem, cfg: gd.GDConfig, n_grid: tuple[int, ...], base_seed: int, seeds: jax.Array,
           data: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  base_key = jax.random.key(base_seed, impl=PRNG_IMPL)

  def per_seed(seed, data):
    w0 = init_weights(p, cfg, base_key, seed)
    errs = [jax.vmap(lambda n: _fit_eval(p, cfg, data, w0, max(b), n)[0])(jnp.asarray(b, jnp.int32))
            for b in buckets(n_grid)]
    return jnp.concatenate(errs), floor_error(cfg, data)

  return jax.vmap(per_seed)(seeds, data)


def _largest_divisor(n: int, limit: int) -> int:
  return max(m for m in range(1, min(n, limit) + 1) if n % m == 0)


@functools.lru_cache(maxsize=16)
def _seed_sharding(num_seeds: int, num_devices: int) -> jax.sharding.NamedSharding:
  """Seeds split over as many devices as divide them evenly (a 1-D ``seeds`` mesh)."""
  devices = jax.local_devices()[:num_devices]  # a process sweeps its own cells on its own devices
  ms = _largest_divisor(num_seeds, len(devices))
  mesh = mesh_lib.make_mesh({"shape": {"seeds": ms}}, devices=devices[:ms])
  return jax.sharding.NamedSharding(mesh, jax.P("seeds"))


def _num_devices(num_devices: int | None) -> int:
  local = len(jax.local_devices())
  return local if not num_devices else min(num_devices, local)


@functools.lru_cache(maxsize=8)
def compiled_draw(p: Problem, n_max: int, num_seeds: int, base_seed: int, num_devices: int):
  s = _seed_sharding(num_seeds, num_devices)
  return jax.jit(functools.partial(_draw_all, p, n_max, base_seed), in_shardings=s, out_shardings=s)


@functools.lru_cache(maxsize=64)
def compiled_curve(p: Problem, cfg: gd.GDConfig, n_grid: tuple[int, ...], num_seeds: int,
                   base_seed: int, num_devices: int):
  """jitted fn(seeds [S] uint32, data) -> (errors [S, G], floors [S]), sharded over seeds."""
  s = _seed_sharding(num_seeds, num_devices)
  return jax.jit(functools.partial(_curve, p, cfg, n_grid, base_seed), in_shardings=(s, s),
                 out_shardings=(s, s))


def seed_array(num_seeds: int, num_devices: int | None = None) -> jax.Array:
  return jax.device_put(np.arange(num_seeds, dtype=np.uint32),
                        _seed_sharding(num_seeds, _num_devices(num_devices)))


def draw_data(p: Problem, n_max: int, num_seeds: int, base_seed: int = 0,
              num_devices: int | None = None) -> dict[str, jax.Array]:
  """Every seed's data for a cell (any model), drawn once and kept sharded over seeds."""
  nd = _num_devices(num_devices)
  p = dataclasses.replace(p, model="cnn")  # the draws do not depend on the model: one cache entry
  return compiled_draw(p, n_max, num_seeds, base_seed, nd)(seed_array(num_seeds, nd))


def launch_curve(p: Problem, cfg: gd.GDConfig, n_grid: Sequence[int], num_seeds: int,
                 base_seed: int = 0, num_devices: int | None = None,
                 data: dict[str, jax.Array] | None = None) -> tuple[jax.Array, jax.Array]:
  """Compiles (once) and dispatches the curve without waiting for it: (errors ``[num_seeds, G]``,
  floors ``[num_seeds]``) as device arrays, so the caller can compile the next cell meanwhile.
  ``data`` (from :func:`draw_data`, with at least max(n_grid) samples) is drawn here if not given."""
  grid = check_grid(n_grid)
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1 (got {num_seeds})")
  nd = _num_devices(num_devices)
  if data is None:
    data = draw_data(p, max(grid), num_seeds, base_seed, nd)
  if data["x"].shape[:2] < (num_seeds, max(grid)):
    raise ValueError(f"data holds {data['x'].shape[:2]} (seeds, samples); the grid needs "
                     f"({num_seeds}, {max(grid)})")
  return compiled_curve(p, cfg, grid, num_seeds, base_seed, nd)(seed_array(num_seeds, nd), data)


def error_curve(p: Problem, cfg: gd.GDConfig, n_grid: Sequence[int], num_seeds: int,
                base_seed: int = 0, num_devices: int | None = None,
                data: dict[str, jax.Array] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(test errors ``[num_seeds, len(n_grid)]``, floors ``[num_seeds]``) in one compiled call,
  bucketed over n and sharded over seeds (:func:`launch_curve`, waited for)."""
  errors, floors = launch_curve(p, cfg, n_grid, num_seeds, base_seed, num_devices, data)
  return np.asarray(errors), np.asarray(floors)


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
