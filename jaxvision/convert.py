"""Converts the official AdaFocusV2 PyTorch checkpoints (LeapLabTHU/AdaFocusV2) to this project.

  python -m jaxvision.convert --torch=FILE.pth.tar --config=configs/adafocusv2.py:actnet_p128 --out=DIR

Writes ``DIR/checkpoints/0`` (an orbax checkpoint of the engine's train state: the converted
parameters and batch-norm statistics, a fresh optimizer state) and ``DIR/summary.json`` (the
config), so that ``python -m jaxvision.main --config=... --workdir=DIR --config.eval.only=True``
evaluates it (early exit included), ``python -m jaxvision.predict --workdir=DIR --video=...``
predicts with it and ``jaxvision.main`` without ``eval.only`` fine-tunes from it. ``DIR`` must
not exist; it appears complete or not at all.

Both variants, as the official code saves them (``torch.nn.DataParallel``'s ``module.`` prefix is
optional): ActivityNet / FCVID / Mini-Kinetics (``global_CNN``, ``global_CNN_fc.1``,
``local_CNN``, ``local_CNN_fc.1``, ``policy_stn.{encoder,gru,fc}``, ``classifier.{mlp,
classifiers}``) and Something-Something / Jester (``{global,local}_CNN.base_model`` with TSM's
``.net`` wrapper on each shifted conv, ``{global,local}_CNN.{new_fc,new_new_fc}``,
``policy_stn.{0,1,4,5,7,8,10}``). The MobileNetV2 is the layout of tonylins/pytorch-mobilenet-v2
that the official code uses (one flat ``conv`` Sequential per block), the ResNet-50 torchvision's.
Unused tensors the official models carry (``global_CNN.classifier``, ``local_CNN.fc``: the ImageNet
heads of the ActivityNet variant; ``num_batches_tracked``) are skipped; any other unknown key, a
missing key or a shape that the config's model does not have is an error listing them all.

A checkpoint is untrusted: it is read with ``torch.load(weights_only=True)`` (tensors, containers
and numbers; NumPy scalars, as a saved ``best_prec1`` may be, are the one addition), never with
general unpickling. PyTorch is needed only here: ``pip install torch``.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
from absl import flags

from jaxtrain.errors import DataError, UserError

Path = tuple
Combine = Callable[[list[np.ndarray]], np.ndarray]

# Keys the official models hold but never use.
SKIPPED = (re.compile(r"\.num_batches_tracked$"), re.compile(r"^global_CNN\.classifier\."),
           re.compile(r"^local_CNN\.fc\."))

BN_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}

ACTNET_HEADS = {("global_head", "fc"): "global_CNN_fc.1", ("local_head", "fc"): "local_CNN_fc.1",
                ("policy", "conv"): "policy_stn.encoder.0", ("policy", "bn1"): "policy_stn.encoder.1",
                ("policy", "fc"): "policy_stn.encoder.4", ("policy", "bn2"): "policy_stn.encoder.5",
                ("policy", "out"): "policy_stn.fc.0", ("classifier", "fc"): "classifier.mlp.layers.0",
                ("classifier", "bn"): "classifier.mlp.layers.1"}
TSM_HEADS = {("global_heads", "fc"): "global_CNN.new_fc",
             ("global_heads", "aux_fc"): "global_CNN.new_new_fc",
             ("local_heads", "fc"): "local_CNN.new_fc", ("local_heads", "aux_fc"): "local_CNN.new_new_fc",
             ("policy", "conv"): "policy_stn.0", ("policy", "bn0"): "policy_stn.1",
             ("policy", "fc1"): "policy_stn.4", ("policy", "bn1"): "policy_stn.5",
             ("policy", "fc2"): "policy_stn.7", ("policy", "bn2"): "policy_stn.8",
             ("policy", "out"): "policy_stn.10"}


# ------------------------------------------------------------------------------------ reading

def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of an official checkpoint (its ``state_dict`` entry, or the file itself if it is
  a bare state dict), ``module.`` prefixes removed, as float32/int NumPy arrays."""
  try:
    import torch
  except ImportError:
    raise UserError("jaxvision.convert needs PyTorch to read .pth.tar files: pip install torch") from None
  import pickle
  import warnings
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such checkpoint file")
  with open(path, "rb") as f:
    head = f.read(4)
  if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
    raise DataError(f"{path}: not a PyTorch checkpoint (neither torch.save's zip format nor a "
                    "pickle)")
  try:
    with torch.serialization.safe_globals(_numpy_scalar_globals()), warnings.catch_warnings():
      warnings.simplefilter("ignore")  # e.g. about the pickle protocol of a foreign file
      obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
    what = (f"it asks to import {found.group(1)}" if found else
            detail.group(1).strip() if detail else str(e).splitlines()[0])
    raise DataError(f"{path}: refused, not a plain weights file ({what}); only tensors, "
                    "containers and numbers are loaded") from None
  except Exception as e:  # a truncated or foreign file: torch raises several kinds
    raise DataError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''})") from None
  sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
  if not isinstance(sd, dict) or not sd:
    raise DataError(f"{path}: expected a dict with a 'state_dict' of tensors (as the official "
                    f"code saves), found {type(obj).__name__}")
  out = {}
  for k, v in sd.items():
    if not isinstance(v, torch.Tensor):
      raise DataError(f"{path}: state_dict[{k!r}] is a {type(v).__name__}, not a tensor")
    out[k[len("module."):] if k.startswith("module.") else k] = v.detach().cpu().numpy()
  return out


