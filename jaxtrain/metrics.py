"""Metrics: TensorBoard events and metrics.jsonl, a console progress line, and summary.json (one
writer, ``write_summary``, written atomically)."""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from typing import Any, Mapping

import numpy as np


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if hasattr(value, "to_dict"):
    return _jsonable(value.to_dict())
  if isinstance(value, (np.generic, np.ndarray)) or type(value).__module__.startswith("jax"):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def write_atomic(path: str, write: Any, mode: str = "wb") -> None:
  """Calls ``write(f)`` on a temporary file in ``path``'s folder, then renames it over ``path``:
  readers never see a half-written file, and a failure leaves nothing behind."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_" + os.path.basename(path) + ".")
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON atomically (``write_atomic``)."""
  write_atomic(path, lambda f: json.dump(_jsonable(obj), f, indent=2, sort_keys=True), mode="w")


def format_duration(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
  """Console progress: a bar that redraws in place on a terminal, plain lines otherwise.

  ``update(done, **metrics)`` reports ``done`` of ``total`` units; rate and ETA are measured from
  the first update so compilation time is not counted in the rate.
  """

  def __init__(self, total: int, desc: str = "", unit: str = "step", every_s: float = 5.0,
               stream=None, start: int = 0):
    self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self._t0 = None
    self._done0 = start
    self._last_print = -math.inf

  def rate(self, done: int) -> float:
    if self._t0 is None or done <= self._done0:
      return float("nan")
    return (done - self._done0) / max(time.perf_counter() - self._t0, 1e-9)

  def line(self, done: int, **metrics: float) -> str:
    rate = self.rate(done)
    eta = (self.total - done) / rate if rate == rate and rate > 0 else float("nan")
    parts = [f"{self.desc} " if self.desc else "", f"{done}/{self.total} {self.unit}s"]
    if self.tty:
      width = 20
      filled = int(width * done / max(self.total, 1))
      parts.insert(1, "[" + "#" * filled + "." * (width - filled) + "] ")
    if rate == rate:
      parts.append(f" | {rate:.2f} {self.unit}s/s | ETA {format_duration(eta)}")
    for k, v in metrics.items():
      parts.append(f" | {k} {float(v):.4g}")
    return "".join(parts)

  def update(self, done: int, force: bool = False, **metrics: float) -> None:
    now = time.perf_counter()
    if self._t0 is None:
      self._t0, self._done0 = now, done
    if not force and done < self.total and now - self._last_print < self.every_s:
      return
    self._last_print = now
    text = self.line(done, **metrics)
    if self.tty:
      self.stream.write("\r" + text + ("\n" if done >= self.total else ""))
    else:
      self.stream.write(text + "\n")
    self.stream.flush()


class Writer:
  """TensorBoard scalars and metrics.jsonl of a run, written by process 0 only.

  On resume, records of steps after the restored one (from a killed run) are dropped.
  """

  def __init__(self, workdir: str, start_step: int):
    import jax
    self.primary = jax.process_index() == 0
    self.tb = None
    self.jsonl = None
    if self.primary:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(os.path.join(workdir, "tb"),
                              purge_step=start_step + 1 if start_step else None)
      path = os.path.join(workdir, "metrics.jsonl")
      kept = []
      if os.path.exists(path):
        with open(path) as f:
          for line in f:
            try:
              if json.loads(line)["step"] <= start_step:
                kept.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError, TypeError):
              pass
      with open(path, "w") as f:
        f.writelines(kept)
      self.jsonl = open(path, "a")

  def write(self, step: int, metrics: dict, prefix: str) -> None:
    """Scalars as ``<prefix>/<name>``; a vector metric as ``<prefix>/<name>/<i>``."""
    if not self.primary:
      return
    record = {}
    for k, v in metrics.items():
      value = np.asarray(v, np.float64)
      if value.ndim == 0:
        self.tb.add_scalar(f"{prefix}/{k}", float(value), step)
        record[f"{prefix}/{k}"] = float(value)
      else:
        for i, x in enumerate(value.ravel()):
          self.tb.add_scalar(f"{prefix}/{k}/{i}", float(x), step)
        record[f"{prefix}/{k}"] = value.tolist()
    self.jsonl.write(json.dumps({"step": step, **record}) + "\n")
    self.jsonl.flush()

  def close(self) -> None:
    if self.primary:
      self.tb.flush()
      self.tb.close()
      self.jsonl.close()


def write_summary(workdir: str, config: Any = None, result: Any = None, **sections: Any) -> dict:
  """Writes ``workdir/summary.json`` (process 0; atomically) and returns it: the config's name and
  the config, what training gave (``result``: a ``loop.TrainResult``: steps, preemption, final
  train metrics, evaluations, best checkpoint, wall time), the devices, and ``sections``
  (a package's own results, e.g. ``eval=...``). The only writer of summary.json."""
  import jax
  summary: dict = {}
  if config is not None:
    summary["name"] = str(config.get("name", "")) if hasattr(config, "get") else ""
    summary["config"] = config.to_dict() if hasattr(config, "to_dict") else config
  if result is not None:
    summary.update(step=result.step, preempted=result.preempted,
                   final_metrics=result.metrics, checkpoint=result.checkpoint,
                   train_wall_time_s=result.wall_time_s)
    if result.eval_history:
      summary["eval_history"] = result.eval_history
    if result.best is not None:
      summary["best"] = result.best
  summary.update(devices=f"{jax.device_count()} x {jax.devices()[0].device_kind}",
                 num_processes=jax.process_count())
  summary.update(sections)
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, "summary.json"), summary)
  return summary
