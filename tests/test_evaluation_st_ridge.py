"""Spatio-temporal ridge against independent references: a dense conditional mean on the full joint
covariance of a window, an explicit least-squares fit, the spatial ridge, and simulated data."""
import numpy as np
import pytest

from jaxbrain.evaluation import reconstruction as rc
from jaxbrain.evaluation import st_ridge as st


def _hide(x, mask):
  """x with hidden cells set to NaN: a baseline must never read them."""
  return np.where(mask[..., None], np.nan, x).astype(x.dtype)


def _windows(series, s, length):
  """[W, T, N] -> [W, S, N, L]."""
  return np.moveaxis(series.reshape(series.shape[0], s, length, -1), -1, 2)


def _var1(w, s, n, length, coef, seed, burn=30):
  """Windows of a stationary VAR(1) x(t) = A x(t-1) + e(t) with A = coef * I and correlated noise."""
  rng = np.random.default_rng(seed)
  mix = np.random.default_rng(99).normal(size=(n, n)) / np.sqrt(n)
  t_len = s * length
  e = rng.normal(size=(w, burn + t_len, n)) @ mix.T + 0.2 * rng.normal(size=(w, burn + t_len, n))
  z = np.empty_like(e)
  z[:, 0] = e[:, 0] / np.sqrt(max(1 - coef ** 2, 1e-12))
  for t in range(1, burn + t_len):
    z[:, t] = coef * z[:, t - 1] + e[:, t]
  return _windows(z[:, burn:] + 0.5, s, length).astype(np.float32)


def _conditioning_set(mask_w, si, ni, j, k, length):
  """(frame, roi) pairs the predictor of hidden cell (si, ni, frame j) conditions on, by definition."""
  s, n = mask_w.shape
  t = si * length + j
  cond = [(t, v) for v in range(n) if not mask_w[si, v]]
  before = [p for p in range(si) if not mask_w[p, ni]]
  after = [p for p in range(si + 1, s) if not mask_w[p, ni]]
  kk = min(k, length)
  if before:
    cond += [(before[-1] * length + f, ni) for f in range(length - kk, length)]
  if after:
    cond += [(after[0] * length + f, ni) for f in range(kk)]
  return cond


def _joint_cov(gamma, t_len):
  """Covariance [T N, T N] of all cells of a window: Cov(x_a(t1), x_b(t2)) from the lagged blocks."""
  n = gamma.shape[1]
  big = np.empty((t_len, n, t_len, n))
  for t1 in range(t_len):
    for t2 in range(t_len):
      big[t1, :, t2, :] = gamma[t2 - t1] if t2 >= t1 else gamma[t1 - t2].T
  return big.reshape(t_len * n, t_len * n)


def _dense_reference(x, mask, mu, gamma, k, lam):
  w, s, n, length = x.shape
  t_len = s * length
  sig = _joint_cov(gamma, t_len)
  out = x.astype(np.float64).copy()
  for wi in range(w):
    series = x[wi].transpose(0, 2, 1).reshape(t_len, n).astype(np.float64)
    for si, ni in zip(*np.nonzero(mask[wi])):
      for j in range(length):
        cond = _conditioning_set(mask[wi], si, ni, j, k, length)
        tgt = (si * length + j) * n + ni
        if not cond:
          out[wi, si, ni, j] = mu[ni]
          continue
        idx = [f * n + v for f, v in cond]
        r = np.array([series[f, v] - mu[v] for f, v in cond])
        a = sig[np.ix_(idx, idx)] + lam * np.eye(len(idx))
        out[wi, si, ni, j] = mu[ni] + sig[tgt, idx] @ np.linalg.solve(a, r)
  return out


