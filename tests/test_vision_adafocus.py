"""AdaFocusV2 model pieces: the coarse-to-fine frame order, PyTorch's GRU against NumPy, per-step
logits that only see frames so far, the two-pass loss (the random pass sends no gradient into the
policy; the policy does not see gradients of the global CNN), and the sharded train step."""
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxtrain import loop
from jaxtrain import mesh as mesh_lib
from jaxtrain.config import load_config
from jaxtrain.errors import ConfigError
from jaxvision import flops
from jaxvision.models import adafocus_v2 as afv2
from jaxvision.models import crop as crop_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**model):
  config = load_config(os.path.join(ROOT, "configs/adafocusv2.py:smoke"))
  config.model.update(model)
  return config


def _model(config, seed=0):
  with nnx.use_eager_sharding(False):
    return afv2.AdaFocusV2(config.model, rngs=nnx.Rngs(seed))


def _frames(b, config, seed=0):
  m = config.model
  shape = (b, m.num_frames, m.image_size, m.image_size, 3)
  return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def test_input_order_is_coarse_to_fine():
  # The official rule worked by hand for T = 16: middle, ends, then midpoints of halves, quarters...
  assert afv2.input_order(16) == [7, 0, 15, 3, 11, 1, 5, 9, 13, 2, 4, 6, 8, 10, 12, 14]
  for t in (1, 2, 3, 4, 8, 12):
    assert sorted(afv2.input_order(t)) == list(range(t))


def test_gru_matches_pytorch_equations_in_float64():
  gru = afv2.GRU(3, 4, rngs=nnx.Rngs(0), dtype=jnp.float32)
  x = np.random.default_rng(0).normal(size=(2, 5, 3))
  got = np.asarray(gru(jnp.asarray(x, jnp.float32)))
  w_ih, w_hh = np.asarray(gru.w_ih[...], np.float64), np.asarray(gru.w_hh[...], np.float64)
  b_ih, b_hh = np.asarray(gru.b_ih[...], np.float64), np.asarray(gru.b_hh[...], np.float64)
  sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
  h = np.zeros((2, 4))
  for t in range(5):
    gi = np.einsum("bd,dgh->bgh", x[:, t], w_ih) + b_ih
    gh = np.einsum("bd,dgh->bgh", h, w_hh) + b_hh
    r, z = sig(gi[:, 0] + gh[:, 0]), sig(gi[:, 1] + gh[:, 1])
    n = np.tanh(gi[:, 2] + r * gh[:, 2])
    h = (1 - z) * n + z * h
    np.testing.assert_allclose(got[:, t], h, rtol=1e-5, atol=1e-6)


def test_logits_at_step_t_only_see_frames_up_to_t():
  config = _config()
  model = _model(config)
  model.eval()
  x = _frames(2, config)
  order = afv2.input_order(config.model.num_frames)
  y = x.copy()
  y[:, order[-1]] = 255 - y[:, order[-1]]  # change the frame the model sees last
  a, b = model(jnp.asarray(x)), model(jnp.asarray(y))
  np.testing.assert_array_equal(np.asarray(a["logits"][:, :-1]), np.asarray(b["logits"][:, :-1]))
  assert not np.allclose(np.asarray(a["logits"][:, -1]), np.asarray(b["logits"][:, -1]))
  assert a["actions"].shape == (2, config.model.num_frames, 2)
  assert np.all((np.asarray(a["actions"]) >= 0) & (np.asarray(a["actions"]) <= 1))


def test_two_pass_gradients_reach_the_policy_only_through_its_own_pass():
  config = _config()
  model = _model(config)
  model.train()
  x, labels = jnp.asarray(_frames(2, config)), jnp.array([3, 7])
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def pass_loss(p, which):
    m = nnx.merge(graphdef, p, rest, copy=True)
    outs = m.two_pass_outputs(x, jax.random.key(1), nnx.Rngs(dropout=jax.random.key(2)))
    return afv2.pass_loss(outs[which], labels)

  norm = lambda tree: float(optax_norm(tree))  # noqa: E731
  g_policy, g_random = jax.grad(pass_loss)(params, 0), jax.grad(pass_loss)(params, 1)
  assert norm(g_random["policy"]) == 0.0          # random patches: nothing flows to the policy
  assert norm(g_policy["policy"]) > 0.0           # through the differentiable crop
  assert norm(g_random["local_cnn"]) > 0.0 and norm(g_random["global_cnn"]) > 0.0

  # The policy reads the global feature maps with gradients stopped: a loss on the actions alone
  # reaches the policy but not the global CNN.
  def action_loss(p):
    m = nnx.merge(graphdef, p, rest, copy=True)
    x_ = m.normalize(x)
    fmap, _ = m.glance(x_)
    return jnp.sum(m.policy(jax.lax.stop_gradient(fmap)))

  g = jax.grad(action_loss)(params)
  assert norm(g["global_cnn"]) == 0.0 and norm(g["policy"]) > 0.0

  # Multi-hot labels (ActivityNet, FCVID) train on one label: the lowest-numbered one.
  batch = {"frames": x, "label": labels}
  hot = {"frames": x, "label": jnp.zeros((2, 10)).at[0, 3].set(1).at[0, 8].set(1).at[1, 7].set(1)}
  rng = jax.random.key(5)
  single = afv2.train_loss(nnx.merge(graphdef, params, rest, copy=True), batch, rng, 0)[0]
  multi = afv2.train_loss(nnx.merge(graphdef, params, rest, copy=True), hot, rng, 0)[0]
  assert float(single) == pytest.approx(float(multi), rel=1e-6)


