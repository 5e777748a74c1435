"""Entry point: ``python -m jaxbrain.main --config=configs/brainmae.py[:variant] --workdir=DIR``.

Any config field can be overridden with ``--config.<dotted.key>=value`` (unknown keys are errors);
``--flagfile=FILE`` reads flags from a file, ``--verbose`` adds tracebacks to user errors and
``--help`` lists the flags. Prints the evaluation results as JSON.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import ml_collections

from jaxtrain import cli


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """``jaxbrain.tasks.train.train_and_evaluate``, imported after the distributed set-up."""
  from jaxbrain.tasks.train import train_and_evaluate as run  # after distributed initialisation
  return run(config, workdir)


def report(summary: dict[str, Any]) -> None:
  """Prints the evaluation results and the wall time as JSON."""
  print(json.dumps({"eval": summary.get("eval", {}), "wall_time_s": summary["wall_time_s"]},
                   indent=1, default=str))


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
  return cli.run(train_and_evaluate, argv=argv, report=report, prog="python -m jaxbrain.main",
                 doc=__doc__)


if __name__ == "__main__":
  sys.exit(main())
