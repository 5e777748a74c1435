"""ST-MAE: its pieces against float64 NumPy references, the no-leak masking invariant, a sharded
(2x4) run equal to one device, SIGKILL and resume bitwise, fine-tuning through the task code and
one-line errors for bad settings."""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import engine_helpers as h
from jaxbrain.data.dynamic_fc import window_ends
from jaxbrain.models import stmae
from jaxtrain.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(**kw) -> ml_collections.ConfigDict:
  c = stmae.default_model_config()
  c.update(dict(num_rois=12, seg_len=10, num_segments=6, fc_window=20, fc_stride=8,
                hidden_dim=16, gin_depth=2, num_heads=2, decoder_dim=8, node_mask_ratio=0.25,
                window_mask_ratio=0.3))
  c.update(kw)
  return c


def x_of(seed: int, b: int = 3, c=None) -> jax.Array:
  c = c or small_config()
  return jax.random.normal(jax.random.key(seed), (b, c.num_segments, c.num_rois, c.seg_len))


def test_gru_matches_numpy_float64():
  gru = stmae.GRU(5, 4, rngs=nnx.Rngs(0), dtype=jnp.float32)
  x = np.random.default_rng(0).normal(size=(2, 7, 5))
  wi, bi = np.asarray(gru.inp.kernel[...], np.float64), np.asarray(gru.inp.bias[...], np.float64)
  wr = np.asarray(gru.rec.kernel[...], np.float64)
  sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
  hs, hid = [], np.zeros((2, 4))
  for t in range(7):
    g, r_h = x[:, t] @ wi + bi, hid @ wr
    z, r = sig(g[:, :4] + r_h[:, :4]), sig(g[:, 4:8] + r_h[:, 4:8])
    cand = np.tanh(g[:, 8:] + r * r_h[:, 8:])
    hid = (1 - z) * cand + z * hid
    hs.append(hid)
  np.testing.assert_allclose(np.asarray(gru(jnp.asarray(x, jnp.float32))), np.stack(hs, 1),
                             rtol=1e-5, atol=1e-6)


def test_visible_graph_thresholds_over_visible_edges_only():
  rng = np.random.default_rng(1)
  fc = rng.uniform(-1, 1, size=(2, 3, 9, 9))
  fc = (fc + np.swapaxes(fc, -1, -2)) / 2
  visible = np.ones((2, 3, 9), bool)
  visible[:, :, [2, 5]] = False       # two hidden ROIs
  visible[1, 2] = False               # a hidden window
  got = np.asarray(stmae.visible_graph(jnp.asarray(fc, jnp.float32), jnp.asarray(visible), 7, 30.0))
  for b in range(2):
    for w in range(3):
      want = np.zeros((9, 9))
      v = np.flatnonzero(visible[b, w])
      if len(v):
        pairs = [(i, j) for a, i in enumerate(v) for j in v[a + 1:]]
        vals = np.array([fc[b, w, i, j] for i, j in pairs])
        thr = np.sort(vals)[::-1][int(np.ceil(len(pairs) * 0.3)) - 1]
        for (i, j), val in zip(pairs, vals):
          want[i, j] = want[j, i] = float(val >= thr)
      np.testing.assert_array_equal(got[b, w], want)


def test_reconstruction_losses_match_numpy():
  rng = np.random.default_rng(2)
  b, w, n = 2, 3, 5
  fc, rows = rng.uniform(-1, 1, (b, w, n, n)), rng.normal(size=(b, w, n, n))
  adj, logits = (rng.uniform(size=(b, w, n, n)) < 0.3).astype(float), rng.normal(size=(b, w, n, n))
  node = np.zeros((b, n), bool)
  node[:, 1] = True
  window = np.zeros((b, w), bool)
  window[:, 2] = True
  got = stmae.reconstruction_losses({"fc_rows": jnp.asarray(rows), "edge_logits": jnp.asarray(logits)},
                                    jnp.asarray(fc), jnp.asarray(adj), jnp.asarray(node),
                                    jnp.asarray(window))
  se, bce = [], []
  p = 1 / (1 + np.exp(-logits))
  for bi in range(b):
    for wi in range(w):
      hid = node[bi] | window[bi, wi]
      for i in range(n):
        for j in range(n):
          if i != j and hid[i]:
            se.append((rows[bi, wi, i, j] - fc[bi, wi, i, j]) ** 2)
          if i != j and (hid[i] or hid[j]):
            a = adj[bi, wi, i, j]
            bce.append(-(a * np.log(p[bi, wi, i, j]) + (1 - a) * np.log(1 - p[bi, wi, i, j])))
  np.testing.assert_allclose(float(got["feature_mse"]), np.mean(se), rtol=1e-5)
  np.testing.assert_allclose(float(got["edge_bce"]), np.mean(bce), rtol=1e-5)


