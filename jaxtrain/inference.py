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
    shards, place, jit_kw = 1, (lambda c: c), {}
  else:
    shards = mesh_lib.data_parallel_size(mesh)
    place, jit_kw = (lambda c: mesh_lib.shared_batch(c, mesh)), {
        "out_shardings": mesh_lib.replicated(mesh)}
  size = -(-batch_size // shards) * shards

  @functools.partial(jax.jit, **jit_kw)
  def apply(state, *batch):
    model = nnx.merge(graphdef, state)
    model.eval()  # dropout off, batch norm from its running statistics
    return fn(model, *batch)

  n = len(arrays[0])
  outs, compiled = [], None
  for i in range(0, n, size):
    chunk = [a[i:i + size] for a in arrays]
    pad = size - len(chunk[0])
    if pad:
      chunk = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunk]
    chunk = [place(c) for c in chunk]
    if compiled is None:  # one shape for every batch: compile once, line the processes up
      compiled = apply.lower(state, *chunk).compile()
      distributed.barrier("inference compiled")
    outs.append(jax.tree.map(lambda y: np.asarray(y)[:size - pad],
                             jax.device_get(compiled(state, *chunk))))
  return jax.tree.map(lambda *ys: np.concatenate(ys), *outs)
