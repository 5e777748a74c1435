"""Models for fMRI: BrainMAE."""
from jaxbrain.models.brainmae import (  # noqa: F401
    LOGICAL_AXES,
    BrainMAE,
    BrainMAEForPrediction,
    BrainMAEHead,
    default_model_config,
    masked_mse,
    num_masked,
    pretrain_loss,
    random_mask,
)
