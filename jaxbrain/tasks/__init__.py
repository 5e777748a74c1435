"""BrainMAE tasks on the shared engine: inputs, pretraining, evaluation, fine-tuning."""
