"""BrainMAE model: shapes, masking invariants, graph attention, loss, ablations, gradients,
dropout modes."""
import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbrain.models import brainmae as bm
from jaxtrain.errors import ConfigError

B, S, N, L = 2, 3, 6, 5
# XLA's CPU optimisation passes dominate this file's run time; tests do not need optimised code.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def tiny_config(**overrides):
  c = bm.default_model_config()
  c.update(dict(num_rois=N, seg_len=L, num_segments=4, embed_dim=16, num_heads=2, tse_depth=1,
                encoder_depth=1, decoder_dim=8, decoder_heads=2, decoder_depth=1, mlp_ratio=2.0,
                mask_ratio=0.5))
  if overrides.get("tse") == "ag":
    c.tse_depth = 2  # one self-attention block, then the graph-attention block
  c.update(overrides)
  return c


def build(fn):
  """fn()'s module with deterministic random parameters filled in by NumPy.

  Compiling the real initialisers costs seconds per configuration; these tests check invariants
  that hold for any parameter values (test_real_initialisation covers the initialisers).
  """
  graphdef, state = nnx.split(nnx.eval_shape(fn))

  def fill(path, var):
    name = "/".join(map(str, path))
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    shape = var.shape
    if name.endswith("scale"):
      value = 1.0 + 0.1 * rng.normal(size=shape)
    elif len(shape) == 1:
      value = 0.1 * rng.normal(size=shape)
    else:
      fan_in = shape[0] * (shape[1] if name.endswith("wo") else 1)
      value = rng.normal(size=shape) / np.sqrt(fan_in)
    return var.replace(jnp.asarray(value, jnp.float32))

  state = nnx.from_flat_state([(p, fill(p, v)) for p, v in nnx.to_flat_state(state)])
  return nnx.merge(graphdef, state)


_models = {}


def make(**overrides):
  """A tiny BrainMAE, cached per configuration (tests never mutate models)."""
  key = tuple(sorted(overrides.items()))
  if key not in _models:
    _models[key] = build(lambda: bm.BrainMAE(tiny_config(**overrides), rngs=nnx.Rngs(0)))
  return _models[key]


mask_fn = jax.jit(bm.random_mask, static_argnums=(1, 2, 3, 4), compiler_options=FAST)
interpret = jax.jit(lambda m: (m.roi_attention(), m.roi_similarity()), compiler_options=FAST)


@jax.jit(compiler_options=FAST)
def attention_parts(attn, h, emb, visible):
  return attn.weights(h, emb, visible), attn.base_weights(emb), attn(h, emb, visible)


@jax.jit(compiler_options=FAST)
def forward(model, x, mask):
  return model(x, mask), model.encode(x, mask)


@jax.jit(compiler_options=FAST)
def loss_fn(model, x, rng):
  return bm.pretrain_loss(model, {"x": x}, rng, jnp.int32(0))


@jax.jit(compiler_options=FAST)
def loss_and_grad(model, x, rng):
  return nnx.value_and_grad(lambda m: bm.pretrain_loss(m, {"x": x}, rng, jnp.int32(0)),
                            has_aux=True)(model)


def inputs(seed=1):
  x = jnp.asarray(np.random.default_rng(seed).normal(size=(B, S, N, L)), jnp.float32)
  mask = mask_fn(jax.random.key(seed + 100), B, S, N, 0.5)
  return x, mask


@pytest.mark.parametrize("tse", ["sg", "ag"])
def test_shapes(tse):
  model = make(tse=tse, pooling="attention" if tse == "ag" else "mean")
  x, mask = inputs()
  recon, enc = forward(model, x, mask)
  chex.assert_shape(recon, (B, S, N, L))
  chex.assert_tree_all_finite(recon)
  chex.assert_shape(enc["tokens"], (B, S, N, 16))
  chex.assert_shape(enc["states"], (B, S, 16))
  chex.assert_shape(enc["segment_states"], (B, S, 16))
  chex.assert_shape(enc["pooled"], (B, 16))
  attention, similarity = interpret(model)
  chex.assert_shape(attention, (N, N))
  chex.assert_shape(similarity, (N, N))
  np.testing.assert_allclose(np.diag(similarity), 1.0, rtol=1e-5)


