"""fMRI data layer: ROI time-series sources, validation, preprocessing, windows, splits, datasets.

Data flows one way: files -> ``Subject`` (sources, hcp, synthetic) -> preprocessing -> windows (the
one path: ``windows``) -> a random-access source (TFDS array_record shards via ``tfds_builder``, or
``jaxtrain.data.InMemorySource`` over ``window_arrays``) -> the engine's grain loader. This package
knows nothing of models. ``tfds_builder`` (tensorflow_datasets) is imported on demand;
``connectivity`` holds the Pearson-correlation helper, ``masking`` the mask-count rule.
"""
from jaxbrain.data.hcp import aal2_region_names, homologous_pairs, load_hcp
from jaxbrain.data.preprocess import preprocess, segment_frames, zscore
from jaxbrain.data.sources import LabelsTable, Subject, load_subjects, read_labels, read_timeseries
from jaxbrain.data.splits import kfold_subjects, split_subjects
from jaxbrain.data.synthetic import make_synthetic
from jaxbrain.data.validation import DataError
from jaxbrain.data.windows import make_windows, subject_windows, window_arrays, window_starts

__all__ = [
    "DataError", "LabelsTable", "Subject", "aal2_region_names", "homologous_pairs",
    "kfold_subjects", "load_hcp", "load_subjects", "make_synthetic", "make_windows", "preprocess",
    "read_labels", "read_timeseries", "segment_frames", "split_subjects", "subject_windows",
    "window_arrays", "window_starts", "zscore",
]
