"""Log-log fits, the bootstrap of slopes, the theorems' rates on cells, ratios and the report, on
hand-computed cases."""
import json
import math

import numpy as np
import pytest

from theory import bounds, report, sweep


def test_fit_loglog_recovers_an_exact_power_law():
  cells = [(4, 32), (8, 32), (16, 32), (8, 8), (8, 64)]
  ns = [3.0 * k ** 1.5 * d ** 0.5 for k, d in cells]
  a, sk, sd = bounds.fit_loglog([k for k, _ in cells], [d for _, d in cells], ns)
  assert (a, sk, sd) == pytest.approx((math.log(3.0), 1.5, 0.5))
  _, sk, sd = bounds.fit_loglog([4, 8, 16], [32, 32, 32], [1, 2, 4])
  assert sk == pytest.approx(1.0) and math.isnan(sd)  # d does not vary: no d-slope


def test_theory_slopes_are_the_rates_fitted_on_the_cells():
  # CNN k-line at d = 32 with sigma^2 = 1/k: rate (k + d)/k; two cells k = 4, 8:
  # slope = (log(40/8) - log(36/4)) / log 2
  th = bounds.theory_slopes("cnn", [(4, 32), (8, 32)], lambda k: 1 / math.sqrt(k))
  assert th["cnn_upper"]["slope_k"] == pytest.approx((math.log(5) - math.log(9)) / math.log(2))
  # sigma fixed: LCN lower k d -> (1, 1) exactly; upper k(k+d) on the same cells by hand
  cells = [(4, 8), (8, 8), (4, 16)]
  th = bounds.theory_slopes("lcn", cells, lambda k: 0.125)
  assert th["lcn_lower"]["slope_k"] == pytest.approx(1.0)
  assert th["lcn_lower"]["slope_d"] == pytest.approx(1.0)
  ln = np.log([k * (k + d) for k, d in cells])
  assert th["lcn_upper"]["slope_k"] == pytest.approx((ln[1] - ln[0]) / math.log(2))
  assert th["lcn_upper"]["slope_d"] == pytest.approx((ln[2] - ln[0]) / math.log(2))
  th = bounds.theory_slopes("fcn", [(4, 8), (8, 8), (4, 16)], lambda k: 2 / math.sqrt(k))
  assert th["fcn_lower"]["slope_k"] == pytest.approx(1.0)  # k^2 d / k
  assert th["fcn_lower"]["slope_d"] == pytest.approx(1.0)


def test_agreement():
  assert bounds.agreement([0.8, 1.1], [1.0]) == "agrees"
  assert bounds.agreement([0.1, 0.2], [0.0, 0.3]) == "agrees"  # meets [lower, upper]
  assert bounds.agreement([0.5, 0.7], [0.0, 0.3]) == "above"
  assert bounds.agreement([-0.9, -0.8], [-0.7]) == "below"
  assert bounds.agreement(None, [1.0]) is None


def _result(model, k, d, n_star, boot, status="ok"):
  return {"id": f"{model}_k{k}_d{d}", "status": status, "n_star": n_star,
          "settings": {"model": model, "k": k, "d": d},
          "boot_log_n_star": [float(np.log(b)) if np.isfinite(b) else None for b in boot]}


def test_fit_model_slopes_and_bootstrap_interval():
  cells = [(4, 16), (8, 16), (16, 16), (8, 32)]
  rng = np.random.default_rng(0)
  res = []
  for k, d in cells:
    true = 2.0 * k * d ** 0.5
    res.append(_result("lcn", k, d, true, true * np.exp(0.05 * rng.normal(size=400))))
  fit = sweep.fit_model(res, 0.95)
  assert fit["slope_k"] == pytest.approx(1.0) and fit["slope_d"] == pytest.approx(0.5)
  lo, hi = fit["slope_k_ci"]
  assert lo < 1.0 < hi and hi - lo < 0.3
  # Replicates where a cell is not reached drop out of the interval (not counted as numbers).
  res[0]["boot_log_n_star"][:100] = [None] * 100
  assert sweep.fit_model(res, 0.95)["boot_valid_frac"] == pytest.approx(0.75)
  # A cell that never reached eps is left out of the fit and listed.
  res.append(_result("lcn", 32, 16, "not reached", [math.inf] * 400, status="not reached"))
  fit = sweep.fit_model(res, 0.95)
  assert fit["cells_used"] == 4 and fit["cells_not_reached"] == ["lcn_k32_d16"]


