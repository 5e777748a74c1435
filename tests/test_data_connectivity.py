"""The Pearson-correlation helper, NumPy (float64) and jax (float32, under jit), vs np.corrcoef."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxbrain.data.connectivity import correlation, upper_triangle

RNG = np.random.default_rng(0)


def _corrcoef_ab(a, b):
  """np.corrcoef's cross block: r between rows of a and rows of b (float64)."""
  return np.corrcoef(a, b)[: len(a), len(a):]


def test_numpy_float64_matches_corrcoef():
  a, b = RNG.normal(size=(5, 30)), RNG.normal(size=(4, 30)) * 7 + 3
  r = correlation(a, b)
  assert isinstance(r, np.ndarray) and r.dtype == np.float64 and r.shape == (5, 4)
  np.testing.assert_allclose(r, _corrcoef_ab(a, b), rtol=0, atol=1e-13)
  np.testing.assert_allclose(correlation(a), np.corrcoef(a), rtol=0, atol=1e-13)
  assert r[1, 2] == pytest.approx(stats.pearsonr(a[1], b[2])[0], abs=1e-12)
  # float32 NumPy input is still computed in float64; batched inputs [..., n, F].
  v = RNG.normal(size=(3, 6, 20)).astype(np.float32)
  rv = correlation(v)
  assert rv.dtype == np.float64 and rv.shape == (3, 6, 6)
  for w in range(3):
    np.testing.assert_allclose(rv[w], np.corrcoef(v[w].astype(np.float64)), atol=1e-13)


def test_jax_float32_under_jit_matches_corrcoef():
  v = RNG.normal(size=(3, 6, 20))
  a, b = RNG.normal(size=(5, 30)), RNG.normal(size=(4, 30))
  r, rv = jax.jit(lambda a, b, v: (correlation(a, b), correlation(v)))(
      jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), jnp.asarray(v, jnp.bfloat16))
  assert isinstance(r, jax.Array) and r.dtype == jnp.float32 and rv.dtype == jnp.float32
  np.testing.assert_allclose(r, _corrcoef_ab(a, b), atol=1e-5)
  vb = np.asarray(jnp.asarray(v, jnp.bfloat16), np.float64)  # the values the jax path saw
  for w in range(3):
    np.testing.assert_allclose(rv[w], np.corrcoef(vb[w]), atol=1e-5)


def test_upper_triangle_and_constant_rows():
  v = RNG.normal(size=(2, 5, 12))
  v[0, 3] = 4.0  # a constant signal correlates 0 with everything
  c = correlation(v)
  assert np.all(c[0, 3] == 0) and np.all(c[0, :, 3] == 0)
  i, j = np.triu_indices(5, 1)
  up = upper_triangle(c)
  assert up.shape == (2, 10)
  np.testing.assert_array_equal(up, c[:, i, j])
  np.testing.assert_allclose(up[1], np.corrcoef(v[1])[i, j], atol=1e-13)
  np.testing.assert_allclose(upper_triangle(correlation(jnp.asarray(v, jnp.float32))), up,
                             atol=1e-5)
