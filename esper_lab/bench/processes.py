"""Fresh processes for benchmarks: each side of a comparison measured in a process of its own, started under the
malloc setting asked for, and the helpers that pool what those processes report.

A measured side is a module run as `python -m <module> '<json spec>'`; it prints one line `RESULT <json>` on stdout
(progress goes to stderr, which the caller sees as it happens). Its result is `{"process": process_facts(), "rows":
[...]}`; a comparison keeps `measured[side][setting]` = the list of such results, one per process (round).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from esper_lab.bench.timing import Log, quiet, summarize
from esper_lab.malloc import GLIBC_VAR, is_glibc, malloc_setting, tuned_environ

RESULT_MARK = "RESULT "


class BenchProcessError(RuntimeError):
    """A benchmark's fresh process failed (its own error is on stderr above)."""


def available_settings() -> tuple[str, ...]:
    """The malloc settings a comparison measures: ('tuned', 'default') on glibc, ('default',) elsewhere."""
    return ("tuned", "default") if is_glibc() else ("default",)


def process_facts() -> dict[str, Any]:
    """Who measured: pid, malloc setting, GLIBC_TUNABLES and torch threads of this process."""
    import torch

    return {"pid": os.getpid(), "malloc": malloc_setting(), "glibc_tunables": os.environ.get(GLIBC_VAR),
            "torch_num_threads": torch.get_num_threads()}


def emit(rows: Any) -> None:
    """Print this process's result line: `RESULT {"process": ..., "rows": rows}`."""
    print(RESULT_MARK + json.dumps({"process": process_facts(), "rows": rows}, default=float), flush=True)


def run_fresh(module: str, spec: dict[str, Any], setting: str, log: Log = quiet) -> dict[str, Any]:
    """Run `python -m module '<spec>'` in a new process under malloc `setting` ('tuned' or 'default') and return
    its result, with `process["seconds"]` (wall time including start-up) added."""
    label = f"{spec.get('part', '')} {spec.get('side', '')} (malloc {setting})".strip()
    log(f"{label}: fresh process")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, json.dumps(spec)], env=tuned_environ(os.environ, setting),
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise BenchProcessError(f"{label}: the measuring process exited with code {proc.returncode} (its error is "
                                "on stderr above)")
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not lines:
        raise BenchProcessError(f"{label}: the measuring process printed no {RESULT_MARK.strip()} line")
    result = json.loads(lines[-1][len(RESULT_MARK):])
    result["process"]["seconds"] = time.perf_counter() - t0
    return result


def cell(runs_by_setting: dict[str, list[dict]], **keys: Any) -> dict[str, Any]:
    """The first row matching `keys` in any process's result."""
    for results in runs_by_setting.values():
        for result in results:
            for row in result["rows"]:
                if all(row.get(k) == v for k, v in keys.items()):
                    return row
    raise KeyError(f"no measured row with {keys}")


def pooled_by_setting(runs_by_setting: dict[str, list[dict]], name: str, **keys: Any) -> dict[str, dict]:
    """`{setting: summarize(samples of measure `name` in the rows matching keys, pooled over processes)}`."""
    out = {}
    for setting, results in runs_by_setting.items():
        samples = [x for result in results for row in result["rows"]
                   if all(row.get(k) == v for k, v in keys.items()) for x in row[name]["samples"]]
        if samples:
            out[setting] = summarize(samples)
    return out


def best_setting(by_setting: dict[str, dict]) -> str:
    """The setting with the lowest median."""
    return min(by_setting, key=lambda s: by_setting[s]["median"])


def processes(measured: dict[str, dict[str, list[dict]]]) -> list[dict[str, Any]]:
    """One line per process: side, setting, pid, malloc as the process saw it, threads, seconds."""
    return [{"side": side, "setting": setting, **result["process"]}
            for side, by_setting in measured.items() for setting, results in by_setting.items() for result in results]
