"""The whole test session (tests/ and the notebooks under nbval) writes only into a temporary directory.

Before any test or notebook kernel starts, `ESPER_LAB_RUNS` (run directories) and `ESPER_LAB_CACHE` (cached
baselines) point into one temporary directory, which the kernels inherit; it is removed at the end. The session
fails if the repository's own `runs/` changed while it ran: a test or notebook wrote where the user keeps runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_RUNS = Path(__file__).resolve().parent / "runs"
_SANDBOX = pytest.StashKey[Path]()
_RUNS_BEFORE = pytest.StashKey[dict[str, int]]()


def folders(root: Path) -> dict[str, int]:
    """Every folder under `root` (itself included, if it exists) by path, with its inode: a folder made, or
    deleted and made again, during the session shows up as a new path or a new inode."""
    if not root.is_dir():
        return {}
    found = {str(root): root.stat().st_ino}
    for parent, names, _ in os.walk(root):
        for name in names:
            path = Path(parent) / name
            found[str(path)] = path.stat().st_ino
    return found


def pytest_configure(config: pytest.Config) -> None:
    sandbox = Path(tempfile.mkdtemp(prefix="esper-lab-tests-"))
    os.environ["ESPER_LAB_RUNS"] = str(sandbox / "runs")
    os.environ["ESPER_LAB_CACHE"] = str(sandbox / "cache")
    config.stash[_SANDBOX] = sandbox
    config.stash[_RUNS_BEFORE] = folders(REPO_RUNS)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _SANDBOX not in config.stash:
        return
    shutil.rmtree(config.stash[_SANDBOX], ignore_errors=True)
    before, after = config.stash[_RUNS_BEFORE], folders(REPO_RUNS)
    changed = sorted(path for path, inode in after.items() if before.get(path) != inode)
    if changed:
        shown = ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else "")
        print(f"\nFAILED: the repository's runs/ changed during the test session ({shown}); tests and notebooks "
              "must write run directories under ESPER_LAB_RUNS (esper_lab.runs.runs_root()) only (or another "
              "process wrote there at the same time)")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
