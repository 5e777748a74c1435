"""Engine pieces without a train run: mesh from config, logical-axis shardings, global batches,
the optimizer's schedule, clipping and weight-decay mask, and distributed start-up."""
import jax
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

import engine_helpers as h
from jaxtrain import distributed
from jaxtrain import mesh as mesh_lib
from jaxtrain import optim as optim_lib


def _mesh_cfg(shape):
  return ml_collections.ConfigDict({"shape": shape})


def test_make_mesh_fills_minus_one_and_rejects_bad_shapes():
  mesh = mesh_lib.make_mesh(_mesh_cfg({"data": -1, "fsdp": 2}))
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  assert mesh_lib.batch_sharding(mesh).spec == jax.P(("data", "fsdp"))
  assert mesh_lib.process_batch_size(16, mesh) == 16
  with pytest.raises(mesh_lib.ShardingError, match="needs 6 devices, found 8"):
    mesh_lib.make_mesh(_mesh_cfg({"data": 3, "fsdp": 2}))
  with pytest.raises(mesh_lib.ShardingError, match="at most one axis"):
    mesh_lib.make_mesh(_mesh_cfg({"data": -1, "fsdp": -1}))
  with pytest.raises(mesh_lib.ShardingError, match="not divisible by 3"):
    mesh_lib.make_mesh(_mesh_cfg({"data": -1, "fsdp": 3}))
  with pytest.raises(mesh_lib.ShardingError, match="batch_size=12 is not divisible by the data"):
    mesh_lib.process_batch_size(12, mesh)


def test_shardings_from_logical_axis_rules_and_global_batch():
  mesh = mesh_lib.make_mesh(_mesh_cfg({"data": 2, "fsdp": 4}))
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: h.TinyNet(nnx.Rngs(0), hidden=6))
  params = nnx.state(abstract, nnx.Param)
  sh = mesh_lib.shardings_for(params, mesh, (("embed", "data"), ("mlp", "fsdp")))
  spec = lambda v: v.get_value().spec
  assert spec(sh["backbone"]["w"]) == jax.P("data")                 # 6 hidden units do not split 4 ways
  assert spec(sh["head"]["kernel"]) == jax.P(None, "data")
  assert spec(sh["head"]["bias"]) == jax.P()              # no logical names: replicated
  both = mesh_lib.shardings_for(params, mesh, (("embed", None), ("mlp", ("data", "fsdp"))))
  assert spec(both["backbone"]["w"]) == jax.P()                     # 6 does not split 8 ways either
  with pytest.raises(mesh_lib.ShardingError, match="logical axis 'mlp' has no rule"):
    mesh_lib.shardings_for(params, mesh, (("embed", None),))
  with pytest.raises(mesh_lib.ShardingError, match="mesh axis 'model'"):
    mesh_lib.shardings_for(params, mesh, (("embed", None), ("mlp", "model")))
  batch = mesh_lib.global_batch({"x": np.arange(48, dtype=np.float32).reshape(16, 3)}, mesh)
  assert batch["x"].shape == (16, 3) and batch["x"].sharding.spec == jax.P(("data", "fsdp"))
  np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(48).reshape(16, 3))
  with pytest.raises(mesh_lib.ShardingError, match="'x' has 12 rows"):
    mesh_lib.global_batch({"x": np.zeros((12, 3), np.float32)}, mesh)


def test_optimizer_schedule_clipping_and_decay_mask():
  cfg = ml_collections.ConfigDict(dict(lr=1.0, warmup_steps=4, weight_decay=0.1, grad_clip=1.0))
  schedule = optim_lib.make_schedule(cfg, total_steps=20)
  steps = np.arange(0, 21)   # closed form: linear warmup to step 4, then cosine to 0 at step 20
  expected = np.where(steps <= 4, steps / 4, 0.5 * (1 + np.cos(np.pi * (steps - 4) / 16)))
  np.testing.assert_allclose(np.asarray(jax.jit(schedule)(steps)), expected, atol=1e-6)
  params = {"w": np.ones((2, 2), np.float32), "b": np.ones((2,), np.float32)}
  tx = optim_lib.make_optimizer(cfg, 20, params)

  @jax.jit
  def three_updates(grads):
    state = tx.init(params)
    for _ in range(3):
      updates, state = tx.update(grads, state, params)
    return updates

  zero = three_updates({"w": np.zeros((2, 2), np.float32), "b": np.zeros((2,), np.float32)})
  # Zero gradients: only decoupled weight decay (lr * wd * w at step 2) moves the matrix.
  assert float(np.abs(zero["b"]).max()) == 0.0
  np.testing.assert_allclose(zero["w"], -expected[2] * 0.1, rtol=1e-5)
  # A huge gradient is clipped to norm 1 before Adam: the update stays finite, against the gradient.
  big = three_updates({"w": np.full((2, 2), 1e6, np.float32), "b": np.zeros((2,), np.float32)})
  assert np.all(np.isfinite(big["w"])) and np.all(np.asarray(big["w"]) < 0)
  with pytest.raises(ValueError, match="schedule='exponential'"):
    optim_lib.make_schedule(ml_collections.ConfigDict(dict(lr=1.0, schedule="exponential")), 10)
  clipped, _ = optax.clip_by_global_norm(1.0).update({"g": np.full((4,), 10.0, np.float32)}, None)
  assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-5)


def test_distributed_is_a_no_op_in_one_process(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS",
               "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(name, raising=False)
  assert not distributed.launched_multiprocess()
  assert distributed.maybe_initialize() is False
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert distributed.launched_multiprocess()
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
    distributed.maybe_initialize()
