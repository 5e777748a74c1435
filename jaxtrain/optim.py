"""The optimizer from ``config.optim``, in big_vision's spirit.

AdamW (decoupled weight decay) or SGD (PyTorch's coupled weight decay and momentum), a learning-rate
schedule after linear warmup, global-norm clipping, per-parameter learning-rate and weight-decay
multipliers chosen by regexes over parameter paths (``"encoder/blocks/0/attn/wq"``), and a filter
for frozen parameters. Fields of ``config.optim`` (all optional except ``lr``):

  name            'adamw' (default) or 'sgd'
  b1, b2, eps     AdamW moments (0.9, 0.999, 1e-8)
  momentum        SGD momentum (0.9; 0 = plain SGD), ``nesterov`` (False)
  lr              peak learning rate
  schedule        'cosine' (default), 'linear', 'constant' or 'step', after ``warmup_steps`` (0)
  end_lr_ratio    end value of 'cosine' and 'linear' as a fraction of ``lr`` (0)
  decay_boundaries, decay_factor   steps and factor (0.1) of the 'step' schedule
  weight_decay    (0); on parameters with ndim > 1 unless ``wd_mults`` is given
  wd_mults        ((regex, mult), ...): first match wins, unmatched parameters get no decay
  lr_mults        ((regex, mult), ...): first match wins, unmatched parameters get 1.0
  grad_clip       global-norm clipping when > 0 (0 = off)
  frozen          (regex, ...): parameters that are not trained (see ``frozen_filter``)
  ema_decay       read by the engine
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxtrain import config as config_lib
from jaxtrain.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "step")
_PATTERN_FIELDS = ("frozen", "lr_mults", "wd_mults")


# ---- parameter paths and regex rules

def _key_str(key: Any) -> str:
  if isinstance(key, (str, int)):
    return str(key)
  for attr in ("key", "idx", "name"):   # DictKey, SequenceKey / FlattenedIndexKey, GetAttrKey
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def param_path(path: tuple) -> str:
  """A jax key path (or an nnx graph path of str/int) as ``"a/b/0/c"``; the trailing ``.value``
  key that an ``nnx.Variable`` adds when flattened is dropped."""
  keys = list(path)
  if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name in (
      "value", "raw_value"):
    keys.pop()
  return "/".join(_key_str(k) for k in keys)


def _compile(field: str, pattern: Any) -> re.Pattern:
  if not isinstance(pattern, str):
    raise ConfigError(f"config.optim.{field}: {pattern!r} is not a regex string")
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ConfigError(f"config.optim.{field}: invalid regex {pattern!r} ({e})") from None


def _frozen_patterns(optim_cfg: Any) -> list[re.Pattern]:
  frozen = config_lib.get(optim_cfg, "frozen", ())
  if isinstance(frozen, str):
    frozen = (frozen,)
  return [_compile("frozen", p) for p in frozen]


def _mult_rules(optim_cfg: Any, field: str) -> list[tuple[re.Pattern, float]] | None:
  """``((regex, mult), ...)`` of ``config.optim.<field>``, or None when absent."""
  rules = config_lib.get(optim_cfg, field, None)
  if rules is None:
    return None
  items = list(rules.items()) if hasattr(rules, "items") else list(rules)
  out = []
  for item in items:
    if isinstance(item, str) or not hasattr(item, "__len__") or len(item) != 2:
      raise ConfigError(f"config.optim.{field}: entry {item!r} is not a (regex, multiplier) pair")
    pattern, mult = item
    try:
      mult = float(mult)
    except (TypeError, ValueError):
      raise ConfigError(f"config.optim.{field}: multiplier {mult!r} of {pattern!r} is not a "
                        "number") from None
    if mult < 0:
      raise ConfigError(f"config.optim.{field}: multiplier {mult} of {pattern!r} is negative")
    out.append((_compile(field, pattern), mult))
  return out


def _first_match(rules: list[tuple[re.Pattern, float]], path: str, default: float) -> float:
  for pattern, mult in rules:
    if pattern.search(path):
      return mult
  return default


def frozen_filter(optim_cfg: Any) -> Callable[[tuple, Any], bool]:
  """An NNX filter, True for the ``nnx.Param``s whose path matches a regex in ``optim.frozen``."""
  patterns = _frozen_patterns(optim_cfg)

  def is_frozen(path: tuple, value: Any) -> bool:
    if not patterns or not isinstance(value, nnx.Param):
      return False
    name = param_path(path)
    return any(p.search(name) for p in patterns)

  return is_frozen


def check_patterns(optim_cfg: Any, paths: Sequence[str]) -> None:
  """Raises ConfigError when a regex of ``optim.frozen``, ``lr_mults`` or ``wd_mults`` matches
  none of ``paths`` (all parameter paths of the model)."""
  paths = list(paths)
  for field in _PATTERN_FIELDS:
    if field == "frozen":
      patterns = _frozen_patterns(optim_cfg)
    else:
      patterns = [p for p, _ in (_mult_rules(optim_cfg, field) or [])]
    for pattern in patterns:
      if not any(pattern.search(p) for p in paths):
        examples = ", ".join(repr(p) for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
        raise ConfigError(f"config.optim.{field}: regex {pattern.pattern!r} matches no parameter "
                          f"(paths look like {examples or 'nothing: the model has no parameters'})")


# ---- schedules

def _step_schedule(lr: float, boundaries: Sequence[int], factor: float,
                   offset: int) -> optax.Schedule:
  def schedule(count):
    count = jnp.asarray(count) + offset
    value = jnp.asarray(lr, jnp.float32)
    for b in boundaries:
      value = jnp.where(count >= b, value * factor, value)
    return value
  return schedule


def make_schedule(optim_cfg: Any, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then ``schedule`` (cosine, linear,
  constant or step) until ``total_steps``."""
  lr = float(optim_cfg.lr)
  warmup = int(config_lib.get(optim_cfg, "warmup_steps", 0))
  if lr < 0:
    raise ConfigError(f"config.optim.lr={lr} must be non-negative")
  if warmup < 0:
    raise ConfigError(f"config.optim.warmup_steps={warmup} must be non-negative")
  schedule = str(config_lib.get(optim_cfg, "schedule", "cosine"))
  end = lr * float(config_lib.get(optim_cfg, "end_lr_ratio", 0.0))
  total_steps = max(int(total_steps), warmup + 1)
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps, end_value=end)
  if schedule == "constant":
    main = optax.constant_schedule(lr)
  elif schedule == "linear":
    main = optax.linear_schedule(lr, end, total_steps - warmup)
  elif schedule == "step":
    boundaries = config_lib.get(optim_cfg, "decay_boundaries", None)
    if boundaries is None:
      raise ConfigError("config.optim.decay_boundaries (step numbers) is required for "
                        "schedule='step'")
    boundaries = [int(b) for b in boundaries]
    if any(b < warmup for b in boundaries) or boundaries != sorted(set(boundaries)):
      raise ConfigError(f"config.optim.decay_boundaries={tuple(boundaries)} must be increasing "
                        f"steps not before warmup_steps={warmup}")
    factor = float(config_lib.get(optim_cfg, "decay_factor", 0.1))
    main = _step_schedule(lr, boundaries, factor, warmup)
  else:
    raise ConfigError(f"config.optim.schedule={schedule!r} is unknown; known: "
                      f"{', '.join(SCHEDULES)}")
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