def test_masks_have_the_configured_counts_and_one_block():
  node, window = stmae.random_masks(jax.random.key(0), 50, 12, 10, 0.25, 0.3)
  node, window = np.asarray(node), np.asarray(window)
  assert (node.sum(1) == 3).all() and (window.sum(1) == 3).all()
  for row in window:  # one contiguous block
    idx = np.flatnonzero(row)
    assert (np.diff(idx) == 1).all()
  assert len({tuple(np.flatnonzero(r)) for r in window}) > 1  # random starts


def test_no_masked_content_reaches_the_encoder_or_decoder():
  """Changing the hidden ROIs' series and the frames that only hidden windows cover changes
  nothing the model outputs; changing a visible ROI does (the test can fail)."""
  c = small_config()
  model = stmae.STMAE(c, rngs=nnx.Rngs(0))
  model.eval()
  x = x_of(3, b=2)
  node, window = stmae.random_masks(jax.random.key(5), 2, c.num_rois, model.num_windows,
                                    c.node_mask_ratio, c.window_mask_ratio)
  apply = nnx.jit(lambda m, xb: m(xb, node, window))
  ref = apply(model, x)
  # Frames covered only by hidden windows, per sample.
  ends = window_ends(model.num_frames, c.fc_window, c.fc_stride)
  t = np.arange(model.num_frames)
  covers = (t[None] >= (ends - c.fc_window + 1)[:, None]) & (t[None] <= ends[:, None])  # [W, T]
  win = np.asarray(window)
  only_hidden = (covers[None] & win[:, :, None]).any(1) & ~(covers[None] & ~win[:, :, None]).any(1)
  assert only_hidden.any()
  series = np.asarray(stmae.STMAE.series(x)).copy()
  noise = np.random.default_rng(0).normal(size=series.shape) * 5
  hidden = np.asarray(node)[:, :, None] | only_hidden[:, None, :]
  changed = np.where(hidden, series + noise, series)
  b, n, tt = series.shape
  back = lambda s: jnp.asarray(s.reshape(b, n, c.num_segments, c.seg_len).swapaxes(1, 2))  # noqa
  out = apply(model, back(changed))
  visible = np.asarray(ref["visible"])
  for key in ("states", "pooled", "window_states", "fc_rows", "edge_logits"):
    np.testing.assert_allclose(np.asarray(out[key]), np.asarray(ref[key]), atol=1e-5, err_msg=key)
  np.testing.assert_allclose(np.asarray(out["nodes"])[visible], np.asarray(ref["nodes"])[visible],
                             atol=1e-5)
  vis_roi = int(np.flatnonzero(~np.asarray(node)[0])[0])
  series[0, vis_roi] += noise[0, vis_roi]
  other = apply(model, back(series))
  assert not np.allclose(np.asarray(other["pooled"][0]), np.asarray(ref["pooled"][0]), atol=1e-4)


def test_for_segments_encodes_shorter_windows_with_the_same_parameters():
  """The short model is the trained one on fewer segments: at full length it equals it; on a
  window shorter than fc_window it reads one FC window of all its frames, with the same
  parameters."""
  c = small_config(fc_window=20, fc_stride=20, num_segments=4, window_mask_ratio=0.0)
  model = stmae.STMAE(c, rngs=nnx.Rngs(0))
  model.eval()
  x = x_of(4, b=2, c=c)
  same = stmae.for_segments(model, c.num_segments)
  np.testing.assert_allclose(np.asarray(same.encode(x)["pooled"]),
                             np.asarray(model.encode(x)["pooled"]), atol=1e-6)
  short = stmae.for_segments(model, 1)  # 10 frames < fc_window=20
  assert (short.config.fc_window, short.num_windows) == (10, 1)
  out = short.encode(x[:, :1])
  assert out["pooled"].shape == (2, c.hidden_dim) and np.isfinite(np.asarray(out["pooled"])).all()
  # The parameters are the trained model's (not a fresh draw): a different model differs.
  other = stmae.for_segments(stmae.STMAE(c, rngs=nnx.Rngs(1)), 1)
  np.testing.assert_array_equal(np.asarray(short.roi_embed[...]), np.asarray(model.roi_embed[...]))
  assert not np.allclose(np.asarray(other.encode(x[:, :1])["pooled"]), np.asarray(out["pooled"]))


def test_pretraining_lowers_the_loss():
  import optax
  c = small_config()
  model = stmae.STMAE(c, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
  x = x_of(4, b=8)

  @nnx.jit
  def step(model, opt, key):
    (loss, _), grads = nnx.value_and_grad(lambda m: stmae.pretrain_loss(m, {"x": x}, key, 0),
                                          has_aux=True)(model)
    opt.update(model, grads)
    return loss
  losses = [float(step(model, opt, jax.random.key(i % 4))) for i in range(60)]
  assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])


