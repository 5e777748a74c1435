"""The theorems' sample-complexity rates on the DSD (Lahoti et al., ICLR 2024), up to constants and logs.

  CNN:  O~(sigma^2 (k + d))            (upper bound, gradient descent)
  LCN:  Omega(sigma^2 k d)  and  O~(sigma^2 k (k + d))
  FCN:  Omega(sigma^2 k^2 d)
With sigma held fixed these give the nominal log-log slopes (in k, in d): CNN about (1, 1) (k + d is
between 0 and 1 in each; the issue quotes 1), LCN (2, 1) from k(k + d), FCN (2, 1). With the default
noise sigma = c / sqrt(k) the factor sigma^2 lowers every slope in k by one.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

RATES: dict[str, Callable[[float, float], float]] = {
    "cnn_upper": lambda k, d: k + d,
    "lcn_lower": lambda k, d: k * d,
    "lcn_upper": lambda k, d: k * (k + d),
    "fcn_lower": lambda k, d: k * k * d,
}
# The rate each model's theory line follows (the table: CNN ~ k + d, LCN ~ k(k + d), FCN ~ k^2 d).
MODEL_RATE = {"cnn": "cnn_upper", "lcn": "lcn_upper", "fcn": "fcn_lower"}
NOMINAL_SLOPES = {"cnn": (1.0, 1.0), "lcn": (2.0, 1.0), "fcn": (2.0, 1.0)}
# Every bound the paper states for a model (compared in summary.json).
MODEL_BOUNDS = {"cnn": ("cnn_upper",), "lcn": ("lcn_lower", "lcn_upper"), "fcn": ("fcn_lower",)}


def rate(name: str, k: float, d: float, sigma: float = 1.0) -> float:
  """sigma^2 times the named rate at (k, d)."""
  if name not in RATES:
    raise ValueError(f"unknown rate {name!r}; known: {sorted(RATES)}")
  return sigma ** 2 * RATES[name](k, d)


def model_rate(model: str, k: float, d: float, sigma: float = 1.0) -> float:
  return rate(MODEL_RATE[model], k, d, sigma)


def fit_loglog(ks: Sequence[float], ds: Sequence[float], ns: Sequence[float]) -> tuple[float, float, float]:
  """Least-squares fit log n = a + s_k log k + s_d log d; a slope is nan where k or d does not vary."""
  lk, ld, ln = (np.log(np.asarray(v, np.float64)) for v in (ks, ds, ns))
  cols, names = [np.ones_like(ln)], []
  for name, v in (("k", lk), ("d", ld)):
    if np.ptp(v) > 0:
      cols.append(v)
      names.append(name)
  coef = np.linalg.lstsq(np.stack(cols, 1), ln, rcond=None)[0]
  out = {"k": float("nan"), "d": float("nan")}
  out.update(dict(zip(names, coef[1:].tolist())))
  return float(coef[0]), out["k"], out["d"]


def theory_slopes(model: str, cells: Sequence[tuple[int, int]], sigma_of_k: Callable[[int], float]
                  ) -> dict[str, float]:
  """Slopes of the model's theorem rate fitted over the same (k, d) cells and noise rule as a sweep."""
  ks = [k for k, _ in cells]
  ds = [d for _, d in cells]
  nk, nd = NOMINAL_SLOPES[model]
  out: dict = {"rate": MODEL_RATE[model], "nominal_slope_k": nk, "nominal_slope_d": nd}
  for name in MODEL_BOUNDS[model]:
    _, sk, sd = fit_loglog(ks, ds, [rate(name, k, d, sigma_of_k(k)) for k, d in cells])
    _, fk, fd = fit_loglog(ks, ds, [rate(name, k, d) for k, d in cells])
    out[name] = {"slope_k": sk, "slope_d": sd, "slope_k_fixed_sigma": fk, "slope_d_fixed_sigma": fd}
  out["slope_k"], out["slope_d"] = out[MODEL_RATE[model]]["slope_k"], out[MODEL_RATE[model]]["slope_d"]
  return out
