"""Subject-level splits: disjoint, deterministic, complete; k-fold coverage and stratification."""
import numpy as np
import pytest

from jaxbrain.data import DataError
from jaxbrain.data.splits import kfold_subjects, split_subjects

IDS = [f"s{i:02d}" for i in range(23)]


def test_holdout_split_disjoint_deterministic():
  a = split_subjects(IDS, {"val": 0.2, "test": 3}, seed=1)
  assert len(a["val"]) == 5 and len(a["test"]) == 3 and len(a["train"]) == 15
  assert sorted(sum(a.values(), [])) == sorted(IDS)
  assert not set(a["val"]) & set(a["test"]) and not set(a["train"]) & set(a["val"])
  assert a == split_subjects(list(reversed(IDS)), {"val": 0.2, "test": 3}, seed=1)
  assert a != split_subjects(IDS, {"val": 0.2, "test": 3}, seed=2)
  with pytest.raises(DataError, match="leave none for 'train'"):
    split_subjects(IDS[:3], {"test": 3})
  with pytest.raises(DataError, match=r"duplicate subject ids \['s00'\]"):
    split_subjects(IDS + ["s00"], {"test": 1})


def test_kfold_covers_every_subject_once():
  folds = kfold_subjects(IDS, 5, seed=0)
  tests = [t for _, t in folds]
  assert sorted(sum(tests, [])) == sorted(IDS)
  assert {len(t) for t in tests} <= {4, 5}
  for train, test in folds:
    assert not set(train) & set(test) and sorted(train + test) == sorted(IDS)
  assert folds == kfold_subjects(IDS, 5, seed=0)
  with pytest.raises(DataError, match="k=1 folds"):
    kfold_subjects(IDS, 1)


def test_kfold_stratified():
  labels = np.array([0] * 15 + [1] * 8)
  folds = kfold_subjects(IDS, 4, seed=3, labels=labels)
  lab = dict(zip(IDS, labels))
  for _, test in folds:
    counts = np.bincount([lab[s] for s in test], minlength=2)
    assert counts[0] in (3, 4) and counts[1] == 2
