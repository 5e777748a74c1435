"""Config files with variants and command-line overrides, through ``ml_collections.config_flags``.

A config file is a Python module with ``get_config(arg: str | None) -> ConfigDict``; ``arg`` is the
text after the colon in ``configs/x.py:variant``. Overrides use dotted keys:
``--config.optim.lr=3e-4`` on the command line (``jaxtrain.cli``), ``"optim.lr=3e-4"`` in
``load_config``; the last override of a key wins. Unknown keys, values of the wrong type and a
config file's own errors become a one-line ``ConfigError`` naming the key or file.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Any, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from jaxtrain.errors import ConfigError, UserError  # noqa: F401  (re-exported)

CONFIG_HELP = ("config file and variant: path/to/config.py[:variant]; override fields with "
               "--config.a.b=value")


def get(node: Any, key: str, default: Any) -> Any:
  """``node[key]``, or ``default`` when the key is absent or None (optional config fields)."""
  try:
    value = node[key]
  except (KeyError, AttributeError):
    return default
  return default if value is None else value


def define_config_flag(flag_values: flags.FlagValues, argv: Sequence[str],
                       name: str = "config") -> flags.FlagHolder:
  """Defines ``--<name>`` (``config_flags.DEFINE_config_file``, locked) on ``flag_values``.

  ``argv`` (program name first, flagfiles already expanded) is where config_flags looks for the
  ``--<name>.a.b=value`` overrides; pass the same list to ``parse_flags``.
  """
  return config_flags.DEFINE_config_file(name, None, CONFIG_HELP, flag_values=flag_values,
                                         lock_config=True, sys_argv=list(argv))


def parse_flags(flag_values: flags.FlagValues, argv: Sequence[str],
                name: str = "config") -> tuple[ml_collections.ConfigDict, list[str]]:
  """Parses ``argv`` into ``flag_values``; returns the config and the positional arguments.

  ``--<name>`` must have been defined with ``define_config_flag``. The last override of a key wins
  (tuples too). User mistakes (missing or bad config file, unknown key, bad value, unknown flag)
  raise a one-line ``UserError``.
  """
  argv = _last_overrides(argv, name)
  spec = _config_spec(argv, name)
  if spec is None:
    raise ConfigError(f"missing --{name}=path/to/config.py[:variant]")
  path = spec.split(":", 1)[0]
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist")
  try:
    with warnings.catch_warnings():  # config_flags loads the file with the deprecated load_module()
      warnings.filterwarnings("ignore", message=".*load_module", category=DeprecationWarning)
      rest = flag_values(argv)
  except Exception as e:  # noqa: BLE001  (translated when it is the user's mistake, else re-raised)
    user = _user_error(e, flag_values, argv, name, spec)
    if user is None:
      raise
    raise user from e
  config = flag_values[name].value
  if not isinstance(config, ml_collections.ConfigDict):
    try:
      getattr(config, "lock", None)  # config_flags defers a failed load until the config is used
    except OSError as e:
      raise ConfigError(f"cannot load config file {path!r}: {_one_line(_chain(e)[-1])}") from e
    raise ConfigError(f"config file {path!r}: get_config() returned a {type(config).__name__}, "
                      "not a ConfigDict")
  return config, rest


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads ``path.py[:variant]`` and applies ``"a.b=value"`` overrides, as ``--config`` does.

  For notebooks and tests; the result is unlocked (new keys may be added).
  """
  argv = ["load_config", f"--config={spec}"]
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise ConfigError(f"override {item!r} is not of the form key=value")
    argv.append(f"--config.{key.removeprefix('config.')}={text}")
  flag_values = flags.FlagValues()
  define_config_flag(flag_values, argv)
  config, _ = parse_flags(flag_values, argv)
  config.unlock()
  return config


def _config_spec(argv: Sequence[str], name: str) -> str | None:
  """The last ``--<name>=SPEC`` (or ``--<name> SPEC``) in ``argv``."""
  spec = None
  for i, arg in enumerate(argv):
    m = re.match(rf"^--?{re.escape(name)}(=|$)", arg)
    if m:
      spec = arg[m.end():] if m.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
  return spec


