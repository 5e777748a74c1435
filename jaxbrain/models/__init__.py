"""Models for fMRI: BrainMAE (``brainmae``), ST-MAE (``stmae``) and their generic layers (``layers``).

A model family is a module with ``build(model_cfg, *, rngs)`` (the pretraining model),
``pretrain_loss(model, batch, rng, step)`` (the engine's loss contract) and
``build_for_prediction(model_cfg, num_outputs, *, rngs)`` (the encoder, as ``.encoder``, plus a
head; its ``__call__(x, *, rngs, with_penalty=False)`` returns predictions, or with
``with_penalty`` (predictions, a scalar penalty the fine-tuning loss adds)), registered in ``MODELS`` under ``config.model.name``.
"""
from types import ModuleType

import ml_collections

from jaxtrain.errors import ConfigError
from jaxbrain.models.brainmae import (  # noqa: F401
    LOGICAL_AXES,
    BrainMAE,
    BrainMAEForPrediction,
    default_model_config,
    masked_mse,
    num_masked,
    pretrain_loss,
    random_mask,
)
from jaxbrain.models import brainmae, stmae

MODELS: dict[str, ModuleType] = {"brainmae": brainmae, "stmae": stmae}


def family(model_cfg: ml_collections.ConfigDict) -> ModuleType:
  """The model family named by ``config.model.name``."""
  name = model_cfg.get("name", "brainmae")
  if name not in MODELS:
    raise ConfigError(f"config.model.name={name!r}; expected one of {sorted(MODELS)}")
  return MODELS[name]
