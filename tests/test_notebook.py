"""``docs/notebook.ipynb`` runs top to bottom in a Jupyter kernel (smoke settings: tiny synthetic data), shows its
figures inline, and is kept executed with its outputs; dl1 leaves the notebook's matplotlib backend alone."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebook.ipynb"
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def _images(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def test_notebook_is_kept_executed_with_its_figures():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "run it and save it with its outputs"
    assert "SMOKE = False" in code[0].source  # the saved outputs are of the real runs, on Fashion-MNIST
    assert sum(_images(c) for c in code) >= 6
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error" or o.get("name") == "stderr"]


def test_notebook_runs_in_a_kernel_on_smoke_settings(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "SMOKE = False" in params.source
    params.source = params.source.replace("SMOKE = False", "SMOKE = True")
    after = nb.cells.index(params) + 1  # the backend the notebook chose (%matplotlib inline), kept to the end
    nb.cells.insert(after, nbformat.v4.new_code_cell("import matplotlib\nBACKEND = matplotlib.get_backend()"))
    nb.cells.append(nbformat.v4.new_code_cell("import matplotlib\nassert matplotlib.get_backend() == BACKEND\n"
                                              "print('backend', BACKEND)"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("MPLBACKEND", None)  # the kernel's own default (inline), as a user has it
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    client.km = client.create_kernel_manager()
    client.km.kernel_spec.argv[0] = sys.executable  # this interpreter's environment, whatever the kernel spec says
    client.execute(env=env)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert sum(_images(c) for c in code) >= 6  # the MLP's and the VAE's figures and our own Figure, inline
    assert _images(code[-2]) == 1  # a Figure of dl1.report.new_figure, returned by the cell
    assert "inline" in "".join(o.get("text", "") for o in code[-1].outputs)
    assert list((tmp_path / "runs" / "notebook").iterdir())
