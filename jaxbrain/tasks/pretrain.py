"""Masked-autoencoder pretraining of BrainMAE on the shared engine."""
from __future__ import annotations

import ml_collections
import numpy as np

from jaxtrain.data import InMemorySource, make_loader
from jaxbrain.models.brainmae import BrainMAE, pretrain_loss
from jaxtrain import loop


def pretrain(config: ml_collections.ConfigDict, workdir: str, train_x: np.ndarray
             ) -> loop.TrainResult:
  """Pretrains on windows ``train_x`` [W, S, N, L]; resumes from ``workdir`` if it has a checkpoint."""
  source = InMemorySource({"x": train_x})
  if len(source) < config.train.batch_size:
    raise ValueError(f"{len(source)} training windows, fewer than config.train.batch_size="
                     f"{config.train.batch_size}")
  train_iter = make_loader(source, global_batch_size=config.train.batch_size, seed=config.seed,
                           fields=("x",))
  return loop.train(config=config, workdir=workdir,
                    model_fn=lambda rngs: BrainMAE(config.model, rngs=rngs),
                    loss_fn=pretrain_loss, train_iter=train_iter)
