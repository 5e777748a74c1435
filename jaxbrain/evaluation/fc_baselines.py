"""Static functional-connectivity baselines and the shared small-sample estimators (scikit-learn).

Features: each subject's full-scan Pearson FC (upper triangle, Fisher z) of the series preprocessed
as the model's windows are (``jaxbrain.data.preprocess.preprocess`` with ``config.data``'s z-scoring
and band-pass). Estimators (``fit_predict``): 'linear' = L2 logistic regression (classification) or
ridge regression (regression); 'mlp' = one hidden layer of ``MLP_HIDDEN`` units (lbfgs), fitted
on the coordinates of the features in the span of the training rows (``RowSpan``: exact for its
L2-penalised first layer, ~100x faster with 10^4 FC features). Features are standardised with the
training subjects' statistics and every penalty is chosen by an inner CV on the training subjects
only (a scikit-learn Pipeline inside GridSearchCV), then refit on all training subjects. The
frozen-encoder linear probe uses the same 'linear' estimator on subject-mean embeddings.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import ml_collections
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from jaxbrain.data.connectivity import correlation, upper_triangle
from jaxbrain.data.preprocess import preprocess
from jaxbrain.data.sources import Subject
from jaxbrain.data.validation import DataError

ESTIMATORS = ("linear", "mlp")
# Penalty grids (log-spaced, wide: the number of FC features ranges from tens to ~10^4).
LOGISTIC_C = tuple(np.logspace(-5, 3, 9))     # inverse L2 strength of LogisticRegression
RIDGE_ALPHA = tuple(np.logspace(-2, 6, 9))    # L2 strength of Ridge
MLP_ALPHA = tuple(np.logspace(-2, 3, 6))      # L2 strength of the MLP's weights
MLP_HIDDEN = 32
FISHER_CLIP = 1.0 - 1e-7  # |r| <= this before arctanh (a perfect correlation would be infinite)


def fisher_fc(series: np.ndarray) -> np.ndarray:
  """Pearson FC of one [N, T] series, upper triangle (k=1), Fisher z: float64 [N(N-1)/2]."""
  x = np.asarray(series, np.float64)
  if x.ndim != 2 or x.shape[1] < 2:
    raise DataError(f"FC needs a [ROI, time] series with at least 2 frames, got shape {x.shape}")
  r = upper_triangle(correlation(x))
  return np.arctanh(np.clip(r, -FISHER_CLIP, FISHER_CLIP))


def _band(data: ml_collections.ConfigDict) -> tuple[float | None, float | None] | None:
  """``config.data.bandpass_hz`` as ``preprocess`` takes it (as ``tasks.inputs.window_arrays``)."""
  band = tuple(data.bandpass_hz)
  return None if not any(band) else (band[0] or None, band[1] or None)


def subject_fc(subjects: Sequence[Subject], data: ml_collections.ConfigDict) -> np.ndarray:
  """Fisher-z FC features [n_subjects, N(N-1)/2] (float64) of the full scans, preprocessed with
  ``config.data``'s settings (z-scoring, band-pass) as the encoder's windows are."""
  if not subjects:
    raise DataError("subject_fc: no subjects")
  return np.stack([fisher_fc(preprocess(s.timeseries, s.tr, standardize=data.zscore,
                                        band_hz=_band(data), source=s.source))
                   for s in subjects])


def _inner_cv(y: np.ndarray, task: str, folds: int, seed: int):
  """The inner splitter, or None when the training subjects are too few to split (fewer than 2
  in some class, or fewer than 3 for regression)."""
  if task == "classification":
    counts = np.unique(y, return_counts=True)[1]
    if len(counts) < 2:
      raise DataError(f"the training subjects all have class {int(y[0])}; a classifier needs two")
    if counts.min() < 2:
      return None
    return StratifiedKFold(min(folds, int(counts.min())), shuffle=True, random_state=seed)
  if len(y) < 3:
    return None
  return KFold(min(folds, len(y)), shuffle=True, random_state=seed)


class RowSpan(TransformerMixin, BaseEstimator):
  """Coordinates in an orthonormal basis of the span of the training rows [n, F] -> [n, rank].

  An exact reparametrisation for a model whose first layer is L2-penalised and sees the features
  only through ``x @ W``: the penalised optimum has W in that span (any other component adds
  penalty and changes no training output). With F ~ 10^4 FC features and tens of subjects, the MLP
  then fits on ~n inputs instead of F (each fit ~100x faster)."""

  def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> "RowSpan":
    del y
    _, s, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
    self.basis_ = vt[s > s[0] * 1e-10].T if s.size and s[0] > 0 else vt[:0].T
    return self

  def transform(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64) @ self.basis_


def _search(estimator: str, task: str, seed: int) -> tuple:
  """(pipeline, parameter grid) for GridSearchCV."""
  if estimator == "linear":
    if task == "classification":
      model = LogisticRegression(max_iter=5000)
      return make_pipeline(StandardScaler(), model), {"logisticregression__C": list(LOGISTIC_C)}
    return make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": list(RIDGE_ALPHA)}
  if estimator == "mlp":
    kw = dict(hidden_layer_sizes=(MLP_HIDDEN,), solver="lbfgs", max_iter=500, random_state=seed)
    if task == "classification":
      return (make_pipeline(StandardScaler(), RowSpan(), MLPClassifier(**kw)),
              {"mlpclassifier__alpha": list(MLP_ALPHA)})
    return (make_pipeline(StandardScaler(), RowSpan(), MLPRegressor(**kw)),
            {"mlpregressor__alpha": list(MLP_ALPHA)})
  raise DataError(f"estimator {estimator!r}: expected one of {ESTIMATORS}")


def fit_predict(estimator: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                task: str, *, num_classes: int | None = None, inner_folds: int = 5,
                seed: int = 0) -> tuple[np.ndarray, dict]:
  """Fits ``estimator`` ('linear' or 'mlp') on the training subjects, its penalty chosen by an inner
  ``inner_folds``-fold CV on them only (log loss for classification, squared error for regression),
  features standardised with training statistics; returns (test predictions, info).

  Predictions: class probabilities [n_test, num_classes] (a class absent from training gets 0) or
  values [n_test]. ``info``: {'param': name, 'value': chosen penalty, 'inner_cv': False when the
  training subjects were too few to split (fewer than 2 in a class, or 3 for regression) and
  scikit-learn's default penalty was used, 'train_pred': predictions on the training subjects}.
  """
  x_train, x_test = np.asarray(x_train, np.float64), np.asarray(x_test, np.float64)
  if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
    raise DataError(f"features: expected [n, F] train and test with the same F, got "
                    f"{x_train.shape} and {x_test.shape}")
  if task not in ("classification", "regression"):
    raise DataError(f"task {task!r}: expected 'classification' or 'regression'")
  y = np.asarray(y_train)
  if task == "classification":
    y = y.astype(np.int64)
  pipe, grid = _search(estimator, task, seed)
  (param, _), = grid.items()
  splitter = _inner_cv(y, task, inner_folds, seed)
  # One BLAS thread: these problems are tiny, and threads that wait for busy cores (JAX, other
  # jobs) made an MLP fit 50x slower (14 s instead of 0.3 s on 2 loaded cores). lbfgs may stop
  # short at the weakest penalties; the inner CV picks among them anyway.
  with warnings.catch_warnings(), threadpool_limits(1):
    warnings.simplefilter("ignore", ConvergenceWarning)
    if splitter is None:  # too few subjects to split: scikit-learn's default penalty, flagged
      model = pipe.fit(x_train, y)
      info = {"param": param.split("__")[-1], "value": float(pipe.get_params()[param]),
              "inner_cv": False}
    else:
      scoring = "neg_log_loss" if task == "classification" else "neg_mean_squared_error"
      model = GridSearchCV(pipe, grid, scoring=scoring, cv=splitter, refit=True, n_jobs=1)
      model.fit(x_train, y)
      info = {"param": param.split("__")[-1], "value": float(model.best_params_[param]),
              "inner_cv": True}
  if task == "classification":
    c = num_classes if num_classes is not None else int(y.max()) + 1
    classes = model.classes_

    def proba(x):
      out = np.zeros((len(x), c))
      out[:, classes] = model.predict_proba(x)
      return out
    info["train_pred"] = proba(x_train)
    return proba(x_test), info
  info["train_pred"] = model.predict(x_train).astype(np.float64)
  return model.predict(x_test).astype(np.float64), info
