"""Measuring speed: the machine's fp32 matmul rate, a compiled function's FLOP count, and where
its time goes (device op time by kind, from a profiler trace)."""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
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


def op_time_by_kind(fn: Callable[[], Any], hlo_text: str) -> list[tuple[str, float, int]]:
  """Where one call of ``fn()`` spends its time: ``(kind, seconds, count)`` per op kind, longest
  first, from a JAX profiler trace. Only the ops of ``hlo_text`` (a compiled program's
  ``as_text()``, the program ``fn`` runs) count, grouped by name without the ``.N`` suffix (e.g.
  ``copy_bitcast_fusion``, ``convolution``). Ops that run in parallel are summed, so the total can
  exceed the wall time. Call ``fn`` once before, so that compilation is not traced."""
  op_names = set(re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = ", hlo_text, re.M))
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      jax.block_until_ready(fn())
    paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not paths:
      raise RuntimeError(f"the profiler wrote no perfetto trace under {trace_dir}")
    with gzip.open(paths[0], "rt") as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  seconds, counts = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") == "X" and "dur" in e and e.get("name") in op_names:
      kind = re.sub(r"\.\d+$", "", e["name"])
      seconds[kind] += e["dur"] * 1e-6
      counts[kind] += 1
  return [(k, s, counts[k]) for k, s in seconds.most_common()]
