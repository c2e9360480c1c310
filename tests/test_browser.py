"""The widget panels as a student sees them: real JupyterLab, real Chromium (Debian's), driven by Playwright.

nbval proves that the cells run; it cannot see whether a slider renders. For every notebook with a
panel (a call to a ``helpers.widgets`` builder, named ``*_panel(...)``) this test opens it in
JupyterLab, runs all cells, checks that each panel shows real widget controls and no "Error
displaying widget", moves one slider and waits for the panel's chart to be redrawn. Screenshots of
each panel before and after the move (and of the page, on failure) go to test-output/browser/.

JupyterLab runs on 127.0.0.1 at a free port with a random token, on a copy of the notebooks (so
JupyterLab's autosave never touches the repository), with its own config, data, runtime, settings
and workspace folders, and is stopped by PID at the end, kernels included.

Needs Debian's ``chromium`` (``sudo apt-get install chromium``): without it this test is skipped,
except in CI (``CI`` set), where a missing browser is a failure.
"""
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest

ROOT = Path(__file__).parent.parent
OUT = ROOT / "test-output" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-proxy-server"]
PANEL_CALL = re.compile(r"\b\w+_panel\(")
RUN_TIMEOUT = 600  # seconds for one notebook's "run all" in fast mode: catches a hang; a cold cache (the first notebook to
#                   train a fast-mode model) took up to 6 minutes on 2 cores
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on screen, not one in a hidden tab
CURRENT = "window.jupyterapp.shell.currentWidget"


# `make test` opens the panels of a slice of the notebooks: every panel is built by one of the two builders of
# helpers.widgets (comparison_panel in 00, slider_panel in the others), and running every notebook a second time
# here nearly doubled make test's time. `make browser` (COURSE_BROWSER=all) opens every notebook's panel.
SLICE = {"00", "01", "03"}


def panel_notebooks(every=None):
    every = os.environ.get("COURSE_BROWSER") == "all" if every is None else every
    return [p for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
            if (every or p.name[:2] in SLICE)
            and any(c.cell_type == "code" and PANEL_CALL.search(c.source) for c in nbformat.read(p, 4).cells)]


def test_the_slice_covers_both_builders_and_every_notebook_has_a_panel():
    every = panel_notebooks(every=True)
    assert {p.name[:2] for p in every} == {p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    sources = {p.name[:2]: p.read_text() for p in panel_notebooks(every=False)}
    assert set(sources) == SLICE
    assert any("comparison_panel(" in s for s in sources.values()) and any("slider_panel(" in s for s in sources.values())


# ------------------------------------------------------------------ the server

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(folder):
    """Settings a fresh student would not have, but a robot needs: every cell in the DOM, no news pop-up."""
    settings = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                            "checkForUpdates": False},
    }
    for name, value in settings.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


def _stop(pid):
    """Stop the server and everything it started (kernels run in sessions of their own)."""
    try:
        processes = [psutil.Process(pid)]
        processes += processes[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for p in processes:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=10)
    for p in alive:
        p.kill()


