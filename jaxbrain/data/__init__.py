"""fMRI data layer: ROI time-series sources, validation, preprocessing, splits, datasets, loaders.

Data flows one way: files -> ``Subject`` (sources, hcp, synthetic) -> preprocessing and windows
-> a random-access source (TFDS array_record shards or in-memory arrays) -> grain per-host batches.
This package knows nothing of models.
"""
from jaxbrain.data.validation import DataError
from jaxbrain.data.sources import LabelsTable, Subject, load_subjects, read_labels, read_timeseries

__all__ = ["DataError", "LabelsTable", "Subject", "load_subjects", "read_labels", "read_timeseries"]
