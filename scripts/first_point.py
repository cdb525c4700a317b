"""Seconds from `esper-lab train --preset demo --updates 1` starting to the first metrics.jsonl row, with the
baseline cache cold (a new `ESPER_LAB_CACHE`) and warm (the same one again), medians of 3 (the README's figure).

    .venv/bin/python scripts/first_point.py [--repeats 3]

Runs and caches go to temporary directories, removed afterwards.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "esper-lab")


def first_point(cache: str, extra: list[str]) -> float:
    """Seconds until the first metrics row of a new 1-update `demo` run using the baseline cache `cache`."""
    scratch = Path(tempfile.mkdtemp())
    run = scratch / "run"
    env = dict(os.environ, ESPER_LAB_CACHE=cache)
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen([EXE, "train", "--preset", "demo", "--updates", "1", "--run-dir", str(run), "--quiet",
                                 *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        metrics = run / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()):
            if proc.poll() is not None:
                raise RuntimeError(f"esper-lab train exited with {proc.returncode} before its first metrics row: "
                                   f"{proc.stderr.read().strip()}")
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
        proc.wait()
        return seconds
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="cold/warm pairs per setting (default 3)")
    args = parser.parse_args()
    for label, extra in (("default", []), ("--threads 1", ["--threads", "1"])):
        cold, warm = [], []
        for _ in range(args.repeats):
            cache = tempfile.mkdtemp()
            try:
                cold.append(first_point(cache, extra))
                warm.append(first_point(cache, extra))
            finally:
                shutil.rmtree(cache, ignore_errors=True)
        print(f"{label}: cold {statistics.median(cold):.1f} s {[round(c, 1) for c in cold]}, "
              f"warm {statistics.median(warm):.1f} s {[round(w, 1) for w in warm]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
