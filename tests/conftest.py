"""Shared fixtures: one torch thread (the batched-engine, compare and ecosystem tests) and the dashboard tests'
(test_figures, test_dashboard, test_browser)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fixtures.make_run import make_run

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `import app` (the dashboard package lives at the repo root)
    sys.path.insert(0, str(REPO_ROOT))
DASHBOARD = REPO_ROOT / "app" / "dashboard.py"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "trainer: starts a real `tiny` training child process (several seconds)")
    config.addinivalue_line("markers", "browser: drives Debian chromium against a real Streamlit server")


@pytest.fixture
def one_thread():
    """One torch thread for the test (`pytestmark = pytest.mark.usefixtures("one_thread")`): the machine has 2 cores
    and is shared, and the batched engine's bit-identity holds on one thread."""
    from esper_lab.env.morpho_env import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runs root that the dashboard reads (ESPER_LAB_RUNS)."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("ESPER_LAB_RUNS", str(root))
    return root


@pytest.fixture
def fixture_run(runs_dir: Path) -> Path:
    """One finished 12-update run in `runs_dir`."""
    return make_run(runs_dir, "fixture-run", updates=12)
