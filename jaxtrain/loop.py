"""The train loop: sharded state, one jitted donated step, periodic evaluation, checkpoints
(latest and best), metrics and preemption, for any ``jaxtrain.task.Task``.

``train(config=, workdir=, task=, train_iter=)`` trains for ``config.train.steps`` steps and
resumes from the latest checkpoint in ``workdir``. ``build_program`` gives the sharded state
initialiser and the jitted step that ``train`` runs (benchmarks time the very same step).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from jaxtrain import checkpoint as ckpt_lib
from jaxtrain import config as config_lib
from jaxtrain import distributed
from jaxtrain import mesh as mesh_lib
from jaxtrain import metrics as metrics_lib
from jaxtrain import optim as optim_lib
from jaxtrain.errors import ConfigError, UserError
from jaxtrain.task import StepParts, Task, TrainState, default_step


class NonFiniteLossError(FloatingPointError):
  """The loss (or gradient norm) became NaN or infinite."""


@dataclasses.dataclass
class TrainResult:
  model: nnx.Module      # merged model (EMA parameters when optim.ema_decay > 0), sharded arrays
  step: int              # steps done (equals config.train.steps unless preempted)
  metrics: dict          # the last logged train metrics (host floats or lists)
  history: list          # one dict per logged step: {"step": int, **train metrics}
  eval_history: list     # one dict per evaluation: {"step": int, "<evaluator>/<metric>": value}
  preempted: bool        # True when SIGTERM (or a preemption notice) stopped the run early
  wall_time_s: float
  checkpoint: str | None = None   # path of the last checkpoint written or restored
  best: dict | None = None        # {"step", "metric", "mode", "value", "checkpoint"} (train.best_metric)


class _Preemption:
  """SIGTERM sets a flag (single process); multi-process runs use jax's preemption sync point."""

  def __init__(self):
    self.flag = False
    self._old = None
    self._installed = False

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handler)
      self._installed = True
    return self

  def _handler(self, signum, frame):
    del signum, frame
    self.flag = True

  def requested(self, step: int) -> bool:
    if self.flag:
      return True
    if jax.process_count() > 1:
      try:
        from jax.experimental import multihost_utils
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except Exception:  # preemption service unavailable
        return False
    return False

  def __exit__(self, *exc):
    if self._installed:
      signal.signal(signal.SIGTERM, self._old if self._old is not None else signal.SIG_DFL)
    return False


def _build_model(model_fn: Callable, seed: int) -> nnx.Module:
  # Logical axis names stay metadata here; the engine turns them into shardings itself.
  with nnx.use_eager_sharding(False):
    model = model_fn(nnx.Rngs(seed))
  model.train()  # the step's graph is the train-mode one; evaluation merges and calls .eval()
  return model


