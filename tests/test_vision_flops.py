"""AdaFocusV2's cost per frame and per video against the paper's figures (MobileNetV2 + ResNet-50):
1.101 / 1.685 / 2.436 GMACs per frame at P = 96 / 128 / 160 (17.6 / 27.0 / 39.0 per 16-frame video),
in the papers' convention and in XLA's cost analysis of the compiled parts."""
import os

import pytest

from jaxtrain.config import load_config
from jaxvision import flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_costs_agree_with_the_paper_within_3_percent():
  config = load_config(os.path.join(ROOT, "configs/adafocusv2.py:actnet_p128"))
  rows = {r["patch"]: r for r in flops.table(config)}
  for p, per_frame in flops.PAPER_GFLOPS_PER_FRAME.items():
    r = rows[p]
    assert r["total_per_frame"] == pytest.approx(per_frame, rel=0.03), p
    assert r["xla_total_per_frame"] == pytest.approx(per_frame, rel=0.03), p
    assert r["total_per_video"] == pytest.approx(16 * r["total_per_frame"])
    assert r["global_cnn"] == pytest.approx(0.30, rel=0.03)
  assert [round(rows[p]["total_per_video"], 1) for p in (96, 128, 160)] == [17.6, 27.0, 39.0]


def test_flops_command_prints_one_row_per_patch_size(capsys):
  assert flops.main(["--config=configs/adafocusv2.py:minik_p160"]) == 0
  out = capsys.readouterr().out
  rows = [line for line in out.splitlines() if line.startswith("| 1") or line.startswith("| 9")]
  assert [r.split("|")[1].strip() for r in rows] == ["96", "128", "160"]
  assert "2.436" in rows[-1]


def test_tsm_variant_costs_agree_with_the_official_figures_within_1_percent():
  """Sth-Sth / Jester variant, GFLOPs per video (8 glance frames + 12 patches): 18.5 / 23.5 /
  27.5 / 33.7 at P = 128 / 144 / 160 / 176 in the official README (README: the command's table)."""
  for variant in ("ssv1_p128", "jester_p176"):
    config = load_config(os.path.join(ROOT, f"configs/adafocusv2_tsm.py:{variant}"))
    p = int(config.model.patch_size)
    costs = flops.tsm_costs(config.model, "matmul")
    assert costs["total_per_video"] / 1e9 == pytest.approx(flops.PAPER_TSM_GFLOPS_PER_VIDEO[p],
                                                            rel=0.01), variant
    assert costs["global_cnn"] / 1e9 == pytest.approx(8 * 0.2995, rel=0.01)  # MobileNetV2 x 8


def test_table_without_xla_compiles_nothing_and_formats_as_markdown(monkeypatch):
  """``xla=False``: the papers' count alone (the same numbers as with XLA's count beside it),
  nothing compiled; ``format_table`` marks the missing XLA count and published figure with '-'."""
  config = load_config(os.path.join(ROOT, "configs/adafocusv2.py:smoke"))
  with_xla = flops.table(config, (16, 32))
  monkeypatch.setattr(flops, "compiled_flops", lambda *a, **k: pytest.fail("compiled"))
  rows = flops.table(config, (16, 32), xla=False)
  assert [r["patch"] for r in rows] == [16, 32]
  for r, w in zip(rows, with_xla):
    assert "xla_total_per_frame" not in r and "paper_per_frame" not in r
    assert r == {k: v for k, v in w.items() if k != "xla_total_per_frame"}
    assert r["total_per_video"] == pytest.approx(4 * r["total_per_frame"])
  text = flops.format_table(rows, 4).splitlines()
  assert len(text) == 4 and "per video (T=4)" in text[0]
  assert text[3].startswith("| 32 |") and text[3].endswith("| - | - | - |")
  assert f"{rows[1]['total_per_frame']:.3f}" in text[3]
  full = flops.format_table(with_xla, 4).splitlines()[3]
  assert f"| {with_xla[1]['xla_total_per_frame']:.3f} | - | - |" in full


def test_paper_figures_apply_only_to_the_paper_networks_and_are_printed_for_other_configs(capsys):
  """A config that changes what the networks see (a pooled glance, no local CNN) gets no published
  figure beside its rows, and the command adds the paper's own model (not the config's fields
  over it) below."""
  config = load_config(os.path.join(ROOT, "configs/adafocusv2.py:actnet_p128"))
  config.model.glance_size = 112
  assert all("paper_per_frame" not in r for r in flops.table(config, (128,), xla=False))
  assert flops.main(["--config=configs/adafocusv2.py:builtin_small_global"]) == 0
  out = capsys.readouterr().out.split("The paper's setting")
  assert len(out) == 2 and "| - | - |" in out[0]
  lines = [line for line in out[1].splitlines() if line[:3] in ("| 9", "| 1")]
  rows = {cells[1]: cells for cells in ([c.strip() for c in line.split("|")] for line in lines)}
  assert sorted(rows, key=int) == ["96", "128", "160"]
  for p, figure in (("96", "1.101"), ("128", "1.685"), ("160", "2.436")):
    assert rows[p][7] == rows[p][10] == figure and rows[p][11] in ("+0.0%", "-0.0%"), rows[p]
