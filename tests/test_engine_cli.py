"""The command line (``jaxtrain.cli``): absl flags, config_flags, one-line user errors (exit 2)."""
import os
import subprocess
import sys

import pytest

from jaxtrain import cli
from jaxtrain.config import ConfigError, load_config
from jaxtrain.errors import DataError
from jaxtrain.mesh import ShardingError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRAINMAE = os.path.join(ROOT, "configs", "brainmae.py")

TINY_CONFIG = '''
import ml_collections

def get_config(arg=None):
  if arg not in (None, "small", "big"):
    raise ValueError(f"unknown variant {arg!r} of tiny.py")
  c = ml_collections.ConfigDict()
  c.name = arg or "default"
  c.train = ml_collections.ConfigDict(dict(steps=10, lr=0.1, shuffle=True))
  c.sizes = (1, 2)
  return c
'''


@pytest.fixture
def tiny(tmp_path):
  path = tmp_path / "tiny.py"
  path.write_text(TINY_CONFIG)
  return str(path)


def _run(fn, argv, capsys):
  calls = []

  def record(config, workdir):
    calls.append((config, workdir))
    return fn(config, workdir)

  rc = cli.run(record, argv=argv)
  out, err = capsys.readouterr()
  return rc, out, err, calls


def _one_error_line(err):
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert "Traceback" not in err
  return lines[0]


def test_run_passes_config_and_workdir_and_reports(tiny, tmp_path, capsys):
  reported = []
  rc = cli.run(lambda c, w: (c.train.steps, c.train.lr, c.sizes, c.name, w),
               argv=[f"--config={tiny}:small", f"--workdir={tmp_path}", "--config.train.steps=3",
                     "--config.train.lr=1", "--config.sizes=(4, 5, 6)"], report=reported.append)
  assert rc == 0
  assert reported == [(3, 1.0, (4, 5, 6), "small", str(tmp_path))]
  # Repeated calls in one process: fresh flags each time.
  assert cli.run(lambda c, w: reported.append(c.train.steps),
                 argv=[f"--config={tiny}", f"--workdir={tmp_path}"]) == 0
  assert reported[-1] == 10


def test_dry_run_parses_and_runs_nothing(tiny, tmp_path, capsys):
  called = []
  workdir = tmp_path / "never"
  assert cli.run(lambda c, w: called.append(w), argv=[
      f"--config={tiny}:small", f"--workdir={workdir}", "--config.train.steps=3", "--dry_run"]) == 0
  out = capsys.readouterr().out
  assert not called and not workdir.exists() and "dry run" in out and "steps: 3" in out
  assert cli.run(lambda c, w: called.append(w), argv=[
      f"--config={tiny}", f"--workdir={workdir}", "--config.train.nope=3", "--dry_run"]) == 2
  assert "nope" in _one_error_line(capsys.readouterr().err) and not called


def test_config_is_locked(tiny, tmp_path, capsys):
  def add_key(config, workdir):
    config.train.new_key = 1

  with pytest.raises(AttributeError):
    cli.run(add_key, argv=[f"--config={tiny}", f"--workdir={tmp_path}"])


def test_flagfile_is_honoured_and_command_line_wins(tiny, tmp_path, capsys):
  flagfile = tmp_path / "flags.txt"
  flagfile.write_text(f"--config={tiny}:big\n--config.train.steps=3\n--config.sizes=(7, 8)\n"
                      f"--workdir={tmp_path}\n")
  got = []
  assert cli.run(lambda c, w: got.append((c.name, c.train.steps, c.sizes)),
                 argv=[f"--flagfile={flagfile}"]) == 0
  assert cli.run(lambda c, w: got.append((c.name, c.train.steps, c.sizes)),
                 argv=[f"--flagfile={flagfile}", "--config.train.steps=5",
                       "--config.sizes=(9,)"]) == 0
  assert got == [("big", 3, (7, 8)), ("big", 5, (9,))]


@pytest.mark.parametrize("args,names", [
    (["--config.train.nope=1"], ["unknown config key 'train.nope'", "steps"]),
    (["--config.nope=1"], ["unknown config key 'nope'", "train"]),
    (["--config.train.steps.x=1"], ["unknown config key 'train.steps.x'"]),
    (["--config.train.steps=abc"], ["'train.steps'", "int", "abc"]),
    (["--config.train.lr=fast"], ["'train.lr'", "float"]),
    (["--config.train.shuffle=maybe"], ["'train.shuffle'", "bool"]),
    (["--bogus=1"], ["bogus"]),
    (["extra"], ["extra"]),
    (["--verbose=maybe"], ["verbose"]),
    (["--flagfile=/nonexistent/flags.txt"], ["/nonexistent/flags.txt"]),
])
def test_user_errors_are_one_line_and_exit_2(args, names, tiny, tmp_path, capsys):
  rc, out, err, calls = _run(lambda c, w: 0, [f"--config={tiny}", f"--workdir={tmp_path}/w", *args],
                             capsys)
  assert rc == 2 and not calls
  line = _one_error_line(err)
  for name in names:
    assert name in line
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("argv,names", [
    (lambda tiny, wd: [f"--config={tiny}:huge", f"--workdir={wd}"], ["'huge'", "tiny.py"]),
    (lambda tiny, wd: ["--config=/nonexistent/cfg.py", f"--workdir={wd}"], ["/nonexistent/cfg.py"]),
    (lambda tiny, wd: [f"--workdir={wd}"], ["--config"]),
    (lambda tiny, wd: [f"--config={tiny}"], ["--workdir"]),
])
def test_config_file_and_missing_flag_errors(argv, names, tiny, tmp_path, capsys):
  rc, _, err, calls = _run(lambda c, w: 0, argv(tiny, str(tmp_path / "w")), capsys)
  assert rc == 2 and not calls
  line = _one_error_line(err)
  for name in names:
    assert name in line


