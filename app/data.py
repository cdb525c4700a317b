"""Run data for the dashboard: `esper_lab.runs.RunReader` behind a cache keyed by (path, mtime, size).

A refresh re-reads a file only when it changed. Parsed values are shared by every session of the server, so
callers treat them as read-only. Nothing here raises for a missing, half-written or deleted run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from esper_lab.runs import TRUTH_FILE, RunReader, list_runs, read_json, read_jsonl, runs_root

Signature = tuple[str, int, int]


def signature(path: Path) -> Signature | None:
    """(path, mtime_ns, size) of a file, or None if it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _cached(kind: str, sig: Signature) -> Any:
    path = Path(sig[0])
    reader = RunReader(path.parent)
    if kind == "metrics":
        return tuple(reader.metrics())
    if kind == "events":
        return tuple(reader.events())
    if kind == "json":
        return read_json(path)
    if kind == "jsonl":
        return tuple(read_jsonl(path))
    raise ValueError(kind)


def _load(kind: str, path: Path, empty: Any) -> Any:
    sig = signature(path)
    if sig is None:
        return empty
    value = _cached(kind, sig)
    return empty if value is None else value


def metrics(run_dir: Path) -> tuple[dict, ...]:
    """metrics.jsonl rows (a half-written last line is skipped)."""
    return _load("metrics", run_dir / "metrics.jsonl", ())


def partial_tail(path: Path) -> bool:
    """Whether a JSONL file ends in an incomplete line (no final newline)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return False
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    except OSError:
        return False


def events(run_dir: Path) -> tuple[dict, ...]:
    """events.jsonl rows: transitions and ticks."""
    return _load("events", run_dir / "events.jsonl", ())


def config(run_dir: Path) -> dict:
    return _load("json", run_dir / "config.json", {})


def baselines(run_dir: Path) -> dict:
    """baselines.json: {"heuristic": {"episode_return", "val_acc"}, "random": {...}, "wait": {...}} or {}."""
    return _load("json", run_dir / "baselines.json", {})


def status(run_dir: Path) -> dict:
    """status.json, read fresh every time (it is tiny and is what the live view follows)."""
    return RunReader(run_dir).status()


def lock_holder(run_dir: Path) -> dict | None:
    """`{"pid", "host", "since"}` of the trainer that owns the run now (its lock), or None; read fresh every time."""
    return RunReader(run_dir).lock_holder()


def snapshot_updates(run_dir: Path) -> list[int]:
    return RunReader(run_dir).snapshot_updates()


def snapshot(run_dir: Path, update: int) -> dict | None:
    return _load("json", run_dir / "snapshots" / f"update_{update:06d}.json", None)


def snapshots(run_dir: Path) -> list[dict]:
    """Every readable snapshot, oldest first."""
    found = (snapshot(run_dir, u) for u in snapshot_updates(run_dir))
    return [s for s in found if s is not None]


def truth(run_dir: Path) -> tuple[dict, ...]:
    """snapshots/truth.jsonl records (the critic's Monte Carlo ground truth, one per probe state measured at an
    update), oldest first; () for a run without any."""
    return _load("jsonl", run_dir / TRUTH_FILE, ())


@dataclass(frozen=True)
class RunRef:
    """A run directory as the sidebar lists it."""

    name: str
    dir: Path

    def exists(self) -> bool:
        return RunReader(self.dir).exists()


def available_runs(root: Path | None = None) -> list[RunRef]:
    """Runs under `root` (default `runs_root()`), most recent first."""
    return [RunRef(p.name, p) for p in list_runs(root if root is not None else runs_root())]


def column(rows: tuple[dict, ...] | list[dict], key: str) -> list[Any]:
    """One metric as a list (None where missing or null)."""
    return [row.get(key) for row in rows]


@functools.lru_cache(maxsize=64)
def _derived(fn: Callable[[tuple[dict, ...]], Any], sig: Signature) -> Any:
    return fn(_cached("events", sig))


def from_events(run_dir: Path, fn: Callable[[tuple[dict, ...]], Any]) -> Any:
    """`fn(events)` for a module-level pure `fn`, cached until events.jsonl changes."""
    sig = signature(run_dir / "events.jsonl")
    return fn(()) if sig is None else _derived(fn, sig)
