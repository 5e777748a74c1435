"""The optimizer from config: SGD and AdamW with per-parameter lr / weight-decay multipliers against
NumPy references, bitwise equality to the former AdamW chain, schedules, frozen parameters and
config errors."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtrain import optim as optim_lib
from jaxtrain.errors import ConfigError

T = 10   # total steps of the schedules below


class Backbone(nnx.Module):
  def __init__(self):
    self.w = nnx.Param(jnp.asarray(np.linspace(-1.0, 1.0, 6).reshape(3, 2), jnp.float32))
    self.b = nnx.Param(jnp.asarray([0.5, -0.25], jnp.float32))


class Head(nnx.Module):
  def __init__(self):
    self.kernel = nnx.Param(jnp.asarray([[0.3], [-0.7]], jnp.float32))
    self.bias = nnx.Param(jnp.asarray([0.1], jnp.float32))


class Tiny(nnx.Module):
  def __init__(self):
    self.backbone = Backbone()
    self.head = Head()
    self.count = nnx.BatchStat(jnp.zeros((), jnp.int32))


def _cfg(**kw):
  return ml_collections.ConfigDict(kw)


def _nested(tree):
  """{'backbone/w': array, ...} of a dict or an nnx.State, as float64 NumPy arrays."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {optim_lib.param_path(p): np.asarray(x, np.float64) for p, x in flat}


def _grads(step):
  """Fixed, step-dependent gradients as a nested dict of float32 arrays."""
  rng = np.random.default_rng(step)
  shapes = {"backbone": {"w": (3, 2), "b": (2,)}, "head": {"kernel": (2, 1), "bias": (1,)}}
  return jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), shapes,
                      is_leaf=lambda s: isinstance(s, tuple))


def _like(d, like):
  """The ``{path: array}`` dict ``d`` with the structure of ``like`` (a dict or an nnx.State)."""
  leaves = [d[path].astype(np.float32) for path in _nested(like)]
  return jax.tree.unflatten(jax.tree.structure(like), leaves)


def _run(tx, params, steps):
  """Parameters after ``steps`` updates with the fixed gradients (one jit)."""
  grads = [_like(_nested(_grads(s)), params) for s in range(steps)]

  @jax.jit
  def go(params, grads):
    state = tx.init(params)
    for g in grads:
      updates, state = tx.update(g, state, params)
      params = optax.apply_updates(params, updates)
    return params
  return _nested(go(params, grads))


def _linear_lr(lr, t):
  return lr * (1 - t / T)


MULT_CFG = dict(lr_mults=(("^head", 5.0), ("backbone", 0.5)),
                wd_mults=(("head/kernel", 2.0), ("backbone/w", 1.0), ("backbone", 0.5)))
LR_MULT = {"backbone/w": 0.5, "backbone/b": 0.5, "head/kernel": 5.0, "head/bias": 5.0}
WD_MULT = {"backbone/w": 1.0, "backbone/b": 0.5, "head/kernel": 2.0, "head/bias": 0.0}


def _np_sgd(p0, steps, lr, wd, m, nesterov):
  """PyTorch's SGD (coupled weight decay, momentum buffer) per parameter group, in float64."""
  out = {}
  for path, p in p0.items():
    buf = None
    for t in range(steps):
      d = _nested(_grads(t))[path] + wd * WD_MULT[path] * p
      buf = d if buf is None else m * buf + d
      step = d + m * buf if nesterov else buf
      p = p - _linear_lr(lr, t) * LR_MULT[path] * step
    out[path] = p
  return out


def _np_adamw(p0, steps, lr, wd, b1, b2, eps):
  """AdamW (decoupled weight decay) per parameter group, in float64."""
  out = {}
  for path, p in p0.items():
    mu = nu = 0.0
    for t in range(steps):
      g = _nested(_grads(t))[path]
      mu = b1 * mu + (1 - b1) * g
      nu = b2 * nu + (1 - b2) * g * g
      adam = (mu / (1 - b1 ** (t + 1))) / (np.sqrt(nu / (1 - b2 ** (t + 1))) + eps)
      p = p - _linear_lr(lr, t) * LR_MULT[path] * (adam + wd * WD_MULT[path] * p)
    out[path] = p
  return out