def test_ratios_are_paired_over_bootstrap_replicates():
  base = np.array([10.0, 20.0, 40.0, 10.0])
  a = [_result("lcn", 4, 8, 100.0, 10 * base), _result("lcn", 8, 8, 300.0, 30 * base)]
  b = [_result("cnn", 4, 8, 10.0, base), _result("cnn", 8, 8, 10.0, base)]
  r = sweep.ratios({"lcn": a, "cnn": b}, "lcn", "cnn", 0.5)
  assert r["per_cell"] == {"k4_d8": pytest.approx(10.0), "k8_d8": pytest.approx(30.0)}
  # Every replicate moves both rows together, so the paired interval has no width.
  assert r["per_cell_ci"]["k4_d8"] == pytest.approx([10.0, 10.0])
  assert r["geomean"] == pytest.approx(math.sqrt(300.0))
  assert r["geomean_ci"] == pytest.approx([math.sqrt(300.0)] * 2)
  a[1]["status"], a[1]["n_star"] = "not reached", "not reached"
  r = sweep.ratios({"lcn": a, "cnn": b}, "lcn", "cnn", 0.5)
  assert r["per_cell"]["k8_d8"].startswith("lcn: not reached") and r["geomean"] == pytest.approx(10.0)


def test_report_markdown_from_a_hand_made_summary(tmp_path, capsys):
  fit = {"slope_k": 0.93, "slope_k_ci": [0.81, 1.05], "slope_d": None, "slope_d_ci": None,
         "cells_used": 2, "cells_total": 2, "agreement_k": "agrees", "agreement_d": None,
         "theory": {"lcn_lower": {"slope_k": 1.0, "slope_d": float("nan")},
                    "lcn_upper": {"slope_k": 1.5, "slope_d": float("nan")}},
         "n_star": {"k4_d8": 100.0, "k8_d8": "not reached"},
         "n_star_ci": {"k4_d8": [90.0, 110.0], "k8_d8": ["not reached", "not reached"]},
         "floor": {"k4_d8": [0.1234, 0.001], "k8_d8": [0.0567, 0.001]}}
  summary = {"target": "excess", "eps": 0.05, "sigma_rule": "const", "design": "cross",
             "wall_time_s": 12.0, "cells_computed": 2, "cells_resumed": 0,
             "results": {"c=0.125": {"models": {"lcn": fit}, "ratios": {}}}}
  text = report.markdown(summary)
  assert "test error - floor reaches eps = 0.05" in text
  assert "| lcn | 0.93 [0.81, 1.05] | Omega(s^2 k d) 1.00; O~(s^2 k (k+d)) 1.50 (agrees) | n/a | " \
      "Omega(s^2 k d) n/a; O~(s^2 k (k+d)) n/a (-) |" in text
  assert "| k4, d8 | 0.123 / 100 [90, 110] |" in text
  assert "| k8, d8 | 0.057 / not reached [not reached, not reached] |" in text
  path = tmp_path / "summary.json"
  path.write_text(json.dumps(summary).replace("NaN", '"nan"'))  # as write_summary stores nan
  assert report.main([str(path)]) == 0 and "| lcn |" in capsys.readouterr().out
  path.write_text("{}")
  assert report.main([str(path)]) == 2
  assert "not a readable sweep summary" in capsys.readouterr().err
