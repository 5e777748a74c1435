"""Generic Flax NNX layers with logical axis names on their parameters.

Parameters are float32 and carry ``out_sharding`` metadata (logical axis names, no eager sharding);
``dtype`` is the compute dtype. Dropout is ``nnx.Dropout``: its mode comes from ``model.train()`` /
``model.eval()`` and its keys from the ``rngs`` passed to the forward call (needed only in train
mode with a positive rate).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array

NEG = -1e9  # finite "minus infinity" for masked logits (keeps fully masked rows NaN-free)

kernel_init = nnx.initializers.xavier_uniform()
embed_init = nnx.initializers.truncated_normal(0.02)
zeros = nnx.initializers.zeros_init()
ones = nnx.initializers.ones_init()
# Multi-head projections [din, H, dh] and output projections [H, dh, dout].
heads_init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0,
                                               out_axis=(1, 2))
out_init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=(0, 1),
                                             out_axis=2)


def param(rngs: nnx.Rngs, init: Callable, shape: tuple, names: tuple) -> nnx.Param:
  """A float32 parameter initialised by ``init`` with logical axis ``names``."""
  return nnx.Param(init(rngs.params(), shape, jnp.float32), out_sharding=names, eager_sharding=False)


def masked_softmax(logits: Array, key_valid: Array | None) -> Array:
  """softmax over the last axis restricted to valid keys; rows without a valid key are all zero."""
  logits = logits.astype(jnp.float32)
  if key_valid is None:
    return jax.nn.softmax(logits, axis=-1)
  p = jax.nn.softmax(jnp.where(key_valid, logits, NEG), axis=-1)
  return p * key_valid


def project(x: Array, w: Array) -> Array:
  """x [..., din] @ w [din, *out] -> [..., *out], as one 2-D matmul."""
  out = w.shape[1:]
  return jnp.dot(x, w.reshape(w.shape[0], -1)).reshape(x.shape[:-1] + out)


def unproject(x: Array, w: Array) -> Array:
  """x [..., H, dh] contracted with w [H, dh, dout] -> [..., dout], as one 2-D matmul."""
  hk = w.shape[0] * w.shape[1]
  return jnp.dot(x.reshape(x.shape[:-2] + (hk,)), w.reshape(hk, w.shape[2]))


def sinusoidal_embedding(n: int, dim: int) -> np.ndarray:
  """Fixed sin/cos positional embeddings [n, dim] (Vaswani et al.)."""
  pos = np.arange(n, dtype=np.float64)[:, None]
  i = np.arange((dim + 1) // 2, dtype=np.float64)[None, :]
  ang = pos / np.power(10000.0, 2.0 * i / dim)
  out = np.zeros((n, dim), np.float64)
  out[:, 0::2] = np.sin(ang)[:, : (dim + 1) // 2]
  out[:, 1::2] = np.cos(ang)[:, : dim // 2]
  return out.astype(np.float32)


class Dense(nnx.Module):
  """y = x W + b with logical axis names on W and b."""

  def __init__(self, din: int, dout: int, names: tuple, *, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               use_bias: bool = True, kernel_init: Callable = kernel_init):
    self.kernel = param(rngs, kernel_init, (din, dout), names)
    self.bias = param(rngs, zeros, (dout,), (names[1],)) if use_bias else None
    self.dtype = dtype

  def __call__(self, x: Array) -> Array:
    y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis, statistics in float32."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32, eps: float = 1e-6):
    self.scale = param(rngs, ones, (dim,), ("embed",))
    self.bias = param(rngs, zeros, (dim,), ("embed",))
    self.dtype = dtype
    self.eps = eps

  def __call__(self, x: Array) -> Array:
    x32 = x.astype(jnp.float32)
    mu = jnp.mean(x32, -1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mu), -1, keepdims=True)
    y = (x32 - mu) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
    return y.astype(self.dtype)


class Mlp(nnx.Module):
  """fc1 -> gelu -> dropout -> fc2 -> dropout."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype: Any, dropout: float = 0.0):
    self.fc1 = Dense(dim, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.fc2 = Dense(hidden, dim, ("mlp", "embed"), rngs=rngs, dtype=dtype)
    self.drop_hidden = nnx.Dropout(dropout)
    self.drop_out = nnx.Dropout(dropout)

  def __call__(self, x: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    h = self.drop_hidden(jax.nn.gelu(self.fc1(x)), rngs=rngs)
    return self.drop_out(self.fc2(h), rngs=rngs)


class SelfAttention(nnx.Module):
  """Multi-head self-attention over one token axis of h [..., T, ..., dim] with an optional key mask."""

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
    dh = dim // num_heads
    self.wqkv = param(rngs, heads_init, (dim, 3, num_heads, dh), ("embed", None, "heads", "kv"))
    self.wo = param(rngs, out_init, (num_heads, dh, dim), ("heads", "kv", "embed"))
    self.bo = param(rngs, zeros, (dim,), ("embed",))
    self.head_dim = dh
    self.dtype = dtype

  def __call__(self, h: Array, key_valid: Array | None = None, bias: Array | None = None,
               axis: int = -2) -> Array:
    """Attention along token axis ``axis`` of h [..., dim] (the other token axes are batch axes).

    ``key_valid`` (shape h.shape[:-1]) restricts the keys; ``bias`` [H, T, T] is added to the logits.
    Projections are plain matmuls over the flattened tokens and the attention contracts in the
    tokens' own layout, so no axis is transposed (attention across segments stays cheap on CPU).
    """
    dt = self.dtype
    rank = h.ndim - 1
    ax = axis % h.ndim
    if ax >= rank:
      raise ValueError(f"axis={axis} is the feature axis of a rank-{h.ndim} input")
    qkv = project(h.astype(dt), self.wqkv[...].astype(dt))  # [..., 3, H, dh]
    q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    tok = "abcdefgij"[:rank]
    t = tok[ax]
    key = tok.replace(t, "z")
    batch = tok.replace(t, "")
    logits = jnp.einsum(f"{tok}hk,{key}hk->{batch}h{t}z", q, k,
                        preferred_element_type=jnp.float32) / math.sqrt(self.head_dim)
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)
    valid = None if key_valid is None else jnp.moveaxis(key_valid, ax, -1)[..., None, None, :]
    p = masked_softmax(logits, valid).astype(dt)
    out = jnp.einsum(f"{batch}h{t}z,{key}hk->{tok}hk", p, v)
    return unproject(out, self.wo[...].astype(dt)) + self.bo[...].astype(dt)


class AttentionBlock(nnx.Module):
  """Pre-LN transformer block (self-attention over axis -2): h + drop(attn(LN h)); h + MLP(LN h)."""

  def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, rngs: nnx.Rngs, dtype: Any,
               dropout: float = 0.0):
    self.norm1 = LayerNorm(dim, rngs=rngs, dtype=dtype)
    self.attn = SelfAttention(dim, num_heads, rngs=rngs, dtype=dtype)
    self.norm2 = LayerNorm(dim, rngs=rngs, dtype=dtype)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype, dropout=dropout)
    self.drop_attn = nnx.Dropout(dropout)

  def __call__(self, h: Array, key_valid: Array | None = None, *,
               rngs: nnx.Rngs | None = None) -> Array:
    h = h + self.drop_attn(self.attn(self.norm1(h), key_valid), rngs=rngs)
    return h + self.mlp(self.norm2(h), rngs=rngs)
