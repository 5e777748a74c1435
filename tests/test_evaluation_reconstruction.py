"""Reconstruction baselines against brute-force references (np.interp, an explicit ridge fit)."""
import numpy as np
import pytest

from jaxbrain.evaluation import reconstruction as rc


def _data(w=6, s=5, n=7, length=4, seed=0):
  rng = np.random.default_rng(seed)
  # Correlated ROIs (the same mixing for every seed) so that ridge has something to find.
  mix = np.random.default_rng(1234).normal(size=(n, n))
  z = rng.normal(size=(w, s, length, n)) @ mix.T + 0.3
  return np.moveaxis(z, -1, 2).astype(np.float32)


def _hide(x, mask):
  """x with hidden cells set to NaN: a baseline must never read them."""
  return np.where(mask[..., None], np.nan, x).astype(np.float32)


def test_masked_mse_closed_form():
  x = np.zeros((1, 2, 2, 3), np.float32)
  recon = x.copy()
  recon[0, 0, 1] = 2.0  # hidden cell, error 4 per frame
  recon[0, 1, 0] = 5.0  # visible cell: ignored
  mask = np.array([[[False, True], [False, True]]])
  assert rc.masked_mse(recon, x, mask) == pytest.approx(2.0)  # (4*3 + 0*3) / 6


def test_masked_mse_rejects_bad_input():
  x = np.zeros((1, 2, 2, 3), np.float32)
  with pytest.raises(ValueError, match="no cell is masked"):
    rc.masked_mse(x, x, np.zeros((1, 2, 2), bool))
  with pytest.raises(ValueError, match=r"mask: expected shape \(1, 2, 2\)"):
    rc.masked_mse(x, x, np.zeros((1, 2, 3), bool))
  with pytest.raises(ValueError, match="bool"):
    rc.masked_mse(x, x, np.zeros((1, 2, 2), int))
  with pytest.raises(ValueError, match=r"\[W, S, N, L\]"):
    rc.masked_mse(x[0], x[0], np.zeros((2, 2), bool))


def test_random_mask_ratio_per_segment():
  m = rc.random_mask((3, 4, 10), 0.3, seed=1)
  assert m.dtype == bool and m.shape == (3, 4, 10)
  np.testing.assert_array_equal(m.sum(-1), 3)
  np.testing.assert_array_equal(m, rc.random_mask((3, 4, 10), 0.3, seed=1))
  with pytest.raises(ValueError, match="ratio"):
    rc.random_mask((1, 1, 3), 1.5)


def test_roi_mean():
  train = _data(seed=1)
  x = _data(seed=2)
  mask = rc.random_mask(x.shape[:3], 0.4, seed=0)
  out = rc.roi_mean(_hide(x, mask), mask, train)
  assert out.shape == x.shape and out.dtype == x.dtype
  mu = train.astype(np.float64).mean(axis=(0, 1, 3))
  for w, s, n in zip(*np.nonzero(mask)):
    np.testing.assert_allclose(out[w, s, n], mu[n], rtol=1e-6)
  np.testing.assert_array_equal(out[~mask], x[~mask])
  with pytest.raises(ValueError, match="ROIs"):
    rc.roi_mean(x, mask, train[:, :, :3])


def _interp_reference(x, mask, fallback):
  w, s, n, length = x.shape
  out = x.astype(np.float64).copy()
  t_all = np.arange(s * length)
  for wi in range(w):
    for ni in range(n):
      vis_frames = np.repeat(~mask[wi, :, ni], length)
      series = x[wi, :, ni, :].reshape(-1).astype(np.float64)
      if vis_frames.any():
        full = np.interp(t_all, t_all[vis_frames], series[vis_frames])
      else:
        full = np.full(s * length, fallback[ni])
      out[wi, :, ni, :] = full.reshape(s, length)
  return out


def test_linear_interp_matches_np_interp():
  x = _data(w=5, s=6, n=8, length=3, seed=3)
  mask = np.random.default_rng(0).random(x.shape[:3]) < 0.5
  mask[0, :, 0] = True  # hidden in the whole window: fallback
  mask[1, :3, 1] = True  # leading run: nearest visible value
  mask[1, 3:, 1] = False
  mask[2, :, 2] = False
  mask[2, -2:, 2] = True  # trailing run
  fb = np.arange(8, dtype=np.float64)
  out = rc.linear_interp(_hide(x, mask), mask, fallback=fb)
  np.testing.assert_allclose(out, _interp_reference(x, mask, fb), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out[~mask], x[~mask])
  assert np.all(out[0, :, 0] == 0.0)


def test_linear_interp_default_fallback_is_visible_roi_mean():
  x = _data(w=3, s=2, n=2, length=2, seed=4)
  mask = np.zeros(x.shape[:3], bool)
  mask[0, :, 0] = True
  out = rc.linear_interp(_hide(x, mask), mask)
  expected = x[1:, :, 0].astype(np.float64).mean()
  np.testing.assert_allclose(out[0, :, 0], expected, rtol=1e-5)


def test_linear_interp_exact_on_linear_signal():
  length, s = 4, 5
  t = np.arange(s * length, dtype=np.float32)
  x = np.stack([2 * t + 1, -t], 0).reshape(2, s, length)  # [N, S, L]
  x = np.moveaxis(x, 0, 1)[None]  # [1, S, N, L]
  mask = np.zeros((1, s, 2), bool)
  mask[0, 1:3, 0] = True
  mask[0, 2, 1] = True
  out = rc.linear_interp(_hide(x, mask), mask)
  np.testing.assert_allclose(out, x, rtol=1e-6)


