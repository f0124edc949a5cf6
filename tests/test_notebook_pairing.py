"""Each notebook is paired with a percent-format script (notebooks/NN_x.py, for review and diffs) holding the same
cells, and every code cell outside the ``parameters`` cell stays short: the notebooks narrate, splitlib works."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
MAX_CELL_LINES = 15
RESYNC = "resync the pair with `jupytext --sync notebooks/*.ipynb` (the newer file of each pair wins)"


def cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip("\n")) for c in nb.cells]


def test_there_are_notebooks_to_check():
    assert len(NOTEBOOKS) == 7, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_has_a_percent_script_with_the_same_cells(path):
    script = path.with_suffix(".py")
    assert script.exists(), f"{script.name} is missing: {RESYNC}"
    ours = cells(nbformat.read(path, as_version=4))
    paired = cells(jupytext.read(script, fmt="py:percent"))
    for i, (a, b) in enumerate(zip(ours, paired)):
        assert a == b, f"{path.name} cell {i} differs from {script.name}: {RESYNC}"
    assert len(ours) == len(paired), f"{path.name} has {len(ours)} cells, {script.name} {len(paired)}: {RESYNC}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_cells_are_short_outside_the_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    long = {i: n for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])
            and (n := len(c.source.strip("\n").splitlines())) > MAX_CELL_LINES}
    assert not long, (f"{path.name}: code cells over {MAX_CELL_LINES} lines (cell index: lines) {long}; move the "
                      "logic into splitlib (with a test) or split the cell into narrated steps")


def test_notebooks_and_scripts_are_paired_by_the_jupytext_config():
    config = (NOTEBOOKS_DIR / "jupytext.toml").read_text()
    assert 'formats = "ipynb,py:percent"' in config
