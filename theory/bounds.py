"""The theorems' sample-complexity rates on the DSD (Lahoti et al., ICLR 2024), up to constants and logs.

  CNN:  O~(sigma^2 (k + d))            (upper bound, gradient descent)
  LCN:  Omega(sigma^2 k d)  and  O~(sigma^2 k (k + d))
  FCN:  Omega(sigma^2 k^2 d)           (lower bound for any equivariant algorithm, the linear FCN too)
A rate's log-log slopes are not constants: k + d has a slope in k between 0 and 1 that depends on the
cells, and sigma^2 = c^2 / k (the theorems' noise) lowers every k-slope by one. So the slopes a sweep
is compared with are fitted to the rates evaluated on the sweep's own cells and noise rule
(:func:`theory_slopes`), with the same least squares as the measured n*.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

RATES: dict[str, Callable[[float, float], float]] = {
    "cnn_upper": lambda k, d: k + d,
    "lcn_lower": lambda k, d: k * d,
    "lcn_upper": lambda k, d: k * (k + d),
    "fcn_lower": lambda k, d: k * k * d,
}
# Every bound the paper states for an architecture.
MODEL_BOUNDS = {"cnn": ("cnn_upper",), "lcn": ("lcn_lower", "lcn_upper"), "fcn": ("fcn_lower",)}


def rate(name: str, k: float, d: float, sigma: float = 1.0) -> float:
  """sigma^2 times the named rate at (k, d)."""
  if name not in RATES:
    raise ValueError(f"unknown rate {name!r}; known: {sorted(RATES)}")
  return sigma ** 2 * RATES[name](k, d)


def model_rate(arch: str, k: float, d: float, sigma: float = 1.0) -> float:
  """sigma^2 times the architecture's last-listed bound (the upper one where there are two)."""
  return rate(MODEL_BOUNDS[arch][-1], k, d, sigma)


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


def theory_slopes(arch: str, cells: Sequence[tuple[int, int]], sigma_of_k: Callable[[int], float]
                  ) -> dict[str, dict[str, float]]:
  """Per bound of the architecture, the slopes (in k, in d) of sigma(k)^2 times the rate, fitted on
  ``cells`` exactly as the measured n* are; nan where k or d does not vary over the cells."""
  ks = [k for k, _ in cells]
  ds = [d for _, d in cells]
  out = {}
  for name in MODEL_BOUNDS[arch]:
    _, sk, sd = fit_loglog(ks, ds, [rate(name, k, d, sigma_of_k(k)) for k, d in cells])
    out[name] = {"slope_k": sk, "slope_d": sd}
  return out


def agreement(ci: Sequence[float] | None, theory: Sequence[float]) -> str | None:
  """'agrees' when a slope's interval meets the theory range [min(theory), max(theory)] (one value,
  or a lower and an upper bound), else 'above' or 'below' it; None without an interval."""
  if not ci or any(not math.isfinite(t) for t in theory):
    return None
  lo, hi = min(theory), max(theory)
  if ci[1] < lo:
    return "below"
  if ci[0] > hi:
    return "above"
  return "agrees"
