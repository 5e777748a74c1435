"""DSD sample-complexity sweep: n*(eps) of CNN, LCN and FCN over k and d, with fitted exponents.

Command:   python -m theory.sweep --config=configs/dsd.py[:smoke|paper|large] --workdir=runs/dsd
           (overrides: --config.sc.eps=0.05 --config.sc.num_seeds=16 ...; unknown keys are errors)
Variants:
  smoke    about 20-40 s (4 cells, mostly XLA compilation): CNN and LCN at k in {4, 8}, d = 8, 2 seeds --
           checks the plumbing, no science.
  default  about 5-10 minutes on 2 shared CPU cores (mostly XLA compilation, 5-30 s per cell): all
           three models on a cross design (k in 4..32 at d = 32, d in 8..64 at k = 8), 8 seeds,
           c = 1 (sigma = 1/sqrt(k)), eps = 0.2.
           Expected result: n* ordered CNN < LCN < FCN (LCN and FCN tied within their intervals at
           k = 4), slopes in k about -0.9 / 0.2 / 1.0 and in d about 0.9; fitted slopes and the
           LCN/CNN and FCN/LCN ratios in runs/dsd/summary.json, plot runs/dsd/nstar.png
           (measured numbers: theory/README.md).
  paper    the paper's range, k, d <= 30 on a full grid, 126 cells, 16 seeds (not run here; estimated
           about an hour on 2 CPU cores, mostly compilation).
  large    k up to 64 and d up to 128, 16 seeds, for a GPU/TPU (FCN has k^2 d weights; not run here).
Noise: sigma = c / sqrt(k) (the theorems' scaling); GD: the two-step analysis preset (one linear step
from w = 0, then one thresholded step, filters on the unit sphere), threshold b in units of sigma.
"""
from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  if variant not in ("default", "smoke", "paper", "large"):
    raise ValueError(f"configs/dsd.py: unknown variant {variant!r}; expected default, smoke, paper or large")
  c = ml_collections.ConfigDict()
  c.name = f"dsd_{variant}"
  c.seed = 0
  c.models = ("cnn", "lcn", "fcn")
  c.ks = (4, 8, 16, 32)
  c.ds = (8, 16, 32, 64)
  c.design = "cross"       # 'cross': k-line at d_ref plus d-line at k_ref; 'grid': every (k, d)
  c.k_ref = 8
  c.d_ref = 32

  c.data = ml_collections.ConfigDict()
  c.data.cs = (1.0,)       # noise constants swept: sigma = c / sqrt(k) ('c/sqrt(k)') or sigma = c ('const')
  c.data.sigma_rule = "c/sqrt(k)"
  c.data.noise_free_signal = False
  c.data.wstar = "fixed"   # 'fixed' (e_1) or 'random' (a new unit vector per seed)
  c.data.n_test = 2000

  c.gd = ml_collections.ConfigDict()
  c.gd.preset = "two_step"  # or 'many_step'
  c.gd.loss = "logistic"    # or 'squared'
  c.gd.activation = "soft_threshold"  # or 'relu'
  c.gd.lr = 1.0
  c.gd.lr2 = 1.0            # second step of two_step
  c.gd.steps = 100          # many_step only
  c.gd.warmup = 1           # many_step: linear (b = 0) steps first
  c.gd.init_scale = 0.01    # many_step: std of the random init times sqrt(fan_in)
  c.gd.projection = "sphere"  # many_step ("ball" lets LCN filters shrink below b and die); two_step: sphere
  c.gd.radius = 1.0
  c.gd.b_units = "sigma"    # threshold b given in units of sigma, or 'absolute'
  c.gd.b = ml_collections.ConfigDict({"cnn": 1.0, "lcn": 1.0, "fcn": 0.0})

  c.sc = ml_collections.ConfigDict()
  c.sc.eps = 0.2
  c.sc.num_seeds = 8
  c.sc.n_boot = 1000
  c.sc.ci = 0.95
  c.sc.points = 14          # log-spaced grid points per cell
  c.sc.n_range = ml_collections.ConfigDict(
      {"cnn": (2, 4096), "lcn": (2, 16384), "fcn": (2, 16384)})
  c.sc.num_devices = 0      # 0: all available devices

  if variant == "smoke":
    c.models = ("cnn", "lcn")
    c.ks, c.ds, c.k_ref, c.d_ref = (4, 8), (8,), 4, 8
    c.design = "grid"
    c.data.n_test = 500
    c.sc.num_seeds, c.sc.n_boot, c.sc.points = 2, 100, 6
    c.sc.n_range = ml_collections.ConfigDict({"cnn": (2, 256), "lcn": (2, 512), "fcn": (2, 1024)})
  elif variant == "paper":
    c.ks, c.ds, c.design = (4, 8, 12, 16, 20, 25, 30), (8, 12, 16, 20, 25, 30), "grid"
    c.k_ref, c.d_ref = 4, 30
    c.sc.num_seeds = 16
  elif variant == "large":
    # Untested here (no accelerator was available): sized for one 80 GB GPU. The largest FCN cell
    # (k = d = 64, n_max = 65536) holds 16 seeds x 1 GB of training inputs at once.
    c.ks, c.ds, c.k_ref, c.d_ref = (4, 8, 16, 32, 64), (8, 16, 32, 64, 128), 8, 64
    c.sc.num_seeds, c.data.n_test = 16, 4000
    c.sc.n_range = ml_collections.ConfigDict(
        {"cnn": (2, 16384), "lcn": (2, 65536), "fcn": (2, 65536)})
  return c
