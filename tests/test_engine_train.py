"""The train loop end to end on a tiny net with batch norm and dropout, trained with SGD, per-module
learning-rate multipliers, a frozen module and two passes per step: a 2x4 (data, fsdp) mesh == one device; two processes
on loopback (gloo) == one process with 8 devices; SIGKILL mid-run + resume == an uninterrupted
run, bitwise; SIGTERM saves and exits cleanly; a non-finite loss names its step and the last good
checkpoint; keep-last-N; TensorBoard, metrics.jsonl and summary.json."""
import json
import os
import signal

import chex
import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.experimental.compilation_cache import compilation_cache

import engine_helpers as h
from jaxtrain import loop
from jaxtrain import mesh as mesh_lib
from jaxtrain import metrics as metrics_lib
from jaxtrain.checkpoint import Checkpointer
from jaxtrain.task import Task

STEPS, EVERY = 8, 2


def _train(workdir, config, mesh=None, **iter_kw):
  it = h.ArrayIterator(config.train.batch_size, **iter_kw)
  result = loop.train(config=config, workdir=str(workdir), task=h.make_task(), train_iter=it,
                      mesh=mesh)
  metrics_lib.write_summary(str(workdir), config, result)
  return result, it


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
  """A persistent compilation cache for this module's runs and its worker processes: the runs
  compile the same few programs over and over (the same model, optimizer and meshes)."""
  path = tmp_path_factory.mktemp("jax_cache")
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  old = {name: getattr(jax.config, name) for name in names}
  for name, value in zip(names, (str(path), 0, 0)):
    jax.config.update(name, value)
  compilation_cache.reset_cache()
  yield path
  for name, value in old.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Uninterrupted run on the 8 simulated devices: 8 steps, checkpoints every 2, keep 2."""
  workdir = tmp_path_factory.mktemp("reference")
  before = signal.getsignal(signal.SIGTERM)
  config = h.make_config(steps=STEPS, checkpoint_every=EVERY, keep_checkpoints=2)
  result, _ = _train(workdir, config)
  assert signal.getsignal(signal.SIGTERM) is before  # the loop puts the old handler back
  return result, h.params_of(result.model), workdir, config


# ------------------------------------------------------------------------------- in one process

def test_2x4_mesh_matches_one_device(tmp_path, reference):
  sharded, sharded_params, _, config = reference
  w = sharded.model.backbone.w.get_value()
  assert dict(w.sharding.mesh.shape) == {"data": 2, "fsdp": 4}
  assert w.sharding.spec == jax.P(None, "fsdp")
  # Batch statistics are sharded like their features and computed over the global batch.
  assert sharded.model.backbone.bn.mean.get_value().sharding.spec == jax.P()
  one = mesh_lib.make_mesh(ml_collections.ConfigDict({"shape": {"data": 1, "fsdp": 1}}),
                           devices=jax.devices()[:1])
  single, _ = _train(tmp_path, config, mesh=one)
  losses = lambda r: np.array([m["loss"] for m in r.history])
  assert len(sharded.history) == STEPS
  np.testing.assert_allclose(losses(sharded), losses(single), rtol=1e-5)
  chex.assert_trees_all_close(sharded_params, h.params_of(single.model), rtol=1e-5, atol=1e-6)
  for key in ("grad_norm", "param_norm", "update_norm", "mae", "max_err", "loss_flipped",
              "steps_per_s"):
    assert np.isfinite(sharded.metrics[key])
  assert len(sharded.metrics["mse_per_output"]) == 4  # reduction 'none' keeps the vector


def test_keep_last_n_metrics_files_and_resume(reference):
  result, _, workdir, config = reference
  ckdir = str(workdir / "checkpoints")
  assert Checkpointer(ckdir).all_steps() == [6, 8]
  assert result.step == STEPS and not result.preempted
  assert result.checkpoint == os.path.join(ckdir, "8")
  assert [m["step"] for m in result.history] == list(range(1, STEPS + 1))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tb"))
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["name"] == "engine_test" and summary["step"] == STEPS
  assert summary["final_metrics"]["loss"] == pytest.approx(result.metrics["loss"])
  assert summary["train_wall_time_s"] > 0 and not summary["preempted"]
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert json.loads(lines[-1])["train/loss"] == pytest.approx(result.metrics["loss"])
  assert [json.loads(line)["step"] for line in lines] == list(range(1, STEPS + 1))
  data = json.loads((workdir / "checkpoints" / "8" / "data" / "process_0-of-1.json").read_text())
  assert data == {"position": STEPS}
  # More steps resume from step 8 and the saved data position (in a copy of the run).
  config = config.copy_and_resolve_references()
  config.train.steps = STEPS + 2
  again, it = _train(workdir, config)
  assert again.step == STEPS + 2 and it.position == STEPS + 2
  assert [m["step"] for m in again.history] == [STEPS + 1, STEPS + 2]
  assert Checkpointer(ckdir).all_steps() == [STEPS, STEPS + 2]


def test_checkpoint_root_outside_the_workdir(tmp_path, reference):
  """``train.checkpoint_root`` (a shared path every host sees) holds checkpoints/ and best/; the
  workdir keeps only logs; a second workdir on the same root resumes from it."""
  ref_result, ref_params, _, _ = reference
  shared = tmp_path / "shared"
  config = h.make_config(steps=STEPS, checkpoint_every=EVERY, keep_checkpoints=2,
                         checkpoint_root=str(shared))
  result, _ = _train(tmp_path / "host_a", config)
  chex.assert_trees_all_equal(h.params_of(result.model), ref_params)
  assert result.checkpoint == str(shared / "checkpoints" / "8")
  assert not (tmp_path / "host_a" / "checkpoints").exists()
  assert (tmp_path / "host_a" / "summary.json").exists()
  config.train.steps = STEPS + 2
  again, it = _train(tmp_path / "host_b", config)
  assert [m["step"] for m in again.history] == [STEPS + 1, STEPS + 2] and it.position == STEPS + 2


def test_checkpoint_paths_keep_urls():
  cfg = ml_collections.ConfigDict(dict(checkpoint_root="gs://bucket/runs/x/"))
  assert loop.checkpoint_dirs("/local/run", cfg) == ("gs://bucket/runs/x/checkpoints",
                                                      "gs://bucket/runs/x/best")
  cfg.checkpoint_root = ""
  assert loop.checkpoint_dirs("/local/run", cfg) == ("/local/run/checkpoints", "/local/run/best")


def test_non_finite_loss_names_step_and_last_good_checkpoint(tmp_path):
  # The 5th batch (position 4) holds a NaN: step 5 is the first bad one, found at step 6's log.
  config = h.make_config(steps=STEPS, log_every=3, checkpoint_every=2)
  with pytest.raises(loop.NonFiniteLossError) as err:
    _train(tmp_path, config, nan_at=4)
  ckdir = tmp_path / "checkpoints"
  assert "at step 5 " in str(err.value)
  assert str(err.value).endswith(f"last good checkpoint: {ckdir / '4'}")
  # Each save first checks the steps since the last check: nothing was saved at step 6.
  assert Checkpointer(str(ckdir)).all_steps() == [2, 4]


# ------------------------------------------------------------------------------- subprocesses

def test_two_processes_on_loopback_match_one_process(tmp_path, reference, cache):
  ref, ref_params, _, _ = reference
  port = h.free_port()
  results = h.run_workers(
      [["--workdir", tmp_path / "run", "--out", tmp_path / "params.npz", "--steps", STEPS,
        "--checkpoint_every", STEPS // 2, "--devices", 4, "--num_processes", 2, "--process_id", i,
        "--port", port] for i in range(2)], cache)
  for r in results:
    assert r["step"] == STEPS and r["position"] == {"position": STEPS}
    np.testing.assert_allclose(r["losses"], [m["loss"] for m in ref.history], rtol=1e-5)
  chex.assert_trees_all_close(dict(np.load(tmp_path / "params.npz")), ref_params,
                              rtol=1e-5, atol=1e-6)
  # Each process saved its own data-iterator position in the checkpoint.
  data = tmp_path / "run" / "checkpoints" / str(STEPS) / "data"
  for i in range(2):
    assert json.loads((data / f"process_{i}-of-2.json").read_text()) == {"position": STEPS}


def test_sigkill_and_resume_is_bitwise_identical(tmp_path, reference, cache):
  _, ref_params, _, _ = reference
  workdir = tmp_path / "run"
  args = ["--workdir", workdir, "--out", tmp_path / "params.npz", "--steps", STEPS,
          "--checkpoint_every", EVERY]
  h.kill_after_checkpoint(args + ["--sleep", 0.3], workdir, 2, cache).wait(timeout=60)
  killed_at = Checkpointer(str(workdir / "checkpoints")).latest_step()
  assert killed_at is not None and killed_at < STEPS
  [result] = h.run_workers([args], cache)
  assert result["step"] == STEPS and result["position"] == {"position": STEPS}
  assert len(result["losses"]) == STEPS - killed_at
  # Records the killed run wrote after its last checkpoint were dropped on resume.
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == list(range(1, STEPS + 1))
  got = dict(np.load(tmp_path / "params.npz"))
  assert got.keys() == ref_params.keys()
  for k in got:
    np.testing.assert_array_equal(got[k], ref_params[k], err_msg=k)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, cache):
  workdir = tmp_path / "run"
  proc = h.kill_after_checkpoint(["--workdir", workdir, "--steps", 40, "--checkpoint_every", 4,
                                  "--sleep", 0.2], workdir, 4, cache, sig=signal.SIGTERM)
  result = h.worker_result(proc)
  assert result["preempted"] and result["step"] < 40
  assert Checkpointer(str(workdir / "checkpoints")).latest_step() == result["step"]
  assert result["position"] == {"position": result["step"]}
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["preempted"] and summary["step"] == result["step"]


def test_grain_iterator_position_is_checkpointed(tmp_path):
  import grain
  data = h.ArrayIterator(16)
  records = [{"x": data.x[i], "y": data.y[i]} for i in range(len(data.x))]
  dataset = (grain.MapDataset.source(records).shuffle(seed=0).repeat(None).batch(16)
             .to_iter_dataset())
  config = h.make_config(steps=3, checkpoint_every=2)
  run = lambda it: loop.train(config=config, workdir=str(tmp_path), task=h.make_task(),
                              train_iter=it)
  first = iter(dataset)
  assert run(first).step == 3
  config.train.steps = 5
  resumed = iter(dataset)
  assert run(resumed).step == 5
  assert resumed.get_state() == first.get_state() | {"next_index": 5}


class _Stateful(nnx.Module):
  """Keeps its own dropout rng stream (a typed key and a counter) and batch statistics."""

  def __init__(self, rngs: nnx.Rngs):
    self.lin = nnx.Linear(8, 4, rngs=rngs)
    self.drop = nnx.Dropout(0.3, rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)

  def __call__(self, x):
    return self.bn(self.drop(self.lin(x)))


def _stateful_loss(model, batch, rng, step):
  del rng, step
  return np.float32(0.5) * ((model(batch["x"]) - batch["y"]) ** 2).mean(), {}


def test_stateful_model_resumes_bitwise(tmp_path):
  def run(workdir, steps):
    config = h.make_config(steps=steps, checkpoint_every=2)
    config.optim.lr_mults = config.optim.wd_mults = config.optim.frozen = ()
    result = loop.train(config=config, workdir=str(workdir),
                        task=Task(model=_Stateful, loss=_stateful_loss),
                        train_iter=h.ArrayIterator(16))
    return nnx.state(result.model)

  run(tmp_path / "a", 3)
  resumed = run(tmp_path / "a", 5)
  straight = run(tmp_path / "b", 5)
  assert int(resumed["drop"]["rngs"]["count"].get_value()) == 5
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(resumed), jax.tree.leaves(straight)):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