def _check_close(got, want):
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=2e-6, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_with_lr_and_wd_mults_matches_pytorch_recurrence(nesterov):
  cfg = _cfg(name="sgd", lr=0.1, schedule="linear", momentum=0.9, nesterov=nesterov,
             weight_decay=0.05, **MULT_CFG)
  params = nnx.state(Tiny(), nnx.Param)
  tx = optim_lib.make_optimizer(cfg, T, params)
  want = _np_sgd(_nested(params), 3, 0.1, 0.05, 0.9, nesterov)
  _check_close(_run(tx, params, 3), want)


def test_adamw_with_lr_and_wd_mults_matches_numpy_reference():
  cfg = _cfg(lr=0.01, schedule="linear", weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, **MULT_CFG)
  params = nnx.state(Tiny(), nnx.Param)
  abstract = jax.eval_shape(lambda: params)   # the multipliers need only shapes and paths
  tx = optim_lib.make_optimizer(cfg, T, abstract)
  want = _np_adamw(_nested(params), 3, 0.01, 0.1, 0.9, 0.95, 1e-8)
  _check_close(_run(tx, params, 3), want)


def test_plain_sgd_on_a_dict_decays_matrices_only_by_default():
  cfg = _cfg(name="sgd", lr=0.1, schedule="constant", momentum=0.0, weight_decay=0.5)
  p0 = _nested(nnx.state(Tiny(), nnx.Param))
  params = {"backbone": {"w": p0["backbone/w"].astype(np.float32),
                         "b": p0["backbone/b"].astype(np.float32)}}
  tx = optim_lib.make_optimizer(cfg, T, params)
  got = _run(tx, params, 2)
  for path in ("backbone/w", "backbone/b"):
    p = p0[path]
    for t in range(2):
      p = p - 0.1 * (_nested(_grads(t))[path] + (0.5 * p if p.ndim > 1 else 0.0))
    np.testing.assert_allclose(got[path], p, rtol=2e-6, err_msg=path)


def test_adamw_without_mults_is_bitwise_the_former_chain():
  cfg = _cfg(lr=2e-3, warmup_steps=2, weight_decay=0.05, grad_clip=1.0, b1=0.9, b2=0.95)
  params = nnx.state(Tiny(), nnx.Param)
  old = optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.adamw(optim_lib.make_schedule(cfg, T), b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.05,
                  mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)))
  new = optim_lib.make_optimizer(cfg, T, params)
  ones = optim_lib.make_optimizer(_cfg(lr_mults=((".*", 1.0),), **cfg), T, params)
  # Multipliers of 1.0 add no transformation: same optimizer state.
  assert (jax.tree.structure(ones.init(params)) == jax.tree.structure(new.init(params))
          == jax.tree.structure(old.init(params)))
  want = _run(old, params, 4)
  for tx in (new, ones):
    got = _run(tx, params, 4)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_schedules_closed_form():
  steps = np.arange(0, 13)
  w, lr, end = 2, 1.0, 0.1

  def sched(**kw):
    return np.asarray(jax.jit(optim_lib.make_schedule(_cfg(lr=lr, warmup_steps=w, **kw), T))(
        steps))

  warm = steps / w
  frac = np.clip((steps - w) / (T - w), 0, 1)
  cos = end + (lr - end) * 0.5 * (1 + np.cos(np.pi * frac))
  np.testing.assert_allclose(sched(end_lr_ratio=end), np.where(steps < w, warm, cos), atol=1e-6)
  lin = lr + (end - lr) * frac
  np.testing.assert_allclose(sched(schedule="linear", end_lr_ratio=end),
                             np.where(steps < w, warm, lin), atol=1e-6)
  np.testing.assert_allclose(sched(schedule="constant"), np.where(steps < w, warm, lr), atol=1e-6)
  step = lr * 0.5 ** ((steps >= 5).astype(int) + (steps >= 8).astype(int))
  np.testing.assert_allclose(sched(schedule="step", decay_boundaries=(5, 8), decay_factor=0.5),
                             np.where(steps < w, warm, step), atol=1e-6)
  no_warm = optim_lib.make_schedule(_cfg(lr=lr, schedule="step", decay_boundaries=(3,)), T)
  np.testing.assert_allclose(np.asarray(jax.jit(no_warm)(steps)),
                             np.where(steps >= 3, 0.1, 1.0), atol=1e-7)


