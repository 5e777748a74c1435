"""Data for the engine: random-access sources and the host-sharded, shuffled, resumable grain loader.

A source is anything with ``__len__`` and ``__getitem__(i) -> dict`` of numpy values: an
``InMemorySource`` over stacked arrays, or ``array_record_splits(build_dir)``: the array_record
files of a finished TFDS build, read without TensorFlow. All hosts shuffle the same way and cut the
same global batches; each reads and yields only its own ``global_batch_size // process_count`` rows
of every batch: dicts of numpy arrays. The iterator is a grain ``DatasetIterator`` whose
``get_state()``/``set_state()`` checkpoint the position.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from jaxtrain.errors import DataError

DEFAULT_FIELDS = None  # keep every field


class InMemorySource:
  """Random access over aligned arrays ``{name: [W, ...]}``; item i is ``{name: array[i]}``."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
    lengths = {k: len(v) for k, v in self.arrays.items()}
    if not lengths or len(set(lengths.values())) != 1:
      raise DataError(f"InMemorySource needs arrays with one common leading length, got {lengths}")
    self._len = next(iter(lengths.values()))

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self.arrays.items()}

  def __repr__(self) -> str:
    shapes = {k: (v.shape, str(v.dtype)) for k, v in self.arrays.items()}
    return f"InMemorySource({shapes})"


def array_record_splits(build_dir: str | os.PathLike) -> dict[str, Any]:
  """Random-access sources, one per split, over a finished TFDS build's array_record files
  (``build_dir`` holds its ``dataset_info.json``); read-only and without TensorFlow."""
  import tensorflow_datasets as tfds  # only for this source

  if not os.path.isfile(os.path.join(build_dir, "dataset_info.json")):
    raise DataError(f"{build_dir}: not a finished TFDS build (dataset_info.json missing)")
  builder = tfds.builder_from_directory(str(build_dir))
  if "array_record" not in str(builder.info.file_format).lower():
    raise DataError(f"{build_dir}: files are {builder.info.file_format}, expected array_record")
  return dict(builder.as_data_source())


def _host(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise DataError(f"process_index={process_index} must lie in [0, process_count={process_count})")
  return process_index, process_count


def _select(fields: Sequence[str] | None, element: Mapping[str, Any]) -> dict[str, Any]:
  """The ``fields`` of an example or of a source's arrays (all of them for None)."""
  if fields is None:
    return dict(element)
  missing = [f for f in fields if f not in element]
  if missing:
    raise DataError(f"example has no field(s) {missing}; it has {sorted(element)}")
  return {f: element[f] for f in fields}


def _as_numpy(value: Any) -> Any:
  """Python scalars (as TFDS decodes them) -> int32/float32 numpy scalars; arrays unchanged."""
  if isinstance(value, (bool, int)) and not isinstance(value, np.generic):
    return np.int32(value)
  if isinstance(value, float) and not isinstance(value, np.generic):
    return np.float32(value)
  return value


def make_dataset(source, *, global_batch_size: int, seed: int = 0, shuffle: bool = True,
                 num_epochs: int | None = None, drop_remainder: bool = True,
                 process_index: int | None = None, process_count: int | None = None,
                 fields: Sequence[str] | None = DEFAULT_FIELDS) -> grain.MapDataset:
  """The pipeline: shuffle example indices -> repeat -> global batches -> this host's rows -> read.

  Every host draws the same permutation of the indices (``seed``; each epoch reshuffled by seed and
  epoch) and cuts it into the same global batches; host h reads only the h-th of ``process_count``
  equal slices of each. The sequence of global batches therefore does not depend on the number of
  hosts (2 processes x 4 devices train on exactly the batches of 1 process x 8 devices).
  ``num_epochs=None`` repeats forever (training). With ``drop_remainder=False`` the last, short
  global batch is split as evenly as possible. ``fields``: keys kept in each example (None keeps
  all, including string ids). Python scalars (TFDS decodes Scalar features so) become int32/float32.
  """
  index, count = _host(process_index, process_count)
  if global_batch_size < 1 or global_batch_size % count:
    raise DataError(f"global_batch_size={global_batch_size} must be a positive multiple of the "
                    f"process count {count}")
  n = len(source)
  if n == 0 or (drop_remainder and n < global_batch_size):
    raise DataError(f"source has {n} examples, fewer than one batch of {global_batch_size}; "
                    f"lower global_batch_size={global_batch_size}")
  ds = grain.MapDataset.range(n)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  ds = ds.batch(global_batch_size, drop_remainder=drop_remainder)
  return ds.map(_HostRows(source, fields, index, count))


class _HostRows(grain.transforms.Map):
  """Global batch of indices -> this host's slice of it, read into a dict of stacked arrays
  (one vectorized gather for an ``InMemorySource``, else one ``source[i]`` read per example)."""

  def __init__(self, source, fields: Sequence[str] | None, index: int, count: int):
    self.source, self.fields, self.index, self.count = source, fields, index, count
    in_memory = isinstance(source, InMemorySource)
    self.arrays = _select(fields, source.arrays) if in_memory else None

  def _read(self, i: int) -> dict[str, Any]:
    return {k: _as_numpy(v) for k, v in _select(self.fields, self.source[i]).items()}

  def map(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    rows = np.array_split(np.asarray(indices), self.count)[self.index]
    if self.arrays is not None:
      return {k: v[rows] for k, v in self.arrays.items()}
    examples = [self._read(int(i)) for i in rows]
    if not examples:  # a short last batch left this host nothing: empty arrays of the right kind
      return {k: np.stack([v])[:0] for k, v in self._read(0).items()}
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def make_loader(source, *, global_batch_size: int, seed: int = 0, shuffle: bool = True,
                num_epochs: int | None = None, drop_remainder: bool = True,
                process_index: int | None = None, process_count: int | None = None,
                fields: Sequence[str] | None = DEFAULT_FIELDS, num_threads: int = 0,
                prefetch_buffer_size: int = 4) -> grain.DatasetIterator:
  """A checkpointable iterator of per-host batches (dicts of numpy arrays) over ``source``.

  Arguments as in ``make_dataset``. ``num_threads=0`` reads in the calling thread (best for
  in-memory sources); raise it for array_record files on slow disks. ``get_state()`` returns a
  small dict to save with a checkpoint; ``set_state(state)`` on a fresh iterator resumes exactly.
  """
  ds = make_dataset(source, global_batch_size=global_batch_size, seed=seed, shuffle=shuffle,
                    num_epochs=num_epochs, drop_remainder=drop_remainder,
                    process_index=process_index, process_count=process_count, fields=fields)
  opts = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
  return iter(ds.to_iter_dataset(opts))
