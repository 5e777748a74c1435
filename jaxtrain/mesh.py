"""Device mesh from the config, logical-axis sharding rules, and global batches.

Modules name the logical axes of their parameters in the ``out_sharding`` metadata of
``nnx.Param`` (``nnx.Param(x, out_sharding=("embed", "mlp"))`` or
``kernel_init=nnx.with_partitioning(init, ("embed", "mlp"))``); ``config.mesh.rules`` maps each
logical name to a mesh axis, a tuple of mesh axes, or ``None`` (replicated).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxtrain.errors import UserError

# Mesh axes over which the batch's leading dimension is split (in this order, when present).
DATA_AXES = ("replica", "data", "fsdp")


class ShardingError(UserError):  # a ValueError too
  """The mesh config or the sharding rules do not fit the devices or the state."""


def make_mesh(mesh_cfg: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh from ``mesh_cfg.shape`` (axis -> size; one size may be -1 = the rest).

  Axis types are Auto, so sharding of intermediates is left to the compiler.
  """
  shape_cfg = mesh_cfg.shape if hasattr(mesh_cfg, "shape") else mesh_cfg["shape"]
  items = list(shape_cfg.items())
  if not items:
    raise ShardingError("config.mesh.shape is empty; expected e.g. {'data': -1, 'fsdp': 1}")
  devices = list(devices) if devices is not None else jax.devices()
  n = len(devices)
  names = tuple(str(k) for k, _ in items)
  sizes = [int(v) for _, v in items]
  free = [i for i, s in enumerate(sizes) if s == -1]
  if len(free) > 1:
    raise ShardingError(f"config.mesh.shape {dict(items)}: at most one axis may be -1")
  if any(s == 0 or s < -1 for s in sizes):
    raise ShardingError(f"config.mesh.shape {dict(items)}: sizes must be positive or -1")
  fixed = math.prod(s for s in sizes if s != -1)
  if free:
    if n % fixed:
      raise ShardingError(
          f"config.mesh.shape {dict(items)}: {n} devices are not divisible by {fixed}")
    sizes[free[0]] = n // fixed
  if math.prod(sizes) != n:
    raise ShardingError(
        f"config.mesh.shape {dict(items)} needs {math.prod(sizes)} devices, found {n}")
  axis_types = (jax.sharding.AxisType.Auto,) * len(names)
  return jax.make_mesh(tuple(sizes), names, axis_types=axis_types, devices=devices)


def data_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes that split the batch (``replica``, ``data``, ``fsdp``, where present)."""
  return tuple(a for a in DATA_AXES if a in mesh.axis_names)


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in data_axes(mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data-parallel axes, the rest replicated."""
  axes = data_axes(mesh)
  return NamedSharding(mesh, PartitionSpec(axes if axes else None))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def process_batch_size(global_batch_size: int, mesh: Mesh | None = None) -> int:
  """The per-process share of a global batch (what each host's data iterator yields)."""
  count = jax.process_count()
  if global_batch_size % count:
    raise ShardingError(
        f"train.batch_size={global_batch_size} is not divisible by {count} processes")
  if mesh is not None and global_batch_size % data_parallel_size(mesh):
    raise ShardingError(
        f"train.batch_size={global_batch_size} is not divisible by the data-parallel size "
        f"{data_parallel_size(mesh)} of mesh axes {data_axes(mesh)}")
  return global_batch_size // count


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles per-process batches into global arrays sharded over the data-parallel axes."""
  sharding = batch_sharding(mesh)
  per_process = data_parallel_size(mesh) // max(1, jax.process_count())
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    if value.ndim == 0:
      raise ShardingError(f"batch field {key!r} is a scalar; every field needs a batch dimension")
    if per_process and value.shape[0] % per_process:
      raise ShardingError(
          f"batch field {key!r} has {value.shape[0]} rows on this process, not divisible by its "
          f"{per_process} data-parallel shards")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out


def shared_batch(value: np.ndarray, mesh: Mesh) -> jax.Array:
  """A global array sharded over the data-parallel axes from a batch that every process holds
  whole (e.g. evaluation windows): each process places only its own devices' rows."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, batch_sharding(mesh), lambda idx: value[idx])


def mesh_of(tree: Any) -> Mesh | None:
  """The mesh of the first array in ``tree`` with a NamedSharding (None if there is none)."""
  for leaf in jax.tree.leaves(tree):
    if isinstance(getattr(leaf, "sharding", None), NamedSharding):
      return leaf.sharding.mesh
  return None


def _rules_dict(rules: Any) -> dict[str, Any]:
  out = {}
  for item in rules or ():
    if len(item) != 2:
      raise ShardingError(f"config.mesh.rules entry {item!r} is not (logical_name, mesh_axes)")
    name, axes = item
    out[str(name)] = tuple(axes) if isinstance(axes, list) else axes
  return out


def _spec_for(path: str, shape: tuple[int, ...], names: Sequence[Any] | None,
              mesh: Mesh, rules: dict[str, Any]) -> PartitionSpec:
  if not names or not shape:  # scalars (e.g. optax's placeholders for frozen leaves) replicate
    return PartitionSpec()
  if isinstance(names, PartitionSpec):
    names = tuple(names)
  if len(names) != len(shape):
    raise ShardingError(
        f"parameter {path}: {len(names)} logical axis names {tuple(names)} for shape {shape}")
  used: set[str] = set()
  spec = []
  for dim, name in zip(shape, names):
    if name is None:
      spec.append(None)
      continue
    if name in rules:
      axes = rules[name]
    elif name in mesh.axis_names:
      axes = name
    else:
      raise ShardingError(
          f"parameter {path}: logical axis {name!r} has no rule in config.mesh.rules "
          f"(known: {sorted(rules)}) and is not a mesh axis {mesh.axis_names}")
    if axes is None:
      spec.append(None)
      continue
    axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
    for a in axes_t:
      if a not in mesh.axis_names:
        raise ShardingError(
            f"config.mesh.rules maps {name!r} to mesh axis {a!r}, not in {mesh.axis_names}")
    # An axis used twice, or a dimension it does not divide, stays replicated.
    axes_t = tuple(a for a in axes_t if a not in used and mesh.shape[a] > 1)
    if not axes_t or dim % math.prod(mesh.shape[a] for a in axes_t):
      spec.append(None)
      continue
    used.update(axes_t)
    spec.append(axes_t[0] if len(axes_t) == 1 else axes_t)
  while spec and spec[-1] is None:
    spec.pop()
  return PartitionSpec(*spec)


def shardings_for(abstract_state: Any, mesh: Mesh, rules: Any = ()) -> Any:
  """A tree of NamedSharding matching ``abstract_state`` (an nnx.State or any pytree).

  Leaves inside an ``nnx.Variable`` use its ``out_sharding`` logical names mapped through
  ``rules``; other leaves (optimizer counts, plain arrays) are replicated. A dimension that the
  mapped mesh axes do not divide is replicated.
  """
  rules = _rules_dict(rules)

  def one(path, x):
    if isinstance(x, nnx.Variable):
      names = x.get_metadata().get("out_sharding")
      value = x.get_value()
      if not hasattr(value, "shape"):  # e.g. optax.MaskedNode placeholders: keep their structure
        return x.replace(jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), value))
      shape = tuple(value.shape)
      spec = _spec_for(jax.tree_util.keystr(path), shape, names, mesh, rules)
      return x.replace(NamedSharding(mesh, spec))
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree_util.tree_map_with_path(
      one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
