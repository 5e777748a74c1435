"""Homologous-pair permutation test: planted structure, null calibration, exact small case."""
import itertools

import numpy as np
import pytest

from jaxbrain.evaluation import homology as h


def _random_sim(n, seed):
  e = np.random.default_rng(seed).normal(size=(n, 8))
  e /= np.linalg.norm(e, axis=1, keepdims=True)
  return e @ e.T


def test_pairs_helpers():
  assert h.alternating_pairs(6) == [(0, 1), (2, 3), (4, 5)]
  names = ["Precentral_L", "Precentral_R", "Vermis", "Frontal_Sup_2_R", "Frontal_Sup_2_L"]
  assert h.homologous_pairs(names) == [(0, 1), (4, 3)]
  with pytest.raises(ValueError, match="no left/right"):
    h.homologous_pairs(["a", "b"])
  with pytest.raises(ValueError, match="even"):
    h.alternating_pairs(5)


def test_planted_structure_gives_small_p():
  n = 40
  rng = np.random.default_rng(0)
  base = rng.normal(size=(n // 2, 8))
  e = np.repeat(base, 2, axis=0) + 0.5 * rng.normal(size=(n, 8))  # rows 2k and 2k+1 share a centre
  e /= np.linalg.norm(e, axis=1, keepdims=True)
  out = h.homology_test(e @ e.T, h.alternating_pairs(n), n_perm=2000)
  assert out["p_value"] == pytest.approx(1 / 2001)
  assert out["mean_homologous"] > out["mean_random"] + 0.3
  assert out["n_pairs"] == 20 and out["n_perm"] == 2000


def test_random_similarity_p_values_are_not_small():
  ps = [h.homology_test(_random_sim(20, seed), h.alternating_pairs(20), n_perm=300, seed=seed)["p_value"]
        for seed in range(30)]
  ps = np.array(ps)
  # Under the null p is ~uniform: about 5% below 0.05, mean about 0.5.
  assert np.mean(ps < 0.05) <= 0.2
  assert 0.3 < ps.mean() < 0.7


def test_exact_p_value_against_full_enumeration():
  # 4 ROIs, pair (0, 1): the null over all 24 relabellings is the mean over ordered pairs (a, b), a != b.
  s = np.array([[1, .9, .1, .2], [.9, 1, .3, .4], [.1, .3, 1, .5], [.2, .4, .5, 1]])
  out = h.homology_test(s, [(0, 1)], n_perm=20000, seed=1)
  null = [s[a, b] for a, b in itertools.permutations(range(4), 2)]
  exact_p = np.mean(np.array(null) >= 0.9)  # 2 of 12
  assert out["mean_homologous"] == 0.9
  assert out["p_value"] == pytest.approx(exact_p, abs=0.01)
  assert out["mean_random"] == pytest.approx(np.mean(null), abs=0.01)


def test_asymmetric_matrix_is_symmetrised():
  s = np.arange(16, dtype=float).reshape(4, 4)
  out = h.homology_test(s, [(0, 1)], n_perm=10)
  assert out["mean_homologous"] == pytest.approx(0.5 * (s[0, 1] + s[1, 0]))


def test_bad_input_is_named():
  s = _random_sim(6, 0)
  with pytest.raises(ValueError, match="square"):
    h.homology_test(s[:3], [(0, 1)])
  with pytest.raises(ValueError, match=r"0\.\.5"):
    h.homology_test(s, [(0, 6)])
  with pytest.raises(ValueError, match="self-pair"):
    h.homology_test(s, [(2, 2)])
  with pytest.raises(ValueError, match="non-empty"):
    h.homology_test(s, [])
  bad = s.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="similarity: contains 1 NaN"):
    h.homology_test(bad, [(0, 1)])
