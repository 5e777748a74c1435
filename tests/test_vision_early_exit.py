"""jaxvision.early_exit: threshold fitting, exit fractions, evaluation, mAP and the saved curve."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from jaxvision import early_exit as ee


def _data(seed=0, n=400, t=16, c=10):
  """Logits that sharpen with t, labels mostly = the argmax of the last step."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, n)
  signal = np.linspace(0.2, 3.0, t)[None, :, None] * np.eye(c)[labels][:, None, :]
  logits = signal * rng.uniform(0.3, 1.5, (n, 1, 1)) + rng.normal(size=(n, t, c))
  return logits, labels


# -- confidences ---------------------------------------------------------------------------------

def test_confidence_kinds():
  logits = np.array([[[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])          # [N=1, T=2, C=3]
  np.testing.assert_allclose(ee.confidence(logits, "max_logit"), [[2.0, 1.0]])
  p = np.exp([2.0, 0, 0]) / np.exp([2.0, 0, 0]).sum()
  np.testing.assert_allclose(ee.confidence(logits, "max_prob"), [[p[0], 1 / 3]])
  np.testing.assert_allclose(ee.confidence(logits, "entropy"), [[np.sum(p * np.log(p)), -math.log(3)]])
  assert ee.confidence(logits).shape == (1, 2)                      # default = official max logit
  np.testing.assert_allclose(ee.confidence(logits), ee.confidence(logits, "max_logit"))
  # Huge logits stay finite; a one-hot softmax has entropy 0.
  big = np.array([[[1e4, 0.0]]])
  np.testing.assert_allclose(ee.confidence(big, "entropy"), [[0.0]], atol=1e-12)
  np.testing.assert_allclose(ee.confidence(big, "max_prob"), [[1.0]])
  with pytest.raises(ValueError):
    ee.confidence(logits, "margin")


# -- thresholds ----------------------------------------------------------------------------------

@pytest.mark.parametrize("q", [0.3, 0.5, 0.9, 1.0, 1.3, 2.0, 3.9])
@pytest.mark.parametrize("n", [1000, 997])
def test_exit_fractions_follow_q_power_k_on_fitting_data(q, n):
  t = 16
  conf = np.random.default_rng(1).normal(size=(n, t))
  th = ee.fit_thresholds(conf, q)
  assert th.shape == (t,) and th[-1] == -np.inf
  counts = np.bincount(ee.exit_steps(conf, th), minlength=t)
  p = q ** np.arange(1, t + 1)
  p /= p.sum()
  want = np.floor(n * p + 1e-7).astype(int)
  want[-1] = n - want[:-1].sum()
  np.testing.assert_array_equal(counts, want)
  np.testing.assert_array_equal(counts, ee.exit_counts(n, q, t))
  assert np.all(np.abs(counts[:-1] / n - p[:-1]) < 1 / n)
  assert counts[-1] / n - p[-1] < t / n                             # the rounding left-overs


def test_exact_integer_targets_are_not_lost_to_rounding():
  # Targets that are exact integers stay so: q = 1, N = 3T gives 3 per step.
  for t in (3, 5, 7, 16):
    np.testing.assert_array_equal(ee.exit_counts(3 * t, 1.0, t), np.full(t, 3))
  # q = 2, T = 8, N = 255: exactly 1, 2, 4, ..., 128 (a plain floor(N * p_k) loses some to rounding).
  np.testing.assert_array_equal(ee.exit_counts(255, 2.0, 8), 2 ** np.arange(8))
  np.testing.assert_array_equal(ee.exit_counts(3 * 511, 0.5, 9), 3 * 2 ** np.arange(8, -1, -1))


def test_extreme_q_reaches_first_or_last_step():
  logits, labels = _data(2, n=300)
  t = logits.shape[1]
  small, large = ee.sweep(logits, logits, labels, [1e-4, 1e4], cost_per_step=2.0, fixed_cost=1.0)
  # q -> 0: (nearly) everyone exits after the first frame; q -> inf: everyone sees all frames.
  assert small["exit_fractions"][0] >= 1 - 1 / 300
  assert small["avg_cost"] <= 1.0 + 2.0 * (1 + (t - 1) / 300)
  assert large["exit_fractions"][-1] == 1.0 and large["avg_cost"] == 1.0 + 2.0 * t
  last = np.mean(np.argmax(logits[:, -1], -1) == labels)
  first = np.mean(np.argmax(logits[:, 0], -1) == labels)
  assert large["score"] == pytest.approx(last)
  assert abs(small["score"] - first) <= 1 / 300
  assert large["score"] > small["score"]
  # Costs increase along the official sweep (larger q -> later exits).
  costs = [p["avg_cost"] for p in ee.sweep(logits, logits, labels, ee.OFFICIAL_QS)]
  assert len(costs) == 35 and ee.OFFICIAL_QS[0] == 0.5 and ee.OFFICIAL_QS[-1] == 3.9
  assert np.all(np.diff(costs) >= -1e-9) and costs[-1] > costs[0]


def test_hand_made_three_samples():
  # q = 1, T = 3, N = 3: one exit per step. Fitting confidences = max logit.
  fit = np.array([
      [[0.9, 0.0], [0.0, 0.0], [0.0, 0.0]],      # sample 0: conf 0.9, 0.0, 0.0
      [[0.5, 0.0], [0.3, 0.0], [0.0, 0.0]],      # sample 1: conf 0.5, 0.3, 0.0
      [[0.1, 0.0], [0.7, 0.0], [0.0, 0.0]],      # sample 2: conf 0.1, 0.7, 0.0
  ])
  th = ee.fit_thresholds(ee.confidence(fit), 1.0)
  # Step 1: 0.9 (sample 0) exits. Step 2: of {1, 2}, 0.7 (sample 2) exits. Step 3: the rest.
  np.testing.assert_array_equal(th, [0.9, 0.7, -np.inf])
  np.testing.assert_array_equal(ee.exit_steps(ee.confidence(fit), th), [0, 2, 1])
  # Test set: sample a passes at step 1 (1.0 >= 0.9), b at step 2 (0.8 >= 0.7), c never -> step 3.
  test = np.array([
      [[1.0, -1.0], [-5.0, 0.0], [-5.0, 0.0]],   # exits at 1, predicts class 0
      [[0.0, 0.2], [0.0, 0.8], [3.0, 0.0]],      # exits at 2, predicts class 1
      [[0.0, 0.5], [0.6, 0.0], [0.0, 0.4]],      # exits at 3, predicts class 1
  ])
  labels = np.array([0, 0, 1])
  res = ee.evaluate(test, labels, th, cost_per_step=1.5, fixed_cost=0.25)
  assert res["score"] == pytest.approx(2 / 3) and res["accuracy"] == res["score"]
  assert res["avg_cost"] == pytest.approx(0.25 + 1.5 * (1 + 2 + 3) / 3)
  np.testing.assert_allclose(res["exit_fractions"], [1 / 3, 1 / 3, 1 / 3])
  assert res["exit_counts"] == [1, 1, 1]
  # out_n = 0 -> nobody exits there (+inf): a huge q sends all three to the last step.
  th0 = ee.fit_thresholds(ee.confidence(fit), 1e6)
  np.testing.assert_array_equal(th0, [np.inf, np.inf, -np.inf])


def test_per_step_costs_by_hand():
  """Two stages of different cost (the Sth-Sth / Jester variant: glance only, then glance + focus):
  exiting after stage 1 costs 0.5, after stage 2 0.5 + 2.0."""
  fit = np.array([[[3.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]],
                  [[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
  th = ee.fit_thresholds(ee.confidence(fit), 1.0)  # q = 1: 2 of 4 exit at stage 1 (conf 3 and 2)
  np.testing.assert_array_equal(th, [2.0, -np.inf])
  test = np.array([
      [[2.5, 0.0], [0.0, 1.0]],    # exits at 1 (2.5 >= 2), predicts 0: right
      [[0.0, 1.9], [0.0, 1.0]],    # stays, stage 2 predicts 1: right
      [[2.0, 0.0], [0.0, 3.0]],    # exits at 1 (2.0 >= 2), predicts 0: wrong (stage 2 was right)
      [[0.1, 0.0], [1.0, 0.0]],    # stays, stage 2 predicts 0: right
  ])
  labels = np.array([0, 1, 1, 0])
  res = ee.evaluate(test, labels, th, cost_per_step=[0.5, 2.0], fixed_cost=0.1)
  assert res["score"] == pytest.approx(3 / 4) and res["exit_counts"] == [2, 2]
  assert res["avg_cost"] == pytest.approx(0.1 + (0.5 + 2.5 + 0.5 + 2.5) / 4)
  (point,) = ee.sweep(fit, test, labels, [1.0], cost_per_step=(0.5, 2.0), fixed_cost=0.1)
  assert point["avg_cost"] == pytest.approx(res["avg_cost"]) and point["score"] == res["score"]
  np.testing.assert_allclose(ee.exit_costs([0.5, 2.0], 2), [0.5, 2.5])
  np.testing.assert_allclose(ee.exit_costs(1.5, 3), [1.5, 3.0, 4.5])
  # A sequence of equal costs is the number.
  many, many_labels = _data(8, n=200, t=5)
  for a, b in zip(ee.sweep(many, many, many_labels, [0.7, 1.3], cost_per_step=1.5),
                  ee.sweep(many, many, many_labels, [0.7, 1.3], cost_per_step=[1.5] * 5)):
    assert a["avg_cost"] == pytest.approx(b["avg_cost"]) and a["exit_counts"] == b["exit_counts"]
  for bad in ([1.0, 2.0, 3.0], [1.0, np.nan], [[1.0, 2.0]]):
    with pytest.raises(ValueError, match="cost_per_step: expected a number or 2"):
      ee.evaluate(test, labels, th, cost_per_step=bad)


def _official_style(conf_fit, conf_test, q):
  """Independent loop version of the official dynamic_eval_find_threshold / dynamic_evaluate."""
  n, t = conf_fit.shape
  p = np.array([q ** k for k in range(1, t + 1)])
  p = p / p.sum()
  exited = np.zeros(n, bool)
  th = [1e8] * t
  for k in range(t - 1):
    out_n = math.floor(n * p[k] + 1e-7)
    if out_n > 0:
      ranked = [i for i in np.argsort(-conf_fit[:, k]) if not exited[i]]
      th[k] = conf_fit[ranked[out_n - 1], k]
      for i in ranked[:out_n]:
        exited[i] = True
  th[-1] = -1e8
  steps = []
  for i in range(conf_test.shape[0]):
    for k in range(t):
      if conf_test[i, k] >= th[k]:
        steps.append(k)
        break
  return np.array(steps)


@pytest.mark.parametrize("kind", ["max_logit", "max_prob", "entropy"])
def test_matches_a_loop_version_of_the_official_algorithm(kind):
  fit, _ = _data(3, n=250)
  test, _ = _data(4, n=180)
  cf, ct = ee.confidence(fit, kind), ee.confidence(test, kind)
  for q in (0.6, 1.0, 1.7, 3.2):
    got = ee.exit_steps(ct, ee.fit_thresholds(cf, q))
    np.testing.assert_array_equal(got, _official_style(cf, ct, q))


# -- mAP -----------------------------------------------------------------------------------------

def _brute_ap(scores, pos):
  """AP without sorting: mean over positives i of P(label | score >= score_i) (distinct scores)."""
  vals = [np.sum(pos & (scores >= scores[i])) / np.sum(scores >= scores[i]) for i in np.flatnonzero(pos)]
  return float(np.mean(vals))


def test_mean_average_precision_known_values():
  scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
  labels = np.array([[1, 0], [0, 0], [1, 0], [0, 1]])
  # Class 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1: rank 1 -> 1.
  assert ee.mean_average_precision(scores[:, :1], labels[:, :1]) == pytest.approx(5 / 6)
  assert ee.mean_average_precision(scores, labels) == pytest.approx((5 / 6 + 1) / 2)
  # A class without positives is skipped, or counted as 0 like the official cal_map.
  s3 = np.concatenate([scores, scores[:, :1]], 1)
  l3 = np.concatenate([labels, np.zeros((4, 1), int)], 1)
  assert ee.mean_average_precision(s3, l3) == pytest.approx((5 / 6 + 1) / 2)
  assert ee.mean_average_precision(s3, l3, skip_empty=False) == pytest.approx((5 / 6 + 1) / 3)
  with pytest.raises(ValueError):
    ee.mean_average_precision(scores, np.zeros((4, 2)))


def test_mean_average_precision_brute_force():
  rng = np.random.default_rng(5)
  for _ in range(5):
    n, c = rng.integers(5, 60), rng.integers(1, 8)
    scores = rng.normal(size=(n, c))
    labels = (rng.uniform(size=(n, c)) < 0.3).astype(int)
    labels[0] = 1
    want = np.mean([_brute_ap(scores[:, k], labels[:, k].astype(bool)) for k in range(c)])
    assert ee.mean_average_precision(scores, labels) == pytest.approx(want, abs=1e-12)


def test_multilabel_evaluation_ranks_softmax_probabilities():
  rng = np.random.default_rng(6)
  n, t, c = 60, 4, 5
  logits = rng.normal(size=(n, t, c))
  labels = (rng.uniform(size=(n, c)) < 0.3).astype(int)
  labels[:c] = np.eye(c, dtype=int)
  th = np.array([np.inf, np.inf, np.inf, -np.inf])                  # everyone at the last step
  res = ee.evaluate(logits, labels, th, 1.0, metric="map")
  p = np.exp(logits[:, -1]) / np.exp(logits[:, -1]).sum(-1, keepdims=True)
  want = np.mean([_brute_ap(p[:, k], labels[:, k].astype(bool)) for k in range(c)])
  assert res["map"] == pytest.approx(want) and res["metric"] == "map"
  pts = ee.sweep(logits, logits, labels, [0.5, 2.0], 1.1, multilabel=True)
  assert [p["metric"] for p in pts] == ["map", "map"] and all(0 <= p["score"] <= 1 for p in pts)
  with pytest.raises(ValueError):
    ee.evaluate(logits, labels, th, 1.0, metric="top1")


# -- saving --------------------------------------------------------------------------------------

def test_save_curve_writes_json_and_png(tmp_path):
  logits, labels = _data(7, n=120, t=8)
  points = ee.sweep(logits, logits, labels, [0.5, 1.0, 2.0], cost_per_step=1.1, fixed_cost=0.3)
  jpath, ppath = tmp_path / "out" / "curve.json", tmp_path / "out" / "curve.png"
  ee.save_curve(points, jpath, ppath, title="test", reference={"all frames": (8.8, 0.5)})

  def strict(name):
    raise ValueError(f"non-standard JSON constant {name}")
  data = json.loads(jpath.read_text(), parse_constant=strict)
  assert len(data["points"]) == 3
  for got, want in zip(data["points"], points):
    assert got["q"] == want["q"] and got["avg_cost"] == pytest.approx(want["avg_cost"])
    assert got["score"] == pytest.approx(want["score"]) and got["thresholds"][-1] == "-inf"
  assert ppath.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert sorted(os.listdir(tmp_path / "out")) == ["curve.json", "curve.png"]   # no temporaries left
  ee.save_curve(points[:1], jpath, ppath)                                         # overwrite in place
  assert len(json.loads(jpath.read_text())["points"]) == 1
  with pytest.raises(ValueError):
    ee.save_curve([], jpath, ppath)


def test_bad_arguments():
  with pytest.raises(ValueError):
    ee.fit_thresholds(np.zeros((4, 3)), 0.0)
  with pytest.raises(ValueError):
    ee.fit_thresholds(np.zeros(4), 1.0)
  with pytest.raises(ValueError):
    ee.exit_steps(np.zeros((4, 3)), np.zeros(2))
  with pytest.raises(ValueError):
    ee.evaluate(np.zeros((4, 3, 2)), np.zeros(4, int), np.zeros(3), 1.0, metric="top5")
