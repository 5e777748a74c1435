"""ST-MAE pretraining-step throughput at the default size and at STAGIN's published setting.

  python benchmarks/stmae_step.py [--steps=10] [--cpu_devices=1]

Rows: ``default`` (configs/stmae.py: 94 ROIs, 336 frames, FC windows 50/16 -> 18 graphs, batch 16)
and ``stagin`` (116 ROIs, window 50, stride 3, 184 windows = 599 frames, batch 3: the setting at
which STAGIN's official PyTorch code trains at about 1.3 samples/s on 2 CPU cores; GIN MLPs
hidden -> hidden as in STAGIN, mlp_ratio 1). Times the
engine's jitted, donated train step on random windows (``brainmae_step.bench``: dynamic FC,
masking, encoder, decoder, loss, backward and AdamW update), with the fraction of this machine's
fp32 matmul rate measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from brainmae_step import bench, common_flags, run  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "stmae.py")
STAGIN = ("model.num_rois=116", "model.seg_len=599", "model.num_segments=1",
          "data.num_segments=1", "model.fc_stride=3", "model.mlp_ratio=1.0", "train.batch_size=3")


def main() -> None:
  args = common_flags(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args()
  bs = args.batch_size or None
  run([lambda: bench("default", args.steps, bs, CONFIG, label="stmae default"),
       lambda: bench("default", args.steps, bs, CONFIG, STAGIN, label="stmae @ STAGIN setting")],
      args)


if __name__ == "__main__":
  main()
