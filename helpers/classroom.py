"""Classroom tools: student notebooks, their worked solutions, complete copies, and slide decks.

* ``notebooks/NN_topic.ipynb`` is what a student opens: the lesson and its exercises, each exercise
  with a check that says "not yet done" until it is answered. No solutions.
* ``solutions/NN_topic.ipynb`` holds that notebook's worked solutions. They use the notebook's
  variables, so they run after it: :func:`complete` puts the two together.
* ``python -m helpers.classroom solutions`` (``make solutions``) writes the complete copies
  (notebook + solutions, top to bottom) to ``build/solutions/``; the test run writes its own to
  ``build/nbval/`` (see the repository's ``conftest.py``), with every exercise checked as unanswered.
* ``python -m helpers.classroom slides`` (``make slides``) runs every notebook in fast mode and
  exports it as a reveal.js deck to ``build/slides/``, with reveal.js and the other scripts a deck
  needs copied beside it, so that the decks open offline.

Everything is written under ``build/`` (git-ignored), never over a notebook a reader may have edited.
"""
import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import nbformat

from .exercises import NOT_YET_DONE

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS, SOLUTIONS, BUILD = ROOT / "notebooks", ROOT / "solutions", ROOT / "build"
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
KEYED_CHECK = re.compile(r"""^check\(\s*["']\d\d\.\d+["']""", re.M)  # check("05.1", ...)


def _read(path):
    return nbformat.read(path, as_version=4)


def notebook_names():
    """The course's notebooks, in reading order (``00_measuring_models.ipynb``, ...)."""
    return sorted(path.name for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def exercise_cells(nb):
    """Indices of the exercise check cells: code cells that check a student's answer.

    A check cell calls ``check("NN.k", ...)`` anywhere in the notebook (the exercises built in the lesson),
    or ``check(`` inside the "Exercises" section; a worked solution's ``required=True`` check is not one.
    """
    found, inside = [], False
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            inside = "Exercises" in cell.source.splitlines()[0]
        elif (cell.cell_type == "code" and "check(" in cell.source and "required=True" not in cell.source
              and (inside or KEYED_CHECK.search(cell.source))):
            found.append(i)
    return found


def complete(name, *, mark_exercises=False):
    """Notebook ``name`` followed by its solutions, as one notebook that runs top to bottom.

    With ``mark_exercises=True`` (the test run) each exercise cell is marked for nbval with the output
    an unanswered exercise must print (one "not yet done" line per ``check``), so the run proves that
    every check of the student's notebook says "not yet done" rather than failing.
    """
    student, solutions = NOTEBOOKS / name, SOLUTIONS / name
    if not student.exists():
        raise FileNotFoundError(f"no notebook {student}; the course's notebooks are {notebook_names()}")
    if not solutions.exists():
        raise FileNotFoundError(f"notebook {name} has no solutions file {solutions}: every notebook needs one")
    nb, extra = _read(student), _read(solutions)
    if mark_exercises:
        for i in exercise_cells(nb):
            cell = nb.cells[i]
            cell.source = f"{CHECK_MARK}\n{cell.source}"
            checks = cell.source.count("check(")  # each unanswered check prints one line
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=(NOT_YET_DONE + "\n") * checks)]
            cell.execution_count = 1  # nbval refuses stored outputs of a cell that was never run
    nb.cells += copy.deepcopy(extra.cells[1:])  # the first cell of a solutions file is its title
    return nb


