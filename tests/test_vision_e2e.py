"""AdaFocusV2 through its entry points: `python -m jaxvision.main` (smoke: built-in data built on
first use, two-pass training, validation and the best checkpoint, test evaluation with early exit
and patch statistics), `python -m jaxvision.predict` on a generated mp4, `--config.eval.only=True`
on a finished run, and bad inputs that must print one line naming the culprit, exit 2 and write
nothing; for both variants (ActivityNet: a step per frame; Sth-Sth / Jester: 2 stages)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args, timeout=900):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _one_error_line(proc, *needles):
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  for needle in needles:
    assert needle in lines[0], lines[0]


def _video(path, frames, size=(48, 64)):
  from jaxvision.data.video import write_video
  rng = np.random.default_rng(0)
  write_video(path, rng.integers(0, 256, (frames, *size, 3)).astype(np.uint8), fps=8)
  return path


def _smoke(tmp, config, *overrides):
  workdir, data = tmp / "run", tmp / "data"
  proc = _run("jaxvision.main", f"--config={config}", f"--workdir={workdir}",
              f"--config.data.dir={data}", *overrides)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, data, tmp


TSM_QS = (0.5, 1.0, 2.0, 4.0)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  return _smoke(tmp_path_factory.mktemp("adafocus"), "configs/adafocusv2.py:smoke")


@pytest.fixture(scope="module")
def tsm_run(tmp_path_factory):
  # q = 4: floor(4 validation videos * 1/(1 + q)) = 0 exit at stage 1 when fitting, so the
  # threshold is +inf and every test video must reach stage 2, whatever the logits.
  return _smoke(tmp_path_factory.mktemp("adafocus_tsm"), "configs/adafocusv2_tsm.py:smoke",
                f"--config.eval.early_exit_qs={TSM_QS}")


def test_main_smoke_run(smoke_run):
  workdir, data, _ = smoke_run
  assert (data / "meta.json").exists()  # the built-in dataset was built on first use
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["step"] == 4 and summary["name"] == "adafocusv2:smoke"
  ev = summary["eval"]
  assert len(ev["test_score_per_step"]) == 4 and 0.0 <= ev["test_score"] <= 1.0
  assert 0.0 <= ev["patch_contains_digit"] <= 1.0 and 0.0 <= ev["patch_contains_digit_random"] <= 1
  assert ev["early_exit"] and all(p["avg_cost"] > 0 for p in ev["early_exit"])
  for key in ("test_score_random_patches", "test_score_center_patches", "test_score_global_only"):
    assert 0.0 <= ev[key] <= 1.0, key
  assert summary["gflops_per_video"] == pytest.approx(4 * summary["gflops_per_frame"])
  assert [e["step"] for e in summary["eval_history"]] == [4]
  assert (workdir / "best" / "best.json").exists() and (workdir / "early_exit.png").exists()
  losses = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("train/loss_random_pass" in r for r in losses)


def _predict_steps(workdir, tmp) -> list[str]:
  """Runs predict on a generated 12-frame mp4 into tmp/pred; its printed per-step lines."""
  video = _video(tmp / "clip.mp4", 12)
  proc = _run("jaxvision.predict", f"--workdir={workdir}", f"--video={video}",
              f"--out={tmp / 'pred'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [l for l in proc.stdout.splitlines() if l.startswith("step")]


def test_predict_on_a_generated_mp4(smoke_run):
  workdir, _, tmp = smoke_run
  steps = _predict_steps(workdir, tmp)
  assert len(steps) == 4 and sum("<- early exit" in l for l in steps) == 1
  out = json.loads((tmp / "pred" / "prediction.json").read_text())
  assert len(out["boxes"]) == 4 and len(out["top5_per_step"][0]) == 5
  assert (tmp / "pred" / "strip.png").stat().st_size > 0
  assert (tmp / "pred" / "patches.gif").stat().st_size > 0


def test_predict_video_with_a_loaded_run_gives_the_same_prediction(smoke_run):
  """``predict_video(..., run=load_run(...))`` (several videos, one restore) predicts exactly what
  restoring the run itself gives."""
  from jaxvision import predict
  workdir, _, tmp = smoke_run
  video = str(_video(tmp / "clip_loaded.mp4", 10))
  config, model = predict.load_run(str(workdir), "latest")
  got = predict.predict_video(str(workdir), video, which="latest", run=(config, model))
  want = predict.predict_video(str(workdir), video, which="latest")
  np.testing.assert_array_equal(got.pop("frames"), want.pop("frames"))
  assert got == want and len(got["boxes"]) == 4 and got["exit_step"] is not None


def test_tsm_smoke_run_scores_both_stages(tsm_run):
  workdir, data, _ = tsm_run
  assert (data / "meta.json").exists()
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["step"] == 4 and summary["name"] == "adafocusv2_tsm:smoke"
  ev = summary["eval"]
  glance, whole = summary["gflops_per_step"]  # stage 1: the global CNN; stage 2: the whole model
  assert 0 < glance < whole == summary["gflops_per_video"]
  assert len(ev["test_score_per_step"]) == 2 and ev["test_score"] == ev["test_score_per_step"][1]
  assert ev["test_score_global_only"] == ev["test_score_per_step"][0]
  for key in ("test_score_random_patches", "test_score_center_patches", "patch_contains_digit",
              "patch_contains_digit_random"):
    assert 0.0 <= ev[key] <= 1.0, key
  points = ev["early_exit"]
  assert [p["q"] for p in points] == list(TSM_QS)
  for p in points:  # the cost of a point: its exit fractions times the stage costs
    first, second = p["exit_fractions"]
    assert p["avg_cost"] == pytest.approx(first * glance + second * whole)
  # With two stages a larger q lets fewer fitting videos exit at stage 1, so the stage-1 threshold
  # can only rise and the cost can only grow; at q = 4 no fitting video exits (threshold +inf).
  costs = [p["avg_cost"] for p in points]
  assert costs == sorted(costs) and costs[0] >= glance
  thresholds = [p["thresholds"] for p in
                json.loads((workdir / "early_exit.json").read_text())["points"]]
  assert thresholds[-1] == ["inf", "-inf"] and points[-1]["exit_fractions"] == [0.0, 1.0]
  assert points[-1]["avg_cost"] == pytest.approx(whole)
  assert all(t[0] != "inf" for t in thresholds[:-1])  # q <= 2: at least one fitting video exits
  with np.load(workdir / "test_outputs.npz") as z:
    assert z["logits"].shape == (4, 2, 10) and z["actions"].shape == (4, 2)
  assert (workdir / "best" / "best.json").exists() and (workdir / "early_exit.png").exists()
  losses = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("train/loss_random_pass" in r for r in losses)


def test_tsm_predict_draws_the_one_patch_on_the_focus_frames(tsm_run):
  workdir, _, tmp = tsm_run
  steps = _predict_steps(workdir, tmp)
  assert len(steps) == 2 and sum("<- early exit" in l for l in steps) == 1
  out = json.loads((tmp / "pred" / "prediction.json").read_text())
  assert out["frame_steps"] == [0, 0, 1, 1, 1] and out["exit_step"] in (0, 1)
  assert out["frame_indices"] == [3, 9, 2, 6, 10]  # glance: 2 TSN centres of 12; focus: 3
  assert out["boxes"][:2] == [None, None] and out["boxes"][2] is not None
  assert out["boxes"][2] == out["boxes"][3] == out["boxes"][4]  # one patch per video
  assert len(out["top5_per_step"]) == 2 and len(out["top5_per_step"][1]) == 5
  from PIL import Image
  with Image.open(tmp / "pred" / "strip.png") as strip:
    assert strip.size == (5 * 64, 64)
  with Image.open(tmp / "pred" / "patches.gif") as gif:
    assert gif.n_frames == 3  # the focus frames, in time order


@pytest.mark.parametrize("run, config, extra", [
    ("smoke_run", "configs/adafocusv2.py:smoke", ()),
    ("tsm_run", "configs/adafocusv2_tsm.py:smoke", (f"--config.eval.early_exit_qs={TSM_QS}",))])
def test_eval_only_reproduces_the_test_results(request, tmp_path, run, config, extra):
  workdir, data, _ = request.getfixturevalue(run)
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  before = json.loads((workdir / "summary.json").read_text())
  steps = sorted(os.listdir(copy / "checkpoints"))
  proc = _run("jaxvision.main", f"--config={config}", f"--workdir={copy}",
              f"--config.data.dir={data}", "--config.eval.only=True", *extra)
  assert proc.returncode == 0, proc.stderr[-3000:]
  after = json.loads((copy / "summary.json").read_text())
  assert after["eval_only"] and after["step"] == 4 and after["checkpoint"].endswith("checkpoints/4")
  assert after["eval"] == before["eval"] and after["gflops_per_step"] == before["gflops_per_step"]
  assert sorted(os.listdir(copy / "checkpoints")) == steps  # nothing trained, nothing saved
  with np.load(workdir / "test_outputs.npz") as a, np.load(copy / "test_outputs.npz") as b:
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-6, atol=1e-6)


def test_eval_only_without_a_checkpoint_and_tsm_without_lists_fail_in_one_line(tmp_path, capsys):
  from jaxvision import main
  workdir = tmp_path / "run"
  assert main.main(["--config=configs/adafocusv2_tsm.py:smoke", f"--workdir={workdir}",
                    f"--config.data.dir={tmp_path / 'data'}", "--config.eval.only=True"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and f"{workdir / 'checkpoints'}: no checkpoint" in err[0], err
  assert main.main(["--config=configs/adafocusv2_tsm.py:jester_p128", f"--workdir={workdir}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "config.data.train_list" in err[0], err
  assert not workdir.exists() and not (tmp_path / "data").exists()


def test_predict_bad_videos_fail_cleanly(smoke_run, tmp_path):
  workdir, _, _ = smoke_run
  out = tmp_path / "pred"
  proc = _run("jaxvision.predict", f"--workdir={workdir}", f"--video={tmp_path / 'none.mp4'}",
              f"--out={out}")
  _one_error_line(proc, "none.mp4")
  short = _video(tmp_path / "short.mp4", 2)      # T = 4 frames needed
  _one_error_line(_run("jaxvision.predict", f"--workdir={workdir}", f"--video={short}",
                       f"--out={out}"), "short.mp4", "2")
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
  _one_error_line(_run("jaxvision.predict", f"--workdir={workdir}", f"--video={corrupt}",
                       f"--out={out}"), "corrupt.mp4")
  assert not out.exists()


def test_bad_config_and_list_fail_before_writing(tmp_path):
  workdir = tmp_path / "run"
  proc = _run("jaxvision.main", "--config=configs/adafocusv2.py:smoke", f"--workdir={workdir}",
              f"--config.data.dir={tmp_path / 'data'}", "--config.model.patch_size=96")
  _one_error_line(proc, "patch_size=96")
  lst = tmp_path / "train.txt"
  (tmp_path / "frames" / "v0").mkdir(parents=True)
  lst.write_text("v0 abc 3\n")
  proc = _run("jaxvision.main", "--config=configs/adafocusv2.py:smoke", f"--workdir={workdir}",
              "--config.data.source=list", f"--config.data.root={tmp_path / 'frames'}",
              f"--config.data.train_list={lst}")
  _one_error_line(proc, "train.txt", "abc")
  assert not workdir.exists()
