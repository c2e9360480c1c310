"""Re-run notebooks and store only the outputs that nbval checks.

Usage (``make clean-outputs`` runs it on every notebook, in fast mode):

    python tests/checked_outputs.py notebooks/00_measuring_models.ipynb ...

Every cell is executed from a fresh kernel; afterwards the outputs of cells that contain
``# NBVAL_CHECK_OUTPUT`` are kept and every other output, execution count and widget state is
dropped, so that diffs stay small and no timing or path from this machine is committed. (nbval
ignores a stored output whose cell has no execution count, so checked cells are numbered 1, 2, 3.)
Run it after editing a notebook, then review the diff of the checked outputs.
"""
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from helpers.classroom import CHECK_MARK as MARK


def is_checked(cell):
    return cell.cell_type == "code" and MARK in cell.source


def strip(nb):
    """Drop every output that nbval does not check (in place); returns the notebook."""
    nb.metadata.pop("widgets", None)
    number = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.execution_count = None
        cell.metadata.pop("execution", None)
        if is_checked(cell):
            number += 1
            cell.execution_count = number
            merged = []  # one output per run of printed text, however the kernel happened to split it
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = number
                previous = merged[-1] if merged else None
                if (output.output_type == "stream" and previous is not None and previous.output_type == "stream"
                        and previous.name == output.name):
                    previous.text += output.text
                else:
                    merged.append(output)
            cell.outputs = merged
        else:
            cell.outputs = []
    return nb


def refresh(path):
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in nb.cells:
        for output in cell.get("outputs", []) if is_checked(cell) else []:
            if output.output_type == "stream" and output.name == "stderr":
                sys.exit(f"{path}: a checked cell wrote to stderr (a warning?): {output.text[:200]}")
    nbformat.write(strip(nb), path)
    print(f"{path}: stored the outputs of {sum(map(is_checked, nb.cells))} checked cells")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        refresh(arg)
