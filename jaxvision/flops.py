"""Multiply-accumulates (MACs) of a function or an NNX model: XLA's count and the conventional one.

Two counts, which differ by design:

- ``macs``: XLA's cost analysis of the compiled function, FLOPs / 2 (``jaxtrain.perf``). XLA counts
  only the kernel taps that land inside the input (taps on zero padding are skipped) and adds
  every elementwise FLOP (eval-mode batch norm, activations, residual adds, pooling) at half weight.
- ``matmul_macs``: the convolutions and matrix products of the traced program, every kernel tap
  counted (padding included) and nothing else: the convention of the published figures
  (torchvision's "GFLOPS", fvcore, the MobileNetV2 and ResNet papers).

For the torchvision backbones at 224x224 (no classifier) ``matmul_macs`` gives 4.087 G (ResNet-50)
and 0.2995 G (MobileNetV2); ``macs`` gives 3.997 G (-2.2%: padding skipped, elementwise added) and
0.3118 G (+4.1%: elementwise work is relatively larger in the thin, depthwise network). XLA's
skipped padding grows as the input shrinks, so ``macs`` falls below the (P / 224)^2 scaling at
small P while ``matmul_macs`` follows it exactly when P is a multiple of 32.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.extend.core
from flax import nnx

from jaxtrain.perf import compiled_flops


def _abstract(x: Any) -> Any:
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), x)


def macs(fn: Callable, *args, **kwargs) -> float:
  """XLA's MACs (FLOPs / 2) of one compiled call ``fn(*args, **kwargs)``; args may be abstract."""
  return compiled_flops(jax.jit(fn), *args, **kwargs) / 2


def _eqn_macs(eqn: Any) -> float:
  name = eqn.primitive.name
  if name == "conv_general_dilated":
    rhs = eqn.invars[1].aval.shape
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) / out_features
  if name == "dot_general":
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
  return 0.0


def _subjaxprs(params: dict) -> list:
  out = []
  for v in params.values():
    for item in (v if isinstance(v, (tuple, list)) else (v,)):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        out.append(item.jaxpr)
      elif isinstance(item, jax.extend.core.Jaxpr):
        out.append(item)
  return out


def _jaxpr_macs(jaxpr: Any) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    subs = [_jaxpr_macs(j) for j in _subjaxprs(eqn.params)]
    if eqn.primitive.name == "cond":
      total += max(subs, default=0.0)  # the costliest branch
    elif eqn.primitive.name == "scan":
      total += eqn.params["length"] * sum(subs)
    else:  # pjit, custom_jvp/vjp, remat, ...: the body once (a while loop's body counts once)
      total += sum(subs)
    total += _eqn_macs(eqn)
  return total


def matmul_macs(fn: Callable, *args, **kwargs) -> float:
  """MACs of the convolutions and matrix products in ``fn(*args, **kwargs)``, padding taps included.

  Counted on the traced jaxpr (nothing is compiled or run; args may be ShapeDtypeStructs):
  a convolution costs output elements x kernel taps per output (cin / groups x kh x kw),
  a ``dot_general`` output elements x contraction size.
  """
  return _jaxpr_macs(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)


def model_macs(model: nnx.Module, x: Any, method: str | None = None, *,
               count: str = "xla") -> float:
  """MACs of ``model(x)`` (or ``model.<method>(x)``) in eval mode; ``count`` 'xla' or 'matmul'.

  ``model`` may be abstract (``nnx.eval_shape``) and ``x`` an array or a ``jax.ShapeDtypeStruct``;
  only shapes are used, nothing is materialised.
  """
  counters = {"xla": macs, "matmul": matmul_macs}
  if count not in counters:
    raise ValueError(f"count={count!r}; expected one of {sorted(counters)}")
  graphdef, state = nnx.split(model)

  def apply(state, x):
    m = nnx.merge(graphdef, state)
    m.eval()
    return (m if method is None else getattr(m, method))(x)

  from jaxvision.models.layers import standard_convolutions
  with standard_convolutions():  # count the convolutions the published figures count
    return counters[count](apply, _abstract(state), _abstract(x))


# ------------------------------------------------------------------------------------ AdaFocusV2

