"""The engine contract on the tiny test net (batch norm, dropout): frozen parameters get no
optimizer state and never change; per-module learning-rate and weight-decay multipliers give the
hand-computed SGD update; batch statistics are those of the global batch on a 2x4 mesh; EMA of
parameters; periodic evaluation and the best checkpoint; config errors that name the culprit."""
import json

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

import engine_helpers as h
from jaxtrain import loop
from jaxtrain import mesh as mesh_lib
from jaxtrain import optim as optim_lib
from jaxtrain.checkpoint import Checkpointer
from jaxtrain.errors import ConfigError
from jaxtrain.inference import batched_apply
from jaxtrain.task import Evaluator


def _one_device():
  return mesh_lib.make_mesh(ml_collections.ConfigDict({"shape": {"data": 1, "fsdp": 1}}),
                            devices=jax.devices()[:1])


def _flat(tree) -> dict:
  return {optim_lib.param_path(p): np.asarray(jax.device_get(v), np.float64)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_frozen_parameters_have_no_optimizer_state_and_do_not_change(tmp_path):
  config = h.make_config(steps=3)
  program = loop.build_program(config, h.make_task(), mesh=_one_device())
  state = program.init()
  trainable, frozen = _flat(state.params), _flat(state.frozen)
  assert sorted(frozen) == ["neck/bias", "neck/kernel"]
  assert not any(p.startswith("neck/") for p in trainable)
  opt_paths = list(_flat(state.opt_state))
  assert opt_paths and not any("neck" in p for p in opt_paths)
  # SGD with momentum: one buffer per trainable parameter and nothing else of parameter size.
  sizes = sorted(v.size for v in _flat(state.opt_state).values() if v.size > 1)
  assert sizes == sorted(v.size for v in trainable.values() if v.size > 1)
  result = loop.train(config=config, workdir=str(tmp_path), task=h.make_task(),
                      train_iter=h.ArrayIterator(16), mesh=_one_device())
  after = _flat(nnx.state(result.model, nnx.Param))
  for k, v in frozen.items():
    np.testing.assert_array_equal(after[k], v, err_msg=k)
  assert not np.allclose(after["head/kernel"], trainable["head/kernel"])


def test_lr_and_wd_multipliers_give_the_hand_computed_update():
  """One SGD step from the initial state: p1 = p0 - lr * lr_mult * (g + wd * wd_mult * p0)
  (PyTorch's SGD; the momentum buffer starts at the first gradient)."""
  config = h.make_config(steps=3)
  config.optim.update(dict(warmup_steps=0, grad_clip=0.0, weight_decay=0.01))
  task = h.make_task(two_pass=False)
  program = loop.build_program(config, task, mesh=_one_device())
  state = program.init()
  p0 = _flat(state.params)
  batch = next(h.ArrayIterator(16))
  rng = jax.random.fold_in(jax.random.key(config.seed), 0)

  # The reference gradient: the same loss differentiated outside the engine's step.
  frozen, rest = state.frozen, state.rest

  def loss(tp):
    return h.loss_fn(nnx.merge(program.graphdef, tp, frozen, rest, copy=True), batch, rng, 0)[0]

  grads = _flat(jax.grad(loss)(state.params))
  new_state, _ = program.step(state, mesh_lib.global_batch(batch, program.mesh))
  p1 = _flat(new_state.params)
  lr_mult = {"head/kernel": 5.0, "head/bias": 5.0, "backbone/w": 0.5,
             "backbone/bn/scale": 0.5, "backbone/bn/bias": 0.5}
  decays = {"head/kernel", "backbone/w"}  # wd_mults: 'kernel$|/w$' only
  assert p1.keys() == lr_mult.keys()
  for k in p1:
    wd = 0.01 if k in decays else 0.0
    want = p0[k] - 0.05 * lr_mult[k] * (grads[k] + wd * p0[k])
    np.testing.assert_allclose(p1[k], want, rtol=1e-5, atol=1e-7, err_msg=k)


def test_batch_statistics_are_over_the_global_batch_on_a_2x4_mesh():
  config = h.make_config(steps=1)
  program = loop.build_program(config, h.make_task(two_pass=False))
  assert dict(program.mesh.shape) == {"data": 2, "fsdp": 4}
  state = program.init()
  w = np.asarray(state.params["backbone"]["w"].get_value(), np.float64)
  batch = next(h.ArrayIterator(16))
  new_state, _ = program.step(state, mesh_lib.global_batch(batch, program.mesh))
  z = batch["x"].astype(np.float64) @ w  # 16 rows over 8 devices: 2 rows per device
  bn = new_state.rest["backbone"]["bn"]
  np.testing.assert_allclose(np.asarray(bn["mean"].get_value()), 0.1 * z.mean(0), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(bn["var"].get_value()), 0.9 + 0.1 * z.var(0), rtol=1e-4)


def test_ema_of_parameters_follows_its_recurrence():
  config = h.make_config(steps=3)
  config.optim.ema_decay = 0.5
  program = loop.build_program(config, h.make_task(), mesh=_one_device())
  state = program.init()
  ema = _flat(state.params)
  it = h.ArrayIterator(16)
  for _ in range(3):
    state, _ = program.step(state, mesh_lib.global_batch(next(it), program.mesh))
    ema = {k: 0.5 * ema[k] + 0.5 * v for k, v in _flat(state.params).items()}
  for k, v in _flat(state.ema).items():
    np.testing.assert_allclose(v, ema[k], rtol=1e-6, atol=1e-7, err_msg=k)
  # The model the engine hands out (for evaluation and after training) carries the EMA.
  np.testing.assert_array_equal(np.asarray(program.model(state).head.kernel.get_value()),
                                np.asarray(state.ema["head"]["kernel"].get_value()))


def _val_evaluator():
  held_out = h.ArrayIterator(16, seed=1, n=64)

  def fn(model):
    pred = batched_apply(model, lambda m, x: m(x), (held_out.x,), 32)
    return {"mse": float(np.mean((pred - held_out.y) ** 2))}

  return Evaluator("val", fn)


def test_periodic_evaluation_and_the_best_checkpoint(tmp_path):
  evaluator = _val_evaluator()
  task = h.make_task(evaluators=(evaluator,))
  # 'max' so that the best step is not simply the last one (the error falls as training goes).
  config = h.make_config(steps=8, eval_every=2, checkpoint_every=4, keep_checkpoints=1,
                         best_metric="val/mse", best_mode="max")
  result = loop.train(config=config, workdir=str(tmp_path), task=task,
                      train_iter=h.ArrayIterator(16))
  assert [e["step"] for e in result.eval_history] == [2, 4, 6, 8]
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  evals = {r["step"]: r["eval/val/mse"] for r in records if "eval/val/mse" in r}
  assert evals == {e["step"]: pytest.approx(e["val/mse"]) for e in result.eval_history}
  best_step = max(evals, key=evals.get)
  info = json.loads((tmp_path / "best" / "best.json").read_text())
  assert info["step"] == best_step == result.best["step"] and info["mode"] == "max"
  assert info["value"] == pytest.approx(evals[best_step])
  assert Checkpointer(str(tmp_path / "best")).all_steps() == [best_step]
  # The best checkpoint holds that step's state: evaluating it gives the recorded value.
  program = loop.build_program(config, task)
  restored = Checkpointer(str(tmp_path / "best")).restore(best_step, program.abstract_state)
  assert int(restored.step) == best_step
  assert evaluator.fn(program.model(restored))["mse"] == pytest.approx(info["value"], rel=1e-6)


def test_config_errors_name_the_culprit(tmp_path):
  task = h.make_task()
  config = h.make_config()
  config.optim.name = "lamb"
  with pytest.raises(ConfigError, match="lamb"):
    loop.build_program(config, task)
  config = h.make_config()
  config.optim.frozen = ("^neck/", "^trunk/")
  with pytest.raises(ConfigError, match=r"optim\.frozen.*\^trunk/"):
    loop.build_program(config, task)
  config = h.make_config(best_metric="val/mse")
  with pytest.raises(ConfigError, match="no evaluators"):
    loop.train(config=config, workdir=str(tmp_path), task=task, train_iter=h.ArrayIterator(16))
  assert not (tmp_path / "checkpoints").exists()


def _forward(model, x):
  return model(x)


def test_batched_apply_evaluates_in_eval_mode_and_compiles_once():
  from jaxtrain import inference
  with nnx.use_eager_sharding(False):
    model = h.TinyNet(nnx.Rngs(0))
  model.train()  # batched_apply switches to eval mode itself (dropout off, running BN stats)
  x = np.random.default_rng(0).normal(size=(21, 8)).astype(np.float32)
  before = len(inference._COMPILED)
  first = batched_apply(model, _forward, (x,), 8)
  again = batched_apply(model, _forward, (x,), 8)     # a periodic evaluation: same program
  assert len(inference._COMPILED) == before + 1
  ref = nnx.merge(*nnx.split(model))
  ref.eval()
  np.testing.assert_allclose(first, np.asarray(ref(x)), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(first, again)
  tree = batched_apply(model, lambda m, xb: {"y": m(xb), "n": xb[:, :1]}, (x,), 8)
  assert tree["y"].shape == (21, 4) and tree["n"].shape == (21, 1)
