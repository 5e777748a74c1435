"""BrainMAE through the real entry points: `python -m jaxbrain.main`, train_and_evaluate, the
sharded train step, fine-tuning and probing, and bad inputs that must fail cleanly."""
import json
import os
import subprocess
import sys

import chex
import jax
import ml_collections
import numpy as np
import pytest
import scipy.io
from flax import nnx

from jaxbrain.data.sources import Subject
from jaxbrain.data.validation import DataError
from jaxbrain.models.brainmae import BrainMAE
from jaxbrain.tasks import finetune
from jaxbrain.tasks.inputs import FmriData, data_shapes, load_data
from jaxbrain.tasks.pretrain import pretrain_task
from jaxbrain.tasks.train import train_and_evaluate, with_data_shapes
from jaxtrain import loop, mesh as mesh_lib
from jaxtrain.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["train.steps=4", "train.log_every=2", "train.checkpoint_every=2", "train.batch_size=8",
        "eval.ridge_lambda=0.01", "eval.num_permutations=200", "eval.batch_size=16"]


def _run_main(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", "jaxbrain.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_main_smoke_run_writes_summary_and_exports(tmp_path):
  workdir = tmp_path / "run"
  proc = _run_main("--config=configs/brainmae.py:smoke", f"--workdir={workdir}",
                   *[f"--config.{o}" for o in TINY])
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["name"] == "brainmae:smoke" and summary["step"] == 4
  assert summary["devices"].startswith("2 x ")  # mesh.cpu_devices=2: the CPU split in two devices
  ev = summary["eval"]
  for key in ("recon_mse_model", "recon_mse_roi_mean", "recon_mse_linear_interp",
              "recon_mse_ridge", "fingerprint_accuracy", "fingerprint_chance",
              "homology_p_value"):
    assert np.isfinite(ev[key]), key
  assert ev["fingerprint_chance"] == pytest.approx(1 / 3)
  assert len(summary["heldout_subjects"]) == 3
  assert not set(summary["heldout_subjects"]) & set(summary["pretrain_subjects"])
  for name in ("roi_similarity", "roi_attention_0"):
    assert (workdir / "interpret" / f"{name}.png").stat().st_size > 0
    assert np.load(workdir / "interpret" / f"{name}.npy").shape == (94, 94)
  assert os.listdir(workdir / "checkpoints")
  assert any(f.startswith("events") for f in os.listdir(workdir / "tb"))


def test_main_rejects_unknown_config_key_before_writing(tmp_path):
  workdir = tmp_path / "run"
  proc = _run_main("--config=configs/brainmae.py:smoke", f"--workdir={workdir}",
                   "--config.optim.lrr=3e-4")
  assert proc.returncode == 2
  assert "optim.lrr" in proc.stderr
  assert not workdir.exists()


def test_unknown_variant_is_named():
  with pytest.raises(ValueError, match="bogus"):
    load_config(os.path.join(ROOT, "configs/brainmae.py:bogus"))
  with pytest.raises(ConfigError, match="model.embed_dimm"):
    load_config(os.path.join(ROOT, "configs/brainmae.py:smoke"), ["model.embed_dimm=3"])


def _folder_config(folder, labels=""):
  overrides = TINY + ["data.source=folder", f"data.path={folder}", "data.key=tc",
                      "data.holdout_subjects=1", "model.num_rois=6", "data.tr=2.0",
                      "data.tau_s=10.0", "model.seg_len=5", "data.stride_frames=5"]
  if labels:
    overrides += [f"data.labels_csv={labels}", "data.label_column=age",
                  "data.label_task=regression"]
  return load_config(os.path.join(ROOT, "configs/brainmae.py:smoke"), overrides)


def _write_subjects(folder, n=3, rois=6, frames=200, seed=0):
  rng = np.random.default_rng(seed)
  folder.mkdir(exist_ok=True)
  for i in range(n):
    np.save(folder / f"sub{i}.npy", rng.standard_normal((rois, frames)).astype(np.float32))


def _nan(folder):
  x = np.load(folder / "sub1.npy"); x[2, 7] = np.nan; np.save(folder / "sub1.npy", x)


def _inf(folder):
  x = np.load(folder / "sub1.npy"); x[0, 3] = np.inf; np.save(folder / "sub1.npy", x)


def _flat(folder):
  x = np.load(folder / "sub1.npy"); x[4] = 1.5; np.save(folder / "sub1.npy", x)


def _short(folder):
  np.save(folder / "sub1.npy", np.random.default_rng(1).standard_normal((6, 12)))


def _rois(folder):
  np.save(folder / "sub1.npy", np.random.default_rng(1).standard_normal((7, 200)))


def _garbage(folder):
  (folder / "sub1.npy").write_bytes(b"not a numpy file")


@pytest.mark.parametrize("corrupt, expected", [
    (_nan, r"sub1\.npy.*(NaN|nan)"), (_inf, r"sub1\.npy.*inf"), (_flat, r"sub1\.npy.*ROI index 4"),
    (_short, r"sub1\.npy.*12 frames"), (_rois, r"sub\d\.npy.*sub\d\.npy|7.*6|6.*7"),
    (_garbage, r"sub1\.npy")])
def test_bad_subject_file_fails_cleanly(tmp_path, corrupt, expected):
  folder = tmp_path / "subjects"
  _write_subjects(folder)
  corrupt(folder)
  workdir = tmp_path / "run"
  with pytest.raises(DataError, match=expected):
    train_and_evaluate(_folder_config(folder), str(workdir))
  assert not workdir.exists()


def test_missing_folder_and_missing_labels_fail_cleanly(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(DataError, match="nowhere"):
    train_and_evaluate(_folder_config(tmp_path / "nowhere"), str(workdir))
  folder = tmp_path / "subjects"
  _write_subjects(folder)
  labels = tmp_path / "labels.csv"
  labels.write_text("subject_id,age\nsub0,30\nsub2,41\n")
  with pytest.raises(DataError, match=r"sub1.*labels\.csv"):
    train_and_evaluate(_folder_config(folder, str(labels)), str(workdir))
  assert not workdir.exists()


def test_folder_source_with_mat_files_runs(tmp_path):
  folder = tmp_path / "subjects"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(4):
    scipy.io.savemat(folder / f"sub{i}.mat", {"tc": rng.standard_normal((6, 200))})
  config = _folder_config(folder)
  # One validation subject, evaluated every 2 steps; the best checkpoint by its error.
  config.data.val_subjects = 1
  config.train.update(dict(eval_every=2, best_metric="val/recon_mse"))
  summary = train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["step"] == 4 and np.isfinite(summary["eval"]["recon_mse_model"])
  assert len(summary["val_subjects"]) == 1 and len(summary["pretrain_subjects"]) == 2
  assert not set(summary["val_subjects"]) & set(summary["heldout_subjects"])
  assert [e["step"] for e in summary["eval_history"]] == [2, 4]
  best = min(summary["eval_history"], key=lambda e: e["val/recon_mse"])
  assert summary["best"]["step"] == best["step"]
  assert (tmp_path / "run" / "best" / "best.json").exists()


def test_plain_autoencoder_is_evaluated_with_eval_mask_ratio(tmp_path):
  """model.mask_ratio=0 (the plain autoencoder ablation) trains on every cell; validation and
  held-out reconstruction use eval.mask_ratio. num_rois and seg_len come from the data."""
  folder = tmp_path / "subjects"
  _write_subjects(folder, n=4)
  config = _folder_config(folder)
  config.model.update(dict(mask_ratio=0.0, num_rois=0, seg_len=0))
  config.data.val_subjects = 1
  config.train.eval_every = 2
  summary = train_and_evaluate(config, str(tmp_path / "run"))
  ev = summary["eval"]
  assert ev["recon_mask_ratio"] == pytest.approx(0.5)
  for key in ("recon_mse_model", "recon_mse_roi_mean", "recon_mse_ridge"):
    assert np.isfinite(ev[key]), key
  assert [np.isfinite(e["val/recon_mse"]) for e in summary["eval_history"]] == [True, True]
  assert summary["final_metrics"]["mask_fraction"] == 0.0
  assert (summary["config"]["model"]["num_rois"], summary["config"]["model"]["seg_len"]) == (6, 5)
  assert config.model.seg_len == 0  # the caller's config is left as it was
  config.eval.mask_ratio = 0.0
  with pytest.raises(ConfigError, match=r"^config\.eval\.mask_ratio=0\.0: expected a ratio in "
                                        r"\(0, 1\)$"):
    train_and_evaluate(config, str(tmp_path / "other"))


@pytest.mark.parametrize("variant", ["default", "smoke", "synthetic", "paper"])
def test_every_variant_builds_its_model_from_the_data(variant):
  config = load_config(os.path.join(ROOT, f"configs/brainmae.py:{variant}"))
  assert (config.model.num_rois, config.model.seg_len) == (0, 0)
  data = load_data(config.data)
  config = with_data_shapes(config, *data_shapes(config.data, data))
  want = 100 if variant == "paper" else 94
  assert (config.model.num_rois, config.model.seg_len) == (want, 21)
  model = nnx.eval_shape(lambda: BrainMAE(config.model, rngs=nnx.Rngs(0)))
  assert model.roi_embed.shape[0] == want
  config.model.seg_len = 7  # explicit values must match the data
  with pytest.raises(ConfigError, match=r"^config\.model\.seg_len=7 but the data has 21 "):
    with_data_shapes(config, *data_shapes(config.data, data))


def test_resample_tr_puts_subjects_on_one_tr():
  config = load_config(os.path.join(ROOT, "configs/brainmae.py:synthetic"), [
      "data.synthetic.num_subjects=2", "data.synthetic.length=300", "data.resample_tr=1.44"])
  data = load_data(config.data)
  assert [(s.tr, s.num_frames) for s in data.subjects] == [(1.44, 150)] * 2
  assert data_shapes(config.data, data) == (94, 10)  # round(15 s / 1.44 s)
  mixed = [data.subjects[0], Subject("b", np.ones((94, 40)), 2.0, "b.npy")]
  with pytest.raises(DataError, match=r"different TRs \[1\.44, 2\.0\] s; set "
                                      r"--config\.data\.resample_tr=<seconds>"):
    data_shapes(config.data, FmriData(mixed))
  config.data.resample_tr = -1.0
  with pytest.raises(ConfigError, match=r"^config\.data\.resample_tr=-1\.0: expected a TR"):
    load_data(config.data)


def _pretrain_params(config, mesh, workdir, x):
  from jaxtrain.data import InMemorySource, make_loader
  it = make_loader(InMemorySource({"x": x}), global_batch_size=config.train.batch_size,
                   seed=0, fields=("x",))
  result = loop.train(config=config, workdir=workdir, mesh=mesh, train_iter=it,
                      task=pretrain_task(config))
  return result, jax.device_get(nnx.state(result.model, nnx.Param))


def test_brainmae_train_step_on_2x4_mesh_matches_one_device(tmp_path):
  config = load_config(os.path.join(ROOT, "configs/brainmae.py:smoke"),
                       ["train.steps=3", "train.batch_size=8", "train.checkpoint_every=0",
                        "model.num_rois=16", "model.seg_len=21", "model.embed_dim=32",
                        "model.decoder_dim=16"])
  x = np.random.default_rng(0).standard_normal((32, 4, 16, 21)).astype(np.float32)
  one = mesh_lib.make_mesh(config.mesh, devices=jax.devices()[:1])
  config.mesh.shape.data, config.mesh.shape.fsdp = 2, 4
  many = mesh_lib.make_mesh(config.mesh)
  assert many.devices.shape == (2, 4)
  r1, p1 = _pretrain_params(config, one, str(tmp_path / "one"), x)
  r8, p8 = _pretrain_params(config, many, str(tmp_path / "many"), x)
  emb = nnx.state(r8.model, nnx.Param)["roi_embed"][...]
  assert "fsdp" in str(emb.sharding.spec)  # parameters really are sharded over fsdp
  chex.assert_trees_all_close(p1, p8, rtol=2e-4, atol=2e-5)
  assert r1.metrics["loss"] == pytest.approx(r8.metrics["loss"], rel=1e-4)


def test_probe_freezes_encoder_and_finetune_reports_cv(tmp_path):
  config = load_config(os.path.join(ROOT, "configs/brainmae.py:synthetic"), TINY + [
      "data.synthetic.num_subjects=6", "data.synthetic.length=300", "data.synthetic.num_rois=12",
      "model.num_rois=12", "data.holdout_subjects=2", "finetune.folds=2", "finetune.steps=3",
      "finetune.batch_size=8"])
  summary = train_and_evaluate(config, str(tmp_path / "run"))
  config = ml_collections.ConfigDict(summary["config"])  # seg_len from the data: 21
  assert config.model.seg_len == 21
  ft = summary["finetune"]
  assert set(ft) == {"class", "score"} and set(ft["class"]) == {"full", "probe"}
  assert len(ft["class"]["probe"]["accuracy"]["folds"]) == 2
  assert set(ft["score"]["full"]) == {"mae", "pearson_r"}
  # A probe leaves the encoder bit-for-bit unchanged.
  from jaxbrain.data.synthetic import make_synthetic
  from jaxbrain.tasks.inputs import window_arrays
  subjects, _ = make_synthetic(4, 12, 300, seed=1)
  arrays = window_arrays(subjects, config.data, labels=np.array([0, 1, 0, 1], np.int32))
  encoder = BrainMAE(config.model, rngs=nnx.Rngs(3))
  before = jax.device_get(nnx.state(encoder, nnx.Param))
  trained = {}
  for mode in ("probe", "full"):
    _, model = finetune.finetune_fold(config, str(tmp_path / mode), nnx.state(encoder), arrays,
                                      arrays, "classification", 2, mode)
    trained[mode] = jax.device_get(nnx.state(model.encoder, nnx.Param))
  chex.assert_trees_all_equal(before, trained["probe"])
  assert not np.array_equal(before["roi_embed"][...], trained["full"]["roi_embed"][...])


def test_load_run_restores_the_evaluated_model_its_errors_and_maps(tmp_path):
  """load_run gives back the model train_and_evaluate evaluated: evaluate.reconstruction_errors
  reproduces summary.json's held-out numbers per window, the ROI-mean baseline agrees with a direct
  NumPy computation (also over several mask draws), and evaluate.interpretation_maps are the
  exported maps."""
  from jaxbrain.tasks import evaluate
  from jaxbrain.tasks.inputs import memory_windows
  from jaxbrain.tasks.train import load_run
  from jaxtrain.errors import UserError
  config = load_config(os.path.join(ROOT, "configs/brainmae.py:synthetic"), TINY + [
      "data.synthetic.num_subjects=5", "data.synthetic.length=300", "data.synthetic.num_rois=12",
      "data.holdout_subjects=2", "eval.fingerprint=False", "finetune.enabled=False"])
  workdir = tmp_path / "run"
  summary = train_and_evaluate(config, str(workdir))
  cfg, model = load_run(str(workdir))
  assert (cfg.model.num_rois, cfg.model.seg_len) == (12, 21)
  win = memory_windows(cfg, load_data(cfg.data))
  assert win.splits["heldout"] == summary["heldout_subjects"]
  held = win.arrays("heldout", cfg.data.num_segments * cfg.model.seg_len)
  x = held["x"]
  train_x = win.train_sample(cfg.eval.baseline_windows, cfg.eval.mask_seed)
  err = evaluate.reconstruction_errors(model, x, train_x, cfg,
                                       st_ridge_kwargs=dict(ks=(0, 1), max_val_windows=16))
  assert list(err) == ["model", "roi_mean", "linear_interp", "ridge", "st_ridge"]
  ev = summary["eval"]
  for name in ("model", "roi_mean", "linear_interp", "ridge"):
    assert err[name].shape == (len(x),)
    assert err[name].mean() == pytest.approx(ev[f"recon_mse_{name}"], rel=1e-6), name
  assert np.all(np.isfinite(err["st_ridge"])) and err["st_ridge"].shape == (len(x),)

  def roi_mean_by_hand(draws):
    mask = evaluate.eval_mask((len(x) * draws,) + x.shape[1:3], cfg)
    mu = train_x.astype(np.float64).mean(axis=(0, 1, 3))
    out = np.zeros(len(x))
    for w in range(len(x)):
      for d in range(draws):
        s, n = np.nonzero(mask[w * draws + d])
        out[w] += np.mean((x[w, s, n, :].astype(np.float64) - mu[n][:, None]) ** 2) / draws
    return out
  np.testing.assert_allclose(err["roi_mean"], roi_mean_by_hand(1), rtol=1e-9)
  two = evaluate.reconstruction_errors(model, x, train_x, cfg, baselines=("roi_mean",),
                                       mask_draws=2)
  assert set(two) == {"model", "roi_mean"}
  np.testing.assert_allclose(two["roi_mean"], roi_mean_by_hand(2), rtol=1e-9)

  maps = evaluate.interpretation_maps(model, cfg)
  assert set(maps) == {"roi_similarity", "roi_attention_0", "roi_attention_1"}  # tse_depth=2
  for name, m in maps.items():
    np.testing.assert_allclose(m, np.load(workdir / "interpret" / f"{name}.npy"), rtol=1e-6)
  np.testing.assert_allclose(np.diag(maps["roi_similarity"]), 1.0, atol=1e-5)
  emb = np.asarray(model.roi_embeddings(), np.float64)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  np.testing.assert_allclose(maps["roi_similarity"], emb @ emb.T, atol=1e-5)  # cosine similarity
  for layer in (0, 1):
    att = maps[f"roi_attention_{layer}"]
    np.testing.assert_allclose(att.sum(axis=1), 1.0, atol=1e-5)  # where each ROI attends
    np.testing.assert_allclose(np.diag(att), 0.0, atol=1e-6)     # self-loops removed

  with pytest.raises(ValueError, match="oracle"):
    evaluate.reconstruction_errors(model, x, train_x, cfg, baselines=("oracle",))
  with pytest.raises(UserError, match="no summary.json"):
    load_run(str(tmp_path / "nothing"))


def test_reconstruction_intervals_are_paired_hierarchical_bootstraps():
  from jaxbrain.evaluation import statistics
  from jaxbrain.tasks import evaluate
  rng = np.random.default_rng(0)
  groups = np.repeat(np.arange(6), 5)  # 6 subjects x 5 windows
  a = rng.normal(1.0, 0.2, 30) + np.repeat(rng.normal(0, 0.2, 6), 5)
  other = rng.normal(1.0, 0.2, 30)
  errors = {"model": a, "worse": a + 0.25, "other": other}
  r = evaluate.reconstruction_intervals(errors, groups, num_resamples=4000, seed=3)
  assert (r["num_windows"], r["num_subjects"]) == (30, 6)
  assert set(r["contrasts"]) == {"worse", "other"}
  worse = r["contrasts"]["worse"]
  assert worse["diff"]["lo"] == pytest.approx(-0.25) and worse["diff"]["hi"] == pytest.approx(-0.25)
  assert worse["verdict"] == "win"
  assert worse["relative_pct"]["mean"] == pytest.approx(100 * (a.mean() / (a.mean() + 0.25) - 1))
  assert r["methods"]["other"] == statistics.mean_ci(other, groups, num_resamples=4000, seed=3)
  # Against an independent two-stage bootstrap (subjects, then their windows), other draws.
  draws = np.random.default_rng(9)
  means = []
  for _ in range(4000):
    subjects = draws.integers(0, 6, 6)
    means.append(np.mean([a[s * 5 + draws.integers(0, 5, 5)] for s in subjects]))
  lo, hi = np.quantile(means, [0.025, 0.975])
  assert r["methods"]["model"]["lo"] == pytest.approx(lo, abs=0.02)
  assert r["methods"]["model"]["hi"] == pytest.approx(hi, abs=0.02)
  with pytest.raises(ValueError, match="shape"):
    evaluate.reconstruction_intervals({"model": a, "bad": a[:5]}, groups)
  with pytest.raises(ValueError, match="reference"):
    evaluate.reconstruction_intervals({"x": a}, groups)
