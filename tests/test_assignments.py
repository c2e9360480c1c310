"""Graded assignments: nbgrader source notebooks generated from the notebooks and their solutions,
then released and autograded by nbgrader itself."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from helpers import assignments

SETUP = '''from helpers.exercises import Case, check, exercise
import torch
def _double(x):
    return 2 * x
exercise("99.1", "double a tensor", reference=_double)(lambda: [Case("a vector", (torch.arange(3.0),)), Case("a matrix", (torch.ones(2, 2),))])
exercise("99.2", "six times seven", expected=lambda: 42)'''


def demo_course(tmp_path, monkeypatch):
    """A one-notebook course: a function to write (2 points) and a number to work out (1 point)."""
    student = new_notebook(cells=[
        new_markdown_cell("# 99 · Demo · 演示"), new_code_cell(SETUP),
        new_markdown_cell("## Exercises"),
        new_code_cell('def double(x):\n    """Twice x."""\n    ...  # your code'),
        new_code_cell('check("99.1", double)'),
        new_code_cell("answer = ..."), new_code_cell('check("99.2", answer)'),
        new_code_cell("print(double(torch.ones(1)))  # a later cell that uses the answer"),
    ])
    solutions = new_notebook(cells=[
        new_markdown_cell("# 99 · Solutions"),
        new_markdown_cell("Doubling is multiplying by two."),
        new_code_cell('def double(x):\n    """Twice x."""\n    return x * 2\n\n\ncheck("99.1", double, required=True)'),
        new_code_cell('answer = 6 * 7  # the product\ncheck("99.2", answer, required=True)'),
    ])
    for folder, nb in (("notebooks", student), ("solutions", solutions)):
        (tmp_path / folder).mkdir()
        nbformat.write(nb, tmp_path / folder / "99_demo.ipynb")
    monkeypatch.setattr(assignments, "NOTEBOOKS", tmp_path / "notebooks")
    monkeypatch.setattr(assignments, "SOLUTIONS", tmp_path / "solutions")
    return tmp_path / "course"


def test_the_source_notebook_has_the_answers_between_markers_and_graded_checks(tmp_path, monkeypatch):
    demo_course(tmp_path, monkeypatch)
    nb = assignments.source_notebook("99_demo.ipynb")
    answer, check_cell = nb.cells[3], nb.cells[4]
    assert answer.source == ('def double(x):\n    """Twice x."""\n    ### BEGIN SOLUTION\n    return x * 2\n'
                             '    ### END SOLUTION')
    assert answer.metadata["nbgrader"]["solution"] and not answer.metadata["nbgrader"]["grade"]
    assert check_cell.source == 'check("99.1", double, required=True)'
    assert check_cell.metadata["nbgrader"]["points"] == 2 and check_cell.metadata["nbgrader"]["locked"]
    assert nb.cells[5].source == "### BEGIN SOLUTION\nanswer = 6 * 7  # the product\n### END SOLUTION"
    assert nb.cells[6].metadata["nbgrader"]["points"] == 1


def test_a_missing_worked_answer_is_named(tmp_path, monkeypatch):
    demo_course(tmp_path, monkeypatch)
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 99 · Solutions")]), tmp_path / "solutions" / "99_demo.ipynb")
    with pytest.raises(ValueError, match="no answer to exercise 99.1"):
        assignments.source_notebook("99_demo.ipynb")


def nbgrader(course, *args):
    bin_dir = Path(sys.executable).parent  # nbgrader runs `alembic` from the same environment
    result = subprocess.run([str(bin_dir / "nbgrader"), *args, "--force"], cwd=course, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "COURSE_FAST": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_nbgrader_releases_and_grades_it(tmp_path, monkeypatch):
    course = demo_course(tmp_path, monkeypatch)
    assignments.write_course(course, names=["99_demo.ipynb"])
    nbgrader(course, "generate_assignment", "99_demo")
    released = course / "release" / "99_demo" / "99_demo.ipynb"
    nb = nbformat.read(released, 4)
    assert "return x * 2" not in released.read_text() and "6 * 7" not in released.read_text()

    wrong = nbformat.read(released, 4)
    wrong.cells[3].source = wrong.cells[3].source.replace("raise NotImplementedError()", "return x + 2")
    wrong.cells[5].source = "answer = 42"
    submissions = {"complete": nbformat.read(course / "source" / "99_demo" / "99_demo.ipynb", 4), "untouched": nb,
                   "one_wrong": wrong}
    for student, notebook in submissions.items():
        folder = course / "submitted" / student / "99_demo"
        folder.mkdir(parents=True)
        nbformat.write(notebook, folder / "99_demo.ipynb")
    nbgrader(course, "autograde", "99_demo", "--create")

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as book:
        def score(student, grade_id):
            return book.find_grade(grade_id, "99_demo", "99_demo", student).score

        assert [score("complete", g) for g in ("check_99_1", "check_99_2")] == [2, 1]
        assert [score("untouched", g) for g in ("check_99_1", "check_99_2")] == [0, 0]
        assert [score("one_wrong", g) for g in ("check_99_1", "check_99_2")] == [0, 1]
