"""The train loop: sharded state, one jitted donated step, checkpoints, metrics, preemption.

``train`` works for any Flax NNX model and loss: ``model_fn(rngs) -> nnx.Module`` builds the
model, ``loss_fn(model, batch, rng) -> (loss, aux_metrics)`` scores a global batch.
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
import optax
from flax import nnx

from jaxtrain import config as config_lib
from jaxtrain import checkpoint as ckpt_lib
from jaxtrain import distributed
from jaxtrain import mesh as mesh_lib
from jaxtrain import metrics as metrics_lib
from jaxtrain import optim as optim_lib


class NonFiniteLossError(FloatingPointError):
  """The loss (or gradient norm) became NaN or infinite."""


@dataclasses.dataclass
class TrainResult:
  model: nnx.Module      # merged model; parameters are sharded global arrays
  step: int              # steps done (equals config.train.steps unless preempted)
  metrics: dict          # the last logged metrics (host floats)
  history: list          # one dict per logged step: {"step": int, **metrics}
  preempted: bool        # True when SIGTERM (or a preemption notice) stopped the run early
  wall_time_s: float
  checkpoint: str | None = None   # path of the last checkpoint written or restored


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  step: jax.Array
  params: Any
  rest: Any       # non-Param variables (batch statistics, ...)
  opt_state: Any


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


class _Writer:
  """TensorBoard scalars and metrics.jsonl, written by process 0 only."""

  def __init__(self, workdir: str, start_step: int):
    self.primary = jax.process_index() == 0
    self.tb = None
    self.jsonl = None
    if self.primary:
      from tensorboardX import SummaryWriter
      # On resume, records of steps after the restored one (from a killed run) are dropped.
      self.tb = SummaryWriter(os.path.join(workdir, "tb"),
                              purge_step=start_step + 1 if start_step else None)
      path = os.path.join(workdir, "metrics.jsonl")
      kept = []
      if os.path.exists(path):
        with open(path) as f:
          for line in f:
            try:
              if json.loads(line)["step"] <= start_step:
                kept.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError, TypeError):
              pass
      with open(path, "w") as f:
        f.writelines(kept)
      self.jsonl = open(path, "a")

  def write(self, step: int, metrics: dict) -> None:
    if not self.primary:
      return
    for k, v in metrics.items():
      self.tb.add_scalar(f"train/{k}", float(v), step)
    self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self.jsonl.flush()

  def close(self) -> None:
    if self.primary:
      self.tb.flush()
      self.tb.close()
      self.jsonl.close()


def _split(model: nnx.Module):
  return nnx.split(model, nnx.Param, ...)


def _build_model(model_fn: Callable, seed: int) -> nnx.Module:
  # Logical axis names stay metadata here; the engine turns them into shardings itself.
  with nnx.use_eager_sharding(False):
    return model_fn(nnx.Rngs(seed))


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


_CPU_FAST_COMPILE = {"xla_backend_optimization_level": 0,
                     "xla_llvm_disable_expensive_passes": True}


@dataclasses.dataclass
class TrainProgram:
  """The compiled pieces of training: sharded state init and the one jitted, donated step."""
  init: Callable[[], TrainState]          # jitted, returns state already sharded
  step: Callable[[TrainState, dict], tuple[TrainState, dict]]  # jitted, donates the state
  graphdef: Any
  abstract_state: Any                     # ShapeDtypeStructs with shardings (restore target)
  state_sharding: TrainState
  batch_sharding: jax.sharding.NamedSharding
  mesh: jax.sharding.Mesh
  rules: tuple


def build_program(config: Any, model_fn: Callable[[nnx.Rngs], nnx.Module],
                  loss_fn: Callable[[nnx.Module, dict, jax.Array], tuple[jax.Array, dict]],
                  mesh: jax.sharding.Mesh | None = None,
                  tx: optax.GradientTransformation | None = None) -> TrainProgram:
  """Builds the sharded state initialiser and the train step that ``train`` runs (benchmarks
  time the very same step)."""
  seed = int(config_lib.get(config, "seed", 0))
  mesh = mesh if mesh is not None else mesh_lib.make_mesh(config.mesh)
  rules = tuple(config_lib.get(config.mesh, "rules", ()))
  tx = tx if tx is not None else optim_lib.make_optimizer(config.optim, int(config.train.steps))
  mesh_lib.process_batch_size(int(config.train.batch_size), mesh)

  # ---- abstract state and its shardings
  def init() -> TrainState:
    model = _build_model(model_fn, seed)
    _, params, rest = _split(model)
    return TrainState(jnp.zeros((), jnp.int32), params, rest, tx.init(params))

  abstract = jax.eval_shape(init)
  graphdef = _split(nnx.eval_shape(lambda: _build_model(model_fn, seed)))[0]
  state_sh = TrainState(
      mesh_lib.replicated(mesh),
      mesh_lib.shardings_for(abstract.params, mesh, rules),
      mesh_lib.shardings_for(abstract.rest, mesh, rules),
      mesh_lib.shardings_for(abstract.opt_state, mesh, rules))
  abstract_sh = ckpt_lib.abstract_like(abstract, state_sh)
  batch_sh = mesh_lib.batch_sharding(mesh)
  repl = mesh_lib.replicated(mesh)
  base_key = jax.random.key(seed)

  # ---- the step
  def step_fn(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(base_key, state.step)

    def objective(params):
      model = nnx.merge(graphdef, params, state.rest, copy=True)
      loss, aux = loss_fn(model, batch, rng)
      return loss, (aux, _split(model)[2])

    (loss, (aux, rest)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    diag = {"loss": loss, "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params), "update_norm": optax.tree.norm(updates)}
    for k, v in dict(aux or {}).items():
      diag.setdefault(k, jnp.mean(jnp.asarray(v, jnp.float32)))
    return TrainState(state.step + 1, params, rest, opt_state), diag

  jit_step = jax.jit(step_fn, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, repl),
                     donate_argnums=(0,))

  jit_init = jax.jit(init, out_shardings=state_sh)

  def sharded_init() -> TrainState:
    with _mesh_context(mesh, rules):
      # Init runs once: on CPU, skip XLA's expensive optimisations (halves its compile time).
      options = _CPU_FAST_COMPILE if mesh.devices.flat[0].platform == "cpu" else None
      return jit_init.lower().compile(compiler_options=options)()

  return TrainProgram(sharded_init, jit_step, graphdef, abstract_sh, state_sh, batch_sh, mesh,
                      rules)


def train(*, config: Any, workdir: str,
          model_fn: Callable[[nnx.Rngs], nnx.Module],
          loss_fn: Callable[[nnx.Module, dict, jax.Array], tuple[jax.Array, dict]],
          train_iter: Iterator[dict], mesh: jax.sharding.Mesh | None = None,
          tx: optax.GradientTransformation | None = None) -> TrainResult:
  """Trains for ``config.train.steps`` steps, resuming from the latest checkpoint in ``workdir``.

  ``train_iter`` yields this process's share of each global batch (dict of numpy arrays, leading
  dim = ``config.train.batch_size / process_count``) and has ``get_state()``/``set_state()``.
  Raises NonFiniteLossError naming the first non-finite step and the last good checkpoint.
  """
  t_start = time.perf_counter()
  workdir = os.path.abspath(workdir)
  total = int(config.train.steps)
  log_every = max(1, int(config_lib.get(config.train, "log_every", 50)))
  ckpt_every = int(config_lib.get(config.train, "checkpoint_every", 0))
  keep = int(config_lib.get(config.train, "keep_checkpoints", 3))
  global_bs = int(config.train.batch_size)
  program = build_program(config, model_fn, loss_fn, mesh, tx)
  mesh, rules, graphdef, jit_step = program.mesh, program.rules, program.graphdef, program.step
  os.makedirs(workdir, exist_ok=True)

  # ---- state: restore or init
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=keep,
                               async_save=bool(config_lib.get(config.train, "async_checkpoints", False)))
  last_ckpt_step = ckpt.latest_step()
  if last_ckpt_step is not None:
    state = ckpt.restore(last_ckpt_step, program.abstract_state, train_iter)
  else:
    state = program.init()
  step = int(jax.device_get(state.step))
  last_good = ckpt.path(last_ckpt_step)

  writer = _Writer(workdir, step)
  progress = metrics_lib.Progress(total, desc=str(config_lib.get(config, "name", "train")), start=step)
  history: list[dict] = []
  last_metrics: dict = {}
  pending: list[tuple[int, dict]] = []
  preempted = False
  t_log, step_log = time.perf_counter(), step
  timed = False
  compiled_step = None

  def flush(log: bool = True) -> None:
    """One host sync for all steps since the last check; logs the newest step's metrics."""
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
      pending.clear()
      return
    now = time.perf_counter()
    last_metrics = {k: float(v) for k, v in host[-1].items()}
    if step > step_log:  # not on the first step of a run (compilation is not timed)
      last_metrics["steps_per_s"] = (step - step_log) / max(now - t_log, 1e-9)
    t_log, step_log = now, step
    history.append({"step": step, **last_metrics})
    writer.write(step, last_metrics)
    pending.clear()

  def save() -> None:
    nonlocal last_good, last_ckpt_step
    flush(log=False)  # never write a state whose loss or gradients were non-finite
    if last_ckpt_step == step:
      return
    last_good = ckpt.save(step, state, train_iter)
    last_ckpt_step = step

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
        if ckpt_every > 0 and step % ckpt_every == 0:
          save()
      flush()
      save()
  finally:
    ckpt.close()
    writer.close()

  model = nnx.merge(graphdef, state.params, state.rest)
  wall = time.perf_counter() - t_start
  if jax.process_index() == 0:
    metrics_lib.write_json_atomic(os.path.join(workdir, "summary.json"), {
        "name": str(config_lib.get(config, "name", "")), "step": step, "preempted": preempted,
        "final_metrics": last_metrics, "wall_time_s": wall,
        "checkpoint": last_good})
  return TrainResult(model=model, step=step, metrics=last_metrics, history=history,
                     preempted=preempted, wall_time_s=wall, checkpoint=last_good)
