"""fMRI data layer: ROI time-series sources, validation, preprocessing, splits, datasets, loaders.

Data flows one way: files -> ``Subject`` (sources, hcp, synthetic) -> preprocessing and windows
-> a random-access source (TFDS array_record shards or in-memory arrays) -> grain per-host batches.
This package knows nothing of models. ``loader`` (grain) and ``tfds_builder`` (tensorflow_datasets)
are imported on demand: ``from jaxtrain.data import InMemorySource, make_loader``.
"""
from jaxbrain.data.hcp import aal2_region_names, homologous_pairs, load_hcp
from jaxbrain.data.preprocess import (make_windows, num_windows, preprocess, segment_frames,
                                      subject_windows, zscore)
from jaxbrain.data.sources import LabelsTable, Subject, load_subjects, read_labels, read_timeseries
from jaxbrain.data.splits import kfold_subjects, split_subjects
from jaxbrain.data.synthetic import make_synthetic
from jaxbrain.data.validation import DataError

__all__ = [
    "DataError", "LabelsTable", "Subject", "aal2_region_names", "homologous_pairs",
    "kfold_subjects", "load_hcp", "load_subjects", "make_synthetic", "make_windows", "num_windows",
    "preprocess", "read_labels", "read_timeseries", "segment_frames", "split_subjects",
    "subject_windows", "zscore",
]
