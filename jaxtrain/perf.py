"""Measuring speed: the machine's fp32 matmul rate and a compiled function's FLOP count."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


def time_call(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> list[float]:
  """Wall-clock seconds of ``fn()`` (blocked until ready) for each of ``repeats`` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return times


def matmul_flops_per_s(size: int = 2048, dtype=jnp.float32, repeats: int = 7) -> float:
  """Median achieved FLOP/s of a square ``size`` matmul on the default device."""
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), dtype)
  mm = jax.jit(jnp.matmul)
  seconds = statistics.median(time_call(lambda: mm(a, b), repeats=repeats))
  return 2.0 * size ** 3 / seconds


def compiled_flops(jitted: Callable, *args, **kwargs) -> float:
  """FLOPs of one call of a ``jax.jit``-wrapped function, from XLA's cost analysis."""
  cost = jitted.lower(*args, **kwargs).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", float("nan"))) if cost else float("nan")
