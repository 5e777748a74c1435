"""BrainMAE (Yang et al., arXiv 2406.17086) in Flax NNX.

Input windows are ``x`` float32 [B, S, N, L]: S segments of L frames each, for N ROIs. Pretraining masks,
independently for every segment, exactly ``round(mask_ratio * N)`` ROIs and reconstructs their signals.

Pipeline:
  cell tokens (L -> d, masked cells replaced by a mask token) + ROI embedding e_n
  -> transient-state encoder over the ROIs of each segment (SG-TSE: graph-attention blocks; AG-TSE:
     self-attention blocks then a graph-attention block); graph attention weights come from the ROI
     embeddings only, softmax_j(q(e_i).k(e_j)/sqrt(dh)), self-loops removed, keys restricted to the
     visible ROIs of the segment (renormalised)
  -> segment state = pooling over visible ROI tokens -> transformer over segments -> contextual states
  -> light decoder per (segment, ROI): token + contextual state + ROI embedding, graph attention, -> L.
  Extension beyond the paper (``roi_temporal``, on by default): per-ROI attention across segments in
  the encoder (visible keys only) and/or the decoder, with a learned relative-segment bias.
  Second extension (``linear_prior``, off by default): hidden cells enter as the ridge prediction
  from the visible ROIs of the same frame and the decoder predicts the residual (``linear_prior``).

Dropout (``config.model.dropout``) uses ``nnx.Dropout``: ``model.train()`` turns it on (the default
of a new model), ``model.eval()`` off. The model stores no random state: in train mode with a
positive rate, forward calls need ``rngs=nnx.Rngs(dropout=key)``.

Parameters carry logical axis names (``out_sharding`` metadata, no eager sharding) from
``LOGICAL_AXES``; the engine maps them to mesh axes with its rules. Generic layers live in
``jaxbrain.models.layers``.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxbrain.data.masking import num_masked
from jaxbrain.models.layers import (NEG, AttentionBlock, Dense, LayerNorm, Mlp, SelfAttention,
                                    embed_init, heads_init, masked_softmax, out_init, param,
                                    project, sinusoidal_embedding, unproject, zeros)
from jaxtrain.errors import ConfigError

Array = jax.Array

__all__ = [
    "LOGICAL_AXES", "BrainMAE", "BrainMAEForPrediction", "GraphAttention", "GraphBlock",
    "RoiTemporalBlock", "default_model_config", "masked_mse", "num_masked", "pretrain_loss",
    "random_mask", "sinusoidal_embedding",
]

# Logical axis names used by the parameters of this module.
LOGICAL_AXES = ("embed", "mlp", "heads", "kv", "roi", "seg", "seg_len", "vocab")


def default_model_config() -> ml_collections.ConfigDict:
  """Model section of a training config (``config.model``) with the defaults."""
  c = ml_collections.ConfigDict()
  c.name = "brainmae"       # the model family (jaxbrain.models.MODELS)
  c.num_rois = 100          # N (Schaefer-100 in the paper)
  c.seg_len = 21            # L frames per segment (15 s at TR 0.72 s)
  c.num_segments = 8        # S, the maximum number of segments per window (temporal positions)
  c.embed_dim = 256         # d
  c.num_heads = 8
  c.tse = "sg"              # 'sg' (graph-attention blocks) or 'ag' (self-attention + graph attention)
  c.tse_depth = 3
  c.encoder_depth = 2       # transformer blocks over segments
  c.decoder_dim = 128
  c.decoder_depth = 1
  c.decoder_heads = 4
  c.mlp_ratio = 4.0
  c.dropout = 0.0
  c.mask_ratio = 0.5
  c.pooling = "mean"        # segment state: 'mean' over visible ROI tokens or 'attention'
  c.embedding_attention = True   # ablation False: attention from token features (self-attention)
  c.roi_embedding = "learned"    # ablation 'fixed': sinusoidal positional embeddings
  c.self_loops = False           # ablation True: keep the diagonal of the graph attention
  # Our extension beyond the paper (set 'none' for the paper's model): per-ROI attention across the
  # segments of a window, so a masked cell sees its own ROI in the other segments. 'encoder': one
  # block after the TSE (keys = visible cells of that ROI); 'decoder': one block in the decoder
  # (all keys: decoder tokens depend on visible cells only); 'both'.
  c.roi_temporal = "both"
  # Our extension beyond the paper: a linear prior. Hidden cells enter the encoder as the ridge
  # prediction from the visible ROIs of the same frame (x_M = mu_M + C_MV (C_VV + lam I)^-1
  # (x_V - mu_V), mean and covariance of the pretraining data, ``set_linear_prior``) and the
  # decoder predicts the residual: the network learns what a linear model misses.
  c.linear_prior = False
  c.prior_lam = 0.03
  c.dtype = "float32"            # compute dtype ('bfloat16' on TPU); parameters stay float32
  return c


def _check_config(c: ml_collections.ConfigDict) -> None:
  def bad(field: str, what: str):
    raise ConfigError(f"config.model.{field}={c[field]!r}: expected {what}")
  for f in ("num_rois", "seg_len", "num_segments", "embed_dim", "num_heads", "tse_depth",
            "decoder_dim", "decoder_depth", "decoder_heads"):
    if not isinstance(c[f], int) or c[f] < 1:
      bad(f, "a positive integer")
  if not isinstance(c.encoder_depth, int) or c.encoder_depth < 0:
    bad("encoder_depth", "a non-negative integer")
  if c.embed_dim % c.num_heads:
    bad("embed_dim", f"a multiple of num_heads={c.num_heads}")
  if c.decoder_dim % c.decoder_heads:
    bad("decoder_dim", f"a multiple of decoder_heads={c.decoder_heads}")
  if c.tse not in ("sg", "ag"):
    bad("tse", "'sg' or 'ag'")
  if c.pooling not in ("mean", "attention"):
    bad("pooling", "'mean' or 'attention'")
  if c.roi_temporal not in ("none", "encoder", "decoder", "both"):
    bad("roi_temporal", "'none', 'encoder', 'decoder' or 'both'")
  if c.roi_embedding not in ("learned", "fixed"):
    bad("roi_embedding", "'learned' or 'fixed'")
  if not 0.0 <= float(c.mask_ratio) < 1.0 or num_masked(c.num_rois, c.mask_ratio) >= c.num_rois:
    bad("mask_ratio", f"a ratio in [0, 1) leaving at least one of num_rois={c.num_rois} visible")
  if not 0.0 <= float(c.dropout) < 1.0:
    bad("dropout", "a rate in [0, 1)")
  if not float(c.prior_lam) >= 0.0:
    bad("prior_lam", "a penalty >= 0")
  if c.mlp_ratio <= 0:
    bad("mlp_ratio", "a positive number")
  if c.dtype not in ("float32", "bfloat16", "float16"):
    bad("dtype", "'float32', 'bfloat16' or 'float16'")


# ----------------------------------------------------------------------------------------------
# Masking and loss
# ----------------------------------------------------------------------------------------------

def random_mask(rng: Array, batch: int, num_segments: int, num_rois: int, mask_ratio: float) -> Array:
  """Segment-wise ROI mask, bool [batch, S, N], True = masked; num_masked(N, ratio) per segment."""
  k = num_masked(num_rois, mask_ratio)
  if not 0 <= k < num_rois:
    raise ValueError(f"mask_ratio={mask_ratio!r} masks {k} of {num_rois} ROIs; "
                     "at least one must stay visible")
  u = jax.random.uniform(rng, (batch, num_segments, num_rois))
  ranks = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1)
  return ranks < k


def masked_mse(recon: Array, x: Array, mask: Array | None) -> Array:
  """Mean squared error over the masked (segment, ROI) cells (all cells if mask is None)."""
  err = jnp.square(recon.astype(jnp.float32) - x.astype(jnp.float32))
  if mask is None:
    return jnp.mean(err)
  w = mask.astype(jnp.float32)[..., None]
  return jnp.sum(err * w) / jnp.maximum(jnp.sum(w) * x.shape[-1], 1.0)


def pretrain_loss(model: "BrainMAE", batch: dict, rng: Array, step: Array | int
                  ) -> tuple[Array, dict]:
  """Masked-reconstruction loss, the engine's ``loss_fn(model, batch, rng, step)``.

  ``rng`` (this step's key) is split into the mask key and the dropout key; ``step`` is unused.
  Dropout follows the model's mode (``model.train()`` / ``model.eval()``). With mask_ratio = 0
  (the plain autoencoder ablation) the loss covers every cell.
  """
  del step
  x = batch["x"]
  b, s, n, _ = x.shape
  mask_rng, drop_rng = jax.random.split(rng)
  ratio = model.config.mask_ratio
  mask = random_mask(mask_rng, b, s, n, ratio)
  recon = model(x, mask, rngs=nnx.Rngs(dropout=drop_rng))
  loss = masked_mse(recon, x, mask if num_masked(n, ratio) > 0 else None)
  metrics = {"loss": loss, "mask_fraction": jnp.mean(mask.astype(jnp.float32))}
  if num_masked(n, ratio) > 0:
    metrics["mse_visible"] = masked_mse(recon, x, ~mask)
  return loss, metrics


# ----------------------------------------------------------------------------------------------
# BrainMAE blocks
# ----------------------------------------------------------------------------------------------

class PriorStat(nnx.Variable):
  """Statistics of the pretraining data fixed before training (never trained): the linear prior."""


def spd_solve(a: Array, b: Array) -> Array:
  """a^-1 b for symmetric positive definite a [..., N, N] and b [..., N, K]: Gauss-Jordan
  elimination (no pivoting, which SPD matrices do not need) in plain array operations.

  Not ``jnp.linalg.solve``: its LAPACK call on CPU runs batches on the intra-op thread pool, which
  deadlocks against the gradient all-reduce when a CPU is split into several JAX devices.
  """
  n = a.shape[-1]
  rows = jnp.arange(n)

  def eliminate(k, ab):
    a, b = ab
    pivot = jax.lax.dynamic_index_in_dim(a, k, axis=-2, keepdims=False)  # row k [..., N]
    scale = 1.0 / jax.lax.dynamic_index_in_dim(pivot, k, axis=-1, keepdims=True)
    row_a, row_b = pivot * scale, jax.lax.dynamic_index_in_dim(b, k, axis=-2, keepdims=False) * scale
    is_k = (rows == k)[:, None]
    col = jnp.where(is_k, 0.0, jax.lax.dynamic_index_in_dim(a, k, axis=-1, keepdims=True))  # [..., N, 1]
    a = jnp.where(is_k, row_a[..., None, :], a - col * row_a[..., None, :])
    b = jnp.where(is_k, row_b[..., None, :], b - col * row_b[..., None, :])
    return a, b

  return jax.lax.fori_loop(0, n, eliminate, (a, b))[1]


def linear_prior(x: Array, mask: Array, mean: Array, cov: Array, lam: float) -> Array:
  """x [B, S, N, L] with hidden cells (mask [B, S, N]) replaced by the ridge prediction from the
  visible ROIs of the same frame: mu_M + C_MV (C_VV + lam I)^-1 (x_V - mu_V). Hidden values are
  never read."""
  vis = ~mask
  v = vis.astype(jnp.float32)
  n = x.shape[2]
  eye = jnp.eye(n, dtype=jnp.float32)
  # C_VV + lam I embedded in N x N, identity on the hidden block: solving it gives z_M = 0.
  a = cov * v[..., :, None] * v[..., None, :] + eye * jnp.where(vis, lam, 1.0)[..., None, :]
  centred = jnp.where(vis[..., None], x.astype(jnp.float32) - mean[:, None], 0.0)
  z = spd_solve(a, centred)
  pred = mean[:, None] + jnp.einsum("nm,bsml->bsnl", cov, z)
  return jnp.where(mask[..., None], pred, x.astype(jnp.float32)).astype(x.dtype)


class GraphAttention(nnx.Module):
  """Region-aware graph attention over the N ROI tokens of each segment.

  Weights A[h, i, j] = softmax_j(q_h(e_i) . k_h(e_j) / sqrt(dh)) come from the ROI embeddings e
  (``embedding_attention=True``) or from the tokens themselves (ablation: plain self-attention).
  Self-loops are removed unless ``self_loops``; keys are restricted to visible ROIs and renormalised.
  The weights mix value projections of the tokens; an output projection follows.
  """

  def __init__(self, dim: int, emb_dim: int, num_heads: int, *, embedding_attention: bool,
               self_loops: bool, rngs: nnx.Rngs, dtype: Any = jnp.float32):
    dh = dim // num_heads
    qk_in = emb_dim if embedding_attention else dim
    self.wq = param(rngs, heads_init, (qk_in, num_heads, dh), ("embed", "heads", "kv"))
    self.wk = param(rngs, heads_init, (qk_in, num_heads, dh), ("embed", "heads", "kv"))
    self.wv = param(rngs, heads_init, (dim, num_heads, dh), ("embed", "heads", "kv"))
    self.wo = param(rngs, out_init, (num_heads, dh, dim), ("heads", "kv", "embed"))
    self.bo = param(rngs, zeros, (dim,), ("embed",))
    self.num_heads, self.head_dim = num_heads, dh
    self.embedding_attention = embedding_attention
    self.self_loops = self_loops
    self.dtype = dtype

  def _logits(self, src: Array) -> Array:
    """src [..., N, din] -> logits [..., H, N, N] (diagonal -> NEG unless self_loops)."""
    dt = self.dtype
    q = jnp.einsum("...nd,dhk->...hnk", src.astype(dt), self.wq[...].astype(dt))
    k = jnp.einsum("...nd,dhk->...hnk", src.astype(dt), self.wk[...].astype(dt))
    logits = jnp.einsum("...hnk,...hmk->...hnm", q, k,
                        preferred_element_type=jnp.float32) / math.sqrt(self.head_dim)
    if not self.self_loops:
      n = src.shape[-2]
      logits = jnp.where(jnp.eye(n, dtype=bool), NEG, logits)
    return logits

  def base_weights(self, emb: Array) -> Array:
    """Embedding attention [H, N, N] before key restriction (rows sum to 1)."""
    return jax.nn.softmax(self._logits(emb), axis=-1)

  def weights(self, h: Array, emb: Array, visible: Array | None) -> Array:
    """Effective weights [B, S, H, N, N]: rows sum to 1 over visible keys (for tests and plots)."""
    if self.embedding_attention:
      logits = jnp.broadcast_to(self._logits(emb), h.shape[:2] + (self.num_heads,) + (h.shape[2],) * 2)
    else:
      logits = self._logits(h)
    valid = None if visible is None else visible[:, :, None, None, :]
    return masked_softmax(logits, valid)

  def __call__(self, h: Array, emb: Array, visible: Array | None) -> Array:
    """h [B, S, N, dim] tokens, emb [N, emb_dim], visible bool [B, S, N] or None -> [B, S, N, dim]."""
    dt = self.dtype
    v = project(h.astype(dt), self.wv[...].astype(dt))  # [B, S, N, H, dh]
    if self.embedding_attention:
      # Shared [H, N, N] weights: renormalising over visible keys equals masking the softmax, so
      # one big matmul A @ (vis * v) and a normaliser A @ vis replace per-segment softmaxes.
      a = self.base_weights(emb)
      if visible is None:
        out = jnp.einsum("hnm,bsmhk->bsnhk", a.astype(dt), v)
      else:
        vis = visible.astype(dt)
        num = jnp.einsum("hnm,bsmhk->bsnhk", a.astype(dt), v * vis[..., None, None])
        den = jnp.einsum("hnm,bsm->bsnh", a, visible.astype(jnp.float32))
        ok = den > 0  # a row with no visible key mixes nothing (and must not give NaN gradients)
        scale = jnp.where(ok, 1.0 / jnp.where(ok, den, 1.0), 0.0)
        out = num * scale[..., None].astype(dt)
    else:
      p = self.weights(h, emb, visible)
      out = jnp.einsum("bshnm,bsmhk->bsnhk", p.astype(dt), v)
    return unproject(out, self.wo[...].astype(dt)) + self.bo[...].astype(dt)


class GraphBlock(nnx.Module):
  """Pre-LN block: h + drop(GraphAttention(LN h)); h + MLP(LN h)."""

  def __init__(self, dim: int, emb_dim: int, num_heads: int, mlp_ratio: float, *,
               embedding_attention: bool, self_loops: bool, rngs: nnx.Rngs, dtype: Any,
               dropout: float = 0.0):
    self.norm1 = LayerNorm(dim, rngs=rngs, dtype=dtype)
    self.attn = GraphAttention(dim, emb_dim, num_heads, embedding_attention=embedding_attention,
                               self_loops=self_loops, rngs=rngs, dtype=dtype)
    self.norm2 = LayerNorm(dim, rngs=rngs, dtype=dtype)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype, dropout=dropout)
    self.drop_attn = nnx.Dropout(dropout)

  def __call__(self, h: Array, emb: Array, visible: Array | None, *,
               rngs: nnx.Rngs | None = None) -> Array:
    h = h + self.drop_attn(self.attn(self.norm1(h), emb, visible), rngs=rngs)
    return h + self.mlp(self.norm2(h), rngs=rngs)


class RoiTemporalBlock(nnx.Module):
  """Pre-LN block attending, for each ROI separately, across the S segments of a window.

  Logits get a learned per-head bias for each (query segment, key segment) pair, so the block knows
  which segments are neighbours. ``key_valid`` [B, S, N] restricts the keys (e.g. to visible cells).
  """

  def __init__(self, dim: int, num_heads: int, mlp_ratio: float, num_segments: int, *,
               rngs: nnx.Rngs, dtype: Any, dropout: float = 0.0):
    self.norm1 = LayerNorm(dim, rngs=rngs, dtype=dtype)
    self.attn = SelfAttention(dim, num_heads, rngs=rngs, dtype=dtype)
    self.seg_bias = param(rngs, zeros, (num_heads, num_segments, num_segments),
                          ("heads", "seg", None))
    self.norm2 = LayerNorm(dim, rngs=rngs, dtype=dtype)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype, dropout=dropout)
    self.drop_attn = nnx.Dropout(dropout)

  def __call__(self, h: Array, key_valid: Array | None = None, *,
               rngs: nnx.Rngs | None = None) -> Array:
    """h [B, S, N, dim] -> [B, S, N, dim]."""
    s = h.shape[1]
    a = self.attn(self.norm1(h), key_valid, bias=self.seg_bias[:, :s, :s], axis=1)
    h = h + self.drop_attn(a, rngs=rngs)
    return h + self.mlp(self.norm2(h), rngs=rngs)


# ----------------------------------------------------------------------------------------------
# The models
# ----------------------------------------------------------------------------------------------

def _model_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return config.model if "model" in config else config


class BrainMAE(nnx.Module):
  """BrainMAE masked autoencoder; ``BrainMAE(config_or_config.model, rngs=nnx.Rngs(0))``."""

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    c = _model_section(config)
    _check_config(c)
    self.config = ml_collections.FrozenConfigDict(c)
    dt = jnp.dtype(c.dtype)
    self.dtype = dt
    d, n, dd, p = c.embed_dim, c.num_rois, c.decoder_dim, float(c.dropout)
    self.token_proj = Dense(c.seg_len, d, ("seg_len", "embed"), rngs=rngs, dtype=dt)
    self.mask_token = param(rngs, embed_init, (d,), ("embed",))
    if c.roi_embedding == "learned":
      self.roi_embed = param(rngs, embed_init, (n, d), ("roi", "embed"))
    else:
      self.roi_embed = None
    ga = dict(embedding_attention=c.embedding_attention, self_loops=c.self_loops, rngs=rngs,
              dtype=dt, dropout=p)
    if c.tse == "sg":
      self.sa_blocks = nnx.List([])
      self.ga_blocks = nnx.List([GraphBlock(d, d, c.num_heads, c.mlp_ratio, **ga)
                                 for _ in range(c.tse_depth)])
    else:  # AG-TSE: self-attention blocks over ROI tokens, then one graph-attention block
      self.sa_blocks = nnx.List([AttentionBlock(d, c.num_heads, c.mlp_ratio, rngs=rngs, dtype=dt,
                                                dropout=p)
                                 for _ in range(max(c.tse_depth - 1, 0))])
      self.ga_blocks = nnx.List([GraphBlock(d, d, c.num_heads, c.mlp_ratio, **ga)])
    enc_t = c.roi_temporal in ("encoder", "both")
    dec_t = c.roi_temporal in ("decoder", "both")
    self.enc_temporal = nnx.List([RoiTemporalBlock(d, c.num_heads, c.mlp_ratio, c.num_segments,
                                                   rngs=rngs, dtype=dt, dropout=p)]
                                 if enc_t else [])
    self.tse_norm = LayerNorm(d, rngs=rngs, dtype=dt)
    if c.pooling == "attention":
      self.pool_query = param(rngs, embed_init, (d,), ("embed",))
      self.pool_key = Dense(d, d, ("embed", None), rngs=rngs, dtype=dt)
    else:
      self.pool_query = None
      self.pool_key = None
    self.seg_pos = param(rngs, embed_init, (c.num_segments, d), ("seg", "embed"))
    self.temporal = nnx.List([AttentionBlock(d, c.num_heads, c.mlp_ratio, rngs=rngs, dtype=dt,
                                             dropout=p)
                              for _ in range(c.encoder_depth)])
    self.enc_norm = LayerNorm(d, rngs=rngs, dtype=dt)
    # Decoder.
    self.dec_token = Dense(d, dd, ("embed", None), rngs=rngs, dtype=dt)
    self.dec_state = Dense(d, dd, ("embed", None), rngs=rngs, dtype=dt, use_bias=False)
    self.dec_roi = Dense(d, dd, ("embed", None), rngs=rngs, dtype=dt, use_bias=False)
    self.dec_temporal = nnx.List([RoiTemporalBlock(dd, c.decoder_heads, c.mlp_ratio, c.num_segments,
                                                   rngs=rngs, dtype=dt, dropout=p)]
                                 if dec_t else [])
    self.dec_blocks = nnx.List([GraphBlock(dd, d, c.decoder_heads, c.mlp_ratio, **ga)
                                for _ in range(c.decoder_depth)])
    self.dec_norm = LayerNorm(dd, rngs=rngs, dtype=dt)
    # With the linear prior the decoder adds a residual that starts at zero: training starts from
    # the ridge prediction.
    self.dec_out = Dense(dd, c.seg_len, ("embed", "seg_len"), rngs=rngs, dtype=dt,
                         **({"kernel_init": zeros} if c.linear_prior else {}))
    if c.linear_prior:
      self.prior_mean = PriorStat(jnp.zeros((n,), jnp.float32), out_sharding=("roi",),
                                  eager_sharding=False)
      self.prior_cov = PriorStat(jnp.zeros((n, n), jnp.float32), out_sharding=("roi", None),
                                 eager_sharding=False)
    else:
      self.prior_mean = self.prior_cov = None
    # Dropout on the input tokens and on the segment states (the blocks hold their own).
    self.drop_tokens = nnx.Dropout(p)
    self.drop_segments = nnx.Dropout(p)

  def set_linear_prior(self, mean: Any, cov: Any) -> None:
    """Sets the linear prior's ROI mean [N] and covariance [N, N] (config.model.linear_prior)."""
    if self.prior_mean is None:
      raise ValueError("set_linear_prior() needs config.model.linear_prior=True")
    n = self.config.num_rois
    mean, cov = jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32)
    if mean.shape != (n,) or cov.shape != (n, n):
      raise ValueError(f"linear prior: expected mean [{n}] and cov [{n}, {n}], got {mean.shape} "
                       f"and {cov.shape}")
    self.prior_mean[...] = mean
    self.prior_cov[...] = cov

  def _prior(self, x: Array, mask: Array | None) -> Array | None:
    if self.prior_mean is None or mask is None:
      return None
    return linear_prior(x, mask, self.prior_mean[...], self.prior_cov[...],
                        float(self.config.prior_lam))

  # -- embeddings and interpretability ------------------------------------------------------------
  def roi_embeddings(self) -> Array:
    """ROI embeddings [N, d] (learned, or the fixed sinusoidal ones)."""
    if self.roi_embed is not None:
      return self.roi_embed[...]
    c = self.config
    return jnp.asarray(sinusoidal_embedding(c.num_rois, c.embed_dim))

  def roi_similarity(self) -> Array:
    """Cosine similarity of the ROI embeddings [N, N]."""
    e = self.roi_embeddings().astype(jnp.float32)
    e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    return e @ e.T

  def roi_attention(self, layer: int = 0) -> Array:
    """Head-averaged embedding graph attention [N, N] of TSE graph-attention layer ``layer``."""
    if not self.config.embedding_attention:
      raise ValueError("roi_attention() needs config.model.embedding_attention=True: with the "
                       "ablation the attention depends on the input")
    attn = self.ga_blocks[layer].attn
    return jnp.mean(attn.base_weights(self.roi_embeddings()), axis=0)

  # -- forward ----------------------------------------------------------------------------------
  def _check_input(self, x: Array, mask: Array | None, rngs: nnx.Rngs | None) -> None:
    c = self.config
    if x.ndim != 4 or x.shape[2] != c.num_rois or x.shape[3] != c.seg_len:
      raise ValueError(f"BrainMAE input x has shape {tuple(x.shape)}; expected [B, S, N={c.num_rois}, "
                       f"L={c.seg_len}]")
    if x.shape[1] > c.num_segments:
      raise ValueError(f"BrainMAE input has S={x.shape[1]} segments; config.model.num_segments="
                       f"{c.num_segments} is the maximum")
    if mask is not None and tuple(mask.shape) != tuple(x.shape[:3]):
      raise ValueError(f"mask has shape {tuple(mask.shape)}; expected {tuple(x.shape[:3])} (B, S, N)")
    if rngs is None and c.dropout > 0 and not self.drop_tokens.deterministic:
      raise ValueError(f"BrainMAE in train mode with config.model.dropout={c.dropout} needs "
                       "rngs=nnx.Rngs(dropout=key); call model.eval() for deterministic outputs")

  def _encode(self, x: Array, mask: Array | None, rngs: nnx.Rngs | None,
              prior: Array | None = None) -> dict:
    dt = self.dtype
    emb = self.roi_embeddings()
    if prior is not None:  # hidden cells carry the linear prior, marked by the mask token
      h = self.token_proj(prior) + jnp.where(mask[..., None], self.mask_token[...].astype(dt), 0)
    else:
      h = self.token_proj(x)
      if mask is not None:
        h = jnp.where(mask[..., None], self.mask_token[...].astype(dt), h)
    h = self.drop_tokens(h + emb.astype(dt), rngs=rngs)
    visible = None if mask is None else ~mask
    for blk in self.sa_blocks:
      h = blk(h, visible, rngs=rngs)
    for blk in self.ga_blocks:
      h = blk(h, emb, visible, rngs=rngs)
    for blk in self.enc_temporal:
      h = blk(h, visible, rngs=rngs)
    tokens = self.tse_norm(h)
    # Segment states: pooling over visible ROI tokens.
    w = jnp.ones(tokens.shape[:3], jnp.float32) if visible is None else visible.astype(jnp.float32)
    if self.pool_query is not None:
      keys = self.pool_key(tokens).astype(jnp.float32)
      logits = keys @ self.pool_query[...] / math.sqrt(tokens.shape[-1])
      w = masked_softmax(logits, w > 0)
    else:
      w = w / jnp.sum(w, axis=-1, keepdims=True)
    seg_states = jnp.einsum("bsn,bsnd->bsd", w.astype(dt), tokens)
    z = self.drop_segments(seg_states + self.seg_pos[: x.shape[1]].astype(dt), rngs=rngs)
    for blk in self.temporal:
      z = blk(z, None, rngs=rngs)
    states = self.enc_norm(z)
    return {"tokens": tokens, "segment_states": seg_states, "states": states,
            "pooled": jnp.mean(states, axis=1)}

  def encode(self, x: Array, mask: Array | None = None, *, rngs: nnx.Rngs | None = None) -> dict:
    """Encoder outputs: tokens [B,S,N,d], segment_states [B,S,d], states [B,S,d], pooled [B,d]."""
    self._check_input(x, mask, rngs)
    return self._encode(x, mask, rngs)

  def __call__(self, x: Array, mask: Array | None = None, *,
               rngs: nnx.Rngs | None = None) -> Array:
    """Reconstruction [B, S, N, L] of every cell; masked cells' inputs never reach the output."""
    self._check_input(x, mask, rngs)
    prior = self._prior(x, mask)
    enc = self._encode(x, mask, rngs, prior)
    emb = self.roi_embeddings()
    dt = self.dtype
    g = (self.dec_token(enc["tokens"]) + self.dec_state(enc["states"])[:, :, None, :]
         + self.dec_roi(emb.astype(dt)))
    # Every decoder token depends on visible cells only, so all keys may be used here.
    for blk in self.dec_temporal:
      g = blk(g, None, rngs=rngs)
    for blk in self.dec_blocks:
      g = blk(g, emb, None, rngs=rngs)
    out = self.dec_out(self.dec_norm(g))
    return (out if prior is None else prior + out).astype(x.dtype)


