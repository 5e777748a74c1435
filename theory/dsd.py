"""The Dynamic Signal Distribution (DSD) of Lahoti et al. (ICLR 2024, arXiv 2403.15707).

An input is ``k`` patches of dimension ``d`` (shape ``[k, d]``); the label ``y`` is uniform in {+1, -1};
one patch ``i``, uniform in ``0..k-1``, carries ``y * w*`` (``w*`` a unit vector in R^d); every coordinate
gets isotropic Gaussian noise N(0, sigma^2) (optionally not the signal patch). ``sigma`` defaults to
``c / sqrt(k)``. Sampling is exact and pure, so it works inside ``jax.jit`` and ``jax.vmap``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def check_kd(k: int, d: int) -> None:
  """Raises ValueError unless k and d are integers >= 1."""
  for name, v in (("k", k), ("d", d)):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"DSD: {name} must be an integer >= 1 (got {v!r})")


def default_sigma(k: int, c: float = 1.0) -> float:
  """The noise level the theorems assume: c / sqrt(k)."""
  check_kd(k, 1)
  if not c > 0:
    raise ValueError(f"DSD: noise constant c must be > 0 (got {c!r})")
  return float(c) / math.sqrt(k)


def fixed_wstar(d: int) -> jax.Array:
  """The fixed signal direction: the first standard basis vector e_1 of R^d (1-sparse, unit norm)."""
  check_kd(1, d)
  return jnp.zeros((d,), jnp.float32).at[0].set(1.0)


def random_wstar(key: jax.Array, d: int) -> jax.Array:
  """A uniformly random unit vector in R^d."""
  check_kd(1, d)
  v = jax.random.normal(key, (d,), jnp.float32)
  return v / jnp.linalg.norm(v)


def sample(key: jax.Array, n: int, k: int, d: int, sigma: float | jax.Array | None = None,
           wstar: jax.Array | None = None, noise_free_signal: bool = False,
           c: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Draws ``n`` DSD samples: ``x`` float32 ``[n, k, d]`` and ``y`` float32 ``[n]`` in {+1, -1}.

  ``sigma=None`` uses ``c / sqrt(k)``; ``wstar=None`` uses :func:`fixed_wstar`. With
  ``noise_free_signal`` the signal patch is exactly ``y * w*``.
  """
  check_kd(k, d)
  if sigma is None:
    sigma = default_sigma(k, c)
  if wstar is None:
    wstar = fixed_wstar(d)
  ky, ki, kz = jax.random.split(key, 3)
  y = jnp.where(jax.random.bernoulli(ky, 0.5, (n,)), 1.0, -1.0).astype(jnp.float32)
  pos = jax.random.randint(ki, (n,), 0, k)
  onehot = jax.nn.one_hot(pos, k, dtype=jnp.float32)  # [n, k]
  noise = sigma * jax.random.normal(kz, (n, k, d), jnp.float32)
  if noise_free_signal:
    noise = noise * (1.0 - onehot)[:, :, None]
  x = noise + onehot[:, :, None] * y[:, None, None] * wstar[None, None, :]
  return x, y


def signal_position(x: jax.Array, y: jax.Array, wstar: jax.Array) -> jax.Array:
  """Index of the patch best aligned with y*w* (for diagnostics only)."""
  return jnp.argmax(jnp.einsum("nkd,d->nk", x, wstar) * y[:, None], axis=1)