def test_param_path_of_dicts_states_and_graph_paths():
  state = nnx.state(Tiny(), nnx.Param)
  paths = [optim_lib.param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
  assert paths == ["backbone/b", "backbone/w", "head/bias", "head/kernel"]
  d = {"enc": {"blocks": [{"wq": 1.0}]}}
  assert [optim_lib.param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(d)[0]] == [
      "enc/blocks/0/wq"]
  assert optim_lib.param_path(("encoder", "ga_blocks", 0, "attn", "wq")) == (
      "encoder/ga_blocks/0/attn/wq")


def test_frozen_filter_splits_exactly_the_matching_params():
  model = Tiny()
  cfg = _cfg(lr=1.0, frozen=("^backbone/w$", "head/b"))
  frozen, trainable, rest = nnx.split(model, optim_lib.frozen_filter(cfg), nnx.Param, ...)[1:]
  assert sorted(_nested(frozen)) == ["backbone/w", "head/bias"]
  assert sorted(_nested(trainable)) == ["backbone/b", "head/kernel"]
  assert sorted(_nested(rest)) == ["count"]                # a BatchStat is never frozen
  for none in (_cfg(lr=1.0), _cfg(lr=1.0, frozen=None), _cfg(lr=1.0, frozen=())):
    assert not _nested(nnx.state(model, optim_lib.frozen_filter(none)))
  # The optimizer of the trainable part only.
  tx = optim_lib.make_optimizer(_cfg(lr=0.1, lr_mults=(("head", 2.0),)), T, trainable)
  assert len(jax.tree.leaves(tx.init(trainable))) == 2 + 2 * 2   # 2 counts + mu, nu of 2 arrays


def test_config_errors_name_the_field_and_value():
  params = {"w": np.ones((2, 2), np.float32)}
  with pytest.raises(ConfigError, match=r"config\.optim\.name='lamb'.*adamw, sgd"):
    optim_lib.make_optimizer(_cfg(lr=1.0, name="lamb"), T, params)
  with pytest.raises(ConfigError, match=r"config\.optim\.schedule='exp'.*cosine, linear"):
    optim_lib.make_schedule(_cfg(lr=1.0, schedule="exp"), T)
  with pytest.raises(ConfigError, match=r"config\.optim\.lr=-1\.0"):
    optim_lib.make_schedule(_cfg(lr=-1.0), T)
  with pytest.raises(ConfigError, match=r"config\.optim\.warmup_steps=-2"):
    optim_lib.make_schedule(_cfg(lr=1.0, warmup_steps=-2), T)
  with pytest.raises(ConfigError, match=r"config\.optim\.decay_boundaries"):
    optim_lib.make_schedule(_cfg(lr=1.0, schedule="step", warmup_steps=4, decay_boundaries=(2,)),
                            T)
  with pytest.raises(ConfigError, match=r"config\.optim\.lr_mults: entry 'head'"):
    optim_lib.make_optimizer(_cfg(lr=1.0, lr_mults=("head",)), T, params)
  paths = ["backbone/w", "backbone/b", "head/kernel", "head/bias"]
  optim_lib.check_patterns(_cfg(lr=1.0, frozen=("backbone",), **MULT_CFG), paths)
  for field, value in (("frozen", ("backbone", "decoder")),
                       ("lr_mults", (("head", 2.0), ("decoder", 0.1))),
                       ("wd_mults", (("decoder", 0.0),))):
    with pytest.raises(ConfigError, match=rf"config\.optim\.{field}: regex 'decoder'.*head/kernel"):
      optim_lib.check_patterns(_cfg(lr=1.0, **{field: value}), paths)
  with pytest.raises(ConfigError, match=r"config\.optim\.frozen: invalid regex '\('"):
    optim_lib.check_patterns(_cfg(lr=1.0, frozen=("(",)), paths)
