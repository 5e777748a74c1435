"""The multi-host launch path: each entry point as two processes on loopback
(``scripts/launch_local.sh``: jax.distributed over gloo, one CPU device each) gives the results of
one process with two devices launched the same way. Tiny settings: this is the plumbing (per-host
data shards, cross-process collectives, process-0 writes, the sweep's split of cells)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _launch(num_processes: int, devices: int, *command: str, timeout: int = 600) -> None:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_LOCAL_CPU_DEVICES=str(devices),
             PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
  proc = subprocess.run([os.path.join(ROOT, "scripts", "launch_local.sh"), str(num_processes),
                         "python", "-m", *command], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _one_and_two(tmp_path, *command: str) -> tuple[str, str]:
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  _launch(1, 2, *command, f"--workdir={one}")
  _launch(2, 1, *command, f"--workdir={two}")
  return one, two


def _summary(workdir: str) -> dict:
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def test_theory_sweep_split_over_two_processes(tmp_path):
  one, two = _one_and_two(tmp_path, "theory.sweep", "--config=configs/dsd.py:smoke")
  with open(os.path.join(one, "results.json")) as f, open(os.path.join(two, "results.json")) as g:
    a, b = json.load(f), json.load(g)
  assert [r["id"] for r in a] == [r["id"] for r in b] and len(a) == 4
  for x, y in zip(a, b):  # each cell computed by one of the two processes, from the same draws
    np.testing.assert_allclose(y["errors"], x["errors"], rtol=1e-6)
    assert x["n_star"] == pytest.approx(y["n_star"], rel=1e-6)
  assert _summary(two)["num_processes"] == 2


def test_brainmae_two_processes(tmp_path):
  one, two = _one_and_two(tmp_path, "jaxbrain.main", "--config=configs/brainmae.py:smoke",
                          "--config.train.steps=6", "--config.train.checkpoint_every=3",
                          "--config.eval.num_permutations=10")
  a, b = _summary(one), _summary(two)
  assert b["num_processes"] == 2 and b["step"] == a["step"] == 6
  for k in ("loss", "grad_norm", "param_norm"):
    assert b["final_metrics"][k] == pytest.approx(a["final_metrics"][k], rel=1e-5), k
  for k, v in a["eval"].items():
    if isinstance(v, float):
      assert b["eval"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


def test_adafocus_two_processes(tmp_path):
  one, two = _one_and_two(tmp_path, "jaxvision.main", "--config=configs/adafocusv2.py:smoke",
                          f"--config.data.dir={tmp_path / 'data'}")
  a, b = _summary(one), _summary(two)
  assert b["num_processes"] == 2 and b["step"] == a["step"]
  assert b["final_metrics"]["loss"] == pytest.approx(a["final_metrics"]["loss"], rel=1e-5)
  np.testing.assert_allclose(b["eval"]["test_score_per_step"], a["eval"]["test_score_per_step"])
