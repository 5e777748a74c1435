"""Every command in README.md works as written.

Each shell line of the README's bash blocks is checked as a new user would type it: `make` targets
exist, launch scripts exist and are executable, and every `python -m ...` / `python benchmarks/...`
command parses with ``--dry_run`` (its flags, config file, variant and every override), without
running. A command that reads a run (``predict``, ``compare --runs``, ``theory.report``,
``eval.only``) must name a folder an earlier README command writes. The commands' smallest variants
run end to end in the package tests (test_brainmae_e2e, test_compare, test_stmae, test_theory_sweep,
test_vision_e2e, test_vision_adafocus_tsm, test_vision_convert, test_launch).
"""
import contextlib
import importlib
import io
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
LAUNCHERS = {"scripts/launch_tpu_pod.sh": 2, "scripts/launch_local.sh": 1, "scripts/launch_slurm.sh": 0}
# Arguments that stand for the user's own files.
PLACEHOLDERS = ("my_clip.mp4", ".pth.tar", "FRAMES", "train.txt", "val.txt")


def readme_commands() -> list[str]:
  """The README's shell commands: bash blocks, continuation lines joined, comments dropped."""
  text = open(README).read()
  commands = []
  for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = re.split(r"\s+#", line)[0].strip()
      if line and not line.startswith("#"):
        commands.append(line)
  return commands


COMMANDS = readme_commands()


def inner_command(words: list[str]) -> list[str]:
  """The command a launcher runs (``sbatch OPTS scripts/launch_slurm.sh CMD`` -> CMD)."""
  if words[0] == "sbatch":  # sbatch [--option=value ...] SCRIPT CMD
    words = words[next(i for i, w in enumerate(words) if i and not w.startswith("-")):]
  if words[0] in LAUNCHERS:
    path = os.path.join(ROOT, words[0])
    assert os.path.isfile(path) and os.access(path, os.X_OK), f"{words[0]} is not executable"
    return words[1 + LAUNCHERS[words[0]]:]
  return words


def flag(words: list[str], name: str) -> str | None:
  for w in words:
    if w.startswith(f"--{name}="):
      return w.split("=", 1)[1]
  return None


def dry_run(words: list[str]) -> tuple[int, str]:
  """Runs a ``python ...`` command with ``--dry_run``: (exit code, output)."""
  assert words[0] == "python", words
  if words[1] == "-m":
    module = importlib.import_module(words[2])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      code = module.main([*words[3:], "--dry_run"])
    return code, out.getvalue() + err.getvalue()
  proc = subprocess.run([sys.executable, *words[1:], "--dry_run"], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  return proc.returncode, proc.stdout + proc.stderr


def test_the_readme_has_commands_for_every_package():
  modules = {w.split()[2] for w in COMMANDS if w.startswith("python -m ")}
  assert {"jaxbrain.main", "jaxbrain.compare", "jaxvision.main", "jaxvision.predict",
          "jaxvision.convert", "jaxvision.flops", "theory.sweep"} <= modules, modules


def test_make_targets_exist():
  for command in COMMANDS:
    words = shlex.split(command)
    if words[0] == "make":
      proc = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
      assert proc.returncode == 0, f"{command}: {proc.stderr}"


@pytest.mark.parametrize("command", COMMANDS, ids=[c[:90] for c in COMMANDS])
def test_command_works_as_written(command, monkeypatch):
  monkeypatch.chdir(ROOT)
  words = inner_command(shlex.split(command))
  if words[0] == "make":
    return  # test_make_targets_exist
  assert words[0] == "python", f"{command}: not a make, launcher or python command"
  writes = {flag(w, k) for c in COMMANDS[:COMMANDS.index(command)]
            for w in [shlex.split(c)] for k in ("workdir", "out")} - {None}
  if words[1:3] == ["-m", "theory.report"]:
    assert os.path.dirname(words[3]) in writes, f"{command}: no earlier command writes {words[3]}"
    return  # its one argument is a run's file; tests/test_theory_fits.py runs it
  reads = []
  if words[1:3] == ["-m", "jaxvision.predict"] or flag(words, "config.eval.only") == "True":
    reads.append(flag(words, "workdir"))
  if words[1:3] == ["-m", "jaxvision.compare"]:
    reads.extend(flag(words, "runs").split(","))
  for run in reads:
    assert run in writes, f"{command}: no earlier README command writes {run}"
  code, output = dry_run(words)
  assert code == 0 and "dry run" in output, f"{command}:\n{output}"


def test_a_typo_fails_the_dry_run(monkeypatch):
  """The check above can fail: a wrong variant, override or flag is refused."""
  monkeypatch.chdir(ROOT)
  for bad in ("python -m jaxbrain.main --config=configs/brainmae.py:smok --workdir=runs/x",
              "python -m jaxbrain.main --config=configs/brainmae.py --workdir=runs/x --config.optim.lrr=1",
              "python -m jaxvision.predict --workdir=runs/x --vidoe=a.mp4",
              "python benchmarks/adafocus.py --config=tsm:ssv9_p128"):
    code, output = dry_run(shlex.split(bad))
    assert code != 0, bad
