"""Graded assignments with nbgrader, generated from the notebooks and their solutions (``make assignments``).

nbgrader (the grading tool of JupyterHub classes) wants each assignment as a *source* notebook: the
answers in place between ``### BEGIN SOLUTION`` and ``### END SOLUTION``, and each test cell marked
with its points. The course already has both halves, so nothing is written twice:

* the student notebook gives every exercise as an answer cell (a function with a ``...`` body, or
  ``answer = ...``) followed by its check cell, ``check("05.1", global_magnitude_mask)``;
* the solutions notebook gives, for the same key, the worked answer
  (``check("05.1", global_magnitude_mask, required=True)`` after it).

:func:`source_notebook` puts the worked answer into the answer cell between the markers and turns the
check cell into an autograded test worth :data:`POINTS` (the check runs the answer on the reference's
cases, so the test cell shows no expected value). :func:`write_course` writes an nbgrader course folder,
``build/assignments/`` by default, with one assignment per notebook under ``source/``. Then, in that
folder, ``nbgrader generate_assignment NN_topic`` makes the student version and ``nbgrader autograde``
grades submissions (docs/teaching.md says how to run a class with it).
"""
import ast
import re
import sys
import textwrap
from pathlib import Path

import nbformat

from .classroom import BUILD, NOTEBOOKS, SOLUTIONS, notebook_names

COURSE = BUILD / "assignments"
POINTS = {"function": 2, "value": 1}  # a function written from scratch, a number worked out
CHECK = re.compile(r"""^check\(\s*["'](?P<key>\d\d\.\d+)["']\s*,\s*(?P<name>[A-Za-z_]\w*)\s*(?P<rest>[,)])""", re.M)


def exercises(nb):
    """``[(key, name, answer_cell, check_cell)]`` of a student notebook, in order.

    A check cell holds ``check("NN.k", name)``; its answer cell is the nearest code cell above it that
    defines ``name`` (``def name(...)`` or ``name = ...``).
    """
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "required=True" in cell.source:
            continue
        for match in CHECK.finditer(cell.source):
            key, name = match["key"], match["name"]
            answer = next((j for j in range(i, -1, -1) if nb.cells[j].cell_type == "code"
                           and _defines(nb.cells[j].source, name)), None)
            if answer is None:
                raise ValueError(f"exercise {key}: no cell above its check defines {name}")
            found.append((key, name, answer, i))
    return found


def _defines(source, name):
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return any(_is_definition(node, name) for node in tree.body)


def _is_definition(node, name):
    if isinstance(node, ast.FunctionDef):
        return node.name == name
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    return False


def worked_answer(solutions, key, name):
    """The solutions notebook's answer to ``key``: the body of function ``name`` or the ``name = ...`` line(s)."""
    for cell in solutions.cells:
        if cell.cell_type == "code" and re.search(rf"""check\(\s*["']{re.escape(key)}["']""", cell.source):
            tree = ast.parse(cell.source)
            lines = cell.source.splitlines()
            for node in tree.body:
                if _is_definition(node, name):
                    if isinstance(node, ast.FunctionDef):
                        body = node.body[1:] if ast.get_docstring(node) is not None else node.body
                        return textwrap.dedent("\n".join(lines[body[0].lineno - 1:body[-1].end_lineno]))
                    return "\n".join(lines[node.lineno - 1:node.end_lineno])
    raise ValueError(f"the solutions have no answer to exercise {key} (a cell defining {name} and checking '{key}')")


def _with_solution(source, name, answer):
    """The answer cell's source with the worked answer in place of its ``...``, between nbgrader's markers."""
    lines = source.splitlines()
    node = next(n for n in ast.parse(source).body if _is_definition(n, name))
    if isinstance(node, ast.FunctionDef):
        placeholder = node.body[-1]
        if not (isinstance(placeholder, ast.Expr) and getattr(placeholder.value, "value", None) is Ellipsis):
            raise ValueError(f"the body of {name} must end with `...` for the student to replace")
        indent = " " * placeholder.col_offset
        start, end = placeholder.lineno - 1, placeholder.end_lineno
    else:
        indent, start, end = "", node.lineno - 1, node.end_lineno
    block = [f"{indent}### BEGIN SOLUTION", *textwrap.indent(answer, indent).splitlines(), f"{indent}### END SOLUTION"]
    return "\n".join(lines[:start] + block + lines[end:])


def source_notebook(name):
    """nbgrader's source version of notebook ``name``: answers in place, checks as graded tests."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    solutions = nbformat.read(SOLUTIONS / name, as_version=4)
    for key, fn, answer_i, check_i in exercises(nb):
        answer_cell, check_cell = nb.cells[answer_i], nb.cells[check_i]
        node = next(n for n in ast.parse(answer_cell.source).body if _is_definition(n, fn))
        kind = "function" if isinstance(node, ast.FunctionDef) else "value"
        answer_cell.source = _with_solution(answer_cell.source, fn, worked_answer(solutions, key, fn))
        answer_cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "schema_version": 3,
                                            "grade_id": f"answer_{key.replace('.', '_')}"}
        check_cell.source = CHECK.sub(lambda m: f'check("{m["key"]}", {m["name"]}, required=True{m["rest"]}', check_cell.source)
        check_cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "schema_version": 3,
                                           "points": POINTS[kind], "grade_id": f"check_{key.replace('.', '_')}"}
    return nb


CONFIG = '''# nbgrader configuration of the course's assignments (written by `make assignments`)
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "model-compression"
c.CourseDirectory.root = {root!r}
# the notebooks train models: give each cell time (fast mode: COURSE_FAST=1 in the grader's environment)
c.ExecutePreprocessor.timeout = 900
'''


def write_course(folder=COURSE, names=None):
    """Write an nbgrader course folder: ``nbgrader_config.py`` and ``source/<name>/<name>.ipynb`` per notebook."""
    folder = Path(folder)
    paths = []
    for name in names or notebook_names():
        nb = source_notebook(name)
        if not any("nbgrader" in c.metadata for c in nb.cells):
            continue  # no exercise in the graded form yet
        path = folder / "source" / name.removesuffix(".ipynb") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        paths.append(path)
    (folder / "nbgrader_config.py").write_text(CONFIG.format(root=str(folder.resolve())))
    return paths


if __name__ == "__main__":
    for path in write_course(*(sys.argv[1:2] or [])):
        print(path)
