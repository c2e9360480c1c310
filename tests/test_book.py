"""The course as a book (``make book``), opened from disk in Debian's Chromium with the network cut.

The test builds a slice of the book into a temporary folder: every chapter in the table of contents,
with one notebook (02: block diagrams, charts and maths) run in fast mode, the others shown unrun, so
that it takes about a minute; ``make book`` runs them all. Every request that is not for a local file
is refused and recorded, and the test fails if there was any. Screenshots go to test-output/book/.

Needs Debian's ``chromium`` and ``npm`` (MathJax is fetched once): without them it is skipped,
except in CI (``CI`` set), where they are required.
"""
import os
import shutil
from pathlib import Path

import pytest

from helpers import book
from helpers.classroom import notebook_names

ROOT = Path(__file__).parent.parent
OUT = ROOT / "test-output" / "book"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-proxy-server", "--allow-file-access-from-files"]
RUN = "02"


def _missing(message):
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not shutil.which("npm") and not (book.BUILD / "lib" / "mathjax" / "package.json").exists():
        _missing("npm is needed once to fetch MathJax for the book: apt-get install npm")
    folder = tmp_path_factory.mktemp("book")
    os.environ.setdefault("COURSE_FAST", "1")
    return book.build(folder / "html", execute=[RUN], source=folder / "src")


@pytest.fixture(scope="module")
def page(built):
    if not Path(CHROMIUM).exists():
        _missing("Debian's chromium is not installed: sudo apt-get install chromium")
    from playwright.sync_api import sync_playwright
    OUT.mkdir(parents=True, exist_ok=True)
    refused = []

    def only_local(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1300, "height": 900}, offline=True)
        context.route("**/*", only_local)
        page = context.new_page()
        page.refused = refused
        yield page
        browser.close()
    assert not refused, f"the book asked the network for {refused}"


def test_every_chapter_is_listed(built, page):
    page.goto((built / "index.html").as_uri())
    page.wait_for_selector("nav.bd-docs-nav")
    links = page.eval_on_selector_all("nav.bd-docs-nav a", "links => links.map(a => a.getAttribute('href'))")
    for name in notebook_names():
        assert any(link.endswith(f"notebooks/{Path(name).stem}.html") for link in links), f"{name} is not in the contents"
    assert any(link.endswith("docs/glossary.html") for link in links)
    assert any(link.endswith("docs/teaching.html") for link in links)
    assert "Hands-on Model Compression" in page.title()
    page.screenshot(path=OUT / "front_page.png")
    assert not page.refused


def test_a_chapter_shows_its_figures_and_typeset_maths(built, page):
    chapter = next(name for name in notebook_names() if name.startswith(RUN))
    page.goto((built / "notebooks" / f"{Path(chapter).stem}.html").as_uri())
    page.wait_for_selector("mjx-container", timeout=30_000)  # MathJax, from the book's own folder, has typeset
    assert page.locator("mjx-container").count() >= 10
    page.wait_for_load_state("load")
    sizes = page.eval_on_selector_all(".cell_output img", "images => images.map(i => i.naturalWidth)")
    assert len(sizes) >= 3 and all(width > 0 for width in sizes), f"figures not shown: {sizes}"
    page.screenshot(path=OUT / "chapter_02_top.png")
    page.locator(".cell_output img").nth(0).scroll_into_view_if_needed()
    page.screenshot(path=OUT / "chapter_02_diagram.png")
    assert not page.refused


def test_search_finds_a_glossary_term(built, page):
    page.goto((built / "search.html").as_uri() + "?q=distillation")
    page.wait_for_selector("#search-results li a", timeout=30_000)
    hits = page.eval_on_selector_all("#search-results li a", "links => links.map(a => a.getAttribute('href'))")
    assert any("docs/glossary.html" in hit for hit in hits), hits
    page.screenshot(path=OUT / "search.png")
    assert not page.refused


def test_a_subset_names_unknown_notebooks():
    with pytest.raises(ValueError, match="no notebook numbered 99"):
        book.chapters(["99"])
    names, run = book.chapters(["2"])
    assert names == notebook_names() and [n[:2] for n in run] == ["02"]
