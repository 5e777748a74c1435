"""Video data for jaxvision: video files, the official list layout, TSN sampling, transforms, the
``VideoClips`` source for ``jaxtrain.data.make_loader`` and the built-in dataset
(``python -m jaxvision.data.builtin``; import ``jaxvision.data.builtin`` for its loaders)."""
from __future__ import annotations

from jaxtrain.errors import DataError
from jaxvision.data.lists import DEFAULT_TEMPLATE, VideoRecord, parse_list, read_clip, write_list
from jaxvision.data.sampling import segment_bounds, segment_indices
from jaxvision.data.sources import VideoClips
from jaxvision.data.transforms import (SCALES, Crop, apply_crop, crop_points, eval_points,
                                       eval_transform, sample_train_crop, train_transform)
from jaxvision.data.video import iter_frames, num_frames, read_frames, write_video

__all__ = [
    "DEFAULT_TEMPLATE", "SCALES", "Crop", "DataError", "VideoClips", "VideoRecord", "apply_crop",
    "crop_points", "eval_points", "eval_transform", "iter_frames", "num_frames", "parse_list",
    "read_clip", "read_frames", "sample_train_crop", "segment_bounds", "segment_indices",
    "train_transform", "write_list", "write_video",
]
