"""Every exercise of the notebooks is registered in helpers, answered in the solutions, tested with a wrong
answer, and can be handed out with nbgrader."""
import importlib
import re

import nbformat
import pytest

from helpers import assignments, classroom
from helpers.exercises import get

NAMES = classroom.notebook_names()
LEGACY = re.compile(r"check\(\s*answer\b")  # the old form, check(answer, expected): the expected value in view


def keyed(name):
    return assignments.exercises(nbformat.read(classroom.NOTEBOOKS / name, 4))


def converted(name):
    """Notebooks whose exercises have moved to checks kept in helpers (helpers/exercises/nbNN.py)."""
    return importlib.util.find_spec(f"helpers.exercises.nb{name[:2]}") is not None


@pytest.mark.parametrize("name", [n for n in NAMES if converted(n)])
def test_every_exercise_is_registered_answered_and_tested(name):
    found = keyed(name)
    keys = [key for key, *_ in found]
    assert keys and len(keys) == len(set(keys)), "each exercise appears once"
    assert all(key.startswith(name[:2] + ".") for key in keys)
    importlib.import_module(f"helpers.exercises.nb{name[:2]}")
    registered = {k for k in importlib.import_module("helpers.exercises").EXERCISES if k.startswith(name[:2] + ".")}
    assert set(keys) == registered, "the notebook's checks and helpers/exercises agree"
    builds = {k for k in keys if get(k).builds}
    assert 2 <= len(builds) <= 4, "2-4 build-it exercises per notebook"
    wrong = importlib.import_module(f"test_exercises_nb{name[:2]}").WRONG
    assert set(wrong) == builds, "every build-it check has a wrong implementation in tests/test_exercises_nbNN.py"
    solutions = nbformat.read(classroom.SOLUTIONS / name, 4)
    for key, fn, answer_cell, _ in found:
        assert assignments.worked_answer(solutions, key, fn)
        assert "..." in nbformat.read(classroom.NOTEBOOKS / name, 4).cells[answer_cell].source
    student = nbformat.read(classroom.NOTEBOOKS / name, 4)
    assert not any(LEGACY.search(c.source) for c in student.cells if c.cell_type == "code"), \
        "no exercise shows its expected value: use check('NN.k', answer)"


@pytest.mark.parametrize("name", [n for n in NAMES if converted(n)])
def test_the_notebook_becomes_an_nbgrader_assignment(name):
    nb = assignments.source_notebook(name)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    answers = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert len(graded) == len(answers) == len(keyed(name))
    assert all("### BEGIN SOLUTION" in c.source and "### END SOLUTION" in c.source for c in answers)
    assert all("required=True" in c.source for c in graded)