def test_random_mask_counts_and_randomness():
  for ratio, k in [(0.5, 8), (0.3, 5), (0.75, 12), (0.0, 0)]:
    mask = np.asarray(mask_fn(jax.random.key(0), 4, 5, 16, ratio))
    assert mask.dtype == bool and mask.shape == (4, 5, 16)
    assert (mask.sum(-1) == k).all(), (ratio, mask.sum(-1))
  mask = np.asarray(mask_fn(jax.random.key(0), 4, 5, 16, 0.5)).reshape(20, 16)
  assert len({row.tobytes() for row in mask}) > 15  # differs across segments and batch
  np.testing.assert_array_equal(mask.reshape(4, 5, 16), mask_fn(jax.random.key(0), 4, 5, 16, 0.5))
  assert not np.array_equal(mask.reshape(4, 5, 16), mask_fn(jax.random.key(1), 4, 5, 16, 0.5))
  assert bm.num_masked(100, 0.75) == 75 and bm.num_masked(5, 0.5) == 3
  assert bm.num_masked(93, 0.5) == 47  # halves round up (the evaluation uses the same rule)
  with pytest.raises(ValueError, match="visible"):
    mask_fn(jax.random.key(0), 1, 1, 4, 0.9)


@pytest.mark.parametrize("self_loops", [False, True])
def test_graph_attention_weights(self_loops):
  model = make(self_loops=self_loops)
  x, mask = inputs()
  attn = model.ga_blocks[0].attn
  emb = model.roi_embeddings()
  h = jnp.asarray(np.random.default_rng(5).normal(size=(B, S, N, 16)), jnp.float32)
  w, base, fast = map(np.asarray, attention_parts(attn, h, emb, ~mask))  # w: [B, S, H, N, N]
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
  masked_keys = np.broadcast_to(np.asarray(mask)[:, :, None, None, :], w.shape)
  assert np.all(w[masked_keys] == 0.0)
  diag = np.diagonal(w, axis1=-2, axis2=-1)
  if self_loops:
    assert np.all(diag[np.broadcast_to(~np.asarray(mask)[:, :, None, :], diag.shape)] > 0)
  else:
    assert np.all(diag == 0.0)
  np.testing.assert_allclose(base.sum(-1), 1.0, rtol=1e-5)
  assert (np.diagonal(base, axis1=-2, axis2=-1) == 0).all() != self_loops
  # The fast path (shared weights, renormalised by a matmul) equals mixing with the weights.
  v = np.einsum("bsnd,dhk->bsnhk", h, attn.wv[...])
  ref = np.einsum("bshnm,bsmhk->bsnhk", w, v)
  ref = np.einsum("bsnhk,hkd->bsnd", ref, attn.wo[...]) + np.asarray(attn.bo[...])
  np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-5)
  # Embedding attention is shared by all segments: the head average is roi_attention().
  np.testing.assert_allclose(interpret(model)[0], base.mean(0), rtol=1e-6)


@pytest.mark.parametrize("overrides", [dict(tse="sg", pooling="mean"),
                                       dict(tse="ag", pooling="attention"),
                                       dict(embedding_attention=False, self_loops=True),
                                       dict(roi_temporal="encoder"),
                                       dict(roi_temporal="decoder"),
                                       dict(roi_temporal="none")])
def test_masked_content_never_leaks(overrides):
  model = make(**overrides)
  x, mask = inputs()
  noise = 100.0 * jax.random.normal(jax.random.key(9), x.shape)
  x2 = jnp.where(mask[..., None], x + noise, x)
  assert not np.allclose(x, x2)
  (r1, e1), (r2, e2) = forward(model, x, mask), forward(model, x2, mask)
  np.testing.assert_array_equal(r1, r2)
  chex.assert_trees_all_equal(e1, e2)
  # ...whereas changing a visible cell does change the output.
  x3 = jnp.where(mask[..., None], x, x + 1.0)
  assert not np.allclose(forward(model, x3, mask)[0], r1)