# Per-frame GFLOPs (multiply-accumulates) of MobileNetV2 + ResNet-50 in the paper (Table 1, T = 16).
PAPER_GFLOPS_PER_FRAME = {96: 1.101, 128: 1.685, 160: 2.436}


def _crop_macs(count: str, frames: int, image_size: int, patch: int) -> float:
  """MACs of cropping ``frames`` P x P patches: bilinear sampling (4 taps per output value) for
  ``count='matmul'``, XLA's count of ``crop.crop_patches`` (as this project runs it) otherwise."""
  if count == "matmul":
    return frames * 4.0 * patch * patch * 3
  from jaxvision.models import crop as crop_lib
  f32 = jax.numpy.float32
  return macs(lambda x, a: crop_lib.crop_patches(x, a, patch),
              jax.ShapeDtypeStruct((frames, image_size, image_size, 3), f32),
              jax.ShapeDtypeStruct((frames, 2), f32))


def adafocus_costs(model_cfg: Any, count: str = "matmul") -> dict[str, float]:
  """Inference MACs per frame of each part of AdaFocusV2 and of the whole (and per video).

  ``count='matmul'``: convolutions and matrix products, the papers' convention; the crop is
  counted as bilinear sampling (4 taps per output value), as the published figures assume.
  ``count='xla'``: XLA's cost analysis of the compiled parts; the crop as this project runs it
  (two small matmuls per frame, more MACs than 4 taps but fast on accelerators). With
  ``glance_size`` < ``image_size`` the global CNN is costed at glance_size (its average pooling
  multiplies nothing and is left out).
  """
  from jaxvision.models import adafocus_v2 as afv2

  c = model_cfg
  t, s, p = int(c.num_frames), int(c.image_size), int(c.patch_size)
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: afv2.AdaFocusV2(c, rngs=nnx.Rngs(0)))
  f32 = jax.numpy.float32
  frame = jax.ShapeDtypeStruct((1,) + (afv2.glance_size(c),) * 2 + (3,), f32)  # what it sees
  fmap = jax.eval_shape(lambda m, x: m.features(x), model.global_cnn, frame)
  cg = model.global_cnn.num_features
  cl = 0 if model.local_cnn is None else model.local_cnn.num_features
  video_fmaps = jax.ShapeDtypeStruct((t,) + fmap.shape[1:], fmap.dtype)

  def part(module, x, method=None):
    return model_macs(module, x, method, count=count)

  costs = {
      "global_cnn": part(model.global_cnn, frame, "features"),
      "policy": 0.0 if model.policy is None else part(model.policy, video_fmaps) / t,
      "local_cnn": 0.0,
      "classifier": (part(model.classifier, jax.ShapeDtypeStruct((1, t, cg + cl), f32)) / t
                     + part(model.global_head, jax.ShapeDtypeStruct((1, cg), f32))),
      "crop": 0.0,
  }
  if model.local_cnn is not None:
    costs["local_cnn"] = part(model.local_cnn, jax.ShapeDtypeStruct((1, p, p, 3), f32), "features")
    costs["classifier"] += part(model.local_head, jax.ShapeDtypeStruct((1, cl), f32))
    costs["crop"] = _crop_macs(count, 1, s, p)
  costs["total_per_frame"] = sum(costs.values())
  costs["total_per_video"] = costs["total_per_frame"] * t
  return costs


# GFLOPs (multiply-accumulates) per video of the Sth-Sth / Jester variant, the official README
# (MobileNetV2-TSM on 8 frames at 224 + ResNet-50-TSM on 12 patches).
PAPER_TSM_GFLOPS_PER_VIDEO = {128: 18.5, 144: 23.5, 160: 27.5, 176: 33.7}


