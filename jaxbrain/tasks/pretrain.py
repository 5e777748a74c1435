"""Self-supervised pretraining on the shared engine: the task, a validation evaluator and the run."""
from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from jaxbrain import models
from jaxtrain import loop
from jaxtrain.data import InMemorySource, make_loader
from jaxtrain.errors import ConfigError
from jaxtrain.task import Evaluator, Task

READ_THREADS = 4  # threads reading examples from files (array_record) ahead of the step


def reconstruction_evaluator(name: str, x: np.ndarray, config: ml_collections.ConfigDict
                             ) -> Evaluator:
  """Masked-reconstruction error on windows ``x`` [W, S, N, L] with fixed evaluation masks, the
  model in eval mode: BrainMAE's masked MSE (``evaluate.eval_mask``) as ``eval/<name>/recon_mse``;
  ST-MAE's weighted FC-row MSE + edge BCE (``evaluate.fc_masks``) as ``eval/<name>/recon_loss``."""
  from jaxbrain.evaluation import reconstruction
  from jaxbrain.tasks import evaluate, inference
  if config.model.name == "stmae":
    masks = evaluate.fc_masks(len(x), config)

    def fc_fn(model):
      err = evaluate.fc_reconstruction_errors(model, x, masks, config.eval.batch_size)
      c = config.model
      return {"recon_loss": float(c.feature_weight * err["feature_mse"].mean()
                                  + c.edge_weight * err["edge_bce"].mean()),
              "feature_mse": float(err["feature_mse"].mean()),
              "edge_bce": float(err["edge_bce"].mean())}
    return Evaluator(name, fc_fn)
  mask = evaluate.eval_mask(x.shape[:3], config)

  def fn(model):
    recon = inference.reconstruct(model, x, mask, config.eval.batch_size)
    return {"recon_mse": reconstruction.masked_mse(recon, x, mask)}

  return Evaluator(name, fn)


def pretrain_task(config: ml_collections.ConfigDict, evaluators=(),
                  prior: tuple[np.ndarray, np.ndarray] | None = None) -> Task:
  """Self-supervised pretraining of the model family ``config.model.name`` as an engine task.
  ``prior``: the (mean, covariance) the model's linear prior is built with (``linear_prior``)."""
  family = models.family(config.model)

  def build(rngs):
    model = family.build(config.model, rngs=rngs)
    if prior is not None:
      model.set_linear_prior(*prior)
    return model

  return Task(model=build, loss=family.pretrain_loss, evaluators=tuple(evaluators))


def prior_moments(source: Any, max_windows: int = 4096, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
  """ROI mean [N] and covariance [N, N] over the frames of the training windows (at most
  ``max_windows`` of them, drawn at random): what the linear prior and the ridge baseline use."""
  from jaxbrain.evaluation.reconstruction import fit_ridge
  from jaxbrain.tasks.inputs import sample_windows
  ridge = fit_ridge(sample_windows(source, max_windows, seed), lam=0.0)
  return ridge.mean, ridge.cov


def pretrain(config: ml_collections.ConfigDict, workdir: str, train_x: np.ndarray | Any,
             val_x: np.ndarray | None = None) -> loop.TrainResult:
  """Pretrains on windows ``train_x``: an array [W, S, N, L] or a random-access source of examples
  with field ``x`` (``jaxtrain.data``: e.g. a TFDS build's split, read per host as the loader needs
  it); resumes from ``workdir`` if it has a checkpoint. With ``val_x``, the validation
  reconstruction error is evaluated every ``train.eval_every`` steps."""
  source = InMemorySource({"x": train_x}) if isinstance(train_x, np.ndarray) else train_x
  if len(source) < config.train.batch_size:
    raise ConfigError(f"{len(source)} training windows, fewer than config.train.batch_size="
                      f"{config.train.batch_size}")
  in_memory = isinstance(source, InMemorySource)
  train_iter = make_loader(source, global_batch_size=config.train.batch_size, seed=config.seed,
                           fields=("x",), num_threads=0 if in_memory else READ_THREADS)
  evaluators = () if val_x is None else (reconstruction_evaluator("val", val_x, config),)
  prior = prior_moments(source, seed=config.seed) if config.model.get("linear_prior") else None
  return loop.train(config=config, workdir=workdir,
                    task=pretrain_task(config, evaluators, prior), train_iter=train_iter)
