"""jaxbrain: BrainMAE pretraining, fine-tuning and evaluation on fMRI ROI time series."""