def _override_keys(argv: Sequence[str], name: str) -> list[str]:
  """Dotted keys of the ``--<name>.a.b=value`` overrides (parsed as config_flags does)."""
  keys = []
  for arg in argv:
    if re.match(rf"^-{{1,2}}(no)?{re.escape(name)}\.", arg):
      keys.append(arg.split("=", 1)[0].split(".", 1)[1])
  return keys


def _last_overrides(argv: Sequence[str], name: str) -> list[str]:
  """``argv`` with only the last ``--<name>.key=value`` of each key: a later override replaces an
  earlier one (a flagfile's, say), where config_flags would concatenate tuples."""
  last = {}
  for i, arg in enumerate(argv):
    if "=" in arg and re.match(rf"^--?{re.escape(name)}\.", arg):
      last[arg.split("=", 1)[0].lstrip("-")] = i
  keep = set(last.values())
  return [arg for i, arg in enumerate(argv)
          if not ("=" in arg and re.match(rf"^--?{re.escape(name)}\.", arg)) or i in keep]


def _arg_value(argv: Sequence[str], flag: str) -> str | None:
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{flag}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{flag}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _chain(exc: BaseException) -> list[BaseException]:
  out = []
  while exc is not None and all(exc is not e for e in out):
    out.append(exc)
    exc = exc.__cause__ or exc.__context__
  return out


def _one_line(exc: BaseException | str) -> str:
  return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _unknown_key(config: Any, key: str) -> str | None:
  """The message for ``key`` when it is not in ``config``, else None."""
  if "[" in key:  # indexed paths (a.b[0]): left to config_flags
    return None
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      return (f"unknown config key {key!r}: {'.'.join(parts[:i + 1])!r} does not exist"
              + (f" (known keys here: {', '.join(known)})" if known else ""))
    node = node[part]
  return None


def _user_error(exc: Exception, flag_values: flags.FlagValues, argv: Sequence[str], name: str,
                spec: str) -> UserError | None:
  """The one-line user error behind a failed parse, or None for a bug (re-raised as is)."""
  chain = _chain(exc)
  for e in chain:
    if isinstance(e, UserError):
      return e
  root = chain[-1]
  path = spec.split(":", 1)[0]
  if isinstance(exc, flags.IllegalFlagValueError):
    m = re.match(r"flag --([^=\s]+)=", str(exc))
    flag = m.group(1) if m else ""
    if flag == name:  # get_config raised (ValueError or TypeError): a bad variant or argument
      message = _one_line(root)
      if os.path.basename(path) not in message:
        message = f"config {spec!r}: {message}"
      return ConfigError(message)
    if flag.startswith(name + "."):
      key = flag[len(name) + 1:]
      try:
        expected = config_path.get_type(key, flag_values[name].value).__name__
      except Exception:  # noqa: BLE001
        expected = flag_values[flag].parser.flag_type()
      value = _arg_value(argv, flag)
      got = f", got {value!r}" if value is not None else ""
      return ConfigError(f"config key {key!r} expects a value of type {expected}{got}")
  if isinstance(root, OSError):  # config_flags' deferred error for a file it could not load
    return ConfigError(f"cannot load config file {path!r}: {_one_line(root)}")
  keys = _override_keys(argv, name)
  if keys:
    bare = ["load_config", f"--{name}={spec}"]  # the config without overrides, to find the key
    try:
      with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*load_module", category=DeprecationWarning)
        fresh = flags.FlagValues()
        define_config_flag(fresh, bare, name)
        fresh(bare)
        config = fresh[name].value
    except Exception:  # noqa: BLE001
      config = None
    if isinstance(config, ml_collections.ConfigDict):
      for key in keys:
        message = _unknown_key(config, key)
        if message:
          return ConfigError(message)
  if isinstance(exc, flags.Error):
    return UserError(_one_line(exc))
  return None
