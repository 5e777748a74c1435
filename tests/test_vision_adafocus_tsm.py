"""AdaFocusV2's Sth-Sth / Jester variant: shapes, one patch per video, TSM in both backbones,
where gradients flow (the class logits read stopped features; the policy reads stopped maps), its
2 evaluation stages, and every official config built and run abstractly (no real compute)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrain import loop
from jaxtrain import mesh as mesh_lib
from jaxtrain.config import load_config
from jaxtrain.errors import ConfigError
from test_vision_backbones import materialise
from jaxvision import train
from jaxvision.models import adafocus_tsm
from jaxvision.models.tsm import TemporalShift


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL = [f"{d}_p{p}" for d in ("ssv1", "ssv2", "jester") for p in (128, 144, 160, 176)]


def tiny(**kw):
  c = adafocus_tsm.default_model_config()
  c.update(dict(num_classes=5, glance_frames=2, focus_frames=3, image_size=32, patch_size=16,
                local_arch="resnet18", dropout=0.0))
  c.update(kw)
  return c


@pytest.fixture(scope="module")
def model_and_batch():
  model = materialise(lambda rngs: adafocus_tsm.AdaFocusV2TSM(tiny(), rngs=rngs))
  model.eval()
  rng = np.random.default_rng(0)
  glance = jnp.asarray(rng.integers(0, 256, (2, 2, 32, 32, 3)), jnp.uint8)
  focus = jnp.asarray(rng.integers(0, 256, (2, 3, 32, 32, 3)), jnp.uint8)
  return model, glance, focus


def test_outputs_and_one_patch_per_video(model_and_batch):
  model, glance, focus = model_and_batch
  out = nnx.jit(lambda m, g, f: m(g, f))(model, glance, focus)
  assert out["actions"].shape == (2, 2) and out["logits"].shape == (2, 5)
  a = np.asarray(out["actions"])
  assert ((a > 0) & (a < 1)).all()
  for k in ("global_aux_logits", "local_aux_logits", "local_logits"):
    assert out[k].shape == (2, 5) and np.isfinite(np.asarray(out[k])).all()
  g = nnx.jit(lambda m, x: m.glance(x))(model, glance)
  np.testing.assert_allclose(np.asarray(out["logits"]),
                             np.asarray(g["global_logits"] + out["local_logits"]), rtol=1e-5, atol=1e-6)
  assert g["fmap"].shape == (2, 1, 1, 2 * 1280)  # [B, h, w, Tg * C], frame-major channels


def test_both_backbones_shift_over_their_own_frames(model_and_batch):
  model = model_and_batch[0]
  shifts = {name: [m.shift for _, m in nnx.iter_graph(getattr(model, name))
                   if isinstance(m, nnx.Module) and getattr(m, "takes_shift", False)]
            for name in ("global_cnn", "local_cnn")}
  assert len(shifts["global_cnn"]) == 10 and len(shifts["local_cnn"]) == 8  # residual blocks
  assert set(shifts["global_cnn"]) == {TemporalShift(2, 8)}
  assert set(shifts["local_cnn"]) == {TemporalShift(3, 8)}


def test_gradients_flow_as_in_the_official_model(model_and_batch):
  """CE(logits) trains the heads' fc only (both read stopped features); the auxiliary losses train
  the backbones and, through the crop, the policy; nothing reaches the global CNN through the
  policy's input."""
  model, glance, focus = model_and_batch
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  labels = jnp.array([1, 3])

  def loss(p, w):
    out = nnx.merge(graphdef, p, rest)(glance, focus)
    ce = lambda k: jnp.mean(  # noqa: E731
        jax.nn.logsumexp(out[k], -1) - jnp.take_along_axis(out[k], labels[:, None], -1)[:, 0])
    return w[0] * ce("logits") + w[1] * (ce("global_aux_logits") + ce("local_aux_logits")) \
        + w[2] * jnp.sum(out["actions"])
  grad = jax.jit(jax.grad(loss))

  def norms(g):
    flat = nnx.to_flat_state(g)
    out = {}
    for path, v in flat:
      out.setdefault(path[0], 0.0)
      out[path[0]] += float(jnp.sum(jnp.square(v.get_value())))
    return out
  main, aux, act = (norms(grad(params, jnp.asarray(w, jnp.float32)))
                    for w in ((1, 0, 0), (0, 1, 0), (0, 0, 1)))
  assert main["global_cnn"] == 0 and main["local_cnn"] == 0
  assert main["global_heads"] > 0 and main["local_heads"] > 0 and main["policy"] == 0
  assert aux["global_cnn"] > 0 and aux["local_cnn"] > 0 and aux["policy"] > 0
  assert act["global_cnn"] == 0 and act["policy"] > 0