# ---- per-parameter multipliers

def _decay_mask(params: Any) -> Any:
  # Weight decay on matrices and kernels only, not on biases, scales and embeddings' norms.
  return jax.tree.map(lambda p: getattr(p, "ndim", 0) > 1, params)


def _leaf_values(params: Any, fn: Callable[[str, Any], float]) -> tuple[float, ...]:
  """Static per-leaf constants ``fn(path, leaf)``, in the flattening order of ``params``."""
  tree = jax.tree_util.tree_map_with_path(lambda kp, x: float(fn(param_path(kp), x)), params)
  return tuple(jax.tree.leaves(tree))


def _map_leaves(fn: Callable, values: tuple[float, ...], tree: Any, *rest: Any) -> Any:
  leaves, treedef = jax.tree.flatten(tree)
  if len(leaves) != len(values):
    raise ValueError(f"the optimizer was built for {len(values)} parameter arrays but got "
                     f"{len(leaves)}; pass make_optimizer the trainable parameters")
  others = [jax.tree.leaves(r) for r in rest]
  return treedef.unflatten([fn(v, *xs) for v, *xs in zip(values, leaves, *others)])


def _scale_leaves(mults: tuple[float, ...]) -> optax.GradientTransformation:
  """Multiplies each leaf of the updates by its static multiplier."""
  def update(updates, state, params=None):
    del params
    return _map_leaves(lambda m, u: u if m == 1.0 else u * m, mults, updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _add_decayed_leaves(coefs: tuple[float, ...]) -> optax.GradientTransformation:
  """Adds ``coef * param`` to each leaf of the updates (as ``optax.add_decayed_weights``)."""
  def update(updates, state, params=None):
    if params is None:
      raise ValueError(optax.NO_PARAMS_MSG)
    return _map_leaves(lambda c, g, p: g if c == 0.0 else g + c * p, coefs, updates, params), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# ---- the optimizer

def make_optimizer(optim_cfg: Any, total_steps: int,
                   params: Any = None) -> optax.GradientTransformation:
  """The optimizer chain of ``config.optim`` for ``params``, the trainable parameters (arrays or
  ``jax.ShapeDtypeStruct``s; needed for ``lr_mults`` and ``wd_mults``)."""
  name = str(config_lib.get(optim_cfg, "name", "adamw"))
  if name not in OPTIMIZERS:
    raise ConfigError(f"config.optim.name={name!r} is unknown; known: {', '.join(OPTIMIZERS)}")
  schedule = make_schedule(optim_cfg, total_steps)
  clip = float(config_lib.get(optim_cfg, "grad_clip", 0.0))
  if clip < 0:
    raise ConfigError(f"config.optim.grad_clip={clip} must be non-negative (0 = off)")
  wd = float(config_lib.get(optim_cfg, "weight_decay", 0.0))
  if wd < 0:
    raise ConfigError(f"config.optim.weight_decay={wd} must be non-negative")
  lr_rules = _mult_rules(optim_cfg, "lr_mults")
  wd_rules = _mult_rules(optim_cfg, "wd_mults")
  if params is None and (lr_rules or wd_rules):
    raise ValueError("make_optimizer needs the trainable params for lr_mults / wd_mults")

  # Weight decay: None (the default ndim > 1 mask) or static per-leaf coefficients.
  wd_coefs = None
  if wd_rules is not None:
    wd_coefs = _leaf_values(params, lambda path, _: wd * _first_match(wd_rules, path, 0.0))

  parts = []
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  if name == "adamw":
    b1 = float(config_lib.get(optim_cfg, "b1", 0.9))
    b2 = float(config_lib.get(optim_cfg, "b2", 0.999))
    eps = float(config_lib.get(optim_cfg, "eps", 1e-8))
    if wd_coefs is None:
      parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd,
                               mask=_decay_mask))
    else:
      parts.append(optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                               _add_decayed_leaves(wd_coefs),
                               optax.scale_by_learning_rate(schedule)))
  else:
    momentum = float(config_lib.get(optim_cfg, "momentum", 0.9))
    nesterov = bool(config_lib.get(optim_cfg, "nesterov", False))
    if not 0 <= momentum < 1:
      raise ConfigError(f"config.optim.momentum={momentum} must be in [0, 1)")
    if nesterov and momentum == 0:
      raise ConfigError("config.optim.nesterov=True needs config.optim.momentum > 0")
    # PyTorch's SGD: g + wd * p before the momentum buffer buf = m * buf + g.
    if wd_coefs is not None:
      parts.append(_add_decayed_leaves(wd_coefs))
    elif wd > 0:
      parts.append(optax.add_decayed_weights(wd, mask=_decay_mask))
    if momentum > 0:
      parts.append(optax.trace(decay=momentum, nesterov=nesterov))
    parts.append(optax.scale_by_learning_rate(schedule))

  if lr_rules:
    lr_mults = _leaf_values(params, lambda path, _: _first_match(lr_rules, path, 1.0))
    if any(m != 1.0 for m in lr_mults):
      parts.append(_scale_leaves(lr_mults))
  return optax.chain(*parts)
