"""Subject fingerprinting on synthetic separable and random embeddings."""
import numpy as np
import pytest
from scipy import stats

from jaxbrain.evaluation import fingerprint as fp


def _windows(n_sub=6, per=10, dim=16, signal=3.0, seed=0):
  """Embeddings of ``per`` windows per subject; parts: first half of each subject's windows 0,
  second half 1."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(n_sub, dim))
  subjects = np.repeat(np.arange(n_sub), per)
  e = signal * centres[subjects] + rng.normal(size=(n_sub * per, dim))
  parts = np.tile(np.arange(per) * 2 // per, n_sub)
  return e.astype(np.float32), subjects, parts


@pytest.mark.parametrize("match", ["mean", "window"])
@pytest.mark.parametrize("aggregate", [False, True])
def test_separable_embeddings_are_identified(match, aggregate):
  e, subjects, parts = _windows()
  out = fp.fingerprint(e, subjects, parts, match=match, aggregate_queries=aggregate)
  assert out["accuracy"] == 1.0
  assert out["chance"] == pytest.approx(1 / 6)
  assert out["n_queries"] == (6 if aggregate else 30)
  conf = out["confusion"]
  assert conf.shape == (6, 6) and conf.sum() == out["n_queries"]
  np.testing.assert_array_equal(conf, np.diag(np.diag(conf)))
  assert out["subject_ids"] == list(range(6))


def test_random_embeddings_near_chance():
  accs = []
  for seed in range(20):
    e, subjects, parts = _windows(n_sub=5, per=20, signal=0.0, seed=seed)
    out = fp.fingerprint(e, subjects, parts)
    accs.append(out["accuracy"])
    assert out["chance"] == 0.2
  # 20 x 50 queries; mean accuracy should be near 0.2 (std of the mean ~ 0.013 if independent).
  assert abs(np.mean(accs) - 0.2) < 0.08


def test_confusion_and_predictions_against_loop():
  e, subjects, parts = _windows(n_sub=4, per=8, signal=0.7, seed=3)
  names = np.array(["s%d" % s for s in subjects])
  out = fp.fingerprint(e, names, parts, gallery_part=1, query_part=0)
  g = e[parts == 1].astype(np.float64)
  gs = names[parts == 1]
  ids = sorted(set(names))
  means = {s: g[gs == s].mean(0) for s in ids}
  pred = []
  for q in e[parts == 0].astype(np.float64):
    pred.append(max(ids, key=lambda s: stats.pearsonr(q, means[s])[0]))
  assert out["predicted"] == pred
  assert out["true"] == names[parts == 0].tolist()
  assert out["subject_ids"] == ids
  conf = np.zeros((4, 4), int)
  for t, p in zip(out["true"], pred):
    conf[ids.index(t), ids.index(p)] += 1
  np.testing.assert_array_equal(out["confusion"], conf)
  assert out["accuracy"] == pytest.approx(np.trace(conf) / conf.sum())


def test_bad_input_is_named():
  e, subjects, parts = _windows(n_sub=3, per=4)
  with pytest.raises(ValueError, match="subjects: expected shape"):
    fp.fingerprint(e, subjects[:-1], parts)
  with pytest.raises(ValueError, match="no window has the query part 7"):
    fp.fingerprint(e, subjects, parts, query_part=7)
  with pytest.raises(ValueError, match="match"):
    fp.fingerprint(e, subjects, parts, match="nearest")
  q_only = subjects.copy()
  q_only[(subjects == 2) & (parts == 0)] = 9
  q_only[(subjects == 2) & (parts == 1)] = 5
  with pytest.raises(ValueError, match=r"query subjects \[5\] have no gallery"):
    fp.fingerprint(e, q_only, parts)
  bad = e.copy()
  bad[0] = np.nan
  with pytest.raises(ValueError, match="embeddings: contain"):
    fp.fingerprint(bad, subjects, parts)
  const = e.copy()
  const[parts == 0] = 1.0
  with pytest.raises(ValueError, match="gallery embeddings: .* constant"):
    fp.fingerprint(const, subjects, parts)
