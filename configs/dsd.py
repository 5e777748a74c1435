"""DSD sample-complexity sweep: n*(eps) of CNN, LCN and two FCNs over k and d, floors and exponents.

Command:   python -m theory.sweep --config=configs/dsd.py[:smoke|fixed_sigma|paper|large] --workdir=runs/dsd
           (overrides: --config.sc.eps=0.05 --config.sc.num_seeds=16 ...; unknown keys are errors)
Rows (``rows``): ``cnn`` and ``lcn`` trained by the two-step analysis preset (one linear step from
w = 0, then one step with threshold b = sigma, filters on the unit sphere); ``fcn``, a trained FCN
(random init, 30 thresholded GD steps with b = sigma: its k units break symmetry and specialise on
patches); ``fcn_linear``, the two-step preset from w = 0 with b = 0, whose k units stay identical (a
linear classifier). Target: n* is the n at which the seed-mean test error comes within eps of the
row's floor (the test error of the planted solution sum_i phi_b(<w*, x_i>) on the same test sets),
so every row and cell is measured at the same distance from what that model can reach.
Variants (wall times measured on 2 CPU cores; all numbers in theory/README.md):
  smoke        ~17 s: CNN and LCN at k in {4, 8}, d = 8, 2 seeds -- checks the plumbing, no science.
  default      ~4-7 min: sigma = 1/sqrt(k) (the theorems' noise), k in 4..32 at d = 32 and d in 8..64
               at k = 8, the trained FCN to k = 16 (its grid to 262144). Expected: n* CNN < LCN < trained FCN in every
               cell, LCN/CNN growing from ~5 (k = 4) to ~44 (k = 32); slopes in k about -0.2 (CNN),
               0.8 (LCN), 1.0 (linear FCN), in d about 0.9-1.1.
  fixed_sigma  ~6 min: sigma = 1/4 at every k (the default's noise at k = 16), k in 4..64 at d = 32 and
               d in 8..64 at k = 16; the trained FCN at k <= 8. The exponents at fixed sigma:
               expected k-slopes about 1.3 (CNN), 2.3 (LCN), 1.9 (linear FCN).
  paper        ~8.6 min: the paper's range and rows, CNN and LCN at k, d <= 30 on a full grid (42
               cells), 16 seeds, and the trained FCN at k <= 8.
  large        k up to 64 and d up to 128, 16 seeds, for a GPU (FCN weights are k^2 d).
"""
from __future__ import annotations

import ml_collections