def tsm_costs(model_cfg: Any, count: str = "matmul") -> dict[str, float]:
  """Inference MACs per video of each part of the Sth-Sth / Jester variant (``adafocus_tsm``):
  the global CNN on ``glance_frames`` frames, the policy once, the local CNN on ``focus_frames``
  patches, the heads and the crop (counted as in ``adafocus_costs``); the shift costs nothing."""
  from jaxvision.models import adafocus_tsm

  c = model_cfg
  tg, tf, s, p = int(c.glance_frames), int(c.focus_frames), int(c.image_size), int(c.patch_size)
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: adafocus_tsm.AdaFocusV2TSM(c, rngs=nnx.Rngs(0)))
  f32 = jax.numpy.float32
  frames = jax.ShapeDtypeStruct((tg, s, s, 3), f32)
  fmap = jax.eval_shape(lambda m, x: m.features(x), model.global_cnn, frames)
  stacked = jax.ShapeDtypeStruct((1,) + fmap.shape[1:3] + (tg * fmap.shape[3],), f32)

  def part(module, x, method=None):
    return model_macs(module, x, method, count=count)

  def heads(module, din, t):
    return t * part(module.fc, jax.ShapeDtypeStruct((1, din), f32)) * 2  # fc and aux_fc
  costs = {
      "global_cnn": part(model.global_cnn, frames, "features"),
      "policy": part(model.policy, stacked),
      "local_cnn": part(model.local_cnn, jax.ShapeDtypeStruct((tf, p, p, 3), f32), "features"),
      "classifier": (heads(model.global_heads, model.global_cnn.num_features, tg)
                     + heads(model.local_heads, model.local_cnn.num_features, tf)),
      "crop": _crop_macs(count, tf, s, p),
  }
  costs["total_per_video"] = sum(costs.values())
  return costs


def _table(config: Any, patch_sizes: tuple[int, ...], costs: Callable, total: str,
           paper: dict[int, float], paper_setting: Callable[[Any], bool], xla: bool = True
           ) -> list[dict[str, Any]]:
  """One row per patch size: ``costs``' parts in GMACs (papers' convention), XLA's count of the
  ``total`` ('xla_<total>'; only with ``xla``: it compiles every part) and, where
  ``paper_setting(model config)`` holds and ``paper`` has the patch size, the published figure
  ('paper_per_...') and the relative difference."""
  rows = []
  for p in patch_sizes:
    cfg = config.model.copy_and_resolve_references()
    cfg.patch_size = int(p)
    row = {"patch": int(p), **{k: v / 1e9 for k, v in costs(cfg, "matmul").items()}}
    if xla:
      row[f"xla_{total}"] = costs(cfg, "xla")[total] / 1e9
    if int(p) in paper and paper_setting(cfg):
      row[total.replace("total_", "paper_")] = paper[int(p)]
      row["diff_vs_paper"] = row[total] / paper[int(p)] - 1.0
    rows.append(row)
  return rows


def tsm_table(config: Any, patch_sizes: tuple[int, ...] = (128, 144, 160, 176), *,
              xla: bool = True) -> list[dict[str, Any]]:
  """``table`` for the Sth-Sth / Jester variant: GMACs per video per part, XLA's count of the
  whole (``xla=False``: left out, nothing compiled), and the official figure where the setting is
  the paper's."""
  return _table(config, patch_sizes, tsm_costs, "total_per_video", PAPER_TSM_GFLOPS_PER_VIDEO,
                lambda c: (c.global_arch, c.global_width, c.local_arch, c.image_size,
                           c.glance_frames, c.focus_frames) == (
                               "mobilenet_v2", 1.0, "resnet50", 224, 8, 12), xla)