class BrainMAEForPrediction(nnx.Module):
  """A BrainMAE encoder (``encoder/...``) with a linear or small-MLP head on the pooled state.

  A frozen probe is the engine's business (it freezes parameters by path, e.g. ``encoder/.*``).
  """

  def __init__(self, config: ml_collections.ConfigDict, num_outputs: int, *, rngs: nnx.Rngs,
               head: str = "linear", encoder: BrainMAE | None = None):
    if head not in ("linear", "mlp"):
      raise ConfigError(f"head={head!r}: expected 'linear' or 'mlp'")
    if not isinstance(num_outputs, int) or num_outputs < 1:
      raise ConfigError(f"num_outputs={num_outputs!r}: expected a positive integer")
    self.encoder = encoder if encoder is not None else BrainMAE(config, rngs=rngs)
    d = self.encoder.config.embed_dim
    dt = self.encoder.dtype
    self.head_norm = LayerNorm(d, rngs=rngs, dtype=dt)
    if head == "mlp":
      self.hidden = Dense(d, d, ("embed", "mlp"), rngs=rngs, dtype=dt)
      self.out = Dense(d, num_outputs, ("mlp", "vocab"), rngs=rngs, dtype=dt)
    else:
      self.hidden = None
      self.out = Dense(d, num_outputs, ("embed", "vocab"), rngs=rngs, dtype=dt)

  def __call__(self, x: Array, *, rngs: nnx.Rngs | None = None, with_penalty: bool = False):
    """Predictions [B, num_outputs] (logits or regression values), float32; with ``with_penalty``,
    (predictions, 0.0): BrainMAE adds no penalty to the fine-tuning loss."""
    h = self.head_norm(self.encoder.encode(x, None, rngs=rngs)["pooled"])
    if self.hidden is not None:
      h = jax.nn.gelu(self.hidden(h))
    out = self.out(h).astype(jnp.float32)
    return (out, jnp.zeros((), jnp.float32)) if with_penalty else out


# The model-family interface of jaxbrain.models (what the pretraining and fine-tuning tasks use).
build = BrainMAE
build_for_prediction = BrainMAEForPrediction