def _var1_gamma(n, t_len, seed=0):
  """Exact lagged covariances of a stationary VAR(1) with a non-symmetric A: Gamma(tau) = P (A^T)^tau,
  P = A P A^T + Q. Gamma(tau) is not symmetric, so a transposed or sign-flipped lag shows up."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, n))
  a *= 0.85 / np.max(np.abs(np.linalg.eigvals(a)))
  m = rng.normal(size=(n, n))
  q = m @ m.T / n + 0.1 * np.eye(n)
  p = np.linalg.solve(np.eye(n * n) - np.kron(a, a), q.reshape(-1)).reshape(n, n)
  p = (p + p.T) / 2
  return np.stack([p @ np.linalg.matrix_power(a.T, tau) for tau in range(t_len)])


@pytest.mark.parametrize("k,lam", [(2, 0.0), (2, 0.05), (1, 0.3), (5, 0.01), (0, 0.05)])
def test_prediction_equals_dense_conditional_mean(k, lam):
  n, s, length = 6, 3, 4
  gamma = _var1_gamma(n, s * length)
  mu = np.linspace(-1.0, 1.0, n)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(5, s, n, length)).astype(np.float32)
  mask = np.zeros((5, s, n), bool)
  mask[0, :2, 0] = True  # leading run over two segments
  mask[0, 1:, 1] = True  # trailing run over two segments
  mask[0, :, 2] = True  # hidden in the whole window
  mask[0, 1, 3] = True  # visible on both sides
  mask[0, [0, 2], 4] = True  # two separate runs
  mask[1, 1] = True  # nothing visible in the segment: own frames only
  mask[1, 0, :3] = True
  mask[2] = rng.random((s, n)) < 0.5
  mask[3, 0, 5] = True  # segments 1, 2 hide nothing
  mask[4, 1, :] = True
  mask[4, :, 0] = True  # whole window hidden and nothing visible in segment 1: the mean
  model = st.StRidgeModel(mu, gamma, k, lam)
  out = st.st_ridge_predict(_hide(x, mask), mask, model)
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_array_equal(out[~mask], x[~mask])
  ref = _dense_reference(x, mask, mu, gamma, k, lam)
  np.testing.assert_allclose(out[mask], ref[mask], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[4, 1, 0], mu[0], rtol=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_prediction_equals_explicit_least_squares(lam):
  """Training set = all T cyclic shifts of a few series. Then, for every lag tau, the pairs
  (t, t + tau), t < T - tau, of all windows run over every cyclic lag-tau pair of each series
  (T - tau) times, so the estimator's per-lag mean Gamma(tau) (pairs / (W (T - tau))) equals the mean
  over windows of the product at any fixed frame pair (t1, t1 + tau), and every frame's mean is mu.
  Hence the sample moments of the design matrix built from fixed frames (one row per training window)
  are exactly mu, Gamma, and the ridge fit with intercept and penalty m * lam on m rows equals the
  prediction mu_n + Sigma_tc (Sigma_cc + lam I)^-1 (x_c - mu_c)."""
  s, n, length, k = 3, 5, 4, 2
  t_len = s * length
  rng = np.random.default_rng(2)
  base = np.cumsum(rng.normal(size=(8, t_len, n)), axis=1) @ rng.normal(size=(n, n)) + 1.0
  shifted = np.stack([np.roll(b, -c, axis=0) for b in base for c in range(t_len)])  # [96, T, N]
  train = _windows(shifted, s, length)
  model = st.fit_st_ridge(train, k=k, lam=lam)
  assert model.k == k and model.lam == lam and model.val_mse is None
  x = rng.normal(size=(1, s, n, length)) + 1.0
  mask = np.zeros((1, s, n), bool)
  mask[0, 1, 0] = True
  mask[0, :2, 1] = True
  mask[0, 2, 2] = True
  mask[0, 1, 3] = True
  out = st.st_ridge_predict(_hide(x, mask), mask, model)
  series = x[0].transpose(0, 2, 1).reshape(t_len, n)
  m = shifted.shape[0]
  for si, ni in zip(*np.nonzero(mask[0])):
    for j in range(length):
      cond = _conditioning_set(mask[0], si, ni, j, k, length)
      design = np.stack([shifted[:, f, v] for f, v in cond], 1)  # [m, |c|]
      y = shifted[:, si * length + j, ni]
      a = np.concatenate([np.ones((m, 1)), design], 1)
      pen = np.concatenate([np.zeros((len(cond), 1)), np.sqrt(m * lam) * np.eye(len(cond))], 1)
      beta = np.linalg.lstsq(np.concatenate([a, pen]), np.concatenate([y, np.zeros(len(cond))]),
                             rcond=None)[0]
      expected = beta[0] + np.array([series[f, v] for f, v in cond]) @ beta[1:]
      np.testing.assert_allclose(out[0, si, ni, j], expected, rtol=1e-8, atol=1e-8)


def test_moments_against_loops():
  rng = np.random.default_rng(3)
  train = rng.normal(size=(3, 2, 3, 2)).astype(np.float32)
  mu, gamma = st.st_moments(train)
  series = [w.transpose(0, 2, 1).reshape(4, 3).astype(np.float64) for w in train]
  np.testing.assert_allclose(mu, np.mean(np.concatenate(series), 0), rtol=1e-12)
  for tau in range(4):
    pairs = [np.outer(z[t] - mu, z[t + tau] - mu) for z in series for t in range(4 - tau)]
    np.testing.assert_allclose(gamma[tau], np.mean(pairs, 0), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.05, 2.0])
def test_k0_equals_spatial_ridge(lam):
  train = _var1(20, 3, 7, 4, 0.5, seed=4)
  x = _var1(4, 3, 7, 4, 0.5, seed=5)
  mask = rc.random_mask(x.shape[:3], 0.4, seed=2)
  mask[0, 1] = True  # nothing visible: the mean
  mask[1, 0] = False
  ridge = rc.fit_ridge(train, lam)
  model = st.fit_st_ridge(train, k=0, lam=lam)
  np.testing.assert_allclose(model.gamma[0], ridge.cov, rtol=1e-10, atol=1e-12)
  out = st.st_ridge_predict(_hide(x, mask), mask, model)
  np.testing.assert_allclose(out, rc.ridge_predict(_hide(x, mask), mask, ridge), rtol=1e-5, atol=1e-5)


def test_k0_grid_chooses_like_fit_ridge():
  """Same split and validation masks as fit_ridge: a K = 0 grid picks the same lam, same scores."""
  train = _var1(30, 3, 8, 4, 0.5, seed=6)
  lams = (1e-3, 1e-1, 10.0)
  ridge = rc.fit_ridge(train, lams=lams, mask_ratio=0.4, seed=3)
  model = st.fit_st_ridge(train, ks=(0,), lams=lams, mask_ratio=0.4, seed=3)
  assert model.k == 0 and model.lam == ridge.lam
  for lam in lams:
    assert model.val_mse[(0, lam)] == pytest.approx(ridge.val_mse[lam], rel=1e-5)


def _compare(coef, seed):
  s, n, length = 4, 10, 6
  train = _var1(120, s, n, length, coef, seed=seed)
  x = _var1(40, s, n, length, coef, seed=seed + 1)
  mask = rc.random_mask(x.shape[:3], 0.5, seed=seed)
  lams = (1e-3, 1e-2, 1e-1, 1.0)
  model = st.fit_st_ridge(train, ks=(0, 1, 3), lams=lams, mask_ratio=0.5, seed=seed)
  e_st = rc.masked_mse(st.st_ridge_predict(_hide(x, mask), mask, model), x, mask)
  e_sp = rc.masked_mse(rc.ridge(_hide(x, mask), mask, train, lams=lams), x, mask)
  return model, e_st, e_sp


def test_beats_spatial_ridge_on_autocorrelated_data():
  model, e_st, e_sp = _compare(0.9, seed=7)
  assert model.k > 0
  assert set(model.val_mse) == {(k, lam) for k in (0, 1, 3) for lam in (1e-3, 1e-2, 1e-1, 1.0)}
  assert model.val_mse[(model.k, model.lam)] == min(model.val_mse.values())
  assert e_st < 0.85 * e_sp  # 0.65 here; the K = 0 ridge cannot use the ROI's own past and future


def test_no_worse_than_spatial_ridge_on_white_data():
  _, e_st, e_sp = _compare(0.0, seed=8)
  assert e_st < 1.03 * e_sp


def test_val_x_moments_from_train_only():
  train = _var1(20, 3, 6, 4, 0.8, seed=9)
  val = _var1(8, 3, 6, 4, 0.8, seed=10)
  model = st.fit_st_ridge(train, val_x=val, ks=(0, 2), lams=(1e-2, 1.0))
  mu, gamma = st.st_moments(train)
  np.testing.assert_array_equal(model.gamma, gamma)
  np.testing.assert_array_equal(model.mean, mu)
  assert set(model.val_mse) == {(0, 1e-2), (0, 1.0), (2, 1e-2), (2, 1.0)}
  refit = st.fit_st_ridge(train, ks=(0, 2), lams=(1e-2, 1.0))  # split, choose, refit on all
  np.testing.assert_array_equal(refit.gamma, gamma)


def test_hidden_values_never_read():
  train = _var1(20, 3, 6, 4, 0.8, seed=11)
  x = _var1(5, 3, 6, 4, 0.8, seed=12)
  mask = rc.random_mask(x.shape[:3], 0.5, seed=1)
  mask[0, :, 0] = True
  model = st.fit_st_ridge(train, k=3, lam=0.01)
  a = st.st_ridge_predict(_hide(x, mask), mask, model)
  b = st.st_ridge_predict(np.where(mask[..., None], 1e6, x).astype(np.float32), mask, model)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, st.st_ridge(_hide(x, mask), mask, train, k=3, lam=0.01))
  assert np.all(np.isfinite(a))


def test_bad_input_is_named():
  train = _var1(6, 3, 6, 4, 0.8, seed=13)
  x = train[:2]
  mask = rc.random_mask(x.shape[:3], 0.5)
  model = st.fit_st_ridge(train, k=1, lam=0.1)
  with pytest.raises(ValueError, match=r"x: expected windows of shape \[W, S, N, L\]"):
    st.st_ridge_predict(x[0], mask, model)
  with pytest.raises(ValueError, match="mask: expected shape"):
    st.st_ridge_predict(x, mask[:, :, :3], model)
  with pytest.raises(ValueError, match="model: has 6 ROIs but x has 4"):
    st.st_ridge_predict(x[:, :, :4], mask[:, :, :4], model)
  with pytest.raises(ValueError, match="model: gamma"):
    st.st_ridge_predict(np.concatenate([x, x], 1), np.concatenate([mask, mask], 1), model)
  with pytest.raises(ValueError, match="train_x: expected windows"):
    st.fit_st_ridge(train[0], k=1, lam=0.1)
  with pytest.raises(ValueError, match="val_x: shape"):
    st.fit_st_ridge(train, val_x=train[:, :, :4])
  with pytest.raises(ValueError, match="lam"):
    st.fit_st_ridge(train, k=1, lam=-1.0)
  with pytest.raises(ValueError, match="ks"):
    st.fit_st_ridge(train, ks=(-1, 2))
  with pytest.raises(ValueError, match="train_x: choosing"):
    st.fit_st_ridge(train[:1])
