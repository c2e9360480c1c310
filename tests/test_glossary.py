"""Every `#` title and `##` heading of the notebooks carries its Chinese term, and docs/glossary.md lists it."""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).parent.parent
GLOSSARY = ROOT / "docs" / "glossary.md"
EXCLUDED = set()  # notebooks whose headings are still being rewritten
CJK = re.compile(r"[\u3400-\u9fff]")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def glossary():
    """{中文 term: row} from the glossary's tables (a cell 'A / B' lists two terms)."""
    terms = {}
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and CJK.search(cells[1]) and cells[0] != "English":
            for term in cells[1].split(" / "):
                terms[term] = cells
    return terms


def headings(path):
    """The title and the `##` headings of a notebook, as (heading, its Chinese terms)."""
    found = []
    for cell in nbformat.read(path, 4).cells:
        first = cell.source.split("\n", 1)[0]
        if cell.cell_type == "markdown" and re.match(r"#{1,2} ", first):
            parts = first.split(" · ")
            found.append((first, parts[-1].split(" / ") if len(parts) > 2 and CJK.search(parts[-1]) else []))
    return found


def test_the_glossary_has_four_columns_and_a_notebook_for_every_term():
    terms = glossary()
    assert len(terms) > 100
    for term, (english, _, definition, taught) in terms.items():
        assert english and definition.endswith("."), f"{term}: English term and a one-line definition"
        assert re.fullmatch(r"\d\d", taught), f"{term}: the notebook that teaches it, as NN"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] not in EXCLUDED], ids=lambda p: p.name[:2])
def test_every_heading_carries_a_chinese_term_from_the_glossary(path):
    terms = glossary()
    for heading, chinese in headings(path):
        assert chinese, f"{heading!r} has no ' · 中文' term at its end"
        missing = [t for t in chinese if t not in terms]
        assert not missing, f"{heading!r}: {missing} not in docs/glossary.md"


def test_each_notebook_links_the_glossary_from_its_title():
    for path in NOTEBOOKS:
        if path.name[:2] not in EXCLUDED:
            assert "../docs/glossary.md" in nbformat.read(path, 4).cells[0].source, path.name


def test_the_source_materials_terms_are_listed():
    for term in ("非对称量化", "非张量层融合", "最小二乘", "信息熵", "低秩分解", "知识蒸馏", "网络结构搜索"):
        assert term in glossary(), term
