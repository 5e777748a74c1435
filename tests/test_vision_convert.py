"""jaxvision.convert: official PyTorch checkpoints -> orbax runs, with logits parity in eval mode.

Each variant: a PyTorch model with the official module layout and key names
(``tests/torch_reference.py``), random weights and batch-norm statistics, saved as the official
code saves it (DataParallel's ``module.`` prefix); converted by the command line; loaded back as
``predict`` loads a run; our logits at every step must match PyTorch's on the same input.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from jaxvision import convert, predict
from jaxvision.models.adafocus_v2 import IMAGENET_MEAN, IMAGENET_STD, input_order
import torch_reference as ref

ACTNET = ["--config=configs/adafocusv2.py:actnet_p128", "--config.model.image_size=64",
          "--config.model.patch_size=32", "--config.model.num_frames=4",
          "--config.model.num_classes=5", "--config.model.policy_hidden=32"]
TSM = ["--config=configs/adafocusv2_tsm.py:ssv1_p128", "--config.model.image_size=64",
       "--config.model.patch_size=48", "--config.model.glance_frames=4",
       "--config.model.focus_frames=6", "--config.model.num_classes=5"]


def _normalise(frames: np.ndarray) -> torch.Tensor:
  """uint8 [B, T, S, S, 3] -> float32 [B, T, 3, S, S], ImageNet-normalised (as the model)."""
  x = (frames.astype(np.float32) / 255.0 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)))


def _save_official(model: torch.nn.Module, path: str, **extra) -> None:
  sd = {f"module.{k}": v for k, v in model.state_dict().items()}
  torch.save({"state_dict": sd, **extra}, path)


def _convert(args, torch_path, out) -> None:
  assert convert.main(args + [f"--torch={torch_path}", f"--out={out}"]) == 0


def _frames(rng, *shape):
  return rng.integers(0, 256, shape + (3,), dtype=np.uint8)


@pytest.fixture(scope="module")
def actnet(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("actnet")
  torch.manual_seed(0)
  model = ref.AdaFocusActNet(classes=5, frames=4, image=64, patch=32, hidden=32)
  rng = np.random.default_rng(0)
  ref.randomize(model, lambda m: m(_normalise(_frames(rng, 6, 4, 64, 64))))
  path = str(tmp / "actnet.pth.tar")
  _save_official(model, path)
  return model, path, tmp


@pytest.mark.slow
def test_actnet_logits_match_pytorch_at_every_step(actnet):
  model, path, tmp = actnet
  out = str(tmp / "run")
  _convert(ACTNET, path, out)
  config, ours = predict.load_run(out, "latest")
  ours.eval()
  frames = _frames(np.random.default_rng(1), 3, 4, 64, 64)
  with torch.no_grad():  # the official loop feeds frames in the coarse-to-fine order (--sample)
    logits, g, loc, actions = model(_normalise(frames[:, input_order(4)]))
  got = ours(frames)
  assert config.model.num_frames == 4
  np.testing.assert_allclose(np.asarray(got["actions"]), actions.numpy(), atol=1e-5)
  for name, want in (("logits", logits), ("global_logits", g), ("local_logits", loc)):
    want = want.numpy().reshape(np.shape(got[name]))
    assert np.abs(want).max() > 0.1  # not a trivially small output
    np.testing.assert_allclose(np.asarray(got[name]), want, atol=1e-4, rtol=1e-4, err_msg=name)


@pytest.mark.slow
def test_tsm_logits_match_pytorch(tmp_path):
  torch.manual_seed(1)
  model = ref.AdaFocusTSM(classes=5, glance=4, focus=6, image=64, patch=48)
  rng = np.random.default_rng(2)
  ref.randomize(model, lambda m: m(_normalise(_frames(rng, 4, 4, 64, 64)),
                                   _normalise(_frames(rng, 4, 6, 64, 64))), seed=1)
  path = str(tmp_path / "ssv1.pth.tar")
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  # What the official Sth-Sth main.py saves beside the weights (best_prec1 may be a NumPy scalar).
  _save_official(model, path, epoch=3, arch="resnet50", optimizer=opt.state_dict(),
                 best_prec1=np.float64(41.5))
  _convert(TSM, path, str(tmp_path / "run"))
  _, ours = predict.load_run(str(tmp_path / "run"), "latest")
  ours.eval()
  glance, focus = _frames(rng, 3, 4, 64, 64), _frames(rng, 3, 6, 64, 64)
  with torch.no_grad():
    logits, g_aux, l_aux, actions = model(_normalise(glance), _normalise(focus))
  got = ours(glance, focus)
  # One position per video from a 1280 x Tg-channel policy input: float32 sums round at ~1e-5.
  np.testing.assert_allclose(np.asarray(got["actions"]), actions.numpy(), atol=1e-4)
  for name, want in (("logits", logits), ("global_aux_logits", g_aux), ("local_aux_logits", l_aux)):
    assert np.abs(want.numpy()).max() > 0.1
    np.testing.assert_allclose(np.asarray(got[name]), want.numpy(), atol=1e-4, rtol=1e-4,
                               err_msg=name)


def test_missing_unknown_and_misshaped_keys_are_listed(actnet, tmp_path, capsys):
  model, _, _ = actnet
  sd = {f"module.{k}": v for k, v in model.state_dict().items()}
  del sd["module.policy_stn.gru.bias_hh_l0"]
  sd["module.policy_stn.extra.weight"] = torch.zeros(3)
  sd["module.local_CNN_fc.1.weight"] = torch.zeros(7, 2048)  # 7 classes, the config has 5
  path = str(tmp_path / "bad.pth.tar")
  torch.save({"state_dict": sd}, path)
  out = tmp_path / "run"
  assert convert.main(ACTNET + [f"--torch={path}", f"--out={out}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1
  assert "1 missing key(s): policy_stn.gru.bias_hh_l0" in err[0]
  assert "1 unknown key(s): policy_stn.extra.weight" in err[0]
  assert "local_CNN_fc.1.weight (7, 2048)" in err[0] and "(2048, 5)" in err[0]
  assert not out.exists() and os.listdir(tmp_path) == ["bad.pth.tar"]


class _RunsCode:
  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
  marker = tmp_path / "pwned"
  evil = _RunsCode()
  evil.marker = marker
  path = str(tmp_path / "evil.pth.tar")
  torch.save({"state_dict": {"x": torch.zeros(1)}, "args": evil}, path)
  with open(tmp_path / "plain.pkl", "wb") as f:  # a plain (non-zip) pickle too
    pickle.dump({"state_dict": evil}, f)
  for p, why in ((path, "it asks to import posix.system"), (str(tmp_path / "plain.pkl"), "")):
    assert convert.main(ACTNET + [f"--torch={p}", f"--out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{p}: refused, not a plain weights file" in err and why in err
    assert len(err.splitlines()) == 1
  assert not marker.exists() and not (tmp_path / "run").exists()


def test_not_a_checkpoint_and_existing_out(tmp_path, capsys):
  junk = tmp_path / "junk.pth.tar"
  junk.write_bytes(b"not a checkpoint")
  assert convert.main(ACTNET + [f"--torch={junk}", f"--out={tmp_path / 'run'}"]) == 2
  assert "junk.pth.tar: not a PyTorch checkpoint" in capsys.readouterr().err
  junk.write_bytes(b"PK\x03\x04 a broken zip")
  assert convert.main(ACTNET + [f"--torch={junk}", f"--out={tmp_path / 'run'}"]) == 2
  assert "junk.pth.tar: not a readable PyTorch checkpoint" in capsys.readouterr().err
  assert convert.main(ACTNET + [f"--torch={junk}", f"--out={tmp_path}"]) == 2
  assert "exists" in capsys.readouterr().err
  torch.save([torch.zeros(2)], junk)
  assert convert.main(ACTNET + [f"--torch={junk}", f"--out={tmp_path / 'run'}"]) == 2
  assert "expected a dict with a 'state_dict' of tensors" in capsys.readouterr().err
  assert convert.main(ACTNET + [f"--torch={tmp_path / 'nope.pth'}", "--out=x"]) == 2
  assert "no such checkpoint file" in capsys.readouterr().err


def test_names_cover_every_tensor_of_both_official_layouts():
  """Every parameter and statistic of the official-layout models maps to exactly one of ours."""
  from flax import nnx

  from configs import adafocusv2, adafocusv2_tsm
  from jaxvision.models.adafocus_tsm import AdaFocusV2TSM
  from jaxvision.models.adafocus_v2 import AdaFocusV2
  cases = [(adafocusv2.get_config("actnet_p128"), AdaFocusV2,
            ref.AdaFocusActNet(classes=200, frames=16, image=224, patch=128, hidden=2048)),
           (adafocusv2_tsm.get_config("ssv1_p128"), AdaFocusV2TSM,
            ref.AdaFocusTSM(classes=174, glance=8, focus=12, image=224, patch=128))]
  for config, cls, torch_model in cases:
    ours = nnx.eval_shape(lambda: cls(config.model, rngs=nnx.Rngs(0)))  # noqa: B023
    torch_keys = {k for k in torch_model.state_dict() if not k.endswith("num_batches_tracked")}
    names = [k for _, keys, _ in convert.official_names(ours) for k in keys]
    assert len(names) == len(set(names))
    skipped = {k for k in torch_keys if any(r.search(k) for r in convert.SKIPPED)}
    assert set(names) == torch_keys - skipped