def write_complete(folder=BUILD / "solutions", *, mark_exercises=False):
    """Write :func:`complete` copies of every notebook into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in notebook_names():
        path = folder / name
        nbformat.write(complete(name, mark_exercises=mark_exercises), path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- slides

def slide_types(nb):
    """The slide type RISE and nbconvert read from each cell (``metadata.slideshow.slide_type``).

    A cell that already has one keeps it. Otherwise: the title and every ``## `` section start a new
    slide, a ``### `` heading or a text cell that follows code starts a sub-slide (one idea per slide),
    and everything else continues the slide above it (``-``).
    """
    types = []
    for i, cell in enumerate(nb.cells):
        given = cell.metadata.get("slideshow", {}).get("slide_type")
        if given and given != "-":
            types.append(given)
        elif i == 0 or (cell.cell_type == "markdown" and cell.source.startswith("## ")):
            types.append("slide")
        elif cell.cell_type == "markdown" and (cell.source.startswith("### ") or nb.cells[i - 1].cell_type == "code"):
            types.append("subslide")
        else:
            types.append("-")
    return types


def mark_slides(nb):
    """Give every cell of ``nb`` its slide type (:func:`slide_types`), in place; returns ``nb``.

    A cell that continues the slide above gets no slide type at all: RISE and nbconvert read a missing
    type as "-", and jupyterlab-slideshow (the live slides) hides a cell marked "-" explicitly.
    """
    for cell, kind in zip(nb.cells, slide_types(nb)):
        if kind == "-":
            cell.metadata.pop("slideshow", None)
        else:
            cell.metadata["slideshow"] = {"slide_type": kind}
    return nb


# What a deck loads, fetched once with `npm pack` (versions pinned) and shared by every deck in build/slides/lib.
SLIDE_LIBRARIES = {"reveal.js": "4.6.0", "requirejs": "2.3.7", "jquery": "3.7.1", "mathjax": "2.7.9",
                   "@jupyter-widgets/html-manager": "1.0.15"}


def slide_libraries(folder, libraries=None):
    """Unpack ``libraries`` ({npm package: version}; default :data:`SLIDE_LIBRARIES`) under ``folder`` (once);
    a clear error when npm is missing. The book (:mod:`helpers.book`) fetches its MathJax this way too."""
    folder = Path(folder)
    libraries = SLIDE_LIBRARIES if libraries is None else libraries
    missing = {name: version for name, version in libraries.items() if not (folder / name / "package.json").exists()}
    if missing and not shutil.which("npm"):
        raise RuntimeError(f"fetching {', '.join(missing)} (so that the slide decks and the book open offline) needs npm "
                           "once: install Node.js (Debian: apt-get install npm; macOS: brew install node)")
    for name, version in missing.items():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", f"{name}@{version}", "--silent", "--pack-destination", tmp],
                           check=True, cwd=tmp, stdout=subprocess.DEVNULL)
            (tarball,) = Path(tmp).glob("*.tgz")
            with tarfile.open(tarball) as archive:
                archive.extractall(tmp, filter="data")
            target = folder / name
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(Path(tmp) / "package", target)
    return folder


def export_slides(nb, path, lib="lib"):
    """Write ``nb`` as a reveal.js deck to ``path``, loading every script from ``lib`` (relative to the deck)."""
    from nbconvert import SlidesExporter

    exporter = SlidesExporter(
        reveal_url_prefix=f"{lib}/reveal.js", reveal_scroll=True, reveal_theme="white",
        require_js_url=f"{lib}/requirejs/require.js", jquery_url=f"{lib}/jquery/dist/jquery.min.js",
        mathjax_url=f"{lib}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
        widget_renderer_url=f"{lib}/@jupyter-widgets/html-manager/dist/embed-amd.js",
        extra_template_basedirs=[str(Path(__file__).parent / "templates")], template_name="course_slides")
    deck = mark_slides(copy.deepcopy(nb))
    for cell in deck.cells:  # the test marker means nothing to an audience
        cell.source = "\n".join(line for line in cell.source.splitlines() if line.strip() != CHECK_MARK)
    html, _ = exporter.from_notebook_node(deck)
    Path(path).write_text(html, encoding="utf-8")
    return Path(path)


def write_slides(folder=BUILD / "slides", names=None, *, execute=True):
    """A deck per notebook in ``folder``, each run first (in fast mode: set ``COURSE_FAST=1``)."""
    from nbclient import NotebookClient

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    slide_libraries(folder / "lib")
    paths = []
    for name in names or notebook_names():
        nb = _read(NOTEBOOKS / name)
        if execute:
            NotebookClient(nb, timeout=900, kernel_name="python3", store_widget_state=True,
                           resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        path = export_slides(nb, folder / name.replace(".ipynb", ".slides.html"))
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path, flush=True)
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m helpers.classroom", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["solutions", "slides", "check"],
                        help="solutions: complete copies into build/solutions/; slides: decks into build/slides/; "
                             "check: run the given notebooks (with their solutions) under nbval, as make test does")
    parser.add_argument("notebooks", nargs="*", help="slides: only these notebooks (e.g. 03_channel_shuffle.ipynb); "
                                                     "check: these notebooks, by name or number (e.g. 03 05)")
    args = parser.parse_args(argv)
    if args.command == "check":
        names = [n for wanted in args.notebooks for n in notebook_names() if n.startswith(wanted)]
        if not args.notebooks or len(names) < len(args.notebooks):
            parser.error(f"check needs notebooks by name or number, e.g. 03 05; the course has {', '.join(notebook_names())}")
        paths = []
        for name in names:  # a folder of their own, so that make test's build/nbval is left alone
            paths.append(BUILD / "check" / name)
            paths[-1].parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(complete(name, mark_exercises=True), paths[-1])
        return subprocess.call([sys.executable, "-m", "pytest", "--noconftest", *map(str, paths)], cwd=ROOT)
    if args.command == "solutions":
        for path in write_complete():
            print(path.relative_to(ROOT))
    else:
        unknown = sorted(set(args.notebooks) - set(notebook_names()))
        if unknown:
            parser.error(f"no such notebook: {', '.join(unknown)}; choose from {', '.join(notebook_names())}")
        if not os.environ.get("COURSE_FAST"):
            print("note: COURSE_FAST is not set, so each notebook runs in full mode (make slides sets it)")
        write_slides(names=args.notebooks or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
