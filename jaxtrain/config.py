"""Config files with variants and command-line overrides.

A config file is a Python module with ``get_config(arg: str | None) -> ConfigDict``; ``arg`` is the
text after the colon in ``configs/x.py:variant``. Overrides use dotted keys, ``optim.lr=3e-4``.
Unknown keys are an error that names the key.
"""
from __future__ import annotations

import ast
import importlib.util
import os
from typing import Any, Sequence

import ml_collections

from jaxtrain.errors import ConfigError  # noqa: F401  (re-exported)


def get(node: Any, key: str, default: Any) -> Any:
  """``node[key]``, or ``default`` when the key is absent or None (optional config fields)."""
  try:
    value = node[key]
  except (KeyError, AttributeError):
    return default
  return default if value is None else value


def _load_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist")
  name = "_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} has no get_config(arg) function")
  return module


def _parse_value(text: str, old: Any) -> Any:
  if isinstance(old, str) or old is None:
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
    return value if old is None else text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ConfigError(f"cannot parse {text!r} as a {type(old).__name__}") from None
  if isinstance(old, bool) and not isinstance(value, bool):
    raise ConfigError(f"expected True or False, got {text!r}")
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(old, tuple) and isinstance(value, list):
    value = tuple(value)
  return value


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets ``config.<key>`` from the string ``text``; ``key`` must exist."""
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise ConfigError(
          f"unknown config key {key!r}: {'.'.join(parts[:i + 1])!r} does not exist"
          + (f" (known keys here: {', '.join(known)})" if known else ""))
    if i < len(parts) - 1:
      node = node[part]
  old = node[parts[-1]]
  try:
    new = _parse_value(text, old)
  except ConfigError as e:
    raise ConfigError(f"config key {key!r}: {e}") from None
  with node.ignore_type():
    node[parts[-1]] = new


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads ``path.py[:variant]`` and applies ``key=value`` overrides."""
  path, _, arg = spec.partition(":")
  config = _load_module(path).get_config(arg or None)
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise ConfigError(f"override {item!r} is not of the form key=value")
    apply_override(config, key.removeprefix("config."), text)
  return config


def check_keys(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict,
               prefix: str = "") -> None:
  """Raises if ``config`` has a key that ``reference`` (the base config) lacks."""
  for key, value in config.items():
    name = prefix + key
    if key not in reference:
      raise ConfigError(f"unknown config key {name!r}")
    if isinstance(value, ml_collections.ConfigDict) and isinstance(reference[key],
                                                                   ml_collections.ConfigDict):
      check_keys(value, reference[key], name + ".")


def parse_argv_config(argv: Sequence[str]) -> tuple[ml_collections.ConfigDict, dict[str, str]]:
  """Parses ``--config=path[:variant]``, ``--config.a.b=v`` and other ``--flag=v`` arguments."""
  spec, overrides, flags = None, [], {}
  for arg in argv:
    if not arg.startswith("--"):
      raise ConfigError(f"unexpected argument {arg!r}; expected --flag=value")
    name, sep, value = arg[2:].partition("=")
    if not sep:
      raise ConfigError(f"argument {arg!r} needs a value: --{name}=...")
    if name == "config":
      spec = value
    elif name.startswith("config."):
      overrides.append(f"{name[len('config.'):]}={value}")
    else:
      flags[name] = value
  if spec is None:
    raise ConfigError("missing --config=configs/<name>.py[:variant]")
  return load_config(spec, overrides), flags
