"""The course as a book: a static website in ``build/book/``, built with Jupyter Book (``make book``).

``python -m helpers.book`` runs every notebook in fast mode (outputs, charts and block diagrams kept),
lays them out beside the README (the front page), the glossary and the teacher's guide in a source
folder (``build/book_src/``, the repository's own layout, so that the README's and notebooks' relative
links work), and has Jupyter Book 1 (Sphinx) write the HTML: a table of contents in course order, a
search page, and maths typeset by MathJax. The pages open from disk with no network: MathJax is fetched
once with ``npm`` (like the slide decks' scripts, :func:`helpers.classroom.slide_libraries`) and served
from the book's own folder, and nothing else is loaded from outside (``tests/test_book.py`` checks it in
a browser that refuses every non-local request).

Why Jupyter Book 1: Jupyter Book 2 (mystmd) downloads its site theme at build time and its pages need a
web server; a book built by version 1 is plain files that a browser opens from disk.

``--execute NN ...`` runs only those notebooks (the others are shown without outputs); the browser test
builds such a subset to stay short. Widget panels cannot run without a kernel: the book shows a note in
their place.
"""
import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from .classroom import BUILD, CHECK_MARK, NOTEBOOKS, ROOT, notebook_names, slide_libraries

BOOK, SOURCE = BUILD / "book", BUILD / "book_src"
DOCS = ["docs/glossary.md", "docs/teaching.md"]
MATHJAX = {"mathjax": "3.2.2"}  # npm package and version, fetched once into build/lib/
WIDGET = "application/vnd.jupyter.widget-view+json"
PANEL_NOTE = ("<p><em>An interactive panel: open this notebook in JupyterLab (<code>make lab</code>) to move "
              "its sliders. The book shows the lesson as it ran in fast mode.</em></p>")


def chapters(execute=None):
    """The notebooks in course order, and which of them to run: all (``execute=None``) or the numbers given."""
    names = notebook_names()
    if execute is None:
        return names, set(names)
    wanted = {str(n).zfill(2) for n in execute}
    unknown = wanted - {name[:2] for name in names}
    if unknown:
        raise ValueError(f"no notebook numbered {', '.join(sorted(unknown))}; the course has {', '.join(n[:2] for n in names)}")
    return names, {name for name in names if name[:2] in wanted}


def prepare(nb):
    """The notebook as a reader of the book sees it: no test markers, a note where a widget panel was."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        cell.source = "\n".join(line for line in cell.source.splitlines() if line.strip() != CHECK_MARK)
        for output in cell.get("outputs", []):
            if WIDGET in output.get("data", {}):
                output["data"] = {"text/html": PANEL_NOTE}
    nb.metadata.pop("widgets", None)
    return nb


def run(nb):
    """Execute ``nb`` in place, from the notebooks folder (fast mode when ``COURSE_FAST`` is set)."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def config(title):
    """Jupyter Book's ``_config.yml``: nothing executed by it (we ran the notebooks), nothing fetched from outside."""
    return {
        "title": title, "author": "Hands-on Model Compression", "copyright": "",
        "only_build_toc_files": True,
        "execute": {"execute_notebooks": "off"},
        "html": {"use_repository_button": False, "use_issues_button": False, "use_edit_page_button": False,
                 "use_download_button": False, "use_fullscreen_button": False, "use_multitoc_numbering": False,
                 "home_page_in_navbar": True},
        "launch_buttons": {"notebook_interface": "classic", "binderhub_url": "", "jupyterhub_url": "",
                           "thebe": False, "colab_url": "", "deepnote_url": ""},
        "parse": {"myst_enable_extensions": ["dollarmath", "amsmath"]},
        "sphinx": {"config": {"mathjax_path": "mathjax/tex-chtml.js", "nb_ipywidgets_js": {},
                              "html_static_path": ["_static"], "suppress_warnings": ["myst.header", "myst.xref_missing"],
                              "html_show_sourcelink": False, "html_theme_options": {"use_download_button": False}}},
    }


def toc(names):
    """``_toc.yml``: the README first, then the notebooks in course order, then the glossary and the guide."""
    parts = [{"caption": "Notebooks", "chapters": [{"file": f"notebooks/{Path(n).stem}"} for n in names]},
             {"caption": "Reference", "chapters": [{"file": doc.removesuffix(".md")} for doc in DOCS]}]
    return {"format": "jb-book", "root": "README", "parts": parts}


def write_source(folder=SOURCE, execute=None):
    """Lay out the book's sources in ``folder``: README, docs, the notebooks (run or not), config, TOC, MathJax."""
    folder = Path(folder)
    names, to_run = chapters(execute)
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "notebooks").mkdir(parents=True)
    (folder / "docs").mkdir()
    shutil.copy(ROOT / "README.md", folder / "README.md")
    for doc in DOCS:
        shutil.copy(ROOT / doc, folder / doc)
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        if name in to_run:
            print(f"running {name}", flush=True)
            run(nb)
        nbformat.write(prepare(nb), folder / "notebooks" / name)
    (folder / "_config.yml").write_text(json.dumps(config("Hands-on Model Compression · 动手学模型压缩"), ensure_ascii=False,
                                                   indent=1), encoding="utf-8")  # YAML reads JSON
    (folder / "_toc.yml").write_text(json.dumps(toc(names), indent=1), encoding="utf-8")
    lib = slide_libraries(BUILD / "lib", MATHJAX)
    shutil.copytree(lib / "mathjax" / "es5", folder / "_static" / "mathjax")
    return folder


def build(out=BOOK, execute=None, source=SOURCE):
    """Build the book into ``out`` (``out/index.html`` is the front page); returns ``out``."""
    source, out = write_source(source, execute), Path(out)
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    if not jupyter_book.exists():
        raise RuntimeError(f"Jupyter Book is not installed in {sys.prefix}: make install (pyproject.toml pins it)")
    staging = source.parent / f"{source.name}_out"
    subprocess.run([str(jupyter_book), "build", str(source), "--path-output", str(staging), "--builder", "html", "--quiet"],
                   check=True, cwd=ROOT)
    if out.exists():
        shutil.rmtree(out)
    shutil.move(staging / "_build" / "html", out)
    shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m helpers.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--execute", nargs="*", metavar="NN", help="run only these notebooks (default: all)")
    parser.add_argument("--out", default=str(BOOK), help="where the HTML goes (default: build/book)")
    args = parser.parse_args(argv)
    if not os.environ.get("COURSE_FAST"):
        print("note: COURSE_FAST is not set, so each notebook runs in full mode (make book sets it)")
    try:
        out = build(args.out, args.execute)
    except ValueError as error:
        parser.error(str(error))
    print(f"the book: {Path(out) / 'index.html'} (open it in a browser; it needs no network)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
