"""``jaxvision.compare``: paired bootstrap over test videos, checked against closed forms."""
import json
import os

import numpy as np
import pytest

from jaxvision import compare


def _run(tmp_path, name, seed, correct, labels, gflops=1.0):
  """A fake finished run whose final-step prediction is right exactly where ``correct``."""
  d = tmp_path / f"{name}_{seed}"
  d.mkdir()
  n, c = len(labels), 10
  pred = np.where(correct, labels, (labels + 1) % c)
  logits = np.zeros((n, 2, c), np.float32)
  logits[np.arange(n), -1, pred] = 5.0
  np.savez(d / "test_outputs.npz", logits=logits, labels=labels)
  (d / "summary.json").write_text(json.dumps({
      "name": name, "config": {"seed": seed}, "gflops_per_video": gflops,
      "eval": {"metric": "accuracy", "patch_contains_digit": 0.5}}))
  return str(d)


def test_bootstrap_intervals_and_verdicts(tmp_path):
  rng = np.random.default_rng(0)
  n = 400
  labels = rng.integers(0, 10, n)
  good = rng.uniform(size=n) < 0.8
  worse = good & (rng.uniform(size=n) < 0.75)       # wrong wherever good is wrong, and more
  runs = [_run(tmp_path, "a", 0, good, labels), _run(tmp_path, "b", 0, worse, labels),
          _run(tmp_path, "a_copy", 0, good, labels)]
  res = compare.compare([compare.load_run(d) for d in runs], resamples=4000)
  a, b, same = res["models"]
  p = good.mean()
  assert a["score"] == pytest.approx(p)
  half = 1.96 * np.sqrt(p * (1 - p) / n)            # normal approximation to the binomial
  assert a["score_ci"][0] == pytest.approx(p - half, abs=0.01)
  assert a["score_ci"][1] == pytest.approx(p + half, abs=0.01)
  # Paired: the difference's spread is that of the discordant videos only (McNemar's setting).
  d = good.astype(float) - worse
  half_d = 1.96 * d.std() / np.sqrt(n)
  assert b["reference_minus_this"] == pytest.approx(d.mean())
  assert b["reference_minus_this_ci"][0] == pytest.approx(d.mean() - half_d, abs=0.01)
  assert b["verdict"] == "reference wins"
  assert same["reference_minus_this_ci"] == [0.0, 0.0]
  assert same["verdict"] == "no significant difference"
  assert "reference wins" in compare.table(res)


def test_seeds_of_one_config_are_averaged(tmp_path):
  labels = np.arange(20) % 10
  c0, c1 = np.arange(20) < 10, np.arange(20) < 16
  runs = [_run(tmp_path, "a", 0, c0, labels), _run(tmp_path, "a", 1, c1, labels),
          _run(tmp_path, "b", 0, c0, labels)]
  res = compare.compare([compare.load_run(d) for d in runs], resamples=200)
  a, b = res["models"]
  assert a["seeds"] == [0, 1] and a["score_per_seed"] == [0.5, 0.8]
  assert a["score"] == pytest.approx(0.65)
  assert b["reference_minus_this"] == pytest.approx(0.15)


def test_bad_runs_are_one_line_errors_and_write_nothing(tmp_path, capsys):
  labels = np.arange(10)
  ok = _run(tmp_path, "a", 0, labels < 5, labels)
  other = _run(tmp_path, "b", 0, labels < 5, (labels + 1) % 10)
  missing = tmp_path / "empty"
  missing.mkdir()
  out = tmp_path / "out"
  assert compare.main([f"--runs={ok},{missing}", f"--out={out}"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "summary.json: missing" in err and "\n" not in err
  assert compare.main([f"--runs={ok},{other}", f"--out={out}"]) == 2
  assert "test labels differ" in capsys.readouterr().err
  assert not out.exists()
  assert compare.main([f"--runs={ok},{ok}", f"--out={out}", "--resamples=200"]) == 0
  assert sorted(os.listdir(out)) == ["compare.json", "compare.png"]
