"""Notebooks are stored clean: outputs only in the cells nbval checks (see tests/checked_outputs.py)."""
import copy
from pathlib import Path

import nbformat
import pytest

from checked_outputs import MARK, strip

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def problems(nb):
    """What is stored that should not be, or missing that should be."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if MARK in cell.source:
            if not cell.outputs:
                found.append(f"cell {i}: checked cell without a stored output (run make clean-outputs)")
            elif any(o.output_type == "stream" and o.name == "stderr" for o in cell.outputs):
                found.append(f"cell {i}: checked cell stores stderr (a warning would break the check)")
        elif cell.outputs:
            found.append(f"cell {i}: output stored outside a {MARK} cell")
        elif cell.execution_count is not None:
            found.append(f"cell {i}: has an execution count")
    if "widgets" in nb.metadata:
        found.append("widget state stored in the notebook's metadata")
    return found


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean(path):
    nb = nbformat.read(path, as_version=4)
    assert problems(nb) == []
    assert path.name[:2].isdigit() and path.name[2] == "_", "notebooks are named NN_topic.ipynb"
    assert nb.cells[0].source.startswith("# ") and "·" in nb.cells[0].source.splitlines()[0], \
        "the first cell is the title: '# NN · English title · 中文'"


def test_the_check_catches_a_stray_output_and_strip_removes_it():
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    dirty = copy.deepcopy(nb)
    cell = next(c for c in dirty.cells if c.cell_type == "code" and MARK not in c.source)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="12.3 ms\n")]
    cell.execution_count = 7
    assert len(problems(dirty)) == 1 and "output stored outside" in problems(dirty)[0]
    assert problems(strip(dirty)) == []
    checked = next(c for c in strip(dirty).cells if MARK in c.source)
    assert checked.outputs, "strip keeps the outputs nbval checks"


def test_strip_merges_printed_text_split_across_outputs():
    cell = nbformat.v4.new_code_cell(f"{MARK}\nprint(1); print(2)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    nb = strip(nbformat.v4.new_notebook(cells=[cell]))
    assert [o.text for o in nb.cells[0].outputs] == ["1\n2\n"]