@contextlib.contextmanager
def running_lab(home, widgets_extension=True):
    """JupyterLab on a copy of the notebooks, isolated in ``home``; stopped by PID when the block ends."""
    root = home / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    _write_settings(home / "settings")
    if not widgets_extension:  # what `jupyter labextension disable` would write, in our own config folder
        (home / "config" / "labconfig").mkdir(parents=True)
        (home / "config" / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {"@jupyter-widgets/jupyterlab-manager": True}}))
    port, token = _free_port(), secrets.token_hex(16)
    env = os.environ | {
        "COURSE_FAST": "1",
        "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
    }
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={home / 'settings'}",
               f"--LabApp.workspaces_dir={home / 'workspaces'}", "--LabApp.expose_app_in_browser=True",
               "--ServerApp.allow_root=True"]  # CI runs as root
    url = f"http://127.0.0.1:{port}"
    with open(home / "server.log", "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while True:
                if server.poll() is not None:
                    pytest.fail(f"JupyterLab exited at start:\n{(home / 'server.log').read_text()[-3000:]}")
                try:
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail("JupyterLab did not answer within 90 s")
                    time.sleep(0.5)
            yield {"url": url, "token": token, "root": root}
        finally:
            _stop(server.pid)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed: sudo apt-get install chromium, then run the browser test again"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


# ------------------------------------------------------------------ the page

def open_notebook(browser, lab, name):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # ?reset: a fresh workspace, so no notebook from an earlier test is restored in a hidden tab
    page.goto(f"{lab['url']}/lab/tree/{name}?reset&token={lab['token']}")
    page.wait_for_selector(f"{NOTEBOOK} .jp-Cell", timeout=60_000)
    page.wait_for_function(f"() => window.jupyterapp && {CURRENT} && {CURRENT}.sessionContext"
                           f" && {CURRENT}.sessionContext.isReady", timeout=60_000)
    return page


def close_notebook(page):
    """Shut the notebook's kernel down (so the next notebook has the CPU to itself) and close the page."""
    try:
        page.evaluate(f"{CURRENT} && {CURRENT}.sessionContext && {CURRENT}.sessionContext.shutdown()")
    finally:
        page.close()


def run_all(page, timeout=RUN_TIMEOUT):
    """Run every cell and wait until each code cell has its execution number (none left at [*])."""
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_timeout(1000)
    state = f"() => [...{CURRENT}.node.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim())"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        prompts = page.evaluate(state)
        busy = page.evaluate(f"{CURRENT}.sessionContext.session.kernel.status") != "idle"
        if not busy and not any("*" in p for p in prompts):
            unrun = [i for i, p in enumerate(prompts) if not re.search(r"\d", p)]
            assert not unrun, f"code cells {unrun} did not run: an earlier cell raised an error"
            return
        page.wait_for_timeout(500)
    pytest.fail(f"the notebook was still running after {timeout} s")


def panel_problems(page):
    """What a student would see wrong: widget errors, widgets shown only as text, panels without controls."""
    problems = []
    if page.locator(NOTEBOOK).get_by_text("Error displaying widget").count():
        problems.append("'Error displaying widget' is on the page")
    for text in page.locator(f"{NOTEBOOK} .jp-OutputArea-output pre").all_inner_texts():
        if re.match(r"\s*(VBox|HBox|Box|interactive)\(children=", text):
            problems.append(f"a widget is shown as text (is the widgets extension missing?): {text[:80]}")
    for i, panel in enumerate(panels(page).all()):
        if not panel.locator(".widget-slider").count() or not panel.locator(".widget-slider").first.is_visible():
            problems.append(f"panel {i} shows no visible slider")
    return problems


def panels(page):
    return page.locator(f"{NOTEBOOK} .jp-OutputArea-output > .widget-vbox")


def fingerprint(panel):
    """The panel's drawing: the source of each image in it (a new chart means a new PNG)."""
    return [img.get_attribute("src") for img in panel.locator("img").all()]


def move_slider_and_see_redraw(page, panel, name):
    """Wait for the panel's chart, press → on its first slider, wait for a new chart; screenshots of both."""
    panel.scroll_into_view_if_needed()
    page.wait_for_function("p => { const imgs = [...p.querySelectorAll('img')];"
                           " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
                           arg=panel.element_handle(), timeout=120_000)
    before = fingerprint(panel)
    panel.screenshot(path=OUT / f"{name}-before.png")
    handle = panel.locator(".widget-slider .noUi-handle").first
    handle.click()
    handle.press("ArrowRight")
    page.wait_for_function(
        "([p, old]) => { const imgs = [...p.querySelectorAll('img')];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)"
        " && JSON.stringify(imgs.map(i => i.src)) !== JSON.stringify(old); }",
        arg=[panel.element_handle(), before], timeout=120_000)
    page.wait_for_timeout(1000)  # let the browser paint the new chart before the screenshot
    panel.screenshot(path=OUT / f"{name}-after.png")
    after = fingerprint(panel)
    # A half-drawn chart is a much smaller PNG than a full one (seen once with pyplot figures).
    assert sum(map(len, after)) > 0.5 * sum(map(len, before)), "the redrawn chart looks half drawn"


@pytest.mark.parametrize("notebook", panel_notebooks(), ids=lambda p: p.stem)
def test_widget_panels_render_and_respond(lab, browser, notebook):
    OUT.mkdir(parents=True, exist_ok=True)
    page = open_notebook(browser, lab, notebook.name)
    try:
        run_all(page)
        assert panels(page).count() >= 1, "the notebook calls a *_panel builder but shows no panel"
        assert panel_problems(page) == []
        for i, panel in enumerate(panels(page).all()):
            move_slider_and_see_redraw(page, panel, f"{notebook.stem}-panel{i}")
            assert panel_problems(page) == []
    except BaseException:
        page.screenshot(path=OUT / f"{notebook.stem}-failure.png", full_page=True)
        raise
    finally:
        close_notebook(page)


SLIDES_NOTEBOOK = "03_channel_shuffle.ipynb"  # quick to run, one panel


def test_a_panel_works_in_slide_mode(lab, browser):
    """Presenting live (jupyterlab-slideshow's deck mode): the panel's slide shows a working panel."""
    OUT.mkdir(parents=True, exist_ok=True)
    page = open_notebook(browser, lab, SLIDES_NOTEBOOK)
    try:
        run_all(page)
        cells = f"[...{CURRENT}.content.widgets]"
        index = page.evaluate(f"{cells}.findIndex(c => c.model.type === 'code'"
                              r" && /\b\w+_panel\(/.test(c.model.sharedModel.getSource()))")
        assert index >= 0, f"{SLIDES_NOTEBOOK} has no panel"
        page.evaluate(f"{CURRENT}.content.activeCellIndex = 0")  # present from the title slide, as in class
        page.evaluate("window.jupyterapp.commands.execute('deck:start')")
        shown = f"{cells}[{index}].node.classList.contains('jp-deck-mod-visible')"
        for _ in range(60):  # forward, slide by slide, to the panel's slide
            page.wait_for_timeout(400)
            if page.evaluate(shown):
                break
            page.evaluate("window.jupyterapp.commands.execute('deck:forward')")
        assert page.evaluate(shown), "the panel's slide never came up in slide mode"
        page.wait_for_timeout(2000)  # the deck lays the slide out
        on_screen = page.evaluate(f"{cells}.map(c => c.node.classList.contains('jp-deck-mod-visible'))")
        assert on_screen[index] and not on_screen[0], "slide mode shows the panel's slide, not the whole notebook"
        page.screenshot(path=OUT / "slides-panel-slide.png")
        panel = panels(page).first
        assert panel.is_visible() and panel_problems(page) == []
        move_slider_and_see_redraw(page, panel, "slides-panel")
        assert page.evaluate(shown), "moving the slider must not turn the slide"
        page.screenshot(path=OUT / "slides-panel-moved.png")
    except BaseException:
        page.screenshot(path=OUT / "slides-failure.png", full_page=True)
        raise
    finally:
        close_notebook(page)


def _notebook_with_one_cell(path, source, outputs=()):
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = list(outputs)
    cell.execution_count = 1 if outputs else None
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _assert_caught(browser, lab, name, screenshot, run=False):
    """Open (and run) a notebook whose widget cannot render: panel_problems must report it."""
    page = open_notebook(browser, lab, name)
    try:
        if run:
            run_all(page, timeout=60)
        page.wait_for_selector(f"{NOTEBOOK} .jp-OutputArea-output", timeout=30_000)
        page.wait_for_timeout(2000)  # give a widget every chance to render before we look
        OUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=OUT / screenshot)
        assert panel_problems(page), f"{name}: a widget that cannot render went unnoticed"
    finally:
        close_notebook(page)


