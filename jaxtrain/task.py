"""The contract between a model package and the engine (see jaxtrain/README.md).

A package describes its training as a ``Task``: how to build the model, its loss, how each metric
is reduced, optionally a whole train step (for multi-pass training) and evaluators. The engine
(``jaxtrain.loop``) owns everything else: jit, shardings and donation, the optimizer, NaN checks,
checkpoints, periodic evaluation, metrics and progress.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxtrain.errors import ConfigError

REDUCTIONS = ("mean", "sum", "min", "max", "none")


class LossFn(Protocol):
  def __call__(self, model: nnx.Module, batch: dict, rng: jax.Array, step: jax.Array
               ) -> tuple[jax.Array, Mapping[str, jax.Array]]:
    """Scores a global batch: ``(scalar loss, {metric name: array})``. ``model`` is in train mode;
    ``rng`` is this step's key; ``step`` the int32 number of updates done so far."""


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """``fn(model) -> {metric: value}`` run every ``config.train.eval_every`` steps (and after the
  last) on held-out data, with the model in eval mode; logged as ``eval/<name>/<metric>``. Every
  process calls it (it may use collectives, e.g. ``jaxtrain.inference.batched_apply``)."""
  name: str
  fn: Callable[[nnx.Module], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class Task:
  """What a model package gives the engine.

  model:       ``rngs -> nnx.Module`` (built under ``jax.jit``; parameters name their logical axes).
  loss:        ``(model, batch, rng, step) -> (loss, metrics)``, see ``LossFn``.
  reductions:  metric name -> 'mean' (default), 'sum', 'min', 'max' or 'none' (keep the array,
               e.g. one accuracy per step of an early-exit model). A metric is reduced within the
               step, then across the steps of a logging interval the same way ('none': mean).
  train_step:  optional ``(parts: StepParts, state, batch, rng) -> (state, metrics)`` replacing
               the default one-pass step; build it from ``parts.grad`` and ``parts.update``.
  evaluators:  run periodically during training.
  """
  model: Callable[[nnx.Rngs], nnx.Module]
  loss: LossFn
  reductions: Mapping[str, str] = dataclasses.field(default_factory=dict)
  train_step: Callable[..., tuple["TrainState", dict]] | None = None
  evaluators: Sequence[Evaluator] = ()

  def __post_init__(self):
    for name, how in self.reductions.items():
      if how not in REDUCTIONS:
        raise ConfigError(f"metric {name!r}: reduction {how!r}; expected one of {REDUCTIONS}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  """Everything a step changes, as arrays: checkpointed and restored whole."""
  step: jax.Array      # int32 number of updates done
  params: Any          # trainable nnx.Param state (the optimizer's)
  frozen: Any          # nnx.Param state matched by config.optim.frozen: no gradient, no optimizer state
  rest: Any            # every other variable (batch statistics, stored rng streams, ...)
  opt_state: Any
  ema: Any = None      # exponential moving average of ``params`` (config.optim.ema_decay > 0)


def reduce_metric(value: jax.Array, how: str) -> jax.Array:
  """One step's metric reduced to what gets logged (float32)."""
  value = jnp.asarray(value, jnp.float32)
  if how == "none":
    return value
  return {"mean": jnp.mean, "sum": jnp.sum, "min": jnp.min, "max": jnp.max}[how](value)


@dataclasses.dataclass(frozen=True)
class StepParts:
  """The engine's pieces for writing a train step; the engine jits whatever step uses them.

  A two-pass step, for example::

    def step(parts, state, batch, rng):
      r1, r2 = jax.random.split(rng)
      l1, m1, g1, rest = parts.grad(parts.loss, state, batch, r1)
      l2, m2, g2, _ = parts.grad(parts.loss, state, flipped(batch), r2)   # BN stats from pass 1
      grads = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
      return parts.update(state, grads, rest, (l1 + l2) / 2, m1)
  """
  graphdef: Any
  tx: optax.GradientTransformation
  loss: LossFn
  reductions: Mapping[str, str]
  ema_decay: float = 0.0

  def model(self, state: TrainState, params: Any = None) -> nnx.Module:
    """A fresh train-mode model from ``state`` (trainable parameters ``params`` if given)."""
    return nnx.merge(self.graphdef, state.params if params is None else params, state.frozen,
                     state.rest, copy=True)

  def grad(self, loss_fn: LossFn, state: TrainState, batch: dict, rng: jax.Array
           ) -> tuple[jax.Array, dict, Any, Any]:
    """``(loss, metrics, grads of the trainable parameters, rest after the forward pass)``."""
    def objective(params):
      model = self.model(state, params)
      loss, metrics = loss_fn(model, batch, rng, state.step)
      return loss, (dict(metrics or {}), nnx.state(model, nnx.Not(nnx.Param)))

    (loss, (metrics, rest)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    return loss, metrics, grads, rest

  def update(self, state: TrainState, grads: Any, rest: Any, loss: jax.Array,
             metrics: Mapping[str, jax.Array]) -> tuple[TrainState, dict]:
    """One optimizer update (and EMA); returns the new state and the step's logged metrics
    (``loss``, gradient/parameter/update norms, then the task's metrics reduced)."""
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if ema is not None:
      d = self.ema_decay
      ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)
    diag = {"loss": loss, "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params), "update_norm": optax.tree.norm(updates)}
    for k, v in metrics.items():
      if k not in diag:
        diag[k] = reduce_metric(v, self.reductions.get(k, "mean"))
    return TrainState(state.step + 1, params, state.frozen, rest, opt_state, ema), diag


def default_step(parts: StepParts, state: TrainState, batch: dict, rng: jax.Array
                 ) -> tuple[TrainState, dict]:
  """One forward/backward pass of ``parts.loss`` and one update."""
  loss, metrics, grads, rest = parts.grad(parts.loss, state, batch, rng)
  return parts.update(state, grads, rest, loss, metrics)