def test_masked_mse_against_numpy():
  rng = np.random.default_rng(0)
  recon, x = rng.normal(size=(2, B, S, N, L)).astype(np.float32)
  mask = rng.random((B, S, N)) < 0.4
  cells = (recon.astype(np.float64) - x)[mask]  # [num masked cells, L]
  np.testing.assert_allclose(bm.masked_mse(recon, x, mask), np.mean(cells ** 2), rtol=1e-5)
  np.testing.assert_allclose(bm.masked_mse(recon, x, None),
                             np.mean((recon.astype(np.float64) - x) ** 2), rtol=1e-5)


def test_pretrain_loss_counts_masked_cells_only():
  model = make()
  x, _ = inputs()
  rng = jax.random.key(7)
  loss, metrics = loss_fn(model, x, rng)
  mask = np.asarray(mask_fn(jax.random.split(rng)[0], B, S, N, 0.5))
  recon = np.asarray(forward(model, x, jnp.asarray(mask))[0], np.float64)
  err = (recon - np.asarray(x, np.float64)) ** 2
  np.testing.assert_allclose(loss, err[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["mse_visible"], err[~mask].mean(), rtol=1e-5)
  assert float(metrics["mask_fraction"]) == 0.5
  # Plain autoencoder ablation: no masking, loss on all cells.
  ae = make(mask_ratio=0.0)
  loss0, metrics0 = loss_fn(ae, x, rng)
  recon0 = np.asarray(forward(ae, x, jnp.zeros((B, S, N), bool))[0], np.float64)
  np.testing.assert_allclose(loss0, ((recon0 - np.asarray(x, np.float64)) ** 2).mean(), rtol=1e-5)
  assert float(metrics0["mask_fraction"]) == 0.0


def test_ablation_switches():
  x, mask = inputs()
  fixed = make(roi_embedding="fixed")
  assert fixed.roi_embed is None
  np.testing.assert_allclose(fixed.roi_embeddings(), bm.sinusoidal_embedding(N, 16))
  assert not any("roi_embed" in str(p) for p, _ in nnx.to_flat_state(nnx.state(fixed, nnx.Param)))
  # No embedding attention: weights come from the tokens, so they differ between segments.
  plain = make(embedding_attention=False, self_loops=True)
  h = jnp.asarray(np.random.default_rng(5).normal(size=(B, S, N, 16)), jnp.float32)
  w = np.asarray(attention_parts(plain.ga_blocks[0].attn, h, plain.roi_embeddings(), None)[0])
  assert not np.allclose(w[0, 0], w[0, 1])
  with pytest.raises(ValueError, match="embedding_attention"):
    plain.roi_attention()
  w_emb = np.asarray(attention_parts(make().ga_blocks[0].attn, h, make().roi_embeddings(), None)[0])
  np.testing.assert_allclose(w_emb[0, 0], w_emb[1, 2])
  # Self-loops kept: the diagonal carries weight; removed: it does not.
  assert np.all(np.diagonal(interpret(make(self_loops=True))[0]) > 0)
  assert np.all(np.diagonal(interpret(make())[0]) == 0)
  # AG-TSE has self-attention blocks, SG-TSE only graph-attention blocks.
  def shape(**o):
    return nnx.eval_shape(lambda: bm.BrainMAE(tiny_config(**o), rngs=nnx.Rngs(0)))

  assert len(shape(tse="ag").sa_blocks) == 1 and len(shape(tse="sg").sa_blocks) == 0
  assert len(shape(tse="sg", tse_depth=3).ga_blocks) == 3 and len(shape(tse="ag").ga_blocks) == 1


def test_jit_grad_finite_and_reaches_parameters():
  model = make(tse="ag", pooling="attention", dropout=0.1)
  x, _ = inputs()
  (loss, _), g = loss_and_grad(model, x, jax.random.key(0))
  assert np.isfinite(float(loss))
  chex.assert_tree_all_finite(g)
  flat = {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(g)}
  for name in ["mask_token", "roi_embed", "token_proj/kernel", "seg_pos", "dec_out/kernel",
               "pool_query", "ga_blocks/0/attn/wq", "sa_blocks/0/attn/wqkv", "temporal/0/attn/wqkv",
               "enc_temporal/0/attn/wqkv", "enc_temporal/0/seg_bias", "dec_temporal/0/mlp"]:
    key = next(k for k in flat if k.startswith(name))
    assert np.abs(flat[key]).sum() > 0, name
  # Dropout (active in training) and the mask are keyed by the rng: same key, same loss.
  (loss1, _), _ = loss_and_grad(model, x, jax.random.key(1))
  (loss0, _), _ = loss_and_grad(model, x, jax.random.key(0))
  assert float(loss) != float(loss1) and float(loss) == float(loss0)


def _np_graph_attention(h, emb, visible, wq, wk, wv, wo, bo, self_loops):
  """Float64 NumPy reference of GraphAttention.__call__ (embedding attention)."""
  dh = wq.shape[-1]
  q = np.einsum("nd,dhk->hnk", emb, wq)
  k = np.einsum("nd,dhk->hnk", emb, wk)
  logits = np.einsum("hnk,hmk->hnm", q, k) / np.sqrt(dh)
  n = emb.shape[0]
  allowed = np.ones((n, n), bool) if self_loops else ~np.eye(n, dtype=bool)
  allowed = allowed[None, None, None] & visible[:, :, None, None, :]  # [B, S, 1, N, N]
  logits = np.where(allowed, logits[None, None], -np.inf)
  m = np.max(logits, -1, keepdims=True)
  p = np.where(allowed, np.exp(logits - np.where(np.isfinite(m), m, 0.0)), 0.0)
  p = p / np.maximum(p.sum(-1, keepdims=True), 1e-300)
  v = np.einsum("bsnd,dhk->bsnhk", h, wv)
  out = np.einsum("bshnm,bsmhk->bsnhk", p, v)
  return np.einsum("bsnhk,hkd->bsnd", out, wo) + bo


@pytest.mark.parametrize("self_loops", [False, True])
def test_graph_attention_matches_float64_reference_and_gradients(self_loops):
  d, heads, n = 6, 2, 5
  attn = build(lambda: bm.GraphAttention(d, d, heads, embedding_attention=True,
                                         self_loops=self_loops, rngs=nnx.Rngs(3)))
  rng = np.random.default_rng(1)
  h = rng.normal(size=(2, 2, n, d))
  emb = rng.normal(size=(n, d))
  visible = rng.random((2, 2, n)) < 0.6
  visible[0, 0] = [True, False, False, False, False]  # a row whose only key may be itself
  params = {k: np.asarray(getattr(attn, k)[...], np.float64) for k in ("wq", "wk", "wv", "wo", "bo")}
  ref = _np_graph_attention(h, emb, visible, self_loops=self_loops, **params)
  out = attn(jnp.asarray(h, jnp.float32), jnp.asarray(emb, jnp.float32), jnp.asarray(visible))
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
  if not self_loops:  # no visible key besides itself -> nothing to mix, output is the bias only
    np.testing.assert_allclose(out[0, 0, 0], params["bo"], atol=1e-6)

  # Gradient of a scalar functional vs central finite differences of the float64 reference.
  cot = rng.normal(size=ref.shape)

  def f_np(h, emb, wq, wk, wv, wo, bo):
    return float(np.sum(cot * _np_graph_attention(h, emb, visible, wq, wk, wv, wo, bo, self_loops)))

  graphdef, state = nnx.split(attn)

  def f_jax(h, emb, *weights):
    new = dict(zip(("wq", "wk", "wv", "wo", "bo"), weights))
    m = nnx.merge(graphdef, nnx.State({k: v.replace(new[k]) if k in new else v
                                       for k, v in state.items()}))
    return jnp.sum(jnp.asarray(cot, jnp.float32) * m(h, emb, jnp.asarray(visible)))

  args = [h, emb] + [params[k] for k in ("wq", "wk", "wv", "wo", "bo")]
  grad_fn = jax.jit(jax.grad(f_jax, argnums=tuple(range(7))), compiler_options=FAST)
  grads = grad_fn(*[jnp.asarray(a, jnp.float32) for a in args])
  eps = 1e-6
  for i, (a, g) in enumerate(zip(args, grads)):
    for trial in range(2):
      direction = np.random.default_rng(10 * i + trial).normal(size=a.shape)
      plus = list(args); plus[i] = a + eps * direction
      minus = list(args); minus[i] = a - eps * direction
      fd = (f_np(*plus) - f_np(*minus)) / (2 * eps)
      np.testing.assert_allclose(np.sum(np.asarray(g, np.float64) * direction), fd,
                                 rtol=2e-3, atol=2e-4, err_msg=f"argument {i}")


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_prediction_head(head):
  model = build(lambda: bm.BrainMAEForPrediction(tiny_config(), num_outputs=3, rngs=nnx.Rngs(0),
                                                 head=head))
  x, _ = inputs()
  out, g = jax.jit(lambda m: (m(x), nnx.grad(lambda m: jnp.sum(m(x) ** 2))(m)),
                   compiler_options=FAST)(model)
  chex.assert_shape(out, (B, 3))
  enc = sum(float(np.abs(v).sum()) for v in jax.tree.leaves(nnx.state(g.encoder)))
  head_grad = float(np.abs(np.asarray(g.out.kernel[...])).sum())
  assert head_grad > 0 and enc > 0  # freezing is the engine's job (by path)
  paths = ["/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
  encoder = [p for p in paths if p.startswith("encoder/")]
  assert len(encoder) == len(nnx.to_flat_state(nnx.state(make(), nnx.Param)))
  assert sorted(set(paths) - set(encoder)) == (
      ["head_norm/bias", "head_norm/scale", "hidden/bias", "hidden/kernel", "out/bias",
       "out/kernel"] if head == "mlp" else
      ["head_norm/bias", "head_norm/scale", "out/bias", "out/kernel"])


def test_logical_axis_names_on_all_params():
  for model in (make(tse="ag", pooling="attention"),
                nnx.eval_shape(lambda: bm.BrainMAEForPrediction(tiny_config(), 2, rngs=nnx.Rngs(0)))):
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
      names = var.get_metadata().get("out_sharding")
      assert names is not None and len(names) == len(var.shape), path
      assert all(n is None or n in bm.LOGICAL_AXES for n in names), (path, names)
  assert bm.LOGICAL_AXES.count("embed") == 1


def test_bad_config_and_inputs_are_named():
  with pytest.raises(ConfigError, match="config.model.embed_dim"):
    make(embed_dim=15)
  with pytest.raises(ConfigError, match="config.model.tse"):
    make(tse="xx")
  with pytest.raises(ConfigError, match="config.model.mask_ratio"):
    make(mask_ratio=1.0)
  model = make()
  with pytest.raises(ValueError, match="N=6"):
    model(jnp.zeros((B, S, N + 1, L)))
  with pytest.raises(ValueError, match="num_segments"):
    model(jnp.zeros((B, 5, N, L)))
  with pytest.raises(ValueError, match="mask has shape"):
    model(jnp.zeros((B, S, N, L)), jnp.zeros((B, S, N - 1), bool))


def test_bfloat16_compute():
  model = make(dtype="bfloat16")
  x, mask = inputs()
  recon = forward(model, x, mask)[0]
  assert recon.dtype == jnp.float32
  chex.assert_tree_all_finite(recon)
  assert model.token_proj.kernel[...].dtype == jnp.float32  # parameters stay float32
  np.testing.assert_allclose(recon, forward(make(), x, mask)[0], atol=0.2)


def test_accepts_full_training_config():
  import ml_collections
  cfg = ml_collections.ConfigDict({"model": tiny_config()})
  model = nnx.eval_shape(lambda: bm.BrainMAE(cfg, rngs=nnx.Rngs(0)))
  assert model.config.num_rois == N


def test_real_initialisation():
  model = jax.jit(lambda: nnx.state(bm.BrainMAE(tiny_config(), rngs=nnx.Rngs(0))),
                  compiler_options=FAST)()
  flat = {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(model)}
  chex.assert_tree_all_finite(flat)
  assert 0.005 < flat["roi_embed"].std() < 0.05 and 0.005 < flat["mask_token"].std() < 0.05
  assert np.all(flat["tse_norm/scale"] == 1.0) and np.all(flat["token_proj/bias"] == 0.0)
  assert 0.1 < flat["ga_blocks/0/attn/wq"].std() * np.sqrt(16) < 2.0


@jax.jit(compiler_options=FAST)
def tokens_of(model, x, mask):
  return model.encode(x, mask)["tokens"]


def test_roi_temporal_sees_own_roi_in_other_segments():
  """With roi_temporal the encoder token of a masked cell depends on the same ROI's visible cells
  in other segments; without it, tokens only see their own segment."""
  x, _ = inputs()
  mask = np.zeros((B, S, N), bool)
  mask[:, 0, 0] = True   # cell (segment 0, ROI 0) masked
  mask[:, 1, 1:] = True  # segment 1: only ROI 0 visible
  mask = jnp.asarray(mask)
  x2 = x.at[:, 1, 0].add(1.0)  # change the visible cell (segment 1, ROI 0)
  for mode, sees in (("encoder", True), ("both", True), ("none", False), ("decoder", False)):
    m = make(roi_temporal=mode)
    t1, t2 = np.asarray(tokens_of(m, x, mask)), np.asarray(tokens_of(m, x2, mask))
    assert (not np.allclose(t1[:, 0, 0], t2[:, 0, 0])) == sees, mode
  assert len(make(roi_temporal="none").enc_temporal) == 0
  assert len(make(roi_temporal="none").dec_temporal) == 0


def _np_layernorm(x, scale, bias, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def _np_gelu(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def test_roi_temporal_block_matches_float64_reference():
  blk = make(roi_temporal="encoder").enc_temporal[0]
  p = {"/".join(map(str, k)): np.asarray(v, np.float64)
       for k, v in nnx.to_flat_state(nnx.state(blk, nnx.Param))}
  rng = np.random.default_rng(3)
  h = rng.normal(size=(B, S, N, 16))
  valid = rng.random((B, S, N)) < 0.6
  valid[0, :, 0] = False  # a ROI with no visible segment: attention contributes nothing
  out = np.asarray(jax.jit(lambda b, h, v: b(h, v), compiler_options=FAST)(
      blk, jnp.asarray(h, jnp.float32), jnp.asarray(valid)))
  ref = np.empty_like(h)
  w, dh = p["attn/wqkv"], p["attn/wqkv"].shape[-1]
  for b in range(B):
    for n in range(N):
      z = _np_layernorm(h[b, :, n], p["norm1/scale"], p["norm1/bias"])  # [S, d]
      q, k, v = (np.einsum("td,dhk->htk", z, w[:, c]) for c in range(3))
      logits = np.einsum("htk,hsk->hts", q, k) / np.sqrt(dh) + p["seg_bias"][:, :S, :S]
      logits = np.where(valid[b, :, n][None, None, :], logits, -np.inf)
      with np.errstate(invalid="ignore"):
        a = np.exp(logits - logits.max(-1, keepdims=True))
        a = np.nan_to_num(a / a.sum(-1, keepdims=True))
      att = np.einsum("hts,hsk->thk", a, v)
      y = h[b, :, n] + np.einsum("thk,hkd->td", att, p["attn/wo"]) + p["attn/bo"]
      z2 = _np_layernorm(y, p["norm2/scale"], p["norm2/bias"])
      m = _np_gelu(z2 @ p["mlp/fc1/kernel"] + p["mlp/fc1/bias"]) @ p["mlp/fc2/kernel"]
      ref[b, :, n] = y + m + p["mlp/fc2/bias"]
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@jax.jit(compiler_options=FAST)
def forward_keyed(model, x, mask, key):
  return model(x, mask, rngs=nnx.Rngs(dropout=key))


def test_dropout_follows_train_and_eval_modes():
  """eval(): deterministic and equal to the dropout-free model; train(): keyed by the rngs."""
  model = build(lambda: bm.BrainMAE(tiny_config(dropout=0.3), rngs=nnx.Rngs(0)))
  x, mask = inputs()
  plain = forward(make(), x, mask)[0]  # the same parameter values (filled by path), no dropout
  with pytest.raises(ValueError, match="needs rngs"):
    model(x, mask)  # a new model is in train mode
  model.eval()
  np.testing.assert_array_equal(forward(model, x, mask)[0], plain)
  np.testing.assert_array_equal(forward_keyed(model, x, mask, jax.random.key(0)), plain)
  model.train()
  a = forward_keyed(model, x, mask, jax.random.key(0))
  np.testing.assert_array_equal(a, forward_keyed(model, x, mask, jax.random.key(0)))
  assert not np.allclose(a, forward_keyed(model, x, mask, jax.random.key(1)))
  assert not np.allclose(a, plain)
  # The masked-cell invariant holds with dropout too.
  x2 = jnp.where(mask[..., None], x + 100.0, x)
  np.testing.assert_array_equal(a, forward_keyed(model, x2, mask, jax.random.key(0)))
  # Dropout modules add no state: checkpoints keep the parameter paths of a dropout-free model.
  assert ([p for p, _ in nnx.to_flat_state(nnx.state(model))]
          == [p for p, _ in nnx.to_flat_state(nnx.state(make()))])


def test_linear_prior_is_the_ridge_baseline_and_the_decoder_adds_a_residual():
  from jaxbrain.evaluation import reconstruction as rec
  rng = np.random.default_rng(0)
  mix = rng.normal(size=(N, N))
  train = np.einsum("nm,wsml->wsnl", mix, rng.normal(size=(40, S, N, L))).astype(np.float32)
  ridge = rec.fit_ridge(train, lam=0.1)
  x = np.einsum("nm,wsml->wsnl", mix, rng.normal(size=(B, S, N, L))).astype(np.float32)
  mask = rec.random_mask((B, S, N), 0.5, seed=1)
  x_nan = np.where(mask[..., None], np.nan, x).astype(np.float32)  # hidden values are never read
  got = bm.linear_prior(jnp.asarray(x_nan), jnp.asarray(mask), jnp.asarray(ridge.mean, jnp.float32),
                        jnp.asarray(ridge.cov, jnp.float32), 0.1)
  np.testing.assert_allclose(np.asarray(got), rec.ridge_predict(x_nan, mask, ridge), rtol=1e-4,
                             atol=1e-4)
  model = build(lambda: bm.BrainMAE(tiny_config(linear_prior=True, prior_lam=0.1),
                                    rngs=nnx.Rngs(0)))
  model.set_linear_prior(ridge.mean, ridge.cov)
  model.dec_out.kernel[...] = jnp.zeros_like(model.dec_out.kernel[...])
  model.dec_out.bias[...] = jnp.zeros_like(model.dec_out.bias[...])
  out = model(jnp.asarray(x_nan), jnp.asarray(mask))  # a zero decoder leaves the prior itself
  np.testing.assert_allclose(np.asarray(out)[mask], np.asarray(got)[mask], rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="linear_prior"):
    build(lambda: bm.BrainMAE(tiny_config(), rngs=nnx.Rngs(0))).set_linear_prior(ridge.mean,
                                                                                  ridge.cov)


def test_spd_solve_matches_float64_reference():
  rng = np.random.default_rng(3)
  m = rng.normal(size=(4, 7, 7))
  a = m @ np.swapaxes(m, 1, 2) + 0.05 * np.eye(7)
  b = rng.normal(size=(4, 7, 3))
  got = bm.spd_solve(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), np.linalg.solve(a, b), rtol=2e-3, atol=2e-3)
