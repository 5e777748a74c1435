"""Batched, sharded inference with a trained model: padding, one compile, results on every host."""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from jaxtrain import distributed
from jaxtrain import mesh as mesh_lib


def batched_apply(model: nnx.Module, fn: Callable, arrays: tuple[Any, ...],
                  batch_size: int) -> Any:
  """``fn(model, *batch)`` over ``arrays`` in batches of ``batch_size`` (the last one padded), the
  model in eval mode; returns what ``fn`` returns (an array or a pytree of arrays), concatenated.

  ``arrays`` are NumPy arrays or anything with ``len`` whose slices ``[i:j]`` are NumPy arrays
  (e.g. a view that reads examples from disk only when sliced).

  With a model placed on a mesh (as the engine leaves it), every batch is split over the mesh's
  data-parallel axes (``batch_size`` rounded up to a multiple of their size) and the result comes
  back replicated, so each process of a multi-host run gets all of it; every process must pass
  the same ``arrays``.
  """
  graphdef, state = nnx.split(model)
  mesh = mesh_lib.mesh_of(state)
  if mesh is None:
    shards, place, out_sharding = 1, (lambda c: c), None
  else:
    shards = mesh_lib.data_parallel_size(mesh)
    place, out_sharding = (lambda c: mesh_lib.shared_batch(c, mesh)), mesh_lib.replicated(mesh)
  size = -(-batch_size // shards) * shards
  apply = _jitted(graphdef, fn, out_sharding)

  n = len(arrays[0])
  outs, compiled = [], None
  for i in range(0, n, size):
    chunk = [a[i:i + size] for a in arrays]
    pad = size - len(chunk[0])
    if pad:
      chunk = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunk]
    chunk = [place(c) for c in chunk]
    if compiled is None:  # one shape for every batch: compile once, line the processes up
      compiled = _compiled(apply, state, chunk)
    outs.append(jax.tree.map(lambda y: np.asarray(y)[:size - pad],
                             jax.device_get(compiled(state, *chunk))))
  return jax.tree.map(lambda *ys: np.concatenate(ys), *outs)


@functools.lru_cache(maxsize=32)
def _jitted(graphdef: Any, fn: Callable, out_sharding: Any) -> Callable:
  def apply(state, *batch):
    model = nnx.merge(graphdef, state)
    model.eval()  # dropout off, batch norm from its running statistics
    return fn(model, *batch)
  return jax.jit(apply) if out_sharding is None else jax.jit(apply, out_shardings=out_sharding)


_COMPILED: dict = {}


def _compiled(apply: Callable, state: Any, chunk: list) -> Any:
  """The compiled program for these input shapes and shardings: compiled once per process (so a
  periodic evaluation with a module-level ``fn`` does not recompile), the processes lined up after
  a new compile (see ``distributed.barrier``)."""
  leaves = jax.tree.leaves((state, chunk))
  key = (apply, jax.tree.structure((state, chunk)),
         tuple((x.shape, x.dtype, getattr(x, "sharding", None)) for x in leaves))
  if key not in _COMPILED:
    if len(_COMPILED) >= 32:
      _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[key] = apply.lower(state, *chunk).compile()
    distributed.barrier("inference compiled")
  return _COMPILED[key]
