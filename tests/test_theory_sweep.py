"""The sweep launcher: resume after a kill without redoing cells, outputs, and bad configs."""
import json
import os

import pytest

from jaxtrain import config as config_lib
from theory import sweep

TINY = ["models=('cnn',)", "ks=(2, 3)", "ds=(4,)", "design=grid", "sc.num_seeds=2",
        "sc.points=4", "sc.n_boot=50", "data.n_test=200",
        "sc.n_range.cnn=(2, 64)", "sc.n_range.lcn=(2, 64)", "sc.eps=0.3"]


def tiny(*extra):
  return config_lib.load_config("configs/dsd.py:smoke", TINY + list(extra))


class Killed(Exception):
  pass


def test_sweep_resumes_after_kill_without_redoing_cells(tmp_path):
  cfg = tiny()
  done = []

  def kill_after_one(res):
    done.append(res["id"])
    raise Killed  # the process dies right after the first cell was written

  with pytest.raises(Killed):
    sweep.run_sweep(cfg, str(tmp_path), on_cell=kill_after_one)
  cells = sorted(os.listdir(tmp_path / "cells"))
  assert len(cells) == 1 and all(c.endswith(".json") for c in cells)  # no temporary files left
  assert not (tmp_path / "summary.json").exists()
  computed = []
  summary = sweep.run_sweep(cfg, str(tmp_path), on_cell=lambda r: computed.append(r["id"]))
  assert summary["cells_resumed"] == 1 and summary["cells_computed"] == 1
  assert not set(computed) & set(done)  # finished cells were not redone
  for name in ("results.json", "results.csv", "summary.json", "nstar.png"):
    assert (tmp_path / name).exists()
  with open(tmp_path / "summary.json") as f:
    s = json.load(f)
  block = s["results"]["c=1"]
  assert set(block["models"]) == {"cnn"}
  for m in ("cnn",):
    for v in block["models"][m]["n_star"].values():
      assert isinstance(v, float) or v == "not reached" or v.startswith("below grid")
  # A third run computes nothing; a changed setting in the same workdir is refused.
  assert sweep.run_sweep(cfg, str(tmp_path))["cells_computed"] == 0
  with pytest.raises(ValueError, match="different settings"):
    sweep.run_sweep(tiny("data.n_test=100"), str(tmp_path))


def test_grid_that_never_reaches_eps_is_marked_not_reached(tmp_path):
  cfg = tiny("sc.eps=0.001", "sc.target=absolute")
  summary = sweep.run_sweep(cfg, str(tmp_path))
  fit = summary["results"]["c=1"]["models"]["cnn"]
  assert set(fit["n_star"].values()) == {"not reached"}
  assert fit["slope_k"] is None and "no fit" in fit["note"]
  assert len(fit["cells_not_reached"]) == 2
  csv = (tmp_path / "results.csv").read_text()
  assert csv.count("not reached") >= 2


@pytest.mark.parametrize("override,match", [
    ("ks=(0, 4)", "ks"), ("ds=(4, -1)", "ds"), ("sc.eps=0.5", "sc.eps"), ("sc.eps=0.0", "sc.eps"),
    ("models=('cnn', 'mlp')", "models"), ("sc.n_range.cnn=(64, 8)", "sc.n_range.cnn"),
    ("gd.loss=hinge", "gd.loss"), ("data.sigma_rule=k", "data.sigma_rule"),
    ("rows.cnn.arch=rnn", "rows.cnn.arch"), ("sc.target=relative", "sc.target"),
    ("rows.cnn.k_max=1", "rows.cnn.k_max")])
def test_bad_configs_raise_clear_errors(override, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    sweep.run_sweep(tiny(override), str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()  # nothing left behind


def test_rows_recipes_k_max_and_shared_draws(tmp_path):
  cfg = tiny("models=('cnn', 'lcn', 'fcn', 'fcn_linear')", "ks=(2, 3)", "rows.fcn.k_max=2",
             "rows.fcn.gd.steps=3", "sc.n_range.fcn=(2, 64)", "sc.n_range.fcn_linear=(2, 64)",
             "ratios=(('lcn', 'cnn'), ('fcn', 'fcn_linear'))")
  g = sweep.gd_config(cfg, "fcn", 0.5)
  assert g.steps == 3 and g.init == "normal" and g.biases == (0.5,) * 3  # b = 1 sigma, no warm-up
  g = sweep.gd_config(cfg, "fcn_linear", 0.5)
  assert g.steps == 2 and g.init == "zero" and g.b_eval == 0.0
  assert [c["id"] for c in sweep.all_cells(cfg) if c["model"] == "fcn"] == ["fcn_c1_k2_d4"]
  summary = sweep.run_sweep(cfg, str(tmp_path))
  results = {r["id"]: r for r in json.loads((tmp_path / "results.json").read_text())}
  assert len(results) == 7
  # The rows of a (k, d) share their test sets, so rows with the same threshold share the floor.
  assert results["cnn_c1_k2_d4"]["floors"] == results["lcn_c1_k2_d4"]["floors"] \
      == results["fcn_c1_k2_d4"]["floors"]
  assert results["fcn_linear_c1_k2_d4"]["floors"] != results["fcn_c1_k2_d4"]["floors"]
  for r in results.values():
    assert 0.5 <= r["useful_fraction"] <= 1
  block = summary["results"]["c=1"]
  assert set(block["ratios"]) == {"lcn/cnn", "fcn/fcn_linear"}
  assert set(block["models"]["fcn"]["n_star"]) == {"k2_d4"}
  assert (tmp_path / "curves.png").exists()


def test_plots_leave_the_matplotlib_backend_and_pyplot_alone(tmp_path):
  """Writing nstar.png and curves.png neither switches the process's backend nor opens pyplot
  figures, so a notebook that runs a sweep still shows its own figures inline afterwards."""
  import matplotlib
  import matplotlib.pyplot as plt
  from PIL import Image
  previous = matplotlib.get_backend()
  matplotlib.use("svg")  # not Agg, so that a switch to Agg would show
  try:
    figures = plt.get_fignums()
    sweep.run_sweep(tiny(), str(tmp_path))
    assert matplotlib.get_backend() == "svg" and plt.get_fignums() == figures
  finally:
    matplotlib.use(previous)
  for name in ("nstar.png", "curves.png"):
    with Image.open(tmp_path / name) as im:
      assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_cli_reports_bad_config_and_unknown_key(capsys, tmp_path):
  rc = sweep.main(["--config=configs/dsd.py:smoke", "--config.ks=(0,4)", f"--workdir={tmp_path}"])
  assert rc == 2 and "ks" in capsys.readouterr().err
  rc = sweep.main(["--config=configs/dsd.py:smoke", "--config.sc.epsilon=0.1", f"--workdir={tmp_path}"])
  assert rc == 2 and "unknown config key" in capsys.readouterr().err
  with pytest.raises(ValueError, match="unknown variant"):
    config_lib.load_config("configs/dsd.py:huge")
