"""The notebooks: stored without outputs, and each runs top to bottom in small mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

# Seconds per cell. In small mode a whole notebook took 8-13 s (kernel start included) on a
# loaded 2-core machine; the margin covers a slower machine.
CELL_TIMEOUT = 300


def test_notebooks_present():
    names = {path.name for path in NOTEBOOKS}
    for expected in (
        "01_quick_start.ipynb",
        "02_search_parameters.ipynb",
        "03_puzzles_and_constraints.ipynb",
        "04_attention_and_pruning.ipynb",
    ):
        assert expected in names, expected


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"cell {index} of {path.name} has outputs"
        assert cell.execution_count is None, f"cell {index} of {path.name} has a count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_reads_small_flag(path):
    source = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
    assert 'os.environ.get("TEMPO_NOTEBOOK_SMALL") == "1"' in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_small(path, tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPO_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # One torch thread: the tiny model's matrices are too small to gain from more.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    # jupyter_client starts the "python3" kernel with this interpreter (sys.executable), so the
    # kernel sees the same environment and tempo_search as the tests.
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=dict(os.environ))
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []
