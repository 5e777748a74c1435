"""Checkpoints with orbax: the train state and each process's data-iterator position.

This is the only module that imports orbax. A checkpoint step folder holds ``state`` (the train
state as a nested dict of arrays, restored straight into sharded arrays) and ``data`` (one JSON
file per process with that process's iterator state, from ``get_state()``).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

# Replica-parallel saving slices every replicated shard with an eager jax op (one compile per
# shape); that pays off only for large arrays, so small ones are written whole by one replica.
_absl_logger = logging.getLogger("absl")
_level = _absl_logger.level
_absl_logger.setLevel(logging.ERROR)  # quiet the "overriding jax.Array" notice
try:
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=1 << 20),
      override=True)
finally:
  _absl_logger.setLevel(_level)

# --------------------------------------------------------------------------- data iterator item

def _encode_state(state: Any) -> str:
  if isinstance(state, bytes):
    return json.dumps({"__bytes__": base64.b64encode(state).decode("ascii")})
  return json.dumps(state, indent=1)


def _decode_state(text: str) -> Any:
  state = json.loads(text)
  if isinstance(state, dict) and set(state) == {"__bytes__"}:
    return base64.b64decode(state["__bytes__"])
  return state


def _iterator_file(directory: epath.Path) -> epath.Path:
  return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"


class IteratorHandler(ocp.handlers.CheckpointHandler):
  """Saves ``item.get_state()`` of this process's iterator to its own JSON file."""

  def save(self, directory: epath.Path, args: "IteratorSave") -> None:
    _iterator_file(directory).write_text(_encode_state(args.item.get_state()))

  def restore(self, directory: epath.Path, args: "IteratorRestore") -> Any:
    path = _iterator_file(directory)
    if not path.exists():
      raise FileNotFoundError(
          f"checkpoint {directory} has no data-iterator state {path.name}; was it written with "
          f"{jax.process_count()} processes?")
    args.item.set_state(_decode_state(path.read_text()))
    return args.item

  def metadata(self, directory: epath.Path) -> None:
    return None

  def finalize(self, directory: epath.Path) -> None:
    pass

  def close(self) -> None:
    pass


@ocp.args.register_with_handler(IteratorHandler, for_save=True)
@dataclasses.dataclass
class IteratorSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(IteratorHandler, for_restore=True)
@dataclasses.dataclass
class IteratorRestore(ocp.args.CheckpointArgs):
  item: Any


# --------------------------------------------------------------------------- pytree <-> nested dict

def _key_name(entry: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _is_key_array(x: Any) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_impl(ref: Any) -> Any:
  if isinstance(ref, jax.Array):
    return jax.random.key_impl(ref)
  return ref.dtype._impl  # an abstract key (ShapeDtypeStruct): its dtype carries the impl


def _to_nested(tree: Any, abstract: bool) -> dict:
  """Flattens any pytree to a nested dict of leaves keyed by path names (typed keys -> key data)."""
  out: dict = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if _is_key_array(leaf):
      if abstract:
        data = jax.eval_shape(jax.random.key_data, leaf)
        sharding = getattr(leaf, "sharding", None)
        leaf = jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
      else:
        leaf = jax.random.key_data(leaf)
    node = out
    names = [_key_name(p) for p in path] or ["value"]
    for name in names[:-1]:
      node = node.setdefault(name, {})
    node[names[-1]] = leaf
  return out


def _from_nested(nested: dict, like: Any) -> Any:
  leaves = []
  for path, ref in jax.tree_util.tree_leaves_with_path(like):
    node = nested
    for name in [_key_name(p) for p in path] or ["value"]:
      node = node[name]
    if _is_key_array(ref):
      node = jax.random.wrap_key_data(node, impl=_key_impl(ref))
    leaves.append(node)
  return jax.tree.unflatten(jax.tree.structure(like), leaves)


# --------------------------------------------------------------------------- manager

def is_url(path: str) -> bool:
  """``gs://bucket/run`` and other remote paths orbax writes through etils.epath."""
  return "://" in str(path)


def join(root: str, *names: str) -> str:
  """``os.path.join`` that keeps a URL root (``gs://b/run`` + ``best`` -> ``gs://b/run/best``)."""
  if is_url(root):
    return "/".join([str(root).rstrip("/"), *names])
  return os.path.join(os.path.abspath(root), *names)


def exists(path: str) -> bool:
  """Whether a local or remote (``gs://``) file or folder exists."""
  return epath.Path(path).exists()


class Checkpointer:
  """Keep-last-N checkpoints of (train state, data iterator) under ``directory``: a local or
  shared-filesystem folder, or a ``gs://`` path (every process of a multi-host run must see it)."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = False):
    self.directory = join(directory)
    if keep is not None and int(keep) < 1:
      raise ValueError(f"config.train.keep_checkpoints={keep} must be at least 1")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=int(keep) if keep is not None else None,
        create=True,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def path(self, step: int | None) -> str | None:
    return None if step is None else join(self.directory, str(step))

  def save(self, step: int, state: Any, data_iter: Any | None = None) -> str:
    """Saves ``state`` (any pytree of jax arrays) and the iterator position at ``step``."""
    items = {"state": ocp.args.StandardSave(_to_nested(state, abstract=False))}
    if data_iter is not None:
      items["data"] = IteratorSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    return self.path(step)

  def restore(self, step: int, abstract_state: Any, data_iter: Any | None = None) -> Any:
    """Restores into ``abstract_state`` (ShapeDtypeStructs carrying shardings); sets the
    iterator's position in place (a checkpoint saved without one, e.g. converted weights, leaves
    the iterator at its start). Returns the restored state pytree."""
    target = _to_nested(abstract_state, abstract=True)
    items = {"state": ocp.args.StandardRestore(target)}
    if data_iter is not None and exists(join(self.path(step), "data")):
      items["data"] = IteratorRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return _from_nested(restored["state"], abstract_state)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of ``tree``'s leaves carrying the matching shardings."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)
