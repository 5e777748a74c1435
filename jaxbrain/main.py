"""Entry point: ``python -m jaxbrain.main --config=configs/brainmae.py[:variant] --workdir=DIR``.

Any config field can be overridden with ``--config.<dotted.key>=value``; unknown keys are errors.
"""
from __future__ import annotations

import json
import sys

from jaxtrain import distributed
from jaxtrain.config import ConfigError, get, parse_argv_config


def main(argv: list[str]) -> int:
  try:
    config, flags = parse_argv_config(argv)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  unknown = set(flags) - {"workdir"}
  if unknown or "workdir" not in flags:
    print(f"error: expected --workdir=DIR (unknown flags: {sorted(unknown)})", file=sys.stderr)
    return 2
  distributed.set_cpu_device_count(get(config.mesh, "cpu_devices", 0))
  distributed.maybe_initialize()
  from jaxbrain.tasks.train import train_and_evaluate  # after distributed initialisation
  summary = train_and_evaluate(config, flags["workdir"])
  print(json.dumps({"eval": summary.get("eval", {}), "wall_time_s": summary["wall_time_s"]},
                   indent=1, default=str))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
