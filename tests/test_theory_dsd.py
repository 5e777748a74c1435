"""DSD sampler moments and label balance; model outputs against a NumPy float64 reference."""
import jax
import numpy as np
import pytest

from theory import dsd, models


def test_sampler_moments_and_label_balance():
  n, k, d, sigma = 40000, 4, 3, 0.5
  x, y = dsd.sample(jax.random.key(0), n, k, d, sigma)
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  assert x.shape == (n, k, d) and y.shape == (n,)
  assert set(np.unique(y)) == {-1.0, 1.0}
  tol = 5 / np.sqrt(n)
  assert abs(y.mean()) < tol  # labels balanced
  wstar = np.eye(d)[0]
  # E[y x_i] = w*/k for every patch i; E[x] = 0; Cov(x_i) = sigma^2 I + w* w*^T / k.
  np.testing.assert_allclose((y[:, None, None] * x).mean(0), np.tile(wstar / k, (k, 1)), atol=tol)
  np.testing.assert_allclose(x.mean(0), 0.0, atol=tol)
  for i in range(k):
    cov = x[:, i].T @ x[:, i] / n
    np.testing.assert_allclose(cov, sigma ** 2 * np.eye(d) + np.outer(wstar, wstar) / k, atol=3 * tol)
  # The signal position is uniform over patches: P(patch i is best aligned with y w*) ~ 1/k.
  pos = np.asarray(dsd.signal_position(x, y, wstar))
  np.testing.assert_allclose(np.bincount(pos, minlength=k) / n, 1 / k, atol=0.02)


def test_default_sigma_noise_free_and_random_wstar():
  k, d = 9, 5
  assert dsd.default_sigma(k, 1.5) == pytest.approx(0.5)
  w = dsd.random_wstar(jax.random.key(1), d)
  assert np.linalg.norm(np.asarray(w)) == pytest.approx(1.0, rel=1e-6)
  x, y = dsd.sample(jax.random.key(2), 500, k, d, wstar=w, noise_free_signal=True)
  x, y, w = np.asarray(x), np.asarray(y), np.asarray(w)
  exact = np.all(np.isclose(x, y[:, None, None] * w[None, None]), axis=2)  # [n, k]
  assert np.all(exact.sum(1) == 1)  # exactly one noise-free signal patch per sample
  noise = x[:, :, :][~exact]  # the noise patches
  np.testing.assert_allclose(noise.std(), 1 / 3, rtol=0.03)  # sigma = c / sqrt(k) with c = 1


@pytest.mark.parametrize("k,d", [(0, 3), (3, 0), (-1, 2), (2.5, 2)])
def test_bad_k_d_raise(k, d):
  with pytest.raises(ValueError, match="must be an integer >= 1"):
    dsd.sample(jax.random.key(0), 4, k, d, 1.0)


def _np_phi(z, b, activation):
  if activation == "soft_threshold":
    return np.maximum(z - b, 0) - np.maximum(-z - b, 0)
  return np.maximum(z - b, 0)


@pytest.mark.parametrize("activation", ["soft_threshold", "relu"])
def test_models_match_numpy_reference(activation):
  rng = np.random.default_rng(0)
  n, k, d, b = 7, 3, 4, 0.3
  x = rng.normal(size=(n, k, d))
  for model in models.MODELS:
    w = rng.normal(size=models.weight_shape(model, k, d))
    if model == "fcn":
      ref = sum(_np_phi(x.reshape(n, k * d) @ w[j], b, activation) for j in range(k))
    elif model == "lcn":
      ref = sum(_np_phi(x[:, i] @ w[i], b, activation) for i in range(k))
    else:
      ref = sum(_np_phi(x[:, i] @ w, b, activation) for i in range(k))
    out = models.apply(model, np.float32(w), np.float32(x), b, activation)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)


def test_projection_and_nnx_wrapper():
  from flax import nnx
  w = np.array([[3.0, 4.0], [0.3, 0.4]], np.float32)
  np.testing.assert_allclose(models.project(w, 1.0, "ball"), [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)
  np.testing.assert_allclose(models.project(w, 2.0, "sphere"), [[1.2, 1.6], [1.2, 1.6]], rtol=1e-6)
  net = models.DSDNet("lcn", 3, 2, rngs=nnx.Rngs(0), b=0.1)
  x = np.ones((5, 3, 2), np.float32)
  np.testing.assert_allclose(net(x), models.apply("lcn", net.w[...], x, 0.1), rtol=1e-6)
  with pytest.raises(ValueError, match="model must be one of"):
    models.check_model("rnn")
