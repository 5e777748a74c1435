"""Static-FC features and the inner-CV estimators of jaxbrain.evaluation.fc_baselines."""
import ml_collections
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from jaxbrain.data.preprocess import preprocess
from jaxbrain.data.synthetic import make_synthetic
from jaxbrain.data.validation import DataError
from jaxbrain.evaluation import fc_baselines, metrics


def _reference_fc(x):
  x = np.asarray(x, np.float64)
  i, j = np.triu_indices(x.shape[0], 1)
  return np.arctanh(np.corrcoef(x)[i, j])


def test_fisher_fc_matches_numpy_float64():
  rng = np.random.default_rng(0)
  mix = rng.standard_normal((7, 7))
  x = (mix @ rng.standard_normal((7, 300))).astype(np.float32) + 100.0  # offsets, float32 input
  got = fc_baselines.fisher_fc(x)
  assert got.dtype == np.float64 and got.shape == (21,)
  np.testing.assert_allclose(got, _reference_fc(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("band", [(0.0, 0.0), (0.01, 0.1)])
def test_subject_fc_uses_the_windows_preprocessing(band):
  subjects, _ = make_synthetic(3, 8, 200, seed=0)
  data = ml_collections.ConfigDict(dict(zscore=True, bandpass_hz=band))
  got = fc_baselines.subject_fc(subjects, data)
  assert got.shape == (3, 28)
  band_hz = None if not any(band) else band
  for s, row in zip(subjects, got):
    want = _reference_fc(preprocess(s.timeseries, s.tr, standardize=True, band_hz=band_hz))
    np.testing.assert_allclose(row, want, rtol=0, atol=1e-6)  # float32 preprocessing
  if any(band):  # the band-pass really is applied
    assert not np.allclose(got, fc_baselines.subject_fc(subjects, ml_collections.ConfigDict(
        dict(zscore=True, bandpass_hz=(0.0, 0.0)))), atol=1e-3)


def _linear_data(n, p=30, seed=0, margin=0.5):
  rng = np.random.default_rng(seed)
  w = rng.standard_normal(p)
  x = rng.standard_normal((4 * n, p)) * rng.uniform(0.5, 3.0, p) + rng.uniform(-5, 5, p)
  s = (x - x.mean(0)) @ w
  keep = np.abs(s) > margin * s.std()  # a margin around the separating plane
  return x[keep][:n], s[keep][:n]


@pytest.mark.parametrize("estimator", ["linear", "mlp"])
def test_known_linear_rule_is_recovered(estimator):
  x, s = _linear_data(120)
  y = (s > 0).astype(np.int32)
  proba, info = fc_baselines.fit_predict(estimator, x[:80], y[:80], x[80:], "classification",
                                         num_classes=2)
  assert proba.shape == (40, 2) and np.allclose(proba.sum(1), 1.0) and info["inner_cv"]
  acc = metrics.accuracy(y[80:], proba.argmax(1))
  assert acc >= (1.0 if estimator == "linear" else 0.9), acc
  values, info = fc_baselines.fit_predict(estimator, x[:80], s[:80], x[80:], "regression")
  assert values.shape == (40,)
  assert metrics.pearson_r(s[80:], values) > (0.99 if estimator == "linear" else 0.9)


def test_permuted_labels_stay_near_chance():
  x, s = _linear_data(300, seed=1)
  rng = np.random.default_rng(2)
  y = rng.permutation((s > 0).astype(np.int32))
  proba, _ = fc_baselines.fit_predict("linear", x[:150], y[:150], x[150:], "classification")
  assert 0.38 <= metrics.accuracy(y[150:], proba.argmax(1)) <= 0.62
  assert 0.38 <= metrics.auroc(y[150:], proba) <= 0.62
  perm = rng.permutation(s)
  values, _ = fc_baselines.fit_predict("linear", x[:150], perm[:150], x[150:], "regression")
  assert abs(np.corrcoef(values, perm[150:])[0, 1]) < 0.2


@pytest.mark.parametrize("estimator,task", [("linear", "classification"), ("mlp", "classification"),
                                            ("linear", "regression"), ("mlp", "regression")])
def test_inner_cv_never_sees_the_test_subjects(estimator, task):
  x, s = _linear_data(40, p=100, seed=3)
  y = (s > 0).astype(np.int32) if task == "classification" else s
  clean, info = fc_baselines.fit_predict(estimator, x[:30], y[:30], x[30:], task)
  poisoned_x = x[30:] * 1e6 + 1e9  # test subjects' features poisoned
  _, poisoned = fc_baselines.fit_predict(estimator, x[:30], y[:30], poisoned_x, task)
  assert poisoned["value"] == info["value"]
  np.testing.assert_array_equal(poisoned["train_pred"], info["train_pred"])


def test_row_span_is_exact_for_an_l2_first_layer():
  rng = np.random.default_rng(4)
  x, y = rng.standard_normal((15, 500)), rng.standard_normal(15)
  x_test = rng.standard_normal((5, 500))
  span = fc_baselines.RowSpan().fit(x)
  assert span.basis_.shape == (500, 15)
  full = Ridge(alpha=3.0).fit(x, y).predict(x_test)
  reduced = Ridge(alpha=3.0).fit(span.transform(x), y).predict(span.transform(x_test))
  np.testing.assert_allclose(reduced, full, rtol=0, atol=1e-9)


def test_too_few_subjects_use_the_default_penalty_and_say_so():
  x = np.random.default_rng(5).standard_normal((5, 4))
  y = np.array([0, 0, 0, 0, 1])
  proba, info = fc_baselines.fit_predict("linear", x, y, x, "classification", num_classes=3)
  assert not info["inner_cv"] and info["value"] == 1.0 and proba.shape == (5, 3)
  assert np.all(proba[:, 2] == 0)  # a class absent from training gets probability 0
  with pytest.raises(DataError, match="all have class 0"):
    fc_baselines.fit_predict("linear", x, np.zeros(5, int), x, "classification")
  with pytest.raises(DataError, match="estimator 'svm'"):
    fc_baselines.fit_predict("svm", x, y, x, "classification")