def optax_norm(tree):
  import optax
  return optax.tree.norm(tree)


def test_patch_larger_than_frame_is_a_config_error():
  config = _config(patch_size=96)
  with pytest.raises(ConfigError, match=r"config\.model\.patch_size=96: expected at most"):
    _model(config)


def test_train_step_on_2x4_mesh_matches_one_device():
  """One step of the two-pass loss, batch statistics over the global batch. (Later steps are not
  compared: a batch-norm bias followed by another train-mode batch norm has a true gradient of 0,
  whose float32 value is cancellation noise that depends on the reduction order; at this tiny
  size SGD amplifies it.)"""
  config = _config()
  config.train.update(dict(batch_size=8, steps=1))
  from jaxvision.train import task
  batch = {"frames": _frames(8, config, seed=3), "label": np.arange(8, dtype=np.int32) % 10}
  one = mesh_lib.make_mesh(ml_collections.ConfigDict({"shape": {"data": 1, "fsdp": 1}}),
                           devices=jax.devices()[:1])
  many = mesh_lib.make_mesh(ml_collections.ConfigDict({"shape": {"data": 2, "fsdp": 4}}))
  results = []
  for mesh in (one, many):
    program = loop.build_program(config, task(config), mesh=mesh)
    state, diag = program.step(program.init(), mesh_lib.global_batch(batch, mesh))
    results.append((jax.device_get(diag), jax.device_get(state.params), jax.device_get(state.rest)))
  (d1, p1, r1), (d8, p8, r8) = results
  for key in ("loss", "loss_policy_pass", "loss_random_pass"):
    np.testing.assert_allclose(d1[key], d8[key], rtol=1e-5, err_msg=key)
  # The policy's gradient comes through the crop's derivative w.r.t. the patch position, which
  # jumps where a patch edge crosses a pixel: float noise in the positions moves it slightly.
  np.testing.assert_allclose(d1["grad_norm"], d8["grad_norm"], rtol=1e-2)
  chex.assert_trees_all_close(p1, p8, rtol=1e-4, atol=1e-3)   # the update's norm is ~0.6
  chex.assert_trees_all_close(r1, r8, rtol=1e-4, atol=1e-5)   # batch statistics


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
  """The two-pass AdaFocusV2 step (batch statistics, dropout, random patches) killed after a
  checkpoint and resumed ends bitwise equal to an uninterrupted run."""
  import engine_helpers as h
  from jaxtrain.checkpoint import Checkpointer

  def args(name):
    return ["--model", "adafocus", "--workdir", tmp_path / name, "--out", tmp_path / f"{name}.npz",
            "--steps", 4, "--checkpoint_every", 2]

  [ref] = h.run_workers([args("ref")], timeout=900)
  h.kill_after_checkpoint(args("run") + ["--sleep", 2.0], tmp_path / "run", 2,
                          timeout=900).wait(timeout=60)
  killed_at = Checkpointer(str(tmp_path / "run" / "checkpoints")).latest_step()
  assert killed_at is not None and killed_at < 4
  [resumed] = h.run_workers([args("run")], timeout=900)
  assert resumed["step"] == 4 and resumed["losses"] == ref["losses"][killed_at:]
  got, want = dict(np.load(tmp_path / "run.npz")), dict(np.load(tmp_path / "ref.npz"))
  assert got.keys() == want.keys() and any("mean" in k for k in got)   # batch statistics too
  for k in got:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_baselines_random_patches_and_global_only():
  """``patch_policy='random'``: no policy, one pass on uniformly random patches from the key;
  ``'none'``: no crop and no local CNN, the classifier reads the global features."""
  x, labels = _frames(2, _config()), jnp.array([3, 7])
  for policy in ("random", "none"):
    config = _config(patch_policy=policy)
    model = _model(config)
    assert model.policy is None and (model.local_cnn is None) == (policy == "none")
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p, key):
      m = nnx.merge(graphdef, p, rest, copy=True)
      return afv2.train_loss(m, {"frames": jnp.asarray(x), "label": labels}, key, 0)[0]

    value, grads = jax.value_and_grad(loss)(params, jax.random.key(0))
    assert np.isfinite(float(value)) and float(optax_norm(grads["global_cnn"])) > 0
    model.eval()
    out = model(jnp.asarray(x))
    assert out["logits"].shape == (2, config.model.num_frames, 10)
    if policy == "none":
      assert "actions" not in out and "local_cnn" not in grads
      continue
    assert float(optax_norm(grads["local_cnn"])) > 0
    a = np.asarray(model(jnp.asarray(x), key=jax.random.key(1))["actions"])
    b = np.asarray(model(jnp.asarray(x), key=jax.random.key(2))["actions"])
    assert a.shape == (2, config.model.num_frames, 2) and np.all((a >= 0) & (a <= 1))
    assert not np.allclose(a, b)  # drawn from the key, not from the frames
    c = np.asarray(model(jnp.asarray(255 - x), key=jax.random.key(1))["actions"])
    np.testing.assert_array_equal(a, c)


