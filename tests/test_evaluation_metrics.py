"""Metrics against closed-form cases, scipy.stats and a brute-force pairwise AUROC."""
import itertools

import numpy as np
import pytest
from scipy import stats

from jaxbrain.evaluation import metrics as m


def _pairwise_auroc(y, s):
  """P(score of a positive > score of a negative), ties 1/2, over all pairs."""
  pos, neg = s[y == 1], s[y == 0]
  total = 0.0
  for a, b in itertools.product(pos, neg):
    total += 1.0 if a > b else 0.5 if a == b else 0.0
  return total / (len(pos) * len(neg))


def test_accuracy():
  assert m.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
  with pytest.raises(ValueError, match="y_true has 2 entries but y_pred has 3"):
    m.accuracy([0, 1], [0, 1, 1])


def test_auroc_closed_form():
  assert m.auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
  assert m.auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
  assert m.auroc([0, 1], [0.5, 0.5]) == 0.5
  # pairs (pos, neg): (0.4,0.1)=1 (0.4,0.4)=.5 (0.8,0.1)=1 (0.8,0.4)=1 -> 3.5/4
  assert m.auroc([0, 1, 0, 1], [0.1, 0.4, 0.4, 0.8]) == 0.875
  # [n, 2] scores use column 1
  assert m.auroc([0, 1], np.array([[0.9, 0.1], [0.2, 0.8]])) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_bruteforce_with_ties(seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, 40)
  y[:2] = [0, 1]
  s = rng.integers(0, 5, 40).astype(float)  # many ties
  assert m.auroc(y, s) == pytest.approx(_pairwise_auroc(y, s), abs=1e-12)


def test_auroc_multiclass_macro_ovr():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 60)
  s = rng.normal(size=(60, 3)) + np.eye(3)[y]
  ref = np.mean([_pairwise_auroc((y == c).astype(int), s[:, c]) for c in range(3)])
  assert m.auroc(y, s) == pytest.approx(ref, abs=1e-12)
  # A class absent from y_true is left out of the macro average.
  y2 = np.where(y == 2, 1, y)
  ref2 = np.mean([_pairwise_auroc((y2 == c).astype(int), s[:, c]) for c in range(2)])
  assert m.auroc(y2, s) == pytest.approx(ref2, abs=1e-12)


def test_auroc_rejects_bad_input():
  with pytest.raises(ValueError, match="both classes"):
    m.auroc([1, 1, 1], [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match=r"labels in \{0, 1\}"):
    m.auroc([0, 2], [0.1, 0.2])
  with pytest.raises(ValueError, match="finite"):
    m.auroc([0, 1], [0.1, np.nan])
  with pytest.raises(ValueError, match="0..2"):
    m.auroc([0, 3], np.zeros((2, 3)))


def test_macro_f1_closed_form():
  y = [0, 0, 1, 1, 2]
  p = [0, 1, 1, 1, 0]
  # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fp0 fn1 -> 0
  assert m.macro_f1(y, p) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
  assert m.macro_f1([0, 1], [0, 1], num_classes=3) == 1.0  # class 2: no members at all, left out
  assert m.macro_f1([1, 1], [1, 1]) == 1.0


def test_mae_and_pearson_against_scipy():
  rng = np.random.default_rng(1)
  a = rng.normal(size=50)
  b = 0.5 * a + rng.normal(size=50)
  assert m.mae(a, b) == pytest.approx(np.mean(np.abs(a - b)))
  assert m.mae([1.0, 2.0], [2.0, 0.0]) == 1.5
  assert m.pearson_r(a, b) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
  assert m.pearson_r([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
  assert m.pearson_r([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  with pytest.raises(ValueError, match="constant series y"):
    m.pearson_r([1, 2, 3], [1, 1, 1])
  with pytest.raises(ValueError, match="y_pred: expected finite"):
    m.mae([1.0], [np.inf])


def test_grouped_metrics():
  y = np.array([0, 1, 2, 1])
  logits = np.array([[2.0, 0, 0], [0, 1.0, 0], [0, 3.0, 0], [0, 2.0, 1.0]])
  out = m.classification_metrics(y, logits)
  assert set(out) == {"accuracy", "auroc", "f1"}
  assert out["accuracy"] == 0.75
  assert out["f1"] == pytest.approx(m.macro_f1(y, [0, 1, 1, 1], num_classes=3))
  assert out["auroc"] == pytest.approx(m.auroc(y, logits))
  reg = m.regression_metrics([1.0, 2.0, 3.0], [1.5, 2.0, 2.5])
  assert reg == {"mae": pytest.approx(1 / 3), "pearson_r": pytest.approx(1.0)}
