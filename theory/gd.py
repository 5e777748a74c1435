"""JIT-compiled full-batch gradient descent for the DSD models.

A run is ``steps`` full-batch GD steps on the masked mean loss (masking keeps shapes static, so a grid
of sample sizes vmaps over one array of ``n_max`` samples). Step size and activation bias follow
per-step schedules; after each step the filters may be norm-projected. Two presets:
``two_step`` (the paper's short analysis setting: a linear step from zero, then a thresholded step)
and ``many_step`` (small random init, a linear warm-up, then thresholded GD to convergence).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from theory import models

LOSSES = ("logistic", "squared")


@dataclasses.dataclass(frozen=True)
class GDConfig:
  """Hashable GD settings (a static jit argument). Schedules are tuples of length ``steps``."""
  lrs: tuple[float, ...]
  biases: tuple[float, ...]
  b_eval: float
  loss: str = "logistic"
  activation: str = "soft_threshold"
  init: str = "zero"
  init_scale: float = 1.0
  projection: str = "none"
  radius: float = 1.0

  def __post_init__(self):
    if self.loss not in LOSSES:
      raise ValueError(f"gd.loss must be one of {LOSSES} (got {self.loss!r})")
    if len(self.lrs) < 1 or len(self.lrs) != len(self.biases):
      raise ValueError(f"gd: lrs and biases must be non-empty and of equal length "
                       f"(got {len(self.lrs)} and {len(self.biases)})")
    models.check_model("cnn", self.activation)
    if self.projection not in ("none", "ball", "sphere"):
      raise ValueError(f"gd.projection must be 'none', 'ball' or 'sphere' (got {self.projection!r})")

  @property
  def steps(self) -> int:
    return len(self.lrs)


def two_step(lr1: float = 1.0, lr2: float = 1.0, b: float = 0.5, loss: str = "logistic",
             activation: str = "soft_threshold", radius: float = 1.0) -> GDConfig:
  """The two-step analysis preset: from w=0 one linear step (b=0), then one step with threshold b;
  filters projected onto the sphere of the given radius after each step; evaluated with threshold b."""
  return GDConfig(lrs=(lr1, lr2), biases=(0.0, b), b_eval=b, loss=loss, activation=activation,
                  init="zero", projection="sphere", radius=radius)


def many_step(steps: int = 100, lr: float = 1.0, b: float = 0.5, warmup: int = 1,
              loss: str = "logistic", activation: str = "soft_threshold", init_scale: float = 0.01,
              projection: str = "sphere", radius: float = 1.0) -> GDConfig:
  """The many-step preset: small random init, ``warmup`` linear steps (b=0), then threshold b."""
  if steps < 1 or not 0 <= warmup <= steps:
    raise ValueError(f"gd: need steps >= 1 and 0 <= warmup <= steps (got {steps}, {warmup})")
  biases = tuple(0.0 if t < warmup else b for t in range(steps))
  return GDConfig(lrs=(lr,) * steps, biases=biases, b_eval=b, loss=loss, activation=activation,
                  init="normal", init_scale=init_scale, projection=projection, radius=radius)


def from_config(cfg: Mapping[str, Any]) -> GDConfig:
  """Builds a GDConfig from a config section with ``preset`` in {'two_step', 'many_step'}."""
  preset = cfg["preset"]
  common = dict(loss=cfg["loss"], activation=cfg["activation"])
  if preset == "two_step":
    return two_step(lr1=cfg["lr"], lr2=cfg["lr2"], b=cfg["b"], radius=cfg["radius"], **common)
  if preset == "many_step":
    return many_step(steps=cfg["steps"], lr=cfg["lr"], b=cfg["b"], warmup=cfg["warmup"],
                     init_scale=cfg["init_scale"], projection=cfg["projection"],
                     radius=cfg["radius"], **common)
  raise ValueError(f"gd.preset must be 'two_step' or 'many_step' (got {preset!r})")


def loss_values(margin: jax.Array, loss: str) -> jax.Array:
  """Per-sample loss of the margin y*f(x)."""
  if loss == "logistic":
    return jax.nn.softplus(-margin)
  if loss == "squared":
    return 0.5 * (1.0 - margin) ** 2
  raise ValueError(f"loss must be one of {LOSSES} (got {loss!r})")


def masked_loss(model: str, w: jax.Array, x: jax.Array, y: jax.Array, mask: jax.Array, b: jax.Array,
                cfg: GDConfig) -> jax.Array:
  """Mean loss over the samples with mask 1 (0 if none)."""
  f = models.apply(model, w, x, b, cfg.activation)
  per = loss_values(y * f, cfg.loss) * mask
  return per.sum() / jnp.maximum(mask.sum(), 1.0)


def gd_step(model: str, w: jax.Array, x: jax.Array, y: jax.Array, mask: jax.Array, lr: jax.Array,
            b: jax.Array, cfg: GDConfig) -> jax.Array:
  """One full-batch GD step followed by the norm projection."""
  g = jax.grad(masked_loss, argnums=1)(model, w, x, y, mask, b, cfg)
  return models.project(w - lr * g, cfg.radius, cfg.projection)


def train(model: str, w0: jax.Array, x: jax.Array, y: jax.Array, mask: jax.Array,
          cfg: GDConfig) -> jax.Array:
  """Runs the whole schedule with ``lax.scan``; returns the final weights (jit/vmap friendly)."""
  sched = (jnp.asarray(cfg.lrs, jnp.float32), jnp.asarray(cfg.biases, jnp.float32))

  def body(w, lr_b):
    lr, b = lr_b
    return gd_step(model, w, x, y, mask, lr, b, cfg), None

  w, _ = jax.lax.scan(body, w0, sched)
  return w


def test_error(model: str, w: jax.Array, x: jax.Array, y: jax.Array, cfg: GDConfig) -> jax.Array:
  """0-1 error of sign(f); an output of exactly 0 (no unit active) counts as half an error."""
  f = models.apply(model, w, x, cfg.b_eval, cfg.activation)
  m = y * f
  return jnp.mean(jnp.where(m > 0, 0.0, jnp.where(m < 0, 1.0, 0.5)))


train_jit = jax.jit(train, static_argnames=("model", "cfg"))