def test_a_stale_widget_output_is_caught(lab, browser):
    """A stored widget output whose model the kernel does not have (saved from an old session)."""
    stale = nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "0" * 32, "version_major": 2, "version_minor": 0},
        "text/plain": "VBox(children=(IntSlider(value=0),))"})
    _notebook_with_one_cell(lab["root"] / "zz_stale_widget.ipynb", "stale_panel()", [stale])
    _assert_caught(browser, lab, "zz_stale_widget.ipynb", "caught-stale-widget.png")


def test_a_disabled_widgets_extension_is_caught(tmp_path, browser):
    """The widgets extension switched off: the live panel can only be shown as text."""
    with running_lab(tmp_path, widgets_extension=False) as lab:
        _notebook_with_one_cell(lab["root"] / "zz_live_panel.ipynb",
                                "import ipywidgets\nipywidgets.VBox([ipywidgets.IntSlider()])")
        _assert_caught(browser, lab, "zz_live_panel.ipynb", "caught-disabled-widgets-extension.png", run=True)


def test_a_slide_deck_opens_offline(browser):
    """A `make slides` deck, opened from disk with every request that leaves the machine refused."""
    from helpers import classroom

    folder = classroom.BUILD / "slides"
    if not shutil.which("npm") and not (folder / "lib" / "reveal.js").exists():
        message = "npm is not installed, so the deck's scripts cannot be fetched once: sudo apt-get install npm"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    classroom.slide_libraries(folder / "lib")
    deck = classroom.export_slides(nbformat.read(ROOT / "notebooks" / SLIDES_NOTEBOOK, 4), folder / "_test-deck.slides.html")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    outside = []

    def refuse(route):
        outside.append(route.request.url)
        route.abort()

    page.route(re.compile(r"^(https?|wss?)://"), refuse)
    try:
        page.goto(deck.as_uri())
        page.wait_for_selector(".reveal.ready", timeout=30_000)  # reveal.js has laid the deck out
        page.wait_for_selector(".reveal section.present .MathJax_CHTML, .reveal .MathJax_CHTML", state="attached",
                               timeout=30_000)  # and the local MathJax has typeset the maths
        first = page.evaluate("document.querySelector('.reveal section.present').innerText")
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(1000)
        page.screenshot(path=OUT / "slides-deck-offline.png")
        assert page.evaluate("document.querySelector('.reveal section.present').innerText") != first, "→ turns the slide"
        assert page.locator(".reveal .slides > section").count() >= 5
        assert outside == [], f"the deck tried to load from the network: {outside}"
    finally:
        page.close()
        deck.unlink()
