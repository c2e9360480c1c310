"""The notebook run really checks the marked outputs: a wrong stored output must fail it."""
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from checked_outputs import strip


def notebook_printing(stored):
    cell = new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(6 * 7)")
    cell.outputs = [new_output("stream", name="stdout", text=stored)]
    unchecked = new_code_cell("print('timings and the like are not compared')")
    nb = new_notebook(cells=[cell, unchecked])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return strip(nb)


@pytest.mark.parametrize("stored, passes", [("42\n", True), ("41\n", False)])
def test_nbval_compares_checked_outputs(tmp_path, stored, passes):
    path = tmp_path / "probe.ipynb"
    nbformat.write(notebook_printing(stored), path)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          "--nbval-current-env", "-c", "/dev/null", str(path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert (run.returncode == 0) == passes, run.stdout[-2000:]
