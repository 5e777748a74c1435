"""BrainMAE pretraining on the shared engine across processes and kills: two processes on
loopback (jax.distributed, gloo CPU collectives, 2 devices each) match one process with 4 devices,
evaluation after training gives the same result on every process, and a run killed with SIGKILL mid-way and resumed ends bitwise equal to an uninterrupted run.
Real HCP windows, a small BrainMAE, parameters sharded over a 2x2 (data, fsdp) mesh. Few devices
and a long timeout: the suite runs these next to other tests on 2 cores."""
import numpy as np
import pytest

import engine_helpers as h
from jaxtrain.checkpoint import Checkpointer

STEPS, EVERY = 6, 2
TIMEOUT = 900  # seconds per worker


def _args(workdir, out, *extra, devices=4):
  return ["--model", "brainmae", "--workdir", workdir, "--out", out, "--steps", STEPS,
          "--checkpoint_every", EVERY, "--devices", devices, *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Uninterrupted run in one process with 4 devices."""
  tmp = tmp_path_factory.mktemp("brainmae_reference")
  [result] = h.run_workers([_args(tmp / "run", tmp / "params.npz")], timeout=TIMEOUT)
  assert result["step"] == STEPS and len(result["losses"]) == STEPS
  return result, dict(np.load(tmp / "params.npz"))


def test_two_processes_on_loopback_match_one_process(tmp_path, reference):
  ref, ref_params = reference
  port = h.free_port()
  results = h.run_workers([
      _args(tmp_path / "run", tmp_path / "params.npz", "--num_processes", 2, "--process_id", i,
            "--port", port, devices=2) for i in range(2)], timeout=TIMEOUT)
  for r in results:  # the same global batches (each process read its half of each), masks, rngs
    assert r["step"] == STEPS and r["position"] == ref["position"]
    np.testing.assert_allclose(r["losses"], ref["losses"], rtol=1e-5)
    # Evaluation after training: batches split over both processes' devices, result on each.
    np.testing.assert_allclose(r["eval_mse"], ref["eval_mse"], rtol=1e-5)
  got = dict(np.load(tmp_path / "params.npz"))
  assert got.keys() == ref_params.keys()
  for k in got:
    np.testing.assert_allclose(got[k], ref_params[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_sigkill_and_resume_is_bitwise_identical(tmp_path, reference):
  ref, ref_params = reference
  workdir = tmp_path / "run"
  args = _args(workdir, tmp_path / "params.npz")
  h.kill_after_checkpoint(args + ["--sleep", 0.5], workdir, EVERY, timeout=TIMEOUT).wait(60)
  killed_at = Checkpointer(str(workdir / "checkpoints")).latest_step()
  assert killed_at is not None and killed_at < STEPS
  [result] = h.run_workers([args], timeout=TIMEOUT)
  assert result["step"] == STEPS and len(result["losses"]) == STEPS - killed_at
  assert result["losses"] == ref["losses"][killed_at:]
  got = dict(np.load(tmp_path / "params.npz"))
  assert got.keys() == ref_params.keys()
  for k in got:
    np.testing.assert_array_equal(got[k], ref_params[k], err_msg=k)