def test_builtin_baselines_cost_what_adafocus_costs():
  cost = {v: flops.adafocus_costs(load_config(os.path.join(ROOT, f"configs/adafocusv2.py:{v}")
                                              ).model)["total_per_frame"]
          for v in ("builtin", "builtin_random", "builtin_global")}
  assert cost["builtin_random"] == pytest.approx(cost["builtin"], rel=0.03)   # minus the policy
  assert cost["builtin_global"] == pytest.approx(cost["builtin"], rel=0.03)


def test_small_digit_baselines_cost_at_least_what_adafocus_costs():
  cost = {v: flops.adafocus_costs(load_config(os.path.join(ROOT, f"configs/adafocusv2.py:{v}")
                                              ).model)
          for v in ("builtin_small", "builtin_small_random", "builtin_small_global")}
  ada, rand, glob = (cost[v]["total_per_frame"] for v in cost)
  assert rand == pytest.approx(ada - cost["builtin_small"]["policy"])  # the same, minus the policy
  assert ada <= glob <= 1.2 * ada  # the global-only baseline gets a little more, never less
  assert cost["builtin_small"]["local_cnn"] > cost["builtin_small"]["global_cnn"]


def test_local_cnn_width_multiplier_is_for_mobilenet_only():
  m = _config(local_arch="mobilenet_v2").model
  full = flops.adafocus_costs(m)["local_cnn"]
  half = flops.adafocus_costs(ml_collections.ConfigDict(dict(m, local_width=0.5)))["local_cnn"]
  assert 0.2 * full < half < 0.5 * full
  with pytest.raises(ConfigError, match=r"'resnet18': width=0\.5, expected 1\.0"):
    _model(_config(local_width=0.5))


def test_glance_size_pools_the_global_view_and_crops_the_full_resolution_frame():
  """``glance_size`` < ``image_size``: the global CNN (and the policy reading it) sees the frame
  mean-pooled in blocks (checked against NumPy in float64), the local CNN a patch cut from the
  full-resolution frame."""
  x = np.random.default_rng(0).normal(size=(3, 64, 64, 3))
  want = x.reshape(3, 32, 2, 32, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(afv2.downsample(jnp.asarray(x, jnp.float32), 32), want, atol=1e-5)
  assert afv2.downsample(jnp.asarray(x, jnp.float32), 64).shape == x.shape

  config = _config(glance_size=32)
  model = _model(config)
  model.eval()
  frames = jnp.asarray(_frames(2, config))
  actions = jnp.asarray(np.random.default_rng(1).uniform(size=(2, config.model.num_frames, 2)),
                        jnp.float32)
  out = model(frames, actions=actions)
  xn = model.normalize(frames)
  pooled = jnp.asarray(np.asarray(xn, np.float64).reshape(-1, 32, 2, 32, 2, 3).mean(axis=(2, 4)),
                       jnp.float32)
  g = jnp.mean(model.global_cnn.features(pooled), axis=(1, 2))
  np.testing.assert_allclose(out["global_logits"].reshape(-1, 10), model.global_head(g),
                             rtol=1e-4, atol=1e-4)
  patches = crop_lib.crop_patches(xn, actions.reshape(-1, 2), config.model.patch_size)
  local = jnp.mean(model.local_cnn.features(patches), axis=(1, 2))
  np.testing.assert_allclose(out["local_logits"].reshape(-1, 10), model.local_head(local),
                             rtol=1e-4, atol=1e-4)
  assert model(frames)["actions"].shape == (2, config.model.num_frames, 2)  # the policy runs
  # A glance that is not a multiple of 32: the policy reads the rounded-up map (48 px -> 2 x 2).
  odd = _config(image_size=96, glance_size=48)
  odd_model = _model(odd)
  odd_model.eval()
  assert odd_model(jnp.asarray(_frames(1, odd)))["actions"].shape == (1, odd.model.num_frames, 2)

  for bad in (48, 128, -32):
    with pytest.raises(ConfigError, match=rf"config\.model\.glance_size={bad}: expected 0 or a "
                                          "divisor"):
      _model(_config(glance_size=bad))


def test_glance_size_costs_the_global_cnn_at_its_own_resolution():
  m = _config().model
  small = flops.adafocus_costs(ml_collections.ConfigDict(dict(m, image_size=32)))
  both = flops.adafocus_costs(ml_collections.ConfigDict(dict(m, glance_size=32)))
  full = flops.adafocus_costs(m)
  assert both["global_cnn"] == small["global_cnn"] < full["global_cnn"]
  assert both["local_cnn"] == full["local_cnn"] and both["crop"] == full["crop"]