def test_bad_model_settings_are_one_line_config_errors():
  from jaxtrain.errors import ConfigError
  for kw, field in ((dict(fc_window=1000), "fc_window"), (dict(fc_stride=0), "fc_stride"),
                    (dict(sparsity=0.0), "sparsity"), (dict(sparsity=150.0), "sparsity"),
                    (dict(node_mask_ratio=0.95), "node_mask_ratio")):
    with pytest.raises(ConfigError, match=f"config.model.{field}="):
      stmae.STMAE(small_config(**kw), rngs=nnx.Rngs(0))


def test_main_rejects_a_window_longer_than_the_series_and_writes_nothing(tmp_path, capsys):
  from jaxbrain import main
  rc = main.main([f"--config={ROOT}/configs/stmae.py:smoke", f"--workdir={tmp_path}/run",
                  "--config.model.fc_window=1000"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and "config.model.fc_window=1000" in err[0]
  assert not os.path.exists(tmp_path / "run") or not os.listdir(tmp_path / "run")


def _train(config, x, mesh):
  from jaxtrain import loop
  from jaxtrain.data import InMemorySource, make_loader
  from jaxbrain.tasks.pretrain import pretrain_task
  it = make_loader(InMemorySource({"x": x}), global_batch_size=config.train.batch_size,
                   seed=config.seed, fields=("x",))
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    return loop.train(config=config, workdir=d, task=pretrain_task(config), train_iter=it,
                      mesh=mesh)


def test_sharded_2x4_mesh_equals_one_device():
  from jax.sharding import Mesh
  config, x = h.stmae_setup(steps=3, checkpoint_every=3)
  devices = np.asarray(jax.devices())
  one = _train(config, x, Mesh(devices[:1].reshape(1, 1), ("data", "fsdp")))
  eight = _train(config, x, Mesh(devices[:8].reshape(2, 4), ("data", "fsdp")))
  np.testing.assert_allclose([r["loss"] for r in eight.history],
                             [r["loss"] for r in one.history], rtol=1e-5)
  a, b = h.params_of(one.model), h.params_of(eight.model)
  for k in a:
    np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-6, err_msg=k)


STEPS, EVERY = 6, 2


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
  def args(workdir, out):
    return ["--model", "stmae", "--workdir", workdir, "--out", out, "--steps", STEPS,
            "--checkpoint_every", EVERY, "--devices", 4]
  [ref] = h.run_workers([args(tmp_path / "ref", tmp_path / "ref.npz")], timeout=900)
  workdir = tmp_path / "run"
  a = args(workdir, tmp_path / "params.npz")
  h.kill_after_checkpoint(a + ["--sleep", 0.5], workdir, EVERY, timeout=900).wait(60)
  killed_at = Checkpointer(str(workdir / "checkpoints")).latest_step()
  assert killed_at is not None and killed_at < STEPS
  [result] = h.run_workers([a], timeout=900)
  assert result["step"] == STEPS and result["losses"] == ref["losses"][killed_at:]
  got, want = dict(np.load(tmp_path / "params.npz")), dict(np.load(tmp_path / "ref.npz"))
  assert got.keys() == want.keys()
  for k in got:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_probe_and_fine_tuning_through_the_task_code(tmp_path):
  """The benchmark's labelled code runs ST-MAE encoders: linear probe and full fine-tuning (with
  the orthogonality penalty) give a prediction per test subject."""
  from jaxbrain.data.splits import kfold_subjects
  from jaxbrain.tasks import finetune, inputs, train
  from jaxtrain.config import load_config
  config = load_config(f"{ROOT}/configs/stmae.py:smoke", [
      "data.source=synthetic", "data.synthetic.num_subjects=6", "data.synthetic.num_rois=10",
      "data.synthetic.length=400", "data.num_segments=8", "model.num_segments=8",
      "model.fc_window=30", "model.orthogonal_reg=0.1", "finetune.steps=3", "finetune.batch_size=8"])
  data = inputs.load_data(config.data)
  config = train.with_data_shapes(config, *inputs.data_shapes(config.data, data))
  y = data.labels.values("class", data.ids, task="classification")
  folds = kfold_subjects(data.ids, 2, seed=0, labels=y)
  r = finetune.labelled_predictions(config, str(tmp_path), data, {"random_init": None}, folds,
                                    "class:classification", modes=("probe", "full"))
  for m in ("random_init/probe", "random_init/full"):
    p = r["predictions"][m]
    assert p.shape == (6, 2) and np.allclose(p.sum(1), 1.0)


def test_main_pretrains_and_evaluates_on_the_built_in_data(tmp_path):
  from jaxtrain.config import load_config
  from jaxbrain.tasks.train import train_and_evaluate
  config = load_config(f"{ROOT}/configs/stmae.py:smoke", ["train.steps=10", "eval.interpret=False"])
  summary = train_and_evaluate(config, str(tmp_path))
  ev = summary["eval"]
  assert summary["config"]["model"]["num_rois"] == 94 and ev["fc_num_windows"] > 0
  for k in ("fc_feature_mse_model", "fc_edge_bce_model", "fc_feature_mse_mean_graph",
            "fingerprint_accuracy"):
    assert np.isfinite(ev[k]), k
