"""Sliding-window FC and its sparsified graphs against a float64 NumPy reference; bad settings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbrain.data import dynamic_fc as dfc
from jaxbrain.data.validation import DataError


def _reference(x, window, stride, sparsity, self_loops=False):
  """Per window: np.corrcoef in float64, clamped; edges ranked by value over the upper triangle."""
  n, t = x.shape
  fcs, adjs = [], []
  for start in range(0, t - window + 1, stride):
    c = np.clip(np.corrcoef(x[:, start:start + window].astype(np.float64)), -1, 1)
    iu, ju = np.triu_indices(n, 1)
    keep = max(1, int(np.ceil(len(iu) * sparsity / 100)))
    thr = np.sort(c[iu, ju])[::-1][keep - 1]
    a = np.zeros((n, n))
    sel = c[iu, ju] >= thr
    a[iu[sel], ju[sel]] = 1
    a = a + a.T + (np.eye(n) if self_loops else 0)
    fcs.append(c)
    adjs.append(a)
  return np.stack(fcs), np.stack(adjs)


@pytest.mark.parametrize("window,stride,sparsity,self_loops", [(50, 16, 30.0, False), (50, 3, 30.0, True),
                                                               (12, 5, 100.0, False), (9, 9, 1.0, False)])
def test_matches_float64_reference(window, stride, sparsity, self_loops):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(7, 130)).cumsum(axis=1)  # smooth series: correlations far from 0
  fc, adj = dfc.dynamic_fc(x, window, stride, sparsity, self_loops)
  ref_fc, ref_adj = _reference(x, window, stride, sparsity, self_loops)
  assert fc.shape == ref_fc.shape == (dfc.num_windows(130, window, stride), 7, 7)
  np.testing.assert_allclose(np.asarray(fc), ref_fc, atol=2e-6)
  np.testing.assert_array_equal(np.asarray(adj), ref_adj)
  np.testing.assert_array_equal(dfc.window_ends(130, window, stride),
                                np.arange(0, 130 - window + 1, stride) + window - 1)
  assert np.all(np.abs(np.asarray(fc)) <= 1)


def test_batched_and_jitted_equals_one_by_one():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 5, 60)).astype(np.float32)
  fc, adj = jax.jit(lambda v: dfc.dynamic_fc(v, 20, 10, 30.0))(jnp.asarray(x))
  for b in range(3):
    fb, ab = dfc.dynamic_fc(x[b], 20, 10, 30.0)
    np.testing.assert_allclose(np.asarray(fc[b]), np.asarray(fb), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(adj[b]), np.asarray(ab))


@pytest.mark.parametrize("kwargs,match", [
    (dict(window=200), "shorter than one window of 200"), (dict(stride=0), "stride = 0"),
    (dict(sparsity=0.0), "sparsity = 0.0"), (dict(sparsity=120), "sparsity = 120"),
    (dict(window=1), "at least 2")])
def test_bad_settings_name_the_value(kwargs, match):
  x = np.random.default_rng(2).normal(size=(4, 100))
  with pytest.raises(DataError, match=match):
    dfc.dynamic_fc(x, **{"window": 50, "stride": 16, "sparsity": 30.0, **kwargs}, source="sub-01")


def test_nan_series_is_refused():
  x = np.random.default_rng(3).normal(size=(4, 100))
  x[2, 7] = np.nan
  with pytest.raises(DataError, match="sub-01: 1 non-finite"):
    dfc.dynamic_fc(x, source="sub-01")


def test_kth_largest_is_exact_with_ties_negatives_and_infinities():
  rng = np.random.default_rng(0)
  v = rng.standard_normal((6, 500)).astype(np.float32)
  v[1, :200] = 0.25            # ties at the threshold
  v[2] = -np.abs(v[2])         # all negative
  v[3, :450] = -np.inf         # fewer finite values than k
  v[4, ::2] = -0.0             # signed zeros
  v[5] *= 1e-30                # subnormal-scale values
  for k in (1, 7, 60, 500):
    want = np.sort(v, axis=-1)[:, -k]
    got = np.asarray(jax.jit(dfc.kth_largest, static_argnums=1)(jnp.asarray(v), k))[:, 0]
    np.testing.assert_array_equal(got, want, err_msg=f"k={k}")
