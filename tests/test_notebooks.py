"""Every notebook in notebooks/ runs top to bottom, is stored without outputs, and matches
its jupytext pair (notebooks/NN-name.py, the file to review and edit).

A cell that raises fails the test; so does a cell that runs longer than CELL_TIMEOUT_S.
The kernel is "python3", which jupyter_client starts with this interpreter (the venv), and
matplotlib draws with the headless "Agg" backend.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jupytext
import nbclient
import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 120
EXPECTED = [
    "01-quickstart",
    "02-convergence",
    "03-granularity",
    "04-error-policies",
    "05-real-files",
    "06-explore",
]


def test_all_six_notebooks_are_present() -> None:
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    with_outputs = [
        i for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not with_outputs, (
        f"{path.name}: cells {with_outputs} carry outputs; strip them "
        f"(.venv/bin/python scripts/strip-notebook-outputs.py notebooks/{path.name})"
    )


def test_strip_script_removes_outputs_and_keeps_cell_ids(tmp_path: Path) -> None:
    import runpy

    strip = runpy.run_path(str(NOTEBOOK_DIR.parent / "scripts" / "strip-notebook-outputs.py"))["strip"]
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# t"),
        nbformat.v4.new_code_cell("print(1)", execution_count=3,
                                  outputs=[nbformat.v4.new_output("stream", text="1\n")]),
    ])
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    ids = [c.id for c in nb.cells]
    assert strip(path) is True
    stripped = nbformat.read(path, as_version=4)
    assert [c.id for c in stripped.cells] == ids
    assert stripped.cells[1].outputs == [] and stripped.cells[1].execution_count is None
    assert strip(path) is False  # nothing left to strip


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_jupytext_pair(path: Path) -> None:
    paired = path.with_suffix(".py")
    assert paired.exists(), f"{paired.name} is missing"
    from_py = jupytext.read(paired)
    stored = nbformat.read(path, as_version=4)
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(stored) == cells(from_py), (
        f"{path.name} and {paired.name} differ; run: jupytext --sync notebooks/{paired.name}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_states_its_question_and_answer(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    # The answer comes from the data: the last code cell prints it.
    last_code = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert "print(" in last_code.source


# Run before the notebook's first cell (in the test only): with the Agg backend plt.show()
# would draw nothing, so a figure that fails to render would pass unseen. This show() renders
# every open figure, records the labels of the axes that show tick labels, and closes it.
DRAW_FIGURES = """
import matplotlib.pyplot as _bm_plt

def _bm_label(axis, text):
    # An axis that shows tick labels must say what it measures; None: it shows none.
    shown = axis.get_visible() and any(t.get_visible() and t.get_text() for t in axis.get_ticklabels())
    return text if shown else None

_bm_figures = []
def _bm_show(*args, **kwargs):
    for number in _bm_plt.get_fignums():
        figure = _bm_plt.figure(number)
        figure.canvas.draw()
        _bm_figures.append([(_bm_label(ax.xaxis, ax.get_xlabel()), _bm_label(ax.yaxis, ax.get_ylabel()))
                            for ax in figure.axes])
    _bm_plt.close("all")
_bm_plt.show = _bm_show
"""
REPORT_FIGURES = "_bm_show(); import json; print(json.dumps(_bm_figures))"
# The notebooks that are meant to draw figures.
DRAWS = {"02-convergence", "03-granularity", "04-error-policies", "05-real-files", "06-explore"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel inherits this environment.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    answer_cell = [c for c in nb.cells if c.cell_type == "code"][-1]
    nb.cells.insert(0, nbformat.v4.new_code_cell(DRAW_FIGURES))
    # The kernel must be this interpreter (the venv with blockmirror), not another "python3".
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        f"import sys; assert sys.prefix == {sys.prefix!r}, f'kernel runs {{sys.executable}}'"
    ))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT_FIGURES))
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    started = time.monotonic()
    client.execute()  # raises CellExecutionError (or CellTimeoutError) on a failing cell
    elapsed_s = time.monotonic() - started

    printed = "".join(o.get("text", "") for o in answer_cell.outputs if o.output_type == "stream")
    assert printed.strip().startswith("Answer"), f"{path.name}: the last cell printed no answer"
    figures = json.loads(nb.cells[-1].outputs[-1]["text"])
    if path.stem in DRAWS:
        assert figures, f"{path.name} drew no figure"
    for labels in figures:
        for x_label, y_label in labels:
            assert x_label != "" and y_label != "", f"{path.name}: an axis has no label: {labels}"
    print(json.dumps({"notebook": path.stem, "seconds": round(elapsed_s, 1), "figures": len(figures)}))