@contextlib.contextmanager
def _mesh_context(mesh: jax.sharding.Mesh, rules: tuple):
  """The mesh and logical-axis rules for sharding constraints that a model may trace."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(tuple(tuple(r) for r in rules)):
    yield


def _first_bad(pending: list, host: list) -> tuple[int, str, float] | None:
  for (step, _), m in zip(pending, host):
    for key in ("loss", "grad_norm"):
      value = float(m[key])
      if not math.isfinite(value):
        return step, key, value
  return None


def _combine(values: list, how: str) -> Any:
  """Metrics of the steps of one logging interval -> the logged value."""
  stacked = np.stack([np.asarray(v, np.float64) for v in values])
  out = {"sum": np.sum, "min": np.min, "max": np.max}.get(how, np.mean)(stacked, axis=0)
  return float(out) if out.ndim == 0 else out.tolist()


_CPU_FAST_COMPILE = {"xla_backend_optimization_level": 0,
                     "xla_llvm_disable_expensive_passes": True}


@dataclasses.dataclass
class TrainProgram:
  """The compiled pieces of training: sharded state init and the one jitted, donated step."""
  init: Callable[[], TrainState]          # jitted, returns state already sharded
  step: Callable[[TrainState, dict], tuple[TrainState, dict]]  # jitted, donates the state
  graphdef: Any                           # of the train-mode model
  abstract_state: Any                     # ShapeDtypeStructs with shardings (restore target)
  state_sharding: TrainState
  batch_sharding: jax.sharding.NamedSharding
  mesh: jax.sharding.Mesh
  rules: tuple

  def model(self, state: TrainState, ema: bool = True) -> nnx.Module:
    """The model of ``state`` (with its EMA parameters when kept and ``ema``)."""
    params = state.ema if ema and state.ema is not None else state.params
    return nnx.merge(self.graphdef, params, state.frozen, state.rest)


def build_program(config: Any, task: Task, mesh: jax.sharding.Mesh | None = None) -> TrainProgram:
  """Builds the sharded state initialiser and the train step that ``train`` runs."""
  seed = int(config_lib.get(config, "seed", 0))
  mesh = mesh if mesh is not None else mesh_lib.make_mesh(config.mesh)
  rules = tuple(config_lib.get(config.mesh, "rules", ()))
  mesh_lib.process_batch_size(int(config.train.batch_size), mesh)
  optim_cfg = config.optim
  frozen = optim_lib.frozen_filter(optim_cfg)
  trainable = nnx.All(nnx.Param, nnx.Not(frozen))
  ema_decay = float(config_lib.get(optim_cfg, "ema_decay", 0.0))
  if not 0.0 <= ema_decay < 1.0:
    raise ConfigError(f"config.optim.ema_decay={ema_decay}: expected a number in [0, 1)")

  def split(model):
    return nnx.split(model, trainable, nnx.Param, ...)

  abstract_model = nnx.eval_shape(lambda: _build_model(task.model, seed))
  graphdef, abstract_params, _, _ = split(abstract_model)
  all_params = jax.tree_util.tree_flatten_with_path(nnx.state(abstract_model, nnx.Param))[0]
  optim_lib.check_patterns(optim_cfg, [optim_lib.param_path(p) for p, _ in all_params])
  tx = optim_lib.make_optimizer(optim_cfg, int(config.train.steps), abstract_params)

  def init() -> TrainState:
    _, params, frozen_params, rest = split(_build_model(task.model, seed))
    ema = jax.tree.map(jnp.copy, params) if ema_decay > 0 else None
    return TrainState(jnp.zeros((), jnp.int32), params, frozen_params, rest, tx.init(params), ema)

  abstract = jax.eval_shape(init)
  shard = lambda tree: mesh_lib.shardings_for(tree, mesh, rules)  # noqa: E731
  state_sh = TrainState(mesh_lib.replicated(mesh), shard(abstract.params), shard(abstract.frozen),
                        shard(abstract.rest), shard(abstract.opt_state), shard(abstract.ema))
  abstract_sh = ckpt_lib.abstract_like(abstract, state_sh)
  batch_sh = mesh_lib.batch_sharding(mesh)
  base_key = jax.random.key(seed)
  parts = StepParts(graphdef, tx, task.loss, dict(task.reductions), ema_decay)
  step_impl = task.train_step or default_step

  def step_fn(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    return step_impl(parts, state, batch, jax.random.fold_in(base_key, state.step))

  jit_step = jax.jit(step_fn, in_shardings=(state_sh, batch_sh),
                     out_shardings=(state_sh, mesh_lib.replicated(mesh)), donate_argnums=(0,))
  jit_init = jax.jit(init, out_shardings=state_sh)

  def sharded_init() -> TrainState:
    with _mesh_context(mesh, rules):
      # Init runs once: on CPU, skip XLA's expensive optimisations (halves its compile time).
      options = _CPU_FAST_COMPILE if mesh.devices.flat[0].platform == "cpu" else None
      return jit_init.lower().compile(compiler_options=options)()

  return TrainProgram(sharded_init, jit_step, graphdef, abstract_sh, state_sh, batch_sh, mesh,
                      rules)


def checkpoint_dirs(workdir: str, train_cfg: Any) -> tuple[str, str]:
  """(latest, best) checkpoint folders: ``<root>/checkpoints`` and ``<root>/best``, where the root
  is ``train.checkpoint_root`` when set (a ``gs://`` path or a shared filesystem that every host
  of a multi-host run sees) and the workdir otherwise. Logs and summaries stay in the workdir."""
  root = str(config_lib.get(train_cfg, "checkpoint_root", "") or "") or workdir
  return ckpt_lib.join(root, "checkpoints"), ckpt_lib.join(root, "best")


class _Best:
  """The best checkpoint by ``config.train.best_metric`` (an evaluator's '<name>/<metric>'),
  kept in ``checkpoint_dirs(...)[1]`` with ``best.json`` saying its step and value."""

  def __init__(self, workdir: str, train_cfg: Any):
    self.metric = str(config_lib.get(train_cfg, "best_metric", ""))
    self.mode = str(config_lib.get(train_cfg, "best_mode", "min"))
    if self.mode not in ("min", "max"):
      raise ConfigError(f"config.train.best_mode={self.mode!r}: expected 'min' or 'max'")
    self.dir = checkpoint_dirs(workdir, train_cfg)[1]
    self.info_path = ckpt_lib.join(self.dir, "best.json")
    self.info = None
    self.ckpt = None
    if self.metric:
      self.ckpt = ckpt_lib.Checkpointer(self.dir, keep=1)
      if ckpt_lib.exists(self.info_path):
        self.info = json.loads(epath.Path(self.info_path).read_text())

  def consider(self, step: int, results: dict, state: TrainState, data_iter: Any) -> None:
    if self.ckpt is None:
      return
    if self.metric not in results:
      raise ConfigError(f"config.train.best_metric={self.metric!r} is not an evaluation result; "
                        f"the evaluators give {sorted(results)}")
    value = float(results[self.metric])
    old = None if self.info is None else self.info["value"]
    better = old is None or (value < old if self.mode == "min" else value > old)
    if not math.isfinite(value) or not better or (self.info or {}).get("step") == step:
      return
    path = self.ckpt.save(step, state, data_iter)
    self.ckpt.wait()
    self.info = {"step": step, "metric": self.metric, "mode": self.mode, "value": value,
                 "checkpoint": path}
    if jax.process_index() == 0:
      if ckpt_lib.is_url(self.info_path):  # object stores write whole objects
        epath.Path(self.info_path).write_text(json.dumps(self.info, indent=2, sort_keys=True))
      else:
        metrics_lib.write_json_atomic(self.info_path, self.info)

  def close(self) -> None:
    if self.ckpt is not None:
      self.ckpt.close()


def _run_evaluators(task: Task, model: nnx.Module) -> dict:
  model.eval()
  out = {}
  for ev in task.evaluators:
    for k, v in dict(ev.fn(model)).items():
      value = np.asarray(jax.device_get(v), np.float64)
      out[f"{ev.name}/{k}"] = float(value) if value.ndim == 0 else value.tolist()
  return out


def train(*, config: Any, workdir: str, task: Task, train_iter: Iterator[dict],
          mesh: jax.sharding.Mesh | None = None) -> TrainResult:
  """Trains ``task`` for ``config.train.steps`` steps, resuming from the latest checkpoint.

  ``train_iter`` yields this process's share of each global batch (dict of numpy arrays, leading
  dim = ``config.train.batch_size / process_count``) and has ``get_state()``/``set_state()``
  (``jaxtrain.data.make_loader`` gives one). Every ``train.eval_every`` steps (and after the last)
  the task's evaluators run; ``train.best_metric`` keeps the best checkpoint (``checkpoint_dirs``).
  Raises NonFiniteLossError naming the first non-finite step and the last good checkpoint.
  """
  t_start = time.perf_counter()
  workdir = os.path.abspath(workdir)
  tcfg = config.train
  total = int(tcfg.steps)
  log_every = max(1, int(config_lib.get(tcfg, "log_every", 50)))
  ckpt_every = int(config_lib.get(tcfg, "checkpoint_every", 0))
  eval_every = int(config_lib.get(tcfg, "eval_every", 0))
  keep = int(config_lib.get(tcfg, "keep_checkpoints", 3))
  global_bs = int(tcfg.batch_size)
  if config_lib.get(tcfg, "best_metric", "") and not task.evaluators:
    raise ConfigError(f"config.train.best_metric={tcfg.best_metric!r} but the task has no "
                      "evaluators")
  program = build_program(config, task, mesh)
  mesh, rules, jit_step = program.mesh, program.rules, program.step
  os.makedirs(workdir, exist_ok=True)

  # ---- state: restore or init
  ckpt = ckpt_lib.Checkpointer(checkpoint_dirs(workdir, tcfg)[0], keep=keep,
                               async_save=bool(config_lib.get(tcfg, "async_checkpoints", False)))
  last_ckpt_step = ckpt.latest_step()
  if last_ckpt_step is not None:
    state = ckpt.restore(last_ckpt_step, program.abstract_state, train_iter)
  else:
    state = program.init()
  step = int(jax.device_get(state.step))
  last_good = ckpt.path(last_ckpt_step)

  best = _Best(workdir, tcfg)
  writer = metrics_lib.Writer(workdir, step)
  progress = metrics_lib.Progress(total, desc=str(config_lib.get(config, "name", "train")), start=step)
  history: list[dict] = []
  eval_history: list[dict] = []
  last_metrics: dict = {}
  pending: list[tuple[int, dict]] = []
  preempted = False
  t_log, step_log = time.perf_counter(), step
  timed = False
  compiled_step = None

  def flush(log: bool = True) -> None:
    """One host sync for all steps since the last check; logs their combined metrics."""
    nonlocal last_metrics, t_log, step_log
    if not pending:
      return
    host = jax.device_get([m for _, m in pending])
    bad = _first_bad(pending, host)
    if bad is not None:
      bad_step, key, value = bad
      what = "loss" if key == "loss" else "gradient norm"
      raise NonFiniteLossError(
          f"non-finite {what} ({value}) at step {bad_step} (the update from step {bad_step - 1}); "
          f"last good checkpoint: {last_good or 'none'}")
    if not log:
      return
    now = time.perf_counter()
    last_metrics = {k: _combine([m[k] for m in host], task.reductions.get(k, "mean"))
                    for k in host[-1]}
    if step > step_log:  # not on the first step of a run (compilation is not timed)
      last_metrics["steps_per_s"] = (step - step_log) / max(now - t_log, 1e-9)
    t_log, step_log = now, step
    history.append({"step": step, **last_metrics})
    writer.write(step, last_metrics, "train")
    pending.clear()

  def save() -> None:
    nonlocal last_good, last_ckpt_step
    flush(log=False)  # never write a state whose loss or gradients were non-finite
    if last_ckpt_step == step:
      return
    last_good = ckpt.save(step, state, train_iter)
    last_ckpt_step = step

  def evaluate() -> None:
    flush(log=False)
    t0 = time.perf_counter()
    results = _run_evaluators(task, program.model(state))
    eval_history.append({"step": step, **results})
    writer.write(step, {**results, "time_s": time.perf_counter() - t0}, "eval")
    best.consider(step, results, state, train_iter)

  try:
    with _Preemption() as preemption, _mesh_context(mesh, rules):
      while step < total:
        if preemption.requested(step):
          preempted = True
          break
        try:
          local = next(train_iter)
        except StopIteration:
          raise RuntimeError(
              f"the data iterator ran out after step {step}; config.train.steps is {total} "
              "(repeat the dataset, e.g. grain's .repeat())") from None
        batch = mesh_lib.global_batch(local, mesh)
        first = next(iter(batch.values()))
        if first.shape[0] != global_bs:
          raise ValueError(
              f"the data iterator gave a global batch of {first.shape[0]} rows; "
              f"config.train.batch_size is {global_bs}")
        if compiled_step is None:  # compile once, then line the processes up (see barrier)
          compiled_step = jit_step.lower(state, batch).compile()
          distributed.barrier("train step compiled")
        state, diag = compiled_step(state, batch)
        step += 1
        pending.append((step, diag))
        if not timed:  # rates exclude compilation: timed from the end of this run's first step
          jax.block_until_ready(diag)
          t_log, step_log, timed = time.perf_counter(), step, True
        if step % log_every == 0 or step == total:
          flush()
          progress.update(step, force=step == total, loss=last_metrics["loss"])
        if task.evaluators and eval_every > 0 and (step % eval_every == 0 or step == total):
          evaluate()
        if ckpt_every > 0 and step % ckpt_every == 0:
          save()
      flush()
      save()
  finally:
    ckpt.close()
    best.close()
    writer.close()

  return TrainResult(model=program.model(state), step=step, metrics=last_metrics,
                     history=history, eval_history=eval_history, preempted=preempted,
                     wall_time_s=time.perf_counter() - t_start, checkpoint=last_good,
                     best=best.info)


def restore_model(config: Any, task: Task, folder: str,
                  mesh: jax.sharding.Mesh | None = None) -> tuple[nnx.Module, int]:
  """(model, step) of the latest checkpoint in ``folder`` (a run's ``checkpoints`` or ``best``),
  built as ``train`` builds it (EMA parameters when kept)."""
  ckpt = ckpt_lib.Checkpointer(folder, keep=None) if ckpt_lib.exists(folder) else None
  step = None if ckpt is None else ckpt.latest_step()
  if step is None:
    raise UserError(f"{folder}: no checkpoint")
  try:
    program = build_program(config, task, mesh=mesh)
    state = ckpt.restore(step, program.abstract_state)
  finally:
    ckpt.close()
  return program.model(state), int(step)