@pytest.mark.parametrize("error", [DataError("no subject files in '/data/x'"),
                                   ConfigError("config.a: bad"),
                                   ShardingError("mesh shape (3,) does not fit 2 devices")])
def test_user_errors_from_fn(error, tiny, tmp_path, capsys):
  def fail(config, workdir):
    raise error

  rc, _, err, _ = _run(fail, [f"--config={tiny}", f"--workdir={tmp_path}"], capsys)
  assert rc == 2 and _one_error_line(err) == f"error: {error}"
  rc, _, err, _ = _run(fail, [f"--config={tiny}", f"--workdir={tmp_path}", "--verbose"], capsys)
  assert rc == 2 and "Traceback" in err and err.strip().splitlines()[-1] == f"error: {error}"


def test_verbose_shows_traceback_of_flag_errors(tiny, tmp_path, capsys):
  rc, _, err, _ = _run(lambda c, w: 0, [f"--config={tiny}", f"--workdir={tmp_path}", "--verbose",
                                        "--config.train.nope=1"], capsys)
  assert rc == 2 and "Traceback" in err
  assert err.strip().splitlines()[-1].startswith("error: unknown config key 'train.nope'")


def test_other_exceptions_propagate(tiny, tmp_path):
  def bug(config, workdir):
    raise KeyError("a bug")

  with pytest.raises(KeyError, match="a bug"):
    cli.run(bug, argv=[f"--config={tiny}", f"--workdir={tmp_path}"])


def test_help_exits_0(tiny, capsys):
  assert cli.run(lambda c, w: 1 / 0, argv=["--help"], prog="prog", doc="The doc.") == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: prog") and "The doc." in out
  for flag in ("--config", "--workdir", "--verbose", "--flagfile"):
    assert flag in out


def test_load_config_overrides_and_errors(tiny):
  c = load_config(f"{tiny}:small", ["train.steps=3", "config.train.lr=2", "sizes=(3,)",
                                     "sizes=(4, 5)"])
  assert (c.name, c.train.steps, c.train.lr, c.sizes) == ("small", 3, 2.0, (4, 5))
  c.extra = 1  # unlocked for notebooks
  with pytest.raises(ConfigError, match="unknown config key 'train.nope'"):
    load_config(tiny, ["train.nope=1"])
  with pytest.raises(ConfigError, match="'train.steps' expects a value of type int"):
    load_config(tiny, ["train.steps=abc"])
  with pytest.raises(ConfigError, match="not of the form key=value"):
    load_config(tiny, ["train.steps"])
  with pytest.raises(ValueError, match="unknown variant 'huge'"):
    load_config(f"{tiny}:huge")


def _main(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", "jaxbrain.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,names", [
    (["--config.model.nope=1"], ["'model.nope'"]),
    (["--config.train.steps=abc"], ["'train.steps'", "int"]),
    (["--config.data.source=folder", "--config.data.path=/nonexistent"], ["/nonexistent"]),
])
def test_jaxbrain_main_user_errors(args, names, tmp_path):
  workdir = tmp_path / "run"
  proc = _main(f"--config={BRAINMAE}:smoke", f"--workdir={workdir}", *args)
  assert proc.returncode == 2, proc.stderr[-3000:]
  line = _one_error_line(proc.stderr)
  for name in names:
    assert name in line
  assert not workdir.exists() or not os.listdir(workdir)


def test_jaxbrain_main_bad_variant_verbose_and_help(tmp_path):
  proc = _main(f"--config={BRAINMAE}:bogus", f"--workdir={tmp_path}")
  assert proc.returncode == 2 and "bogus" in _one_error_line(proc.stderr)
  proc = _main(f"--config={BRAINMAE}:bogus", f"--workdir={tmp_path}", "--verbose")
  assert proc.returncode == 2 and "Traceback" in proc.stderr
  proc = _main("--help")
  assert proc.returncode == 0 and "python -m jaxbrain.main" in proc.stdout
