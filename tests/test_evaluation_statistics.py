"""The hierarchical paired bootstrap against closed forms."""
import numpy as np
import pytest

from jaxbrain.evaluation import statistics


def test_weights_draw_whole_subjects_then_their_items():
  groups = np.repeat(np.arange(5), 4)  # 5 subjects x 4 windows
  w = statistics.resample_weights(groups, 500, seed=0)
  assert w.shape == (500, 20)
  np.testing.assert_array_equal(w.sum(axis=1), 20)  # 5 subject draws x 4 items each
  per_subject = w.reshape(500, 5, 4).sum(axis=2)
  np.testing.assert_array_equal(per_subject % 4, 0)  # a subject brings 4 items per draw
  assert (per_subject == 0).any()  # some subjects are left out of some resamples


def test_one_item_per_subject_is_the_ordinary_bootstrap():
  rng = np.random.default_rng(1)
  v = rng.normal(size=40)
  w = statistics.resample_weights(np.arange(40), 20000, seed=2)
  means = statistics.resampled_means(v, w)
  # The bootstrap distribution of a mean has variance var_pop / n (closed form).
  assert means.std() == pytest.approx(np.sqrt(v.var() / 40), rel=0.03)
  assert means.mean() == pytest.approx(v.mean(), abs=0.01)


def test_identical_windows_give_the_subject_level_bootstrap():
  subject_means = np.array([0.0, 1.0, 3.0, 4.0, 7.0, 9.0])
  groups = np.repeat(np.arange(6), 5)
  v = np.repeat(subject_means, 5)
  means = statistics.resampled_means(v, statistics.resample_weights(groups, 20000, seed=3))
  assert means.std() == pytest.approx(np.sqrt(subject_means.var() / 6), rel=0.03)


def test_paired_difference_of_shifted_scores_is_exact():
  rng = np.random.default_rng(4)
  a = rng.normal(size=30)
  b = a + 0.25  # every item 0.25 worse: a paired interval has no width
  w = statistics.resample_weights(np.repeat(np.arange(6), 5), 1000, seed=5)
  d = statistics.resampled_means(a, w) - statistics.resampled_means(b, w)
  ci = statistics.interval(a.mean() - b.mean(), d)
  assert ci["lo"] == pytest.approx(-0.25) and ci["hi"] == pytest.approx(-0.25)
  assert statistics.verdict(ci) == "win"
  assert statistics.verdict(ci, lower_is_better=False) == "loss"
  assert statistics.verdict({"mean": 0.1, "lo": -0.1, "hi": 0.3}) == "tie"


def test_mean_ci_covers_and_bad_input():
  ci = statistics.mean_ci(np.arange(10.0), np.arange(10) // 2, num_resamples=2000)
  assert ci["lo"] < 4.5 < ci["hi"] and ci["mean"] == 4.5
  with pytest.raises(ValueError, match="groups"):
    statistics.resample_weights(np.zeros((2, 2)))
  with pytest.raises(ValueError, match="items"):
    statistics.resampled_means(np.zeros(3), np.ones((4, 5)))


def test_paired_contrast_relative_change_and_shapes():
  rng = np.random.default_rng(6)
  b = rng.uniform(1.0, 2.0, size=24)
  a = 0.9 * b  # every item 10% better: the relative interval has no width
  w = statistics.resample_weights(np.repeat(np.arange(6), 4), 1000, seed=7)
  c = statistics.paired_contrast(a, b, w, relative=True)
  assert c["relative_pct"]["lo"] == pytest.approx(-10.0) and c["relative_pct"]["hi"] == pytest.approx(-10.0)
  assert c["diff"]["mean"] == pytest.approx(a.mean() - b.mean()) and c["verdict"] == "win"
  assert "relative_pct" not in statistics.paired_contrast(a, b, w)
  assert statistics.paired_contrast(a, b, w, lower_is_better=False)["verdict"] == "loss"
  with pytest.raises(ValueError, match="same items"):
    statistics.paired_contrast(a, b[:5], w)
