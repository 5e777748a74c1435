"""Multi-process start-up: ``jax.distributed.initialize()`` when launched as several processes."""
from __future__ import annotations

import os

import jax


def use_gloo_cpu_collectives() -> None:
  """Cross-process collectives on CPU devices via gloo (needed for multi-process CPU runs).

  Call before ``jax.distributed.initialize`` and before any computation.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def launched_multiprocess() -> bool:
  """True when the environment says this is one of several processes."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES"):
    if (_env_int(name) or 1) > 1:
      return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return "," in hosts or bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))


def maybe_initialize(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, cpu_collectives: bool | None = None) -> bool:
  """Initializes the JAX distributed system when launched multi-process; no-op otherwise.

  Arguments override the environment (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``); on a TPU pod, SLURM or Open MPI jax detects them itself. With
  ``cpu_collectives`` (default: when ``JAX_PLATFORMS`` is ``cpu``) gloo is used for CPU
  collectives. Returns whether the distributed system is (now) initialized.
  """
  if jax.distributed.is_initialized():
    return True
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None:
    num_processes = _env_int("JAX_NUM_PROCESSES")
  if process_id is None:
    process_id = _env_int("JAX_PROCESS_ID")
  if coordinator_address is None and num_processes is None and not launched_multiprocess():
    return False
  if num_processes == 1:
    return False
  if cpu_collectives is None:
    cpu_collectives = os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu"
  if cpu_collectives:
    use_gloo_cpu_collectives()
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  return True
