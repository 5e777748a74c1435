"""The three architectures of the DSD separation, with one output form.

f(x) = sum_{j=1..k} phi(<w_j, x>) for a fixed sum over k units:
  - FCN: k units, each a filter over the whole kd input (weights ``[k, k*d]``);
  - LCN: unit j is a d-filter applied to patch j only, not shared (weights ``[k, d]``);
  - CNN: one d-filter shared by all patches (weights ``[d]``).
Activations: the paper's odd soft threshold phi_b(z) = relu(z - b) - relu(-z - b), or ReLU(z - b).
Models are pure functions of a weight array (so they vmap over seeds and grids); ``DSDNet`` wraps one as a
Flax NNX module.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

MODELS = ("cnn", "lcn", "fcn")
ACTIVATIONS = ("soft_threshold", "relu")


def check_model(model: str, activation: str = "soft_threshold") -> None:
  if model not in MODELS:
    raise ValueError(f"model must be one of {MODELS} (got {model!r})")
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {ACTIVATIONS} (got {activation!r})")


def soft_threshold(z: jax.Array, b: float | jax.Array) -> jax.Array:
  """phi_b(z) = relu(z - b) - relu(-z - b); phi_0 is the identity.

  Written as z - clip_b(z) so that the derivative is 1 wherever |z| >= b: with b = 0 the first GD step
  from w = 0 is the linear step of the analysis (relu's derivative convention would give 0 there).
  """
  return z - jnp.where(jnp.abs(z) < b, z, jnp.sign(z) * b)


def activate(z: jax.Array, b: float | jax.Array, activation: str) -> jax.Array:
  if activation == "soft_threshold":
    return soft_threshold(z, b)
  if activation == "relu":
    return jnp.where(z >= b, z - b, 0.0)
  raise ValueError(f"activation must be one of {ACTIVATIONS} (got {activation!r})")


def weight_shape(model: str, k: int, d: int) -> tuple[int, ...]:
  check_model(model)
  return {"fcn": (k, k * d), "lcn": (k, d), "cnn": (d,)}[model]


def preactivations(model: str, w: jax.Array, x: jax.Array) -> jax.Array:
  """Unit pre-activations ``[n, k]`` for inputs ``x`` ``[n, k, d]``."""
  n, k, d = x.shape
  if model == "fcn":
    return x.reshape(n, k * d) @ w.T
  if model == "lcn":
    return jnp.einsum("nkd,kd->nk", x, w)
  if model == "cnn":
    return jnp.einsum("nkd,d->nk", x, w)
  raise ValueError(f"model must be one of {MODELS} (got {model!r})")


def apply(model: str, w: jax.Array, x: jax.Array, b: float | jax.Array = 0.0,
          activation: str = "soft_threshold") -> jax.Array:
  """Network output f(x), shape ``[n]``."""
  return activate(preactivations(model, w, x), b, activation).sum(axis=-1)


def init(model: str, key: jax.Array, k: int, d: int, scheme: str = "zero",
         scale: float = 1.0) -> jax.Array:
  """Initial weights: ``zero`` or ``normal`` (std scale/sqrt(fan_in) per coordinate)."""
  shape = weight_shape(model, k, d)
  if scheme == "zero":
    return jnp.zeros(shape, jnp.float32)
  if scheme == "normal":
    return scale / jnp.sqrt(shape[-1]) * jax.random.normal(key, shape, jnp.float32)
  raise ValueError(f"init scheme must be 'zero' or 'normal' (got {scheme!r})")


def project(w: jax.Array, radius: float, mode: str) -> jax.Array:
  """Norm projection of each filter (last axis): 'none', 'ball' (norm <= radius), 'sphere' (= radius)."""
  if mode == "none":
    return w
  norm = jnp.linalg.norm(w, axis=-1, keepdims=True)
  if mode == "ball":
    return w * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-30))
  if mode == "sphere":
    return jnp.where(norm > 0, w * (radius / jnp.maximum(norm, 1e-30)), w)
  raise ValueError(f"projection must be 'none', 'ball' or 'sphere' (got {mode!r})")


class DSDNet(nnx.Module):
  """NNX wrapper: holds the weights as an ``nnx.Param`` and calls :func:`apply`."""

  def __init__(self, model: str, k: int, d: int, *, rngs: nnx.Rngs, activation: str = "soft_threshold",
               b: float = 0.0, init_scheme: str = "normal", init_scale: float = 1.0):
    check_model(model, activation)
    self.model, self.activation, self.b = model, activation, b
    self.w = nnx.Param(init(model, rngs.params(), k, d, init_scheme, init_scale))

  def __call__(self, x: jax.Array) -> jax.Array:
    return apply(self.model, self.w[...], x, self.b, self.activation)
