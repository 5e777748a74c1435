"""The optimizer from ``config.optim``: AdamW, linear warmup then cosine decay, gradient clipping."""
from __future__ import annotations

from typing import Any

import jax
import optax

from jaxtrain import config as config_lib


def make_schedule(optim_cfg: Any, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then cosine decay to ``lr * end_ratio``."""
  lr = float(optim_cfg.lr)
  warmup = int(config_lib.get(optim_cfg, "warmup_steps", 0))
  if lr < 0:
    raise ValueError(f"config.optim.lr={lr} must be non-negative")
  if warmup < 0:
    raise ValueError(f"config.optim.warmup_steps={warmup} must be non-negative")
  schedule = str(config_lib.get(optim_cfg, "schedule", "cosine"))
  end = lr * float(config_lib.get(optim_cfg, "end_lr_ratio", 0.0))
  total_steps = max(int(total_steps), warmup + 1)
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps, end_value=end)
  if schedule == "constant":
    if warmup == 0:
      return optax.constant_schedule(lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  raise ValueError(f"config.optim.schedule={schedule!r}; expected 'cosine' or 'constant'")


def _decay_mask(params: Any) -> Any:
  # Weight decay on matrices and kernels only, not on biases, scales and embeddings' norms.
  return jax.tree.map(lambda p: getattr(p, "ndim", 0) > 1, params)


def make_optimizer(optim_cfg: Any, total_steps: int) -> optax.GradientTransformation:
  """AdamW with warmup + cosine schedule, global-norm clipping (``grad_clip`` > 0) and decoupled
  weight decay on parameters with two or more dimensions."""
  clip = float(config_lib.get(optim_cfg, "grad_clip", 0.0))
  parts = []
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  parts.append(optax.adamw(
      make_schedule(optim_cfg, total_steps),
      b1=float(config_lib.get(optim_cfg, "b1", 0.9)),
      b2=float(config_lib.get(optim_cfg, "b2", 0.999)),
      eps=float(config_lib.get(optim_cfg, "eps", 1e-8)),
      weight_decay=float(config_lib.get(optim_cfg, "weight_decay", 0.0)),
      mask=_decay_mask))
  return optax.chain(*parts)
