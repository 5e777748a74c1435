"""AdaFocusV2's Sth-Sth / Jester variant: shapes, one patch per video, TSM in both backbones, and
where gradients flow (the class logits read stopped features; the policy reads stopped maps)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrain.errors import ConfigError
from test_vision_backbones import materialise
from jaxvision.models import adafocus_tsm
from jaxvision.models.tsm import TemporalShift


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
