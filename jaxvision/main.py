"""Entry point: ``python -m jaxvision.main --config=configs/adafocusv2.py[:variant] --workdir=DIR``.

Any config field can be overridden with ``--config.<dotted.key>=value`` (unknown keys are errors);
``--flagfile=FILE`` reads flags from a file, ``--verbose`` adds tracebacks to user errors and
``--help`` lists the flags. Prints the test results as JSON.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import ml_collections

from jaxtrain import cli


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """``jaxvision.train.train_and_evaluate``, imported after the distributed set-up."""
  from jaxvision.train import train_and_evaluate as run
  return run(config, workdir)


def report(summary: dict[str, Any]) -> None:
  ev = dict(summary.get("eval", {}))
  ev.pop("early_exit", None)
  print(json.dumps({"eval": ev, "gflops_per_video": summary.get("gflops_per_video"),
                    "wall_time_s": summary["wall_time_s"]}, indent=1, default=str))


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(train_and_evaluate, argv=argv, report=report, prog="python -m jaxvision.main",
                 doc=__doc__)


if __name__ == "__main__":
  sys.exit(main())
