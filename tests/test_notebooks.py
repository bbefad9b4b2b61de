"""Executes every notebook in notebooks/ top to bottom with nbclient and checks its figures.

The kernel is the interpreter running the tests (a kernelspec written to a temporary directory whose argv starts with
`sys.executable`), so the notebooks see exactly the installed package and its dependencies, offline. A notebook
passes when no cell raises, when every cell that draws a figure (calls `show(fig)`) leaves a PNG output, and when the file
in the repository is stored without outputs (small diffs).
"""

import json
import pathlib
import re
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
KERNEL_NAME = "metric-jax-tests"
CELL_TIMEOUT_S = 240


def test_the_expected_notebooks_exist():
  assert {p.name for p in NOTEBOOKS} >= {"loss_weighting.ipynb", "train_digits.ipynb", "reproductions.ipynb"}


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
  """A kernelspec directory whose `python3`-language kernel is this interpreter."""
  root = tmp_path_factory.mktemp("kernels")
  spec_dir = root / KERNEL_NAME
  spec_dir.mkdir()
  spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
          "display_name": "metric_jax tests", "language": "python"}
  (spec_dir / "kernel.json").write_text(json.dumps(spec))
  return root


def _figure_cells(nb):
  """Indices of the code cells that call `show(fig)` on a line of its own (not the cell defining `show`)."""
  call = re.compile(r"^\s*show\(fig\)\s*$", re.MULTILINE)
  return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and call.search(cell.source)]


def _png_outputs(cell):
  return [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {i} has stored outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_draws_its_figures(path, kernel_dir, tmp_path):
  nb = nbformat.read(path, as_version=4)
  km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
  assert km.kernel_spec.argv[0] == sys.executable
  client = NotebookClient(nb, km=km, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S,
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError (with the traceback) if any cell fails

  errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
  assert not errors
  figure_cells = _figure_cells(nb)
  assert figure_cells, f"{path.name} draws no figure"
  for i in figure_cells:
    pngs = _png_outputs(nb.cells[i])
    assert pngs, f"{path.name} cell {i} drew no image"
    assert all(len(o["data"]["image/png"]) > 1000 for o in pngs)
  assert sum(len(_png_outputs(c)) for c in nb.cells) >= 1