def _numpy_scalar_globals() -> list:
  """What a pickled NumPy scalar (e.g. a saved ``best_prec1``) needs: its reconstructor and dtype."""
  try:
    from numpy._core.multiarray import scalar
  except ImportError:  # NumPy 1
    from numpy.core.multiarray import scalar
  return [scalar, np.dtype] + [type(np.dtype(t)) for t in ("float64", "float32", "int64")]


# ------------------------------------------------------------------------------------ mapping

def _conv(t: np.ndarray) -> np.ndarray:
  """torch conv [O, I, kh, kw] -> [kh, kw, I, O]."""
  return t.transpose(2, 3, 1, 0)


def _dense(t: np.ndarray) -> np.ndarray:
  """torch linear [O, I] (or a 1x1 conv [O, I, 1, 1] that we run as a dense layer) -> [I, O]."""
  return t[:, :, 0, 0].T if t.ndim == 4 else t.T


def _gru_weight(ts: list[np.ndarray]) -> np.ndarray:
  """torch ``weight_{ih,hh}_l0`` [3H, D] (gates r, z, n stacked) -> [D, 3, H]."""
  t = ts[0]
  return t.reshape(3, t.shape[0] // 3, t.shape[1]).transpose(2, 0, 1)


def _gru_bias(ts: list[np.ndarray]) -> np.ndarray:
  return ts[0].reshape(3, -1)


def _one(fn: Callable[[np.ndarray], np.ndarray]) -> Combine:
  return lambda ts: fn(ts[0])


def _mobilenet_module(model: Any, mp: Path, tsm: bool) -> str:
  """Our (torchvision-layout) MobileNetV2 module path -> the official (tonylins) module name."""
  i = mp[1]
  if mp[2:3] != ("conv",):                     # stem features.0.{0,1}, last features.18.{0,1}
    return f"features.{i}.{mp[2]}"
  block = model.features[i]
  expanded = len(block.conv) == 4              # [1x1 expand, depthwise, project, BN]
  order = ([(0, 0), (0, 1), (1, 0), (1, 1), (2,), (3,)] if expanded else
           [(0, 0), (0, 1), (1,), (2,)])
  flat = (0, 1, 3, 4, 6, 7)[order.index(tuple(mp[3:]))]
  # TSM wraps the first conv of every shifted block (an expanded one with a skip) as `.net`.
  net = ".net" if tsm and flat == 0 and expanded and block.use_res_connect else ""
  return f"features.{i}.conv.{flat}{net}"


def _resnet_module(mp: Path, tsm: bool) -> str:
  name = ".".join(str(p) for p in mp)
  # TSM's 'blockres' shift wraps each bottleneck's conv1 (layerX.Y.conv1) as `.net`.
  return name + ".net" if tsm and len(mp) == 3 and mp[2] == "conv1" else name


def official_names(model: Any) -> list[tuple[Path, list[str], Combine]]:
  """For every parameter and batch statistic of ``model`` (an ``AdaFocusV2`` or
  ``AdaFocusV2TSM``): (our path, the official keys it is made of, how to combine them)."""
  from jaxvision.models.mobilenet_v2 import MobileNetV2
  tsm = model.config.name == "adafocus_v2_tsm"
  heads = TSM_HEADS if tsm else ACTNET_HEADS
  out = []
  for path, _ in _flat_state(model):
    mp, leaf = path[:-1], path[-1]
    if mp == ("policy", "gru"):
      tensor = {"w_ih": "weight_ih_l0", "w_hh": "weight_hh_l0", "b_ih": "bias_ih_l0",
                "b_hh": "bias_hh_l0"}[leaf]
      out.append((path, [f"policy_stn.gru.{tensor}"], _gru_weight if leaf[0] == "w" else _gru_bias))
      continue
    if mp == ("classifier",) and leaf in ("heads_kernel", "heads_bias"):  # one head per step
      tensor = "weight" if leaf == "heads_kernel" else "bias"
      keys = [f"classifier.classifiers.{m}.1.{tensor}" for m in range(model.config.num_frames)]
      out.append((path, keys, _stack_transposed if tensor == "weight" else np.stack))
      continue
    if mp[0] in ("global_cnn", "local_cnn"):
      backbone = getattr(model, mp[0])
      prefix = ("global_CNN" if mp[0] == "global_cnn" else "local_CNN") + (".base_model" if tsm else "")
      sub = (_mobilenet_module(backbone, mp[1:], tsm) if isinstance(backbone, MobileNetV2)
             else _resnet_module(mp[1:], tsm))
      module, convert = f"{prefix}.{sub}", _conv
    elif mp in heads:
      module, convert = heads[mp], _dense
    else:
      raise AssertionError(f"no official name for {'/'.join(map(str, path))}")
    if _is_bn(model, mp):
      out.append((path, [f"{module}.{BN_NAMES[leaf]}"], _same))
    else:
      out.append((path, [f"{module}.{'weight' if leaf == 'kernel' else leaf}"],
                  _one(convert) if leaf == "kernel" else _same))
  return out


def _flat_state(model: Any) -> Any:
  """(path, variable) of every parameter and batch statistic."""
  from flax import nnx
  return nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))


