"""One GD step against a hand-computed gradient (NumPy float64), for every model and both losses."""
import numpy as np
import pytest

from theory import gd, models


def _np_grad(model, w, x, y, mask, b, loss):
  n, k, d = x.shape
  if model == "fcn":
    z = x.reshape(n, k * d) @ w.T
  elif model == "lcn":
    z = np.einsum("nkd,kd->nk", x, w)
  else:
    z = np.einsum("nkd,d->nk", x, w)
  f = (np.maximum(z - b, 0) - np.maximum(-z - b, 0)).sum(1)
  dphi = (np.abs(z) >= b).astype(np.float64)  # derivative 1 outside the dead zone
  m = y * f
  dl_dm = -1 / (1 + np.exp(m)) if loss == "logistic" else -(1 - m)
  g_f = mask * dl_dm * y / mask.sum()  # d loss / d f_n
  if model == "fcn":
    return np.einsum("n,nj,ne->je", g_f, dphi, x.reshape(n, k * d))
  if model == "lcn":
    return np.einsum("n,nk,nkd->kd", g_f, dphi, x)
  return np.einsum("n,nk,nkd->d", g_f, dphi, x)


@pytest.mark.parametrize("loss", ["logistic", "squared"])
def test_one_gd_step_matches_hand_gradient(loss):
  rng = np.random.default_rng(1)
  n, k, d, b, lr = 11, 3, 4, 0.2, 0.7
  x = rng.normal(size=(n, k, d))
  y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
  mask = (np.arange(n) < 8).astype(np.float64)
  cfg = gd.GDConfig(lrs=(lr,), biases=(b,), b_eval=b, loss=loss)
  for model in models.MODELS:
    w = 0.5 * rng.normal(size=models.weight_shape(model, k, d))
    out = gd.gd_step(model, np.float32(w), np.float32(x), np.float32(y), np.float32(mask),
                     np.float32(lr), np.float32(b), cfg)
    ref = w - lr * _np_grad(model, w, x, y, mask, b, loss)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)


def test_first_step_from_zero_is_the_linear_step():
  """With b = 0 at w = 0, the logistic gradient is -(1/2n) sum_n y_n x_n (summed over patches for
  the CNN): the analysis' first step, not a dead zero gradient."""
  rng = np.random.default_rng(2)
  n, k, d = 9, 3, 2
  x = rng.normal(size=(n, k, d)).astype(np.float32)
  y = np.where(rng.random(n) < 0.5, 1.0, -1.0).astype(np.float32)
  cfg = gd.GDConfig(lrs=(1.0,), biases=(0.0,), b_eval=0.0)
  w = gd.train("cnn", np.zeros(d, np.float32), x, y, np.ones(n, np.float32), cfg)
  np.testing.assert_allclose(np.asarray(w), 0.5 * (y[:, None, None] * x).sum(1).mean(0), rtol=1e-5)


def test_presets_and_bad_settings():
  two = gd.two_step(lr1=2.0, lr2=0.5, b=0.3)
  assert two.steps == 2 and two.biases == (0.0, 0.3) and two.projection == "sphere"
  many = gd.many_step(steps=5, b=0.2, warmup=2)
  assert many.biases == (0.0, 0.0, 0.2, 0.2, 0.2) and many.init == "normal"
  with pytest.raises(ValueError, match="gd.loss"):
    gd.GDConfig(lrs=(1.0,), biases=(0.0,), b_eval=0.0, loss="hinge")
  with pytest.raises(ValueError, match="equal length"):
    gd.GDConfig(lrs=(1.0, 1.0), biases=(0.0,), b_eval=0.0)
