"""The vmapped error curve against single runs, sharding over 1 and 8 devices, and n*(eps) reading."""
import math

import numpy as np
import pytest

from theory import gd
from theory import sample_complexity as sc

P = sc.Problem("lcn", 3, 4, sigma=0.4, n_test=300)
CFG = gd.two_step(lr1=1.0, lr2=1.0, b=0.2)
GRID = (2, 8, 32, 64)


def test_vmapped_curve_equals_single_runs():
  errors = sc.error_curve(P, CFG, GRID, num_seeds=4, base_seed=3)
  assert errors.shape == (4, len(GRID))
  for s in (0, 3):
    for g, n in enumerate(GRID):
      err, _ = sc.single_run_jit(P, CFG, max(GRID), 3, s, n)
      assert float(err) == pytest.approx(errors[s, g], abs=1.5 / P.n_test)
  # More data helps on average (the curve is a curve, not noise).
  assert errors[:, -1].mean() < errors[:, 0].mean()


def test_sharded_over_8_devices_equals_1_device():
  import jax
  assert len(jax.devices()) == 8
  assert sc.mesh_shape(4, 4, 8) == (4, 2)
  assert sc.mesh_shape(3, 5, 8) == (3, 1)
  e8 = sc.error_curve(P, CFG, GRID, num_seeds=4, base_seed=3, num_devices=8)
  e1 = sc.error_curve(P, CFG, GRID, num_seeds=4, base_seed=3, num_devices=1)
  np.testing.assert_allclose(e8, e1, atol=1.5 / P.n_test)


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


def test_bad_problem_and_grid_raise():
  with pytest.raises(ValueError, match="k must be an integer >= 1"):
    sc.Problem("cnn", 0, 4, 0.1)
  with pytest.raises(ValueError, match="d must be an integer >= 1"):
    sc.Problem("cnn", 4, 0, 0.1)
  with pytest.raises(ValueError, match="strictly increasing"):
    sc.check_grid((8, 4))