def _same(ts: list[np.ndarray]) -> np.ndarray:
  return ts[0]


def _stack_transposed(ts: list[np.ndarray]) -> np.ndarray:
  return np.stack([t.T for t in ts])


def _is_bn(model: Any, mp: Path) -> bool:
  from flax import nnx
  node = model
  for p in mp:
    node = node[p] if isinstance(p, int) else getattr(node, p)
  return isinstance(node, nnx.BatchNorm)


def convert_state(sd: dict[str, np.ndarray], model: Any, name: str = "checkpoint"
                  ) -> dict[Path, np.ndarray]:
  """Our arrays (by state path) from an official state dict; every missing, unknown or
  mis-shaped key is reported in one DataError."""
  shapes = {p: tuple(v.shape) for p, v in _flat_state(model)}
  entries = official_names(model)
  wanted = {k for _, keys, _ in entries for k in keys}
  missing = sorted(k for k in wanted if k not in sd)
  unknown = sorted(k for k in sd if k not in wanted and not any(r.search(k) for r in SKIPPED))
  values, bad_shapes = {}, []
  for path, keys, combine in entries:
    if any(k not in sd for k in keys):
      continue
    try:
      value = combine([sd[k] for k in keys])
    except ValueError:  # tensors of one entry that do not stack or reshape
      value = None
    if value is None or tuple(value.shape) != shapes[path]:
      got = ", ".join(f"{k} {tuple(sd[k].shape)}" for k in keys[:2])
      bad_shapes.append(f"{got} (the config's model has {'/'.join(map(str, path))} "
                        f"{shapes[path]})")
      continue
    values[path] = np.asarray(value, np.float32)
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
  if unknown:
    problems.append(f"{len(unknown)} unknown key(s): {_listing(unknown)}")
  if bad_shapes:
    problems.append(f"{len(bad_shapes)} mis-shaped: {_listing(bad_shapes)}")
  if problems:
    raise DataError(f"{name} does not match the config's model ({model.config.name}, "
                    f"{model.config.num_classes} classes, P={model.config.patch_size}): "
                    + "; ".join(problems))
  return values


