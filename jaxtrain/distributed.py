"""Process start-up: CPU device count, and ``jax.distributed.initialize()`` when launched as
several processes."""
from __future__ import annotations

import itertools
import os

import jax


def use_gloo_cpu_collectives() -> None:
  """Cross-process collectives on CPU devices via gloo (needed for multi-process CPU runs).

  Call before ``jax.distributed.initialize`` and before any computation.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")


def set_cpu_device_count(count: int) -> bool:
  """Splits this host's CPU into ``count`` JAX devices; returns whether it did.

  On CPU, data parallelism over a few devices keeps the cores busier than XLA's threading inside
  one device does for small models (BrainMAE default on 2 cores: 2.41 -> 2.82 steps/s with 2
  devices, benchmarks/RESULTS.md). Call before JAX creates its backends. Does nothing for ``count <= 0`` or when
  ``XLA_FLAGS`` already sets a device count; GPU and TPU devices are not affected.
  """
  if count <= 0 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return False
  jax.config.update("jax_num_cpu_devices", int(count))
  return True


_BARRIER_COUNT = itertools.count()


def barrier(name: str, timeout_s: float = 1800.0) -> None:
  """Blocks until every process gets here (no-op with one process).

  Uses the coordination service (as orbax's barriers do), not a device collective. Call it between
  compiling a program and its first run: the set-up of a new cross-process collective has a short
  deadline (gloo on CPU: 30 s), which a process that compiled faster than the other would miss.
  Every process must call the same barriers in the same order.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # the coordination-service client

  key = f"jaxtrain:{name}:{next(_BARRIER_COUNT)}"
  jax_distributed.global_state.client.wait_at_barrier(key, int(timeout_s * 1000))


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
