"""Student notebooks, their solutions, the complete copies the notebook run uses, and slide decks."""
import re
import shutil

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from helpers import assignments, classroom
from helpers.classroom import CHECK_MARK, NOTEBOOKS, SOLUTIONS
from helpers.exercises import NOT_YET_DONE

NAMES = classroom.notebook_names()


def test_every_notebook_has_its_solutions_and_no_solution_is_orphaned():
    assert NAMES and NAMES == sorted(p.name for p in SOLUTIONS.glob("*.ipynb"))


@pytest.mark.parametrize("name", NAMES)
def test_student_notebooks_hold_exercises_but_no_solutions(name):
    student = nbformat.read(NOTEBOOKS / name, 4)
    solutions = nbformat.read(SOLUTIONS / name, 4)
    exercises = classroom.exercise_cells(student)
    assert len(exercises) >= 2, "every notebook has exercises with checks"
    assert not any("required=True" in c.source for c in student.cells), "a worked solution is in the student notebook"
    answer_cells = {check: answer for *_, answer, check in assignments.exercises(student)}  # check("NN.k", ...)
    for i in exercises:  # an unanswered exercise: a `...` to replace, and a check that only prints
        source = student.cells[answer_cells.get(i, i)].source
        assert "..." in source, f"exercise cell {i} has nothing for the student to fill in"
    assert solutions.cells[0].source.startswith(f"# {name[:2]} · Solutions")
    assert any("required=True" in c.source for c in solutions.cells if c.cell_type == "code")
    assert f"solutions/{name}" in "".join(c.source for c in student.cells if c.cell_type == "markdown"), \
        "the exercises say where the solutions are"
    assert not any(c.get("outputs") for c in solutions.cells), "solutions are stored without outputs"


def test_complete_copies_are_the_notebook_then_its_solutions():
    name = NAMES[0]
    student, solutions = nbformat.read(NOTEBOOKS / name, 4), nbformat.read(SOLUTIONS / name, 4)
    plain = classroom.complete(name)
    assert [c.source for c in plain.cells] == [c.source for c in student.cells + solutions.cells[1:]]
    marked = classroom.complete(name, mark_exercises=True)
    for i in classroom.exercise_cells(student):
        assert marked.cells[i].source == f"{CHECK_MARK}\n{student.cells[i].source}"
        checks = student.cells[i].source.count("check(")
        assert checks >= 1 and [o.text for o in marked.cells[i].outputs] == [(NOT_YET_DONE + "\n") * checks]
    assert nbformat.read(NOTEBOOKS / name, 4) == student, "making a copy never touches the student notebook"


def test_complete_copies_are_written_where_asked(tmp_path):
    paths = classroom.write_complete(tmp_path)
    assert [p.name for p in paths] == NAMES and all(p.parent == tmp_path for p in paths)


def test_a_missing_notebook_or_solutions_file_is_named(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="no notebook"):
        classroom.complete("99_nothing.ipynb")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "solutions").mkdir()
    shutil.copy(NOTEBOOKS / NAMES[0], tmp_path / "notebooks")
    monkeypatch.setattr(classroom, "NOTEBOOKS", tmp_path / "notebooks")
    monkeypatch.setattr(classroom, "SOLUTIONS", tmp_path / "solutions")
    with pytest.raises(FileNotFoundError, match="has no solutions file"):
        classroom.complete(NAMES[0])


def test_exercise_cells_are_found_only_in_the_exercises_section():
    nb = new_notebook(cells=[new_markdown_cell("## 1 · Lesson"), new_code_cell("check(1, 1)"),
                             new_markdown_cell("## 2 · Exercises\n\n**Exercise 1.**"), new_code_cell("answer = ...\ncheck(answer, 2)"),
                             new_markdown_cell("**Exercise 2.**"), new_code_cell("x = 1"), new_code_cell("check(..., 3)"),
                             new_markdown_cell("## 3 · Summary"), new_code_cell("check(4, 4)")])
    assert classroom.exercise_cells(nb) == [3, 6]


# ---------------------------------------------------------------- slides

def test_slide_types_one_idea_per_slide():
    nb = new_notebook(cells=[new_markdown_cell("# Title"), new_code_cell("import torch"),
                             new_markdown_cell("## 1 · Idea"), new_markdown_cell("More words"), new_code_cell("x = 1"),
                             new_markdown_cell("What x shows"), new_markdown_cell("### A detail"), new_code_cell("y = 2")])
    nb.cells[3].metadata["slideshow"] = {"slide_type": "fragment"}  # a teacher's own choice is kept
    nb.cells[4].metadata["slideshow"] = {"slide_type": "-"}
    assert classroom.slide_types(nb) == ["slide", "-", "slide", "fragment", "-", "subslide", "subslide", "-"]
    classroom.mark_slides(nb)
    assert nb.cells[3].metadata["slideshow"]["slide_type"] == "fragment"
    assert [("slideshow" in c.metadata) for c in nb.cells] == [True, False, True, True, False, True, True, False], \
        "a cell that continues its slide carries no slide type (jupyterlab-slideshow hides '-')"


@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_is_cut_into_slides(name):
    nb = nbformat.read(NOTEBOOKS / name, 4)
    types = [c.metadata.get("slideshow", {}).get("slide_type") for c in nb.cells]
    assert types == [None if t == "-" else t for t in classroom.slide_types(nb)], "run mark_slides on the notebook"
    assert types[0] == "slide" and "-" not in types
    for cell, kind in zip(nb.cells, types):
        if cell.cell_type == "markdown":
            assert not re.search(r"\n## ", cell.source), "one section per cell, so that each starts a slide"
            if cell.source.startswith("## "):
                assert kind == "slide", cell.source.splitlines()[0]


def test_a_deck_loads_nothing_from_the_internet(tmp_path):
    nb = new_notebook(cells=[new_markdown_cell("# A · deck\n\n$x^2$"), new_code_cell("1 + 1")])
    html = classroom.export_slides(nb, tmp_path / "deck.slides.html").read_text()
    loaded = re.findall(r"""(?:src|href)=["']([^"'#]+)""", html) + re.findall(r"""["']([^"']+\.js)["']""", html)
    assert loaded, "the deck loads its scripts"
    assert not [url for url in loaded if re.match(r"(https?:)?//", url)], "a deck must open offline"
    assert "lib/reveal.js/dist/reveal.js" in html and "mermaid" not in html


def test_slides_need_npm_once_and_say_so(monkeypatch, tmp_path):
    monkeypatch.setattr(classroom.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs npm"):
        classroom.slide_libraries(tmp_path)


def test_the_command_line_refuses_an_unknown_notebook(capsys):
    with pytest.raises(SystemExit):
        classroom.main(["slides", "99_nothing.ipynb"])
    assert "no such notebook" in capsys.readouterr().err
