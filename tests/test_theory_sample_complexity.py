"""The bucketed error curve against masked single runs, sharding, floors against float64 references,
the bucketing's work, and n*(eps) reading."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from theory import gd
from theory import sample_complexity as sc

P = sc.Problem("lcn", 3, 4, sigma=0.4, n_test=300)
CFG = gd.two_step(lr1=1.0, lr2=1.0, b=0.2)
GRID = (2, 3, 8, 20, 32, 64)


@pytest.mark.parametrize("model,cfg", [
    ("lcn", CFG), ("cnn", CFG),
    ("fcn", gd.many_step(steps=4, lr=8.0, b=0.2, warmup=0, init_scale=1.0))])
def test_bucketed_curve_equals_masked_single_runs(model, cfg):
  """Each grid point trained on its bucket's samples gives the same result as the reference that
  trains on all n_max drawn samples with the loss masked to n (today's computation)."""
  p = sc.Problem(model, 3, 4, sigma=0.4, n_test=300)
  errors, floors = sc.error_curve(p, cfg, GRID, num_seeds=3, base_seed=3)
  assert errors.shape == (3, len(GRID)) and floors.shape == (3,)
  for s in range(3):
    for g, n in enumerate(GRID):
      err, _ = sc.single_run_jit(p, cfg, max(GRID), 3, s, n)
      # equal up to one test sample whose margin is within float rounding of 0
      assert abs(float(err) - errors[s, g]) <= 1.0 / p.n_test + 1e-7
  assert errors[:, -1].mean() < errors[:, 0].mean()  # more data helps on average


def test_training_on_the_bucket_equals_training_on_n_max_masked():
  base = jax.random.key(5, impl=sc.PRNG_IMPL)
  seed = jnp.uint32(1)
  data = sc.draw(P, 64, base, seed)
  w0 = sc.init_weights(P, CFG, base, seed)
  for n, cap in ((3, 4), (20, 32), (33, 64)):
    e_cap, w_cap = sc._fit_eval(P, CFG, data, w0, cap, jnp.int32(n))
    e_all, w_all = sc._fit_eval(P, CFG, data, w0, 64, jnp.int32(n))
    np.testing.assert_allclose(np.asarray(w_cap), np.asarray(w_all), rtol=1e-5, atol=1e-6)


def test_draws_are_prefix_consistent_and_shared_by_models():
  """The first n of n_max samples are the n-sample draw, for every model: one data draw per cell."""
  base = jax.random.key(0, impl=sc.PRNG_IMPL)
  big = sc.draw(P, 100, base, jnp.uint32(2))
  small = sc.draw(sc.Problem("cnn", 3, 4, sigma=0.4, n_test=300), 37, base, jnp.uint32(2))
  for name in ("x", "y"):
    np.testing.assert_array_equal(np.asarray(big[name])[:37], np.asarray(small[name]))
  for name in ("xt", "yt", "wstar"):
    np.testing.assert_array_equal(np.asarray(big[name]), np.asarray(small[name]))


def test_buckets_and_useful_fraction():
  assert sc.buckets((2, 4, 8, 16)) == ((2, 4), (8, 16))
  assert sc.buckets((2, 3, 5, 9, 10, 40)) == ((2, 3), (5, 9, 10), (40,))
  # trained sizes 4+4+16+16 = 40 for 30 real samples; one masked batch: 4 x 16 = 64
  assert sc.useful_fraction((2, 4, 8, 16)) == pytest.approx(30 / 40)
  assert sc.useful_fraction((2, 4, 8, 16), bucketed=False) == pytest.approx(30 / 64)
  grid = tuple(int(n) for n in np.unique(np.round(np.geomspace(2, 16384, 14))))
  for b in sc.buckets(grid):
    assert max(b) <= 2 * min(b)  # every point costs at most twice its own n
  assert sc.useful_fraction(grid) >= 0.5 > 0.15 > sc.useful_fraction(grid, bucketed=False)


def test_sharded_over_8_devices_equals_1_device():
  assert len(jax.devices()) == 8
  e8, f8 = sc.error_curve(P, CFG, GRID, num_seeds=4, base_seed=3, num_devices=8)
  e1, f1 = sc.error_curve(P, CFG, GRID, num_seeds=4, base_seed=3, num_devices=1)
  np.testing.assert_allclose(e8, e1, atol=1.5 / P.n_test)
  np.testing.assert_array_equal(f8, f1)


def _floor_mc(k, d, sigma, b, n=200_000):
  p = sc.Problem("cnn", k, d, sigma=sigma, n_test=n)
  data = sc.draw(p, 1, jax.random.key(11, impl=sc.PRNG_IMPL), jnp.uint32(0))
  return float(sc.floor_error(gd.two_step(b=b), data)), 4.5 * math.sqrt(0.25 / n)


def _phi(u, b):
  return np.sign(u) * np.maximum(np.abs(u) - b, 0)


def _floor_k2(sigma, b):
  """float64 reference at k = 2: f = phi_b(1 + sigma g0) + phi_b(sigma g1) (y = 1 by symmetry);
  error = P(f < 0) + P(f = 0) / 2, with the atoms at 0 handled exactly and the rest by quadrature."""
  cdf_a = lambda t: stats.norm.cdf(((t - b) if t < 0 else (t + b)) - 1, scale=sigma)  # P(A < t), A != 0 part
  dead_a = stats.norm.cdf(b - 1, scale=sigma) - stats.norm.cdf(-b - 1, scale=sigma)
  dead_b = 1 - 2 * stats.norm.cdf(-b / sigma)
  neg = dead_b * stats.norm.cdf(-b - 1, scale=sigma)  # B = 0: need A < 0
  f = lambda g: stats.norm.pdf(g) * cdf_a(-_phi(sigma * g, b))
  neg += integrate.quad(f, b / sigma, np.inf)[0] + integrate.quad(f, -np.inf, -b / sigma)[0]
  return neg + 0.5 * dead_a * dead_b


@pytest.mark.parametrize("k,d,sigma,b", [(1, 3, 0.6, 0.3), (2, 3, 0.5, 0.5), (2, 2, 0.8, 0.2),
                                         (9, 4, 1 / 3, 0.0)])
def test_floor_matches_float64_reference(k, d, sigma, b):
  mc, tol = _floor_mc(k, d, sigma, b)
  if b == 0:
    ref = stats.norm.cdf(-1 / (sigma * math.sqrt(k)))  # the linear classifier <w* tiled, x>
  elif k == 1:
    lo, hi = stats.norm.cdf(-b - 1, scale=sigma), stats.norm.cdf(b - 1, scale=sigma)
    ref = lo + 0.5 * (hi - lo)
  else:
    ref = _floor_k2(sigma, b)
  assert mc == pytest.approx(ref, abs=tol)


def test_crossing_interpolates_in_log_n():
  grid = (10, 100, 1000)
  n, status = sc.crossing(grid, [0.4, 0.2, 0.05], 0.1)
  assert status == "ok"
  # between 100 (0.2) and 1000 (0.05): t = (0.2 - 0.1) / 0.15 = 2/3 of a decade
  assert n == pytest.approx(100 * 10 ** (2 / 3))
  assert sc.crossing(grid, [0.4, 0.3, 0.2], 0.1) == (math.inf, "not reached")
  assert sc.crossing(grid, [0.05, 0.03, 0.01], 0.1) == (-math.inf, "below grid")


def test_estimate_reports_not_reached_never_a_number():
  errors = np.full((5, 3), 0.3) + np.linspace(0, 0.01, 5)[:, None]
  est = sc.estimate(errors, (10, 100, 1000), 0.1, n_boot=50)
  assert est["n_star"] == "not reached" and est["status"] == "not reached"
  assert est["ci_low"] == "not reached" and est["ci_high"] == "not reached"
  assert est["boot_reached_frac"] == 0.0
  rng = np.random.default_rng(0)
  errors = np.array([[0.4, 0.2, 0.05]]) + 0.01 * rng.normal(size=(8, 3))
  est = sc.estimate(errors, (10, 100, 1000), 0.1, n_boot=200)
  assert est["status"] == "ok" and est["ci_low"] <= est["n_star"] <= est["ci_high"]


@pytest.mark.parametrize("eps", [0.0, 0.5, -0.1, 0.7])
def test_bad_eps_raises(eps):
  with pytest.raises(ValueError, match=r"eps .* must lie in \(0, 0.5\)"):
    sc.crossing((1, 2), [0.4, 0.3], eps)


def test_bad_problem_grid_and_data_raise():
  with pytest.raises(ValueError, match="k must be an integer >= 1"):
    sc.Problem("cnn", 0, 4, 0.1)
  with pytest.raises(ValueError, match="d must be an integer >= 1"):
    sc.Problem("cnn", 4, 0, 0.1)
  with pytest.raises(ValueError, match="strictly increasing"):
    sc.check_grid((8, 4))
  data = sc.draw_data(P, 16, num_seeds=2)
  with pytest.raises(ValueError, match="the grid needs"):
    sc.error_curve(P, CFG, (2, 32), num_seeds=2, data=data)
