"""The engine's command line: absl flags with an ``ml_collections`` config file.

  python -m <package>.main --config=configs/x.py[:variant] --workdir=DIR [--config.a.b=value ...]
                           [--flagfile=FILE] [--verbose] [--help]

``run(fn)`` parses the flags (into a fresh ``absl.flags.FlagValues``, so it can be called again in
one process), sets up JAX devices and the distributed system, then calls ``fn(config, workdir)``.
A ``jaxtrain.errors.UserError`` from the flags or from ``fn`` (a bad config key or value, a missing
file, bad data, a mesh that does not fit) prints one line ``error: <message>`` and returns 2 (with
``--verbose`` the traceback too); any other exception propagates. ``--dry_run`` checks a command
line without running it: the flags, the config file, its variant and every override are parsed and
the resolved config is printed; nothing starts and nothing is written.
"""
from __future__ import annotations

import re
import sys
import traceback
from typing import Any, Callable, Sequence

import ml_collections
from absl import flags

from jaxtrain import config as config_lib
from jaxtrain import distributed
from jaxtrain.errors import UserError

USAGE = ("--config=path/to/config.py[:variant] --workdir=DIR [--config.a.b=value ...] "
         "[--flagfile=FILE] [--verbose] [--dry_run] [--help]")
HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "--helpfull", "-?")


def run(fn: Callable[[ml_collections.ConfigDict, str], Any], *,
        argv: Sequence[str] | None = None, report: Callable[[Any], None] | None = None,
        prog: str | None = None, doc: str | None = None, needs_workdir: bool = True,
        define: Callable[[flags.FlagValues], None] | None = None) -> int:
  """Parses ``argv`` (default ``sys.argv[1:]``), calls ``fn(config, workdir)``; returns 0 or 2.

  ``report(result)`` prints ``fn``'s result. ``prog`` and ``doc`` (e.g. the entry point's module
  docstring) head the ``--help`` text. Returns 2 after printing a user error. A tool that writes
  nothing passes ``needs_workdir=False`` (``workdir`` is then '' unless given). A tool with flags
  of its own declares them with ``define(flag_values)`` and is called as
  ``fn(config, workdir, flag_values)``.
  """
  args = list(sys.argv[1:] if argv is None else argv)
  prog = prog or (sys.argv[0] if argv is None and sys.argv else "main")
  verbose = _verbose_in(args)
  try:
    flag_values = flags.FlagValues()
    try:
      full = flag_values.read_flags_from_files([prog, *args], force_gnu=False)  # --flagfile=FILE
    except flags.CantOpenFlagFileError as e:
      raise UserError(re.sub(r"^ERROR::\s*", "", str(e))) from e
    verbose = _verbose_in(full[1:])
    config_lib.define_config_flag(flag_values, full)
    flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and results",
                        flag_values=flag_values)
    flags.DEFINE_bool("verbose", False, "print the traceback of user errors too",
                      flag_values=flag_values)
    _define_dry_run(flag_values)
    if define is not None:
      define(flag_values)
    if _wants_help(full[1:]):
      print(_help_text(flag_values, prog, doc))
      return 0
    config, rest = config_lib.parse_flags(flag_values, full)
    verbose = flag_values.verbose
    if len(rest) > 1:
      raise UserError(f"unexpected argument(s) {' '.join(rest[1:])!r}; flags are --name=value")
    workdir = flag_values.workdir or ""
    if needs_workdir and not workdir:
      raise UserError("missing --workdir=DIR")
    if flag_values.dry_run:
      print(f"dry run of {prog}: the command parses; workdir={workdir!r}; config:\n{config}")
      return 0
    mesh = config_lib.get(config, "mesh", None)  # before JAX creates its backends
    distributed.set_cpu_device_count(0 if mesh is None else config_lib.get(mesh, "cpu_devices", 0))
    distributed.maybe_initialize()
    result = fn(config, workdir) if define is None else fn(config, workdir, flag_values)
  except (UserError, flags.Error) as e:  # ShardingError and DataError are UserErrors
    return print_user_error(e, verbose)
  if report is not None:
    report(result)
  return 0


def run_tool(fn: Callable[[flags.FlagValues], None], define: Callable[[flags.FlagValues], None], *,
             argv: Sequence[str] | None = None, prog: str = "tool", doc: str | None = None) -> int:
  """The entry point of a tool without a config (``predict``, ``compare``): ``define(flag_values)``
  declares its flags (``--verbose`` is added), ``fn(flag_values)`` runs it. ``--help`` prints
  ``doc``; a UserError or bad flag prints one line and returns 2 (``run``'s convention)."""
  args = list(sys.argv[1:] if argv is None else argv)
  flag_values = flags.FlagValues()
  define(flag_values)
  flags.DEFINE_bool("verbose", False, "print the traceback of user errors too",
                    flag_values=flag_values)
  _define_dry_run(flag_values)
  if _wants_help(args):
    print(doc or prog)
    return 0
  try:
    flag_values([prog, *args])
    if flag_values.dry_run:
      print(f"dry run of {prog}: the command parses; flags: "
            + " ".join(f"--{k}={v}" for k, v in sorted(flag_values.flag_values_dict().items())))
      return 0
    fn(flag_values)
  except (UserError, flags.Error) as e:
    return print_user_error(e, _verbose_in(args))
  return 0


def _define_dry_run(flag_values: flags.FlagValues) -> None:
  flags.DEFINE_bool("dry_run", False, "parse the command line and the config, print them and exit "
                    "without running anything", flag_values=flag_values)


def print_user_error(error: BaseException, verbose: bool = False) -> int:
  """Prints ``error: <message>`` as one line (the traceback first when ``verbose``); returns 2,
  the exit status of every entry point for bad input."""
  if verbose:
    traceback.print_exception(error, file=sys.stderr)
  message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
  print(f"error: {message or type(error).__name__}", file=sys.stderr, flush=True)
  return 2


def _before_terminator(args: Sequence[str]) -> list[str]:
  args = list(args)
  return args[:args.index("--")] if "--" in args else args


def _wants_help(args: Sequence[str]) -> bool:
  return any(a in HELP_FLAGS for a in _before_terminator(args))


def _verbose_in(args: Sequence[str]) -> bool:
  """Whether ``args`` turn on ``--verbose`` (the last mention wins), read before parsing."""
  verbose = False
  for arg in _before_terminator(args):
    m = re.match(r"^--?(no)?verbose(=(.*))?$", arg)
    if m:
      verbose = not m.group(1) if m.group(2) is None else (
          not m.group(1) and m.group(3).lower() in ("1", "true", "t", "yes", "y"))
  return verbose


def _help_text(flag_values: flags.FlagValues, prog: str, doc: str | None) -> str:
  parts = [f"usage: {prog} {USAGE}"]
  if doc:
    parts.append(doc.strip())
  lines = ["flags:"]
  for name in ("config", "workdir", "verbose"):
    flag = flag_values[name]
    default = "" if flag.default is None else f" (default: {flag.default!r})"
    lines.append(f"  --{name}: {flag.help}{default}")
  lines.append("  --flagfile: a file of more flags, one per line")
  lines.append("  --help: this text")
  parts.append("\n".join(lines))
  return "\n\n".join(parts)
