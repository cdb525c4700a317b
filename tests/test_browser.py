"""End to end in a real browser: serve the dashboard, start a `tiny` run from the page, watch it, screenshot it.

Drives Debian's chromium (/usr/bin/chromium) with Playwright; never downloads a browser. Under CI=true a missing
chromium fails this test; elsewhere it skips. ESPER_LAB_SCREENSHOT=1 writes docs/dashboard.png (else a temp file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app import process
from conftest import DASHBOARD, REPO_ROOT
from esper_lab.config import preset
from esper_lab.runs import RunReader, list_runs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
INSTALL_HINT = "install it with: apt-get update && apt-get install -y chromium (never `playwright install`)"

UPDATES = 3
pytestmark = pytest.mark.browser


def require_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but Debian chromium is missing at {CHROMIUM}; {INSTALL_HINT}")
    pytest.skip(f"Debian chromium not found at {CHROMIUM}; {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`streamlit run app/dashboard.py` on a free port with an empty runs root; yields (url, runs root)."""
    require_chromium()
    runs, port = tmp_path / "runs", free_port()
    runs.mkdir()
    env = dict(os.environ, ESPER_LAB_RUNS=str(runs))
    cmd = [sys.executable, "-m", "streamlit", "run", str(DASHBOARD), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        yield url, runs
    finally:
        for run_dir in list_runs(runs):  # trainers the page started outlive the server: stop them
            process.stop_run(run_dir)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def browser_page(url: str, height: int):
    """Debian's chromium, headless, one 1400-pixel-wide page at `url`; closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.goto(url)
            yield page
        finally:
            browser.close()


def chart(page, title: str):
    return page.get_by_test_id("stPlotlyChart").filter(has_text=title).first


def wait_until(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {seconds:.0f} s waiting for {what}"
        time.sleep(0.5)


def test_start_a_tiny_run_and_watch_it(server, tmp_path):
    url, runs = server
    keep = os.environ.get("ESPER_LAB_SCREENSHOT") == "1"
    shot = REPO_ROOT / "docs" / "dashboard.png" if keep else tmp_path / "dashboard.png"
    with browser_page(url, height=1750) as page:
        page.get_by_text("No runs yet").wait_for(timeout=30_000)

        page.get_by_test_id("stSelectbox").filter(has_text="Preset").click()
        page.get_by_role("option", name="tiny").click()
        updates = page.get_by_label("Updates")
        tiny_default = str(preset("tiny").updates)  # the rerun after picking the preset fills in its defaults
        wait_until(lambda: updates.input_value() == tiny_default, 30, "the tiny preset's defaults")
        updates.fill(str(UPDATES))
        updates.press("Enter")
        page.wait_for_timeout(1000)
        assert updates.input_value() == str(UPDATES)
        page.get_by_role("button", name="Start").click()

        points = chart(page, "Episode return").locator(".scatterlayer .trace .points path")
        wait_until(lambda: points.count() >= 2, 150, "two points on the return chart")
        (run_dir,) = list_runs(runs)
        assert RunReader(run_dir).status()["updates_total"] == UPDATES

        page.get_by_role("tab", name="Blueprint embeddings").click()
        emb = chart(page, "Blueprint embeddings at update").locator(".scatterlayer .trace .points path")
        wait_until(lambda: emb.count() >= 14, 60, "the 14 blueprint points of the embedding map")

        page.get_by_role("tab", name="Curves").click()
        chart(page, "Episode return").locator(".scatterlayer .trace .points path").nth(1).wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # let the chart transitions settle before the picture
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
    assert shot.stat().st_size > 50_000


def test_per_op_values_shows_the_critic_beside_the_truth(server, tmp_path):
    """A finished run with ground-truth records: the Per-op values view draws the critic beside the Monte Carlo
    truth (with its error bars) and the calibration over updates. The run is a fixture, or a copy of the real run
    ESPER_LAB_TRUTH_RUN names; with ESPER_LAB_SCREENSHOT=1 the picture of that real run is docs/per_op_truth.png."""
    from fixtures.make_run import make_run

    url, runs = server
    real = os.environ.get("ESPER_LAB_TRUTH_RUN")
    if real:
        shutil.copytree(real, runs / Path(real).name, ignore=shutil.ignore_patterns(".lock", "checkpoint.pt"))
    else:
        make_run(runs, "with-truth", updates=12, snapshot_every=3, truth_every=6)
    keep = os.environ.get("ESPER_LAB_SCREENSHOT") == "1" and real
    shot = REPO_ROOT / "docs" / "per_op_truth.png" if keep else tmp_path / "per_op_truth.png"
    with browser_page(url, height=2400) as page:
        page.get_by_role("tab", name="Per-op values").click()
        page.get_by_text("Is the critic right?").first.wait_for(timeout=60_000)
        beside = chart(page, "Critic vs Monte Carlo truth on").locator(".scatterlayer .trace")
        wait_until(lambda: beside.count() == 2, 60, "the critic and truth traces")
        assert chart(page, "Critic vs Monte Carlo truth on").locator(".errorbar").count() > 0  # the intervals
        over = chart(page, "Critic vs Monte Carlo truth over updates").locator(".scatterlayer .trace .points path")
        wait_until(lambda: over.count() >= 2, 60, "the calibration points of updates 6 and 12")
        page.get_by_text("Verdict").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