def _listing(items: Sequence[str], limit: int = 12) -> str:
  more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
  return ", ".join(items[:limit]) + more


# ------------------------------------------------------------------------------------ writing

def convert(torch_path: str, config: ml_collections.ConfigDict, out: str) -> str:
  """Writes the converted checkpoint and summary into the new folder ``out``; returns it."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jaxtrain import checkpoint as ckpt_lib
  from jaxtrain import loop
  from jaxtrain import mesh as mesh_lib
  from jaxtrain import metrics as metrics_lib
  from jaxvision import train

  out = os.path.abspath(out)
  if os.path.exists(out):
    raise UserError(f"--out={out} exists; give a new folder")
  sd = load_state_dict(torch_path)
  task = train.task(config)
  model = nnx.eval_shape(lambda: task.model(nnx.Rngs(0)))
  values = convert_state(sd, model, torch_path)
  one_device = mesh_lib.make_mesh({"shape": {"data": 1}}, devices=jax.devices()[:1])
  program = loop.build_program(config, task, mesh=one_device)
  state = program.init()

  def fill(tree):
    if tree is None:
      return None
    flat = [(p, v.replace(jnp.asarray(values[p], v.dtype)) if p in values else v)
            for p, v in nnx.to_flat_state(tree)]
    return nnx.from_flat_state(flat)

  state.params, state.frozen, state.rest = fill(state.params), fill(state.frozen), fill(state.rest)
  if state.ema is not None:
    state.ema = fill(state.ema)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".convert_", dir=parent)
  try:
    ckpt = ckpt_lib.Checkpointer(os.path.join(tmp, "checkpoints"), keep=None)
    try:
      ckpt.save(0, state)
    finally:
      ckpt.close()
    metrics_lib.write_summary(tmp, config, converted_from=os.path.abspath(torch_path),
                              converted_tensors=len(values), step=0)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def _define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("torch", None, "an official .pth.tar checkpoint", flag_values=fv)
  flags.DEFINE_string("out", None, "a new folder for the converted run", flag_values=fv)


def main(argv: Sequence[str] | None = None) -> int:
  from jaxtrain import cli

  def run(config, workdir, fv):
    del workdir
    if not fv.torch or not fv.out:
      raise UserError("expected --torch=FILE.pth.tar and --out=DIR")
    path = convert(fv.torch, config, fv.out)
    print(f"wrote {path} (evaluate: python -m jaxvision.main --config=... --workdir={path} "
          "--config.eval.only=True)")
    return path

  return cli.run(run, argv=argv, prog="python -m jaxvision.convert", doc=__doc__,
                 needs_workdir=False, define=_define_flags)


if __name__ == "__main__":
  sys.exit(main())
