"""Browser test: a guided notebook opens in JupyterLab (Debian chromium through Playwright) and its plotly chart renders.

The test starts `jupyter lab` on a free port with `notebooks/` as its root, opens `00_world_tour.ipynb`, waits for
its saved outputs to render (a notebook from a fresh clone is untrusted, so the plotly renderer shows the saved
figures without running plotly.js), then runs every cell in a live kernel (at `ESPER_LAB_NB_SIZE=ci`), waits for the
last cell to finish with nothing on stderr, and for a live plotly chart (`.js-plotly-plot`) to render. Autosave is
off and the committed notebook is checked to be unchanged. The server is stopped at the end.

Needs Debian's chromium (`apt-get install chromium`; Playwright's own browser download is never used). Without it
the test is skipped, except under CI=true, where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "00_world_tour.ipynb"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
INSTALL_HINT = ("Debian chromium is not installed: apt-get update && DEBIAN_FRONTEND=noninteractive "
                "apt-get install -y chromium (never `playwright install`)")


def _require_browser() -> None:
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(INSTALL_HINT)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package is not installed (pip install -e '.[dev]')")
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("; ".join(missing))
        pytest.skip("; ".join(missing))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """A JupyterLab server on 127.0.0.1 serving notebooks/; yields its base URL."""
    _require_browser()
    home = tmp_path_factory.mktemp("jupyterlab")
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No "get notified about Jupyter news?" toast over the notebook.
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Render every cell (no windowing), so that outputs far down the notebook exist in the page.
    tracker = home / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    # Never write the executed (ci-size) notebook over the committed one.
    docmanager = home / "settings" / "@jupyterlab" / "docmanager-extension"
    docmanager.mkdir(parents=True)
    (docmanager / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    port = _free_port()
    env = dict(
        os.environ,
        ESPER_LAB_NB_SIZE="ci",
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
    )
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={REPO / 'notebooks'}",
           "--allow-root"]
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _scroll_until_chart(page, timeout: float = 90.0) -> None:
    """Scroll each output of the open notebook into view until a rendered plotly chart (`.js-plotly-plot`) exists."""
    chart = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot")
    deadline = time.monotonic() + timeout
    while chart.count() == 0:
        assert time.monotonic() < deadline, "no plotly chart rendered in the notebook"
        outputs = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")
        for i in range(outputs.count()):
            outputs.nth(i).scroll_into_view_if_needed(timeout=5_000)
            if chart.count():
                break
        else:
            time.sleep(1.0)
    chart.first.wait_for(state="visible", timeout=30_000)


def test_world_tour_chart_renders_in_jupyterlab(lab: str) -> None:
    from playwright.sync_api import sync_playwright

    committed = (REPO / "notebooks" / NOTEBOOK).read_bytes()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{lab}/lab/tree/{NOTEBOOK}", wait_until="domcontentloaded", timeout=60_000)
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
            notebook.wait_for(timeout=60_000)

            # 1. The committed outputs render. A notebook from a fresh clone is not trusted, so JupyterLab's plotly
            # renderer shows its saved figures without running their JavaScript: the renderer is there, no live chart.
            page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedPlotly").first.wait_for(
                state="attached", timeout=60_000)

            # 2. Run every cell in a live kernel (ESPER_LAB_NB_SIZE=ci) and wait until all have run.
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-Toolbar-kernelStatus").first.wait_for(
                state="attached", timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
            # Run All executes the cells in order in a fresh kernel, so code cell k (1-based) shows the prompt [k]
            # once it ran. The last code cell whose input is shown is read (cells scrolled out of view may render
            # their prompts lazily; a cell whose source is hidden, an exercise's solution, shows no input prompt),
            # then the kernel must go idle: the hidden cells after it have run too.
            nb = json.loads((REPO / "notebooks" / NOTEBOOK).read_text())
            code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
            shown = [k for k, cell in enumerate(code, 1) if not cell["metadata"].get("jupyter", {}).get("source_hidden")]
            last_prompt = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt").last
            stderr = page.locator(".jp-NotebookPanel .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            deadline = time.monotonic() + 240
            while last_prompt.inner_text().strip() != f"[{shown[-1]}]:":
                if stderr.count():
                    raise AssertionError("a cell wrote to stderr or raised: " + stderr.first.inner_text()[:2000])
                assert time.monotonic() < deadline, f"Run All did not finish: last prompt {last_prompt.inner_text()!r}"
                time.sleep(0.5)
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-Toolbar-kernelStatus").first.wait_for(
                state="attached", timeout=60_000)
            assert stderr.count() == 0, stderr.first.inner_text()[:2000]
            # Outputs the kernel just produced are trusted: the figures now render as live plotly charts.
            _scroll_until_chart(page)
            assert page.locator(".jp-NotebookPanel .js-plotly-plot").count() >= 1
        finally:
            browser.close()
    assert (REPO / "notebooks" / NOTEBOOK).read_bytes() == committed, "the browser run modified the committed notebook"