def _explicit_ridge(train, hidden, lam, x_seg):
  """Ridge of the hidden ROIs on the visible ones, intercept unpenalised, on the training frames."""
  frames = np.moveaxis(train, 2, -1).reshape(-1, train.shape[2]).astype(np.float64)
  n = frames.shape[0]
  xv, xm = frames[:, ~hidden], frames[:, hidden]
  mv, mm = xv.mean(0), xm.mean(0)
  xv, xm = xv - mv, xm - mm
  beta = np.linalg.solve(xv.T @ xv + n * lam * np.eye(xv.shape[1]), xv.T @ xm)
  return (mm + (x_seg[~hidden].T.astype(np.float64) - mv) @ beta).T  # [|M|, L]


@pytest.mark.parametrize("lam", [0.0, 0.05, 2.0])
def test_ridge_matches_explicit_fit(lam):
  train = _data(w=8, seed=5)
  x = _data(w=4, seed=6)
  mask = rc.random_mask(x.shape[:3], 0.4, seed=2)
  mask[0, 0] = False  # nothing hidden
  mask[0, 1] = True  # nothing visible: the training mean
  mask[1, 0] = mask[1, 1]  # a shared pattern
  model = rc.fit_ridge(train, lam)
  out = rc.ridge_predict(_hide(x, mask), mask, model, chunk=3)
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_array_equal(out[~mask], x[~mask])
  mu = train.astype(np.float64).mean(axis=(0, 1, 3))
  np.testing.assert_allclose(out[0, 1], np.broadcast_to(mu[:, None], out[0, 1].shape), rtol=1e-5)
  for w in range(x.shape[0]):
    for s in range(x.shape[1]):
      hidden = mask[w, s]
      if hidden.any() and not hidden.all():
        ref = _explicit_ridge(train, hidden, lam, x[w, s])
        np.testing.assert_allclose(out[w, s][hidden], ref, rtol=1e-4, atol=1e-4)


def test_ridge_chooses_lam_by_validation_and_beats_roi_mean():
  train = _data(w=20, seed=7)
  x = _data(w=6, seed=8)
  mask = rc.random_mask(x.shape[:3], 0.3, seed=3)
  model = rc.fit_ridge(train, lams=(1e-3, 1e-1, 10.0), mask_ratio=0.3)
  assert model.lam in (1e-3, 1e-1, 10.0)
  assert set(model.val_mse) == {1e-3, 1e-1, 10.0}
  assert model.val_mse[model.lam] == min(model.val_mse.values())
  errs = rc.baseline_errors(x, mask, train)
  assert set(errs) == {"recon_mse_roi_mean", "recon_mse_linear_interp", "recon_mse_ridge", "ridge_lam"}
  e_mean = rc.masked_mse(rc.roi_mean(x, mask, train), x, mask)
  e_ridge = rc.masked_mse(rc.ridge(x, mask, train), x, mask)
  assert e_ridge < 0.5 * e_mean
  assert errs["recon_mse_ridge"] == pytest.approx(e_ridge)


def test_baseline_errors_keys_and_values():
  train = _data(w=10, seed=9)
  x = _data(w=4, seed=10)
  mask = rc.random_mask(x.shape[:3], 0.5, seed=4)
  errs = rc.baseline_errors(x, mask, train, lam=0.1)
  assert errs["ridge_lam"] == 0.1
  assert errs["recon_mse_roi_mean"] == pytest.approx(
      rc.masked_mse(rc.roi_mean(x, mask, train), x, mask))
  assert errs["recon_mse_ridge"] == pytest.approx(
      rc.masked_mse(rc.ridge(x, mask, train, lam=0.1), x, mask))
  fb = train.astype(np.float64).mean(axis=(0, 1, 3))
  assert errs["recon_mse_linear_interp"] == pytest.approx(
      rc.masked_mse(rc.linear_interp(x, mask, fallback=fb), x, mask))
  assert all(isinstance(v, float) for v in errs.values())


def test_bad_training_data_is_named():
  x = _data(w=2)
  mask = rc.random_mask(x.shape[:3], 0.5)
  bad = x.copy()
  bad[0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="train_x: contains 1 NaN"):
    rc.roi_mean(x, mask, bad)
  with pytest.raises(ValueError, match="train_x: contains 1 NaN"):
    rc.fit_ridge(bad, 0.1)
  visible_nan = x.copy()
  w, s, n = np.argwhere(~mask)[0]
  visible_nan[w, s, n, 0] = np.inf
  with pytest.raises(ValueError, match="visible"):
    rc.linear_interp(visible_nan, mask)
  with pytest.raises(ValueError, match="lam"):
    rc.fit_ridge(x, -1.0)


def test_random_mask_uses_the_models_count_rule():
  """Halves round up as in the model (round-half-even would hide 46 of 93)."""
  import jax
  from jaxbrain.models.brainmae import num_masked, random_mask
  m = rc.random_mask((2, 3, 93), 0.5, seed=0)
  np.testing.assert_array_equal(m.sum(-1), 47)
  assert num_masked(93, 0.5) == 47
  np.testing.assert_array_equal(np.asarray(random_mask(jax.random.key(0), 2, 3, 93, 0.5)).sum(-1), 47)
