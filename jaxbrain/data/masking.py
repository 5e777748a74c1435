"""The mask-count rule shared by the model's masks (jax) and the evaluation's masks (NumPy)."""
from __future__ import annotations

import math


def num_masked(num_rois: int, mask_ratio: float) -> int:
  """Masked ROIs per segment: round(mask_ratio * num_rois), halves rounded up (N=93, 0.5 -> 47)."""
  return int(math.floor(float(mask_ratio) * num_rois + 0.5))
