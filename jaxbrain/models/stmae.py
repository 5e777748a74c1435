"""ST-MAE (Choi et al., arXiv 2312.01994): generative masked pretraining on dynamic FC, in Flax NNX.

Input windows are the same ``x`` float32 [B, S, N, L] as BrainMAE's; the model reads them as one
series [B, N, T = S*L] and computes its dynamic FC on the accelerator (``jaxbrain.data.dynamic_fc``:
sliding windows of ``fc_window`` frames every ``fc_stride``, the top ``sparsity`` % of edges kept).

Encoder, in the STAGIN style (Kim et al., NeurIPS 2021) the paper builds on:
  node features v[w, i] = A e_i + B g(t_w)   (a learnable ROI embedding e_i and a GRU time encoding
                                              of the BOLD series up to window w's last frame t_w)
  -> ``gin_depth`` GIN layers h <- MLP((1 + eps) h + Adj[w] h) over each window's dense binary graph
  -> SERO readout (squeeze-excitation attention over nodes) per window
  -> a transformer over the window sequence; ``pooled`` is the mean over (visible) windows.

Pretraining masks ``node_mask_ratio`` of the ROIs (in every window) and a block of
``window_mask_ratio`` of the windows, then reconstructs what was hidden through a light decoder
used only in pretraining: the masked cells' FC rows (MSE, diagonal excluded) and their edges (BCE on
the sparsified adjacency, inner-product edge decoder).

No masked content reaches the encoder: masked ROIs' signals are zeroed in the GRU input and their
edges dropped; every frame of a masked window is zeroed in the GRU input and masked windows have no
edges; the visible graphs are sparsified over visible edges only (their threshold does not depend
on masked ROIs). Windows overlap when ``fc_stride < fc_window``, so a visible window next to a
masked block shares frames with it (its own FC is visible content).

Deviations, documented: LayerNorm replaces GIN's BatchNorm (masked cells would enter batch
statistics); one readout and one transformer on the last GIN layer (STAGIN keeps one per layer).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxbrain.data import dynamic_fc
from jaxbrain.data.masking import num_masked
from jaxbrain.models.brainmae import _model_section
from jaxbrain.models.layers import AttentionBlock, Dense, LayerNorm, embed_init, param
from jaxtrain.errors import ConfigError

Array = jax.Array

LOGICAL_AXES = ("embed", "mlp", "heads", "kv", "roi", "window", "vocab")


def default_model_config() -> ml_collections.ConfigDict:
  """Model section of a training config (``config.model``) with the defaults."""
  c = ml_collections.ConfigDict()
  c.name = "stmae"
  c.num_rois = 116          # N (0 in a training config: taken from the data)
  c.seg_len = 21            # L frames per segment (0: from the data); the series is S*L frames
  c.num_segments = 16       # S, segments per window of the data
  c.fc_window = 50          # dynamic-FC window, frames (the paper's 50 on UK Biobank)
  c.fc_stride = 16          # hop between FC windows, frames (the paper's 16; STAGIN's 3)
  c.sparsity = 30.0         # percent of edges kept per window
  c.hidden_dim = 128
  c.gin_depth = 4
  c.num_heads = 4
  c.transformer_depth = 1
  c.mlp_ratio = 2.0
  c.decoder_dim = 64
  c.node_mask_ratio = 0.3   # ROIs masked in every window
  c.window_mask_ratio = 0.3  # windows masked, one contiguous block
  c.feature_weight = 1.0    # MSE on the masked cells' FC rows
  c.edge_weight = 1.0       # BCE on the masked cells' edges
  c.orthogonal_reg = 0.0    # STAGIN's orthogonality penalty on node features (pretraining and fine-tuning)
  c.dropout = 0.0
  c.dtype = "float32"
  return c


def _check_config(c: ml_collections.ConfigDict) -> None:
  def bad(field: str, what: str):
    raise ConfigError(f"config.model.{field}={c[field]!r}: expected {what}")
  for f in ("num_rois", "seg_len", "num_segments", "fc_window", "fc_stride", "hidden_dim",
            "gin_depth", "num_heads", "decoder_dim"):
    if isinstance(c[f], bool) or not isinstance(c[f], int) or c[f] < 1:
      bad(f, "a positive integer")
  if c.fc_window < 2:
    bad("fc_window", "at least 2 frames (a correlation)")
  if c.fc_window > c.num_segments * c.seg_len:
    bad("fc_window", f"at most the window's num_segments * seg_len = {c.num_segments * c.seg_len} "
                     "frames")
  if not 0 < float(c.sparsity) <= 100:
    bad("sparsity", "a percentage in (0, 100]")
  if c.hidden_dim % c.num_heads:
    bad("hidden_dim", f"a multiple of num_heads={c.num_heads}")
  if not isinstance(c.transformer_depth, int) or c.transformer_depth < 0:
    bad("transformer_depth", "a non-negative integer")
  if not 0.0 <= float(c.node_mask_ratio) < 1.0 or num_masked(c.num_rois, c.node_mask_ratio) > c.num_rois - 2:
    bad("node_mask_ratio", f"a ratio in [0, 1) leaving at least 2 of num_rois={c.num_rois} visible")
  w = dynamic_fc.num_windows(c.num_segments * c.seg_len, c.fc_window, c.fc_stride)
  if not 0.0 <= float(c.window_mask_ratio) < 1.0 or num_masked(w, c.window_mask_ratio) >= w:
    bad("window_mask_ratio", f"a ratio in [0, 1) leaving at least one of the {w} FC windows visible")
  for f in ("feature_weight", "edge_weight", "orthogonal_reg"):
    if not float(c[f]) >= 0:
      bad(f, "a weight >= 0")
  if not 0.0 <= float(c.dropout) < 1.0:
    bad("dropout", "a rate in [0, 1)")
  if c.dtype not in ("float32", "bfloat16", "float16"):
    bad("dtype", "'float32', 'bfloat16' or 'float16'")


# ----------------------------------------------------------------------------------------------
# Masks and graphs
# ----------------------------------------------------------------------------------------------

def random_masks(rng: Array, batch: int, num_rois: int, num_windows: int, node_ratio: float,
                 window_ratio: float) -> tuple[Array, Array]:
  """(node mask bool [B, N], window mask bool [B, W]), True = masked: num_masked(N, node_ratio)
  ROIs at random and one block of num_masked(W, window_ratio) consecutive windows at a random
  start."""
  kn, kw = num_masked(num_rois, node_ratio), num_masked(num_windows, window_ratio)
  r_node, r_win = jax.random.split(rng)
  u = jax.random.uniform(r_node, (batch, num_rois))
  node = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1) < kn
  start = jax.random.randint(r_win, (batch, 1), 0, num_windows - kw + 1)
  t = jnp.arange(num_windows)[None, :]
  window = (t >= start) & (t < start + kw)
  return node, window


def visible_graph(fc: Array, visible: Array | None, num_visible: int, sparsity: float) -> Array:
  """Binary adjacency [B, W, N, N] of the top ``sparsity`` % of the edges among visible nodes
  (``visible`` bool [B, W, N], ``num_visible`` of them in a window that has any; None: all), the
  threshold taken over those edges only; a window with no visible node has no edge."""
  if visible is None:
    return dynamic_fc.sparsify(fc, sparsity=float(sparsity))
  keep = max(1, math.ceil(num_visible * (num_visible - 1) / 2 * sparsity / 100.0))
  return dynamic_fc.top_edges(fc, visible[..., :, None] & visible[..., None, :], keep)


# ----------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------

class GRU(nnx.Module):
  """A GRU over time (Cho et al.) whose input projections are one matmul over all frames."""

  def __init__(self, din: int, dim: int, *, rngs: nnx.Rngs, dtype):
    self.inp = Dense(din, 3 * dim, ("roi", "mlp"), rngs=rngs, dtype=dtype)
    self.rec = Dense(dim, 3 * dim, ("embed", "mlp"), rngs=rngs, dtype=dtype, use_bias=False)
    self.dim = dim

  def __call__(self, x: Array) -> Array:
    """x [B, T, din] -> hidden states [B, T, dim]."""
    gx = jnp.swapaxes(self.inp(x), 0, 1).astype(jnp.float32)  # [T, B, 3H]
    w = self.rec.kernel[...].astype(jnp.float32)
    d = self.dim

    def step(h, g):
      r_h = h @ w
      z = jax.nn.sigmoid(g[:, :d] + r_h[:, :d])
      r = jax.nn.sigmoid(g[:, d:2 * d] + r_h[:, d:2 * d])
      c = jnp.tanh(g[:, 2 * d:] + r * r_h[:, 2 * d:])
      h = (1 - z) * c + z * h
      return h, h

    _, hs = jax.lax.scan(step, jnp.zeros((x.shape[0], d), jnp.float32), gx)
    return jnp.swapaxes(hs, 0, 1).astype(x.dtype)


class GINLayer(nnx.Module):
  """h <- h + MLP(LN((1 + eps) h + A h)) on dense adjacency A [..., N, N] (a residual GIN layer)."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype, dropout: float):
    self.eps = param(rngs, nnx.initializers.zeros_init(), (), ())
    self.norm = LayerNorm(dim, rngs=rngs, dtype=dtype)
    self.fc1 = Dense(dim, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.fc2 = Dense(hidden, dim, ("mlp", "embed"), rngs=rngs, dtype=dtype)
    self.drop = nnx.Dropout(dropout)

  def __call__(self, h: Array, adj: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    agg = (1.0 + self.eps[...]).astype(h.dtype) * h + jnp.einsum("...ij,...jd->...id",
                                                                 adj.astype(h.dtype), h)
    return h + self.drop(self.fc2(jax.nn.gelu(self.fc1(self.norm(agg)))), rngs=rngs)


class SERO(nnx.Module):
  """Squeeze-excitation readout (STAGIN): node weights sigmoid(MLP(mean of node features)) [N],
  readout = the weighted mean of the (visible) node features."""

  def __init__(self, dim: int, num_nodes: int, *, rngs: nnx.Rngs, dtype):
    self.squeeze = Dense(dim, dim, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.excite = Dense(dim, num_nodes, ("mlp", "roi"), rngs=rngs, dtype=dtype)

  def __call__(self, h: Array, visible: Array | None) -> tuple[Array, Array]:
    """h [..., N, d] -> (readout [..., d], node weights [..., N])."""
    v = jnp.ones(h.shape[:-1], h.dtype) if visible is None else visible.astype(h.dtype)
    count = jnp.maximum(jnp.sum(v, -1, keepdims=True), 1.0)
    mean = jnp.sum(h * v[..., None], -2) / count
    a = jax.nn.sigmoid(self.excite(jax.nn.gelu(self.squeeze(mean)))) * v
    return jnp.sum(h * a[..., None], -2) / count, a


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

class STMAE(nnx.Module):
  """ST-MAE encoder + its pretraining decoder; ``STMAE(config_or_config.model, rngs=nnx.Rngs(0))``."""

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    c = _model_section(config)
    _check_config(c)
    self.config = ml_collections.FrozenConfigDict(c)
    dt = jnp.dtype(c.dtype)
    self.dtype = dt
    d, n, dd, p = c.hidden_dim, c.num_rois, c.decoder_dim, float(c.dropout)
    self.num_frames = c.num_segments * c.seg_len
    self.num_windows = dynamic_fc.num_windows(self.num_frames, c.fc_window, c.fc_stride)
    self.roi_embed = param(rngs, embed_init, (n, d), ("roi", "embed"))
    self.roi_proj = Dense(d, d, ("embed", "mlp"), rngs=rngs, dtype=dt)
    self.gru = GRU(n, d, rngs=rngs, dtype=dt)
    self.time_proj = Dense(d, d, ("embed", "mlp"), rngs=rngs, dtype=dt, use_bias=False)
    self.mask_token = param(rngs, embed_init, (d,), ("embed",))
    hidden = int(d * c.mlp_ratio)
    self.gin = nnx.List([GINLayer(d, hidden, rngs=rngs, dtype=dt, dropout=p)
                         for _ in range(c.gin_depth)])
    self.node_norm = LayerNorm(d, rngs=rngs, dtype=dt)
    self.readout = SERO(d, n, rngs=rngs, dtype=dt)
    self.temporal = nnx.List([AttentionBlock(d, c.num_heads, c.mlp_ratio, rngs=rngs, dtype=dt,
                                             dropout=p) for _ in range(c.transformer_depth)])
    self.enc_norm = LayerNorm(d, rngs=rngs, dtype=dt)
    # The light decoder (pretraining only).
    self.dec_node = Dense(d, dd, ("embed", None), rngs=rngs, dtype=dt)
    self.dec_state = Dense(d, dd, ("embed", None), rngs=rngs, dtype=dt, use_bias=False)
    self.dec_roi = Dense(d, dd, ("embed", None), rngs=rngs, dtype=dt, use_bias=False)
    self.dec_hidden = Dense(dd, dd, (None, None), rngs=rngs, dtype=dt)
    self.dec_norm = LayerNorm(dd, rngs=rngs, dtype=dt)
    self.dec_feature = Dense(dd, n, (None, "roi"), rngs=rngs, dtype=dt)
    self.dec_edge = Dense(dd, dd, (None, None), rngs=rngs, dtype=dt, use_bias=False)
    self.edge_bias = param(rngs, nnx.initializers.zeros_init(), (), ())
    self.drop_nodes = nnx.Dropout(p)

  def roi_similarity(self) -> Array:
    """Cosine similarity of the learned ROI embeddings [N, N]."""
    e = self.roi_embed[...].astype(jnp.float32)
    e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    return e @ e.T

  # -- inputs -----------------------------------------------------------------------------------
  def _check_input(self, x: Array, rngs: nnx.Rngs | None) -> None:
    c = self.config
    if x.ndim != 4 or x.shape[1] != c.num_segments or x.shape[2] != c.num_rois or x.shape[3] != c.seg_len:
      raise ValueError(f"ST-MAE input x has shape {tuple(x.shape)}; expected [B, S={c.num_segments}, "
                       f"N={c.num_rois}, L={c.seg_len}]")
    if rngs is None and c.dropout > 0 and not self.drop_nodes.deterministic:
      raise ValueError(f"ST-MAE in train mode with config.model.dropout={c.dropout} needs "
                       "rngs=nnx.Rngs(dropout=key); call model.eval() for deterministic outputs")

  @staticmethod
  def series(x: Array) -> Array:
    """Windows x [B, S, N, L] as series [B, N, S*L]."""
    b, s, n, l = x.shape
    return jnp.swapaxes(x, 1, 2).reshape(b, n, s * l)

  def dynamic_fc(self, x: Array) -> tuple[Array, Array]:
    """(FC [B, W, N, N], sparsified adjacency [B, W, N, N]) of windows x: the targets."""
    c = self.config
    fc = dynamic_fc.window_fc(self.series(x), window=c.fc_window, stride=c.fc_stride)
    return fc, dynamic_fc.sparsify(fc, sparsity=float(c.sparsity))

  # -- encoder ----------------------------------------------------------------------------------
  def encode(self, x: Array, node_mask: Array | None = None, window_mask: Array | None = None, *,
             rngs: nnx.Rngs | None = None, fc: Array | None = None) -> dict:
    """Encoder outputs: nodes [B, W, N, d] (last GIN layer), window_states [B, W, d] (readouts),
    states [B, W, d] (after the transformer), pooled [B, d], node_weights [B, W, N] (SERO);
    with masks (True = hidden), nothing hidden reaches them."""
    self._check_input(x, rngs)
    c, dt = self.config, self.dtype
    if fc is None:
      fc = dynamic_fc.window_fc(self.series(x), window=c.fc_window, stride=c.fc_stride)
    b, w, n = fc.shape[0], fc.shape[1], fc.shape[2]
    ends = dynamic_fc.window_ends(self.num_frames, c.fc_window, c.fc_stride)
    # GRU input: frames [B, T, N], hidden ROIs and every frame of a hidden window zeroed.
    frames = jnp.swapaxes(self.series(x), 1, 2)
    visible = None
    if node_mask is not None or window_mask is not None:
      node_mask = jnp.zeros((b, n), bool) if node_mask is None else node_mask
      window_mask = jnp.zeros((b, w), bool) if window_mask is None else window_mask
      starts = jnp.asarray(ends - c.fc_window + 1)
      t = jnp.arange(self.num_frames)
      covers = (t[None, :] >= starts[:, None]) & (t[None, :] <= jnp.asarray(ends)[:, None])  # [W, T]
      hidden_frame = jnp.any(window_mask[:, :, None] & covers[None], axis=1)  # [B, T]
      keep = (~hidden_frame)[:, :, None] & (~node_mask)[:, None, :]
      frames = jnp.where(keep, frames, 0.0)
      visible = (~node_mask)[:, None, :] & (~window_mask)[:, :, None]  # [B, W, N]
    time_code = self.gru(frames.astype(dt))[:, ends]  # [B, W, d]
    n_vis = n - num_masked(n, c.node_mask_ratio) if visible is not None else n
    adj = visible_graph(fc, visible, n_vis, float(c.sparsity))
    emb = self.roi_proj(self.roi_embed[...].astype(dt))  # [N, d]
    h = emb[None, None] + self.time_proj(time_code)[:, :, None, :]
    if visible is not None:
      h = h + jnp.where(visible[..., None], 0.0, self.mask_token[...].astype(dt))
    h = self.drop_nodes(h, rngs=rngs)
    for layer in self.gin:
      h = layer(h, adj, rngs=rngs)
    nodes = self.node_norm(h)
    readout, weights = self.readout(nodes, visible)
    z = readout
    win_valid = None if window_mask is None else ~window_mask
    for blk in self.temporal:
      z = blk(z, win_valid, rngs=rngs)
    states = self.enc_norm(z)
    wv = jnp.ones((b, w), dt) if win_valid is None else win_valid.astype(dt)
    pooled = jnp.sum(states * wv[..., None], 1) / jnp.sum(wv, 1, keepdims=True)
    return {"nodes": nodes, "tokens": nodes, "window_states": readout, "states": states,
            "pooled": pooled, "node_weights": weights, "visible": visible}

  # -- decoder ----------------------------------------------------------------------------------
  def __call__(self, x: Array, node_mask: Array | None = None, window_mask: Array | None = None,
               *, rngs: nnx.Rngs | None = None, fc: Array | None = None) -> dict:
    """Reconstructions of every cell: fc_rows [B, W, N, N] and edge_logits [B, W, N, N], plus the
    encoder outputs (``encode``)."""
    enc = self.encode(x, node_mask, window_mask, rngs=rngs, fc=fc)
    dt = self.dtype
    g = (self.dec_node(enc["nodes"]) + self.dec_state(enc["states"])[:, :, None, :]
         + self.dec_roi(self.roi_embed[...].astype(dt)))
    g = self.dec_norm(g + self.dec_hidden(jax.nn.gelu(g)))
    q = self.dec_edge(g)
    logits = jnp.einsum("bwid,bwjd->bwij", q, q, preferred_element_type=jnp.float32)
    logits = logits / math.sqrt(q.shape[-1]) + self.edge_bias[...]
    return {**enc, "fc_rows": self.dec_feature(g).astype(jnp.float32), "edge_logits": logits}


def orthogonality(nodes: Array) -> Array:
  """STAGIN's orthogonality penalty: mean squared deviation of the node features' cosine Gram
  matrix [N, N] (per window) from the identity."""
  u = nodes.astype(jnp.float32)
  u = u / jnp.maximum(jnp.linalg.norm(u, axis=-1, keepdims=True), 1e-6)
  gram = jnp.einsum("...id,...jd->...ij", u, u)
  return jnp.mean(jnp.square(gram - jnp.eye(gram.shape[-1])))


def reconstruction_losses(out: dict, fc: Array, adj: Array, node_mask: Array, window_mask: Array,
                          per_sample: bool = False) -> dict[str, Array]:
  """MSE of the hidden cells' FC rows (diagonal excluded) and BCE of their edges (pairs i != j
  with cell (w, i) or (w, j) hidden), over the batch or, with ``per_sample``, per sample [B]."""
  hidden = node_mask[:, None, :] | window_mask[:, :, None]  # [B, W, N]
  off = 1.0 - jnp.eye(fc.shape[-1], dtype=jnp.float32)
  cell = hidden.astype(jnp.float32)[..., None] * off  # rows of hidden cells
  pair = jnp.maximum(cell, jnp.swapaxes(cell, -1, -2))
  logits = out["edge_logits"]
  bce = jnp.maximum(logits, 0) - logits * adj + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  axes = (1, 2, 3) if per_sample else None

  def mean(err, w):
    return jnp.sum(err * w, axis=axes) / jnp.maximum(jnp.sum(w, axis=axes), 1.0)
  return {"feature_mse": mean(jnp.square(out["fc_rows"] - fc), cell), "edge_bce": mean(bce, pair)}


def pretrain_loss(model: STMAE, batch: dict, rng: Array, step: Array | int) -> tuple[Array, dict]:
  """The engine's ``loss_fn``: weighted feature MSE + edge BCE on hidden cells (+ orthogonality)."""
  del step
  c = model.config
  x = batch["x"]
  mask_rng, drop_rng = jax.random.split(rng)
  fc, adj = model.dynamic_fc(x)
  node_mask, window_mask = random_masks(mask_rng, x.shape[0], c.num_rois, model.num_windows,
                                        c.node_mask_ratio, c.window_mask_ratio)
  out = model(x, node_mask, window_mask, rngs=nnx.Rngs(dropout=drop_rng), fc=fc)
  terms = reconstruction_losses(out, fc, adj, node_mask, window_mask)
  loss = c.feature_weight * terms["feature_mse"] + c.edge_weight * terms["edge_bce"]
  if c.orthogonal_reg > 0:
    terms["orthogonality"] = orthogonality(out["nodes"])
    loss = loss + c.orthogonal_reg * terms["orthogonality"]
  return loss, {"loss": loss, **terms}


class STMAEForPrediction(nnx.Module):
  """An ST-MAE encoder (``encoder/...``) with a linear head on the pooled state."""

  def __init__(self, config: ml_collections.ConfigDict, num_outputs: int, *, rngs: nnx.Rngs):
    if not isinstance(num_outputs, int) or num_outputs < 1:
      raise ConfigError(f"num_outputs={num_outputs!r}: expected a positive integer")
    self.encoder = STMAE(config, rngs=rngs)
    d = self.encoder.config.hidden_dim
    self.head_norm = LayerNorm(d, rngs=rngs, dtype=self.encoder.dtype)
    self.out = Dense(d, num_outputs, ("embed", "vocab"), rngs=rngs, dtype=self.encoder.dtype)

  def __call__(self, x: Array, *, rngs: nnx.Rngs | None = None, with_penalty: bool = False):
    """Predictions [B, num_outputs], float32; with ``with_penalty``, (predictions, the weighted
    orthogonality penalty of config.model.orthogonal_reg)."""
    enc = self.encoder.encode(x, rngs=rngs)
    out = self.out(self.head_norm(enc["pooled"])).astype(jnp.float32)
    if not with_penalty:
      return out
    weight = float(self.encoder.config.orthogonal_reg)
    return out, (weight * orthogonality(enc["nodes"]) if weight > 0 else jnp.zeros((), jnp.float32))


def for_segments(model: STMAE, num_segments: int) -> STMAE:
  """The same parameters for windows of ``num_segments`` segments (e.g. short fingerprinting
  queries); where those are shorter than ``fc_window`` frames, one FC window spans all of them."""
  c = model.config.as_configdict()
  c.num_segments = int(num_segments)
  c.fc_window = min(int(c.fc_window), c.num_segments * int(c.seg_len))
  c.window_mask_ratio = 0.0  # encoding only: no window is masked
  short = nnx.eval_shape(lambda: STMAE(c, rngs=nnx.Rngs(0)))  # shapes only: no discarded init
  nnx.update(short, nnx.state(model))
  return short


# The model-family interface of jaxbrain.models.
build = STMAE
build_for_prediction = STMAEForPrediction
