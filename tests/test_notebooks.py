"""The Colab notebooks: each runs top to bottom on its smallest setting, and is committed without outputs.

A notebook reads two environment variables (its parameters cell): ``JAXBRAIN_NOTEBOOK_SMALL=1``
selects its smallest setting and ``JAXBRAIN_NOTEBOOK_WORKDIR`` where it writes. Its first cell
installs the project in Colab (clone + ``scripts/install.sh``) and uses the installed checkout here.
"""
import glob
import os
import re
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
NAMES = [os.path.basename(p) for p in NOTEBOOKS]


def test_the_four_notebooks_exist():
  assert len(NOTEBOOKS) == 4, NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_outputs_are_stripped(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, f"{path}: cell {i} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_first_cell_installs_the_project(path):
  first = nbformat.read(path, as_version=4).cells[0]
  if first.cell_type == "markdown":
    first = nbformat.read(path, as_version=4).cells[1]
  assert "scripts/install.sh" in first.source and "git" in first.source, first.source


def test_readme_badges_open_these_notebooks_from_the_setup_cells_repository():
  readme = open(os.path.join(ROOT, "README.md")).read()
  links = re.findall(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/(notebooks/[\w.-]+)",
                     readme)
  assert sorted(path for _, path in links) == sorted(f"notebooks/{n}" for n in NAMES)
  for path in NOTEBOOKS:
    setup = nbformat.read(path, as_version=4).cells[1].source
    repo = re.search(r'REPO_URL = "https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?"', setup).group(1)
    assert {r for r, _ in links} == {repo}, (path, repo)


def kernel_env(workdir: str) -> dict:
  """The test process's environment, as a fresh Colab kernel would see it: no simulated devices."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_XDIST_WORKER")}
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
  env.update(JAXBRAIN_NOTEBOOK_SMALL="1", JAXBRAIN_NOTEBOOK_WORKDIR=workdir)
  return env


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_runs_top_to_bottom(path, tmp_path):
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=900, kernel_name="python3",
      resources={"metadata": {"path": os.path.dirname(path)}})
  client.execute(env=kernel_env(str(tmp_path / "work")))  # raises CellExecutionError on any error
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if "image/png" in o.get("data", {})]
  assert images, f"{path} shows no figure"