VARIANTS = ("default", "smoke", "fixed_sigma", "paper", "large")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"configs/dsd.py: unknown variant {variant!r}; expected one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.name = f"dsd_{variant}"
  c.seed = 0
  c.models = ("cnn", "lcn", "fcn", "fcn_linear")  # rows to run, each defined in c.rows
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

  c.gd = ml_collections.ConfigDict()  # the base GD settings; a row's ``gd`` overrides them
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
  c.gd.b_units = "sigma"    # a row's threshold b in units of sigma, or 'absolute'

  # Rows: architecture, threshold b, largest k run (0: all), GD overrides.
  row = lambda arch, b, gd=None, k_max=0: ml_collections.ConfigDict(  # noqa: E731
      {"arch": arch, "b": b, "k_max": k_max, "gd": gd or {}})
  c.rows = ml_collections.ConfigDict({
      "cnn": row("cnn", 1.0),
      "lcn": row("lcn", 1.0),
      # Random init on the sphere, no linear warm-up (it would make the units identical again);
      # lr 64 and 30 steps: at k = 8, d = 16, n = 16384 (pilot draws, not the sweep's) more steps or a
      # larger step no longer lowered the test error and every unit had specialised on its own patch.
      "fcn": row("fcn", 1.0, {"preset": "many_step", "steps": 30, "lr": 64.0, "warmup": 0,
                              "init_scale": 1.0}),
      "fcn_linear": row("fcn", 0.0),
  })
  c.ratios = (("lcn", "cnn"), ("fcn", "lcn"), ("fcn_linear", "lcn"), ("fcn", "fcn_linear"))

  c.sc = ml_collections.ConfigDict()
  c.sc.target = "excess"    # n* where (test error - floor) reaches eps; or 'absolute' (test error)
  c.sc.eps = 0.05
  c.sc.num_seeds = 8
  c.sc.n_boot = 1000
  c.sc.ci = 0.95
  c.sc.points = 14          # log-spaced grid points per cell
  c.sc.n_range = ml_collections.ConfigDict(
      {"cnn": (2, 4096), "lcn": (2, 16384), "fcn": (2, 262144), "fcn_linear": (2, 16384)})
  c.rows.fcn.k_max = 16     # the trained FCN at k = 32 needs several 10^5 samples: too slow on 2 CPU cores
  c.sc.num_devices = 0      # 0: all available devices

  if variant == "smoke":
    c.models = ("cnn", "lcn")
    c.ks, c.ds, c.k_ref, c.d_ref = (4, 8), (8,), 4, 8
    c.design = "grid"
    c.data.n_test = 500
    c.sc.eps = 0.1
    c.sc.num_seeds, c.sc.n_boot, c.sc.points = 2, 100, 6
    c.sc.n_range = ml_collections.ConfigDict(
        {"cnn": (2, 256), "lcn": (2, 512), "fcn": (2, 1024), "fcn_linear": (2, 1024)})
  elif variant == "fixed_sigma":
    # sigma = 1/4 (the default's noise at k = 16): at 1/8 the CNN reached eps with 2 samples or fewer
    # at every k <= 8 and the d-line at k = 8 sat at the bottom of the grid (no slope to read).
    c.data.sigma_rule, c.data.cs = "const", (0.25,)
    c.ks, c.k_ref, c.d_ref = (4, 8, 16, 32, 64), 16, 32
    # The trained FCN needs more than 65536 samples at k = 16 here (a first run to k = 32 reached eps
    # only at k = 4, 8 and at k = 16 for d = 8): k <= 8 on CPUs; the large variant is for a GPU.
    c.rows.fcn.k_max = 8
    c.sc.n_range = ml_collections.ConfigDict(
        {"cnn": (1, 4096), "lcn": (2, 65536), "fcn": (2, 65536), "fcn_linear": (2, 65536)})
  elif variant == "paper":
    c.ks, c.ds, c.design = (4, 8, 12, 16, 20, 25, 30), (8, 12, 16, 20, 25, 30), "grid"
    c.k_ref, c.d_ref = 4, 30
    c.sc.num_seeds = 16
    c.models = ("cnn", "lcn", "fcn")  # the paper's two, and the trained FCN (not in the paper) at k <= 8
    c.rows.fcn.k_max = 8
    # Ranges sized to this grid's n* (default run: LCN at most ~1700, linear FCN ~2100 at k = d = 32):
    # drawing the samples (threefry) is the largest cost here, so no more are drawn than needed.
    c.sc.n_range = ml_collections.ConfigDict(
        {"cnn": (2, 2048), "lcn": (2, 8192), "fcn": (2, 32768), "fcn_linear": (2, 8192)})
  elif variant == "large":
    # Sized for one GPU of 80 GB or more. The largest cell (k = 64, d = 128, n_max = 65536) holds
    # 16 seeds x 2 GB of training inputs at once.
    c.ks, c.ds, c.k_ref, c.d_ref = (4, 8, 16, 32, 64), (8, 16, 32, 64, 128), 8, 64
    c.sc.num_seeds, c.data.n_test = 16, 4000
    c.sc.n_range = ml_collections.ConfigDict(
        {"cnn": (2, 16384), "lcn": (2, 65536), "fcn": (2, 65536), "fcn_linear": (2, 65536)})
  return c