def _print_tsm_table(rows: list[dict[str, Any]]) -> None:
  print("| P | global CNN | policy | local CNN | heads | crop | per video | XLA count per video "
        "| official per video | vs official |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    paper = f"{r['paper_per_video']:.1f}" if "paper_per_video" in r else "-"
    diff = f"{100 * r['diff_vs_paper']:+.1f}%" if "diff_vs_paper" in r else "-"
    print(f"| {r['patch']} | {r['global_cnn']:.3f} | {r['policy']:.4f} | {r['local_cnn']:.3f} | "
          f"{r['classifier']:.4f} | {r['crop']:.4f} | {r['total_per_video']:.2f} | "
          f"{r['xla_total_per_video']:.2f} | {paper} | {diff} |")


def table(config: Any, patch_sizes: tuple[int, ...] = (96, 128, 160), *, xla: bool = True
          ) -> list[dict[str, Any]]:
  """One row per patch size: per-part GMACs per frame (paper convention), the whole per frame and
  per video, XLA's count of the whole ('xla_total_per_frame'; ``xla=False`` leaves it out and
  compiles nothing: the papers' count alone only traces the model, a few seconds on a CPU), and
  the paper's figure where it gives one."""
  return _table(config, patch_sizes, adafocus_costs, "total_per_frame", PAPER_GFLOPS_PER_FRAME,
                _paper_networks, xla)


def _paper_networks(c: Any) -> bool:
  """Whether model config ``c`` runs the paper's networks at the paper's sizes (the per-frame
  figures apply): MobileNetV2 x1.0 on the whole 224 px frame, a policy, ResNet-50 on the patch."""
  from jaxvision.models import adafocus_v2 as afv2
  return ((c.global_arch, c.global_width, c.local_arch, c.get("local_width", 1.0), c.image_size,
           afv2.glance_size(c), c.patch_policy)
          == ("mobilenet_v2", 1.0, "resnet50", 1.0, 224, 224, "learned"))


def format_table(rows: list[dict[str, Any]], num_frames: int) -> str:
  """``table``'s rows as a markdown table (GMACs; ``num_frames`` labels the per-video column);
  '-' where a row has no XLA count (``xla=False``) or no published figure."""
  lines = [f"| P | global CNN | policy | local CNN | classifier | crop | per frame | per video "
           f"(T={num_frames}) | XLA count per frame | paper per frame | vs paper |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    paper = f"{r['paper_per_frame']:.3f}" if "paper_per_frame" in r else "-"
    diff = f"{100 * r['diff_vs_paper']:+.1f}%" if "diff_vs_paper" in r else "-"
    xla = f"{r['xla_total_per_frame']:.3f}" if "xla_total_per_frame" in r else "-"
    lines.append(f"| {r['patch']} | {r['global_cnn']:.3f} | {r['policy']:.4f} | "
                 f"{r['local_cnn']:.3f} | {r['classifier']:.4f} | {r['crop']:.4f} | "
                 f"{r['total_per_frame']:.3f} | {r['total_per_video']:.1f} | {xla} | {paper} | "
                 f"{diff} |")
  return "\n".join(lines)


def _print_table(rows: list[dict[str, Any]], num_frames: int) -> None:
  print(format_table(rows, num_frames))


def main(argv: Any = None) -> int:
  """``python -m jaxvision.flops --config=configs/adafocusv2.py[:variant]``: GMACs per patch size."""
  from jaxtrain import cli

  def run(config, workdir):
    del workdir
    if config.model.name == "adafocus_v2_tsm":
      sizes = tuple(sorted({128, 144, 160, 176, int(config.model.patch_size)}))
      rows = tsm_table(config, tuple(p for p in sizes if p <= int(config.model.image_size)))
      print(f"GMACs per video of {config.name} ({config.model.global_arch}-TSM x "
            f"{config.model.glance_frames} + {config.model.local_arch}-TSM x "
            f"{config.model.focus_frames}):")
      _print_tsm_table(rows)
      return rows
    sizes = (96, 128, 160)
    if int(config.model.patch_size) not in sizes:
      sizes += (int(config.model.patch_size),)
    rows = table(config, tuple(p for p in sizes if p <= int(config.model.image_size)))
    print(f"GMACs of {config.name} ({config.model.global_arch} + {config.model.local_arch}):")
    _print_table(rows, int(config.model.num_frames))
    if not _paper_networks(config.model) or config.model.num_frames != 16:
      from jaxvision.models.adafocus_v2 import default_model_config
      paper = config.copy_and_resolve_references()
      paper.model = default_model_config()  # the paper's ActivityNet model
      print("\nThe paper's setting (MobileNetV2 + ResNet-50, T = 16, ActivityNet's 200 classes):")
      _print_table(table(paper), 16)
    return rows

  return cli.run(run, argv=argv, prog="python -m jaxvision.flops", doc=main.__doc__,
                 needs_workdir=False)


if __name__ == "__main__":
  import sys
  sys.exit(main())
