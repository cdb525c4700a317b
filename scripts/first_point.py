"""Seconds from `esper-lab train --preset demo --updates 1` starting to the first metrics.jsonl row, with the
baseline cache cold (a new `ESPER_LAB_CACHE`) and warm (the same one again), medians of 3 (the README's figure).

    .venv/bin/python scripts/first_point.py

Runs and caches go to temporary directories.
"""

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

EXE = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "esper-lab")


def first_point(cache: str, extra: list[str]) -> float:
    run = Path(tempfile.mkdtemp()) / "run"
    env = dict(os.environ, ESPER_LAB_CACHE=cache)
    t0 = time.perf_counter()
    proc = subprocess.Popen([EXE, "train", "--preset", "demo", "--updates", "1", "--run-dir", str(run), "--quiet",
                             *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    proc.wait()
    return seconds


for label, extra in (("default", []), ("--threads 1", ["--threads", "1"])):
    cold, warm = [], []
    for _ in range(3):
        cache = tempfile.mkdtemp()
        cold.append(first_point(cache, extra))
        warm.append(first_point(cache, extra))
    print(f"{label}: cold {statistics.median(cold):.1f} s {[round(c, 1) for c in cold]}, "
          f"warm {statistics.median(warm):.1f} s {[round(w, 1) for w in warm]}", flush=True)