def test_bad_settings_name_the_field():
  for kw, field in ((dict(patch_size=48), "patch_size"), (dict(image_size=40), "image_size"),
                    (dict(glance_frames=0), "glance_frames"), (dict(dropout=1.0), "dropout")):
    with pytest.raises(ConfigError, match=f"config.model.{field}="):
      adafocus_tsm.check_config(tiny(**kw))
  model = nnx.eval_shape(lambda: adafocus_tsm.AdaFocusV2TSM(tiny(), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"glance input has shape \(1, 3, 32, 32, 3\)"):
    model(jnp.zeros((1, 3, 32, 32, 3)), jnp.zeros((1, 3, 32, 32, 3)))


def test_evaluation_stages_are_glance_only_then_the_final_logits(model_and_batch):
  """``jaxvision.train``'s steps for this variant: stage 1 = the global CNN's own head (aux_fc),
  stage 2 = the final logits; given ``actions`` replace the policy's patch."""
  model, glance, focus = model_and_batch
  v = train.variant(model.config)
  assert v.inputs == ("glance", "focus") and v.counts(model.config) == (2, 3)
  frames = jnp.concatenate([glance, focus], axis=1)
  actions = jnp.array([[0.1, 0.9], [0.5, 0.5]])
  out, fixed, ref, ref_fixed = nnx.jit(lambda m, x, a: (
      v.outputs(m, x), v.outputs(m, x, a), m(x[:, :2], x[:, 2:]), m(x[:, :2], x[:, 2:], actions=a)
  ))(model, frames, actions)
  assert out["logits"].shape == (2, 2, 5) and out["actions"].shape == (2, 2)
  for got, want in ((out, ref), (fixed, ref_fixed)):
    np.testing.assert_allclose(got["logits"][:, 0], want["global_aux_logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["logits"][:, 1], want["logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["global_logits"], want["global_aux_logits"], rtol=1e-5,
                               atol=1e-6)
  np.testing.assert_allclose(fixed["actions"], actions)
  np.testing.assert_array_equal(v.frame_steps(model.config), [0, 0, 1, 1, 1])
  np.testing.assert_array_equal(train.patched_frames(model.config), [2, 3, 4])


@pytest.mark.parametrize("variant", OFFICIAL)
def test_official_configs_build_and_evaluate_abstractly(variant):
  config = load_config(os.path.join(ROOT, f"configs/adafocusv2_tsm.py:{variant}"))
  m = config.model
  assert (m.glance_frames, m.focus_frames, m.image_size) == (8, 12, 224)
  assert m.patch_size == int(variant.rsplit("_p", 1)[1]) and not config.data.flip
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: train.task(config).model(nnx.Rngs(0)))
  model.eval()
  frames = jax.ShapeDtypeStruct((2, 20, 224, 224, 3), jnp.uint8)  # 8 glance + 12 focus frames
  out = nnx.eval_shape(train.variant(m).outputs, model, frames)
  assert out["logits"].shape == (2, 2, m.num_classes) and out["actions"].shape == (2, 2)
  assert out["global_logits"].shape == (2, m.num_classes)


def test_an_official_train_step_lowers_on_abstract_inputs():
  """The engine's two-pass step at the real size (ResNet-50-TSM on 12 patches of 176, batch 32):
  learning-rate patterns match the parameters, shapes agree; traced, never compiled or run."""
  config = load_config(os.path.join(ROOT, "configs/adafocusv2_tsm.py:ssv2_p176"))
  config.train.steps = 100
  one = mesh_lib.make_mesh({"shape": {"data": 1, "fsdp": 1}}, devices=jax.devices()[:1])
  program = loop.build_program(config, train.task(config), mesh=one)
  b = config.train.batch_size

  def spec(shape, dtype=jnp.uint8):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=program.batch_sharding)
  batch = {"glance": spec((b, 8, 224, 224, 3)), "focus": spec((b, 12, 224, 224, 3)),
           "label": spec((b,), jnp.int32)}
  state, diag = jax.eval_shape(program.step, program.abstract_state, batch)
  assert {"loss", "loss_policy_pass", "loss_random_pass", "grad_norm"} <= set(diag)
  assert diag["loss"].shape == () and state.step.shape == ()
