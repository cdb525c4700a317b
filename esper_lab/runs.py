"""The run directory: the contract between the trainer, the dashboard and the notebooks.

```
runs/<name>/
  config.json     the full resolved config
  status.json     state (running | finished | failed | stopped), pid, error, update, updates_total, updated_at
  metrics.jsonl   one JSON object per PPO update (appended, flushed per line)
  events.jsonl    seed lifecycle events: update, env, slot, epoch, from/to stage, blueprint, alpha
  snapshots/      update_000010.json: blueprint-embedding table, per-op values on fixed probe states, slot traces
  baselines.json  heuristic / random / wait return and accuracy on this run's world (the charts' reference lines)
  checkpoint.pt   latest; written to a temporary file then os.replace'd
  trainer.log     stdout/stderr of a trainer the dashboard started (the only file written outside this module)
```

This module is the only code that writes a run directory (`create_run`, `mark_launched`, `mark_killed`,
`RunWriter`) and owns the metrics schema (`METRIC_KEYS`). Writers never leave a half file where a reader looks (`atomic_write`); readers never crash on a missing or
half-written run (a partial last line of a `.jsonl` is skipped, a missing file reads as empty).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from esper_lab.actions import HEAD_NAMES, OP_NAMES

RUN_STATES = ("running", "finished", "failed", "stopped")

# --- the metrics schema: every key of a metrics.jsonl record (one per PPO update) -------------------------------
# The rollout's keys (rl/rollout.py and rl/trainer.py write them) ...
ROLLOUT_METRIC_KEYS = (
    ("update", "env_steps", "time_s", "sps", "rollout_seconds", "env_seconds", "policy_seconds", "update_seconds")
    + ("episode_return", "episode_return_std", "val_acc", "val_acc_std", "fossilized", "pruned", "germinated")
    + ("seed_params", "host_params", "illegal_actions", "illegal_fraction")
    + tuple(f"op_count_{name}" for name in OP_NAMES)
)
# ... and the PPO update's (rl/ppo.py returns exactly these).
PPO_METRIC_KEYS = (
    ("policy_loss", "value_loss", "entropy_loss", "q_aux_loss", "approx_kl", "clip_fraction", "explained_variance")
    + ("grad_norm_total", "q_spread", "q_variance", "epochs_completed", "early_stopped", "ratio_first")
    + ("optimizer_steps", "advantage_mean", "advantage_std")
    + tuple(f"entropy_{h}" for h in HEAD_NAMES)
    + tuple(f"grad_norm_{h}" for h in HEAD_NAMES)
)
METRIC_KEYS = ROLLOUT_METRIC_KEYS + PPO_METRIC_KEYS
assert len(set(METRIC_KEYS)) == len(METRIC_KEYS), "a metric name is defined twice"
CHECKPOINT_SCHEMA = "esper_lab.checkpoint/1"
DEFAULT_RUNS_ROOT = "runs"


class RunDirError(RuntimeError):
    """A run directory is missing or unusable."""


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or not an esper_lab checkpoint of this schema."""


def runs_root() -> Path:
    """Where run directories live: `$ESPER_LAB_RUNS`, else `./runs`."""
    return Path(os.environ.get("ESPER_LAB_RUNS", DEFAULT_RUNS_ROOT))


def list_runs(root: Path | str | None = None) -> list[Path]:
    """Run directories under `root` (those with a config.json), most recently modified first."""
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / "config.json").is_file()]
    return sorted(runs, key=_last_modified, reverse=True)


def _last_modified(run: Path) -> float:
    times = [f.stat().st_mtime for f in (run / "status.json", run / "metrics.jsonl", run / "config.json") if f.exists()]
    return max(times, default=0.0)


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    """One-line JSON with NaN/inf as null and tensors as lists."""
    return json.dumps(_finite(json.loads(json.dumps(obj, default=_json_default))), allow_nan=False)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None if it is missing or unreadable (never raises for a half-written file)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSONL file; a missing file is empty and a partial or corrupt line is skipped."""
    try:
        text = path.read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


# --- checkpoints --------------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically save `payload` (tensors, numbers, strings, lists, dicts) with the schema tag."""
    import io

    buf = io.BytesIO()
    torch.save({"schema": CHECKPOINT_SCHEMA, **payload}, buf)
    atomic_write(Path(path), buf.getvalue())


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; raise `CheckpointError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if "weights_only" in reason:  # torch's advice to load unsafely is not ours to give
            reason = "it holds objects a weights-only load refuses"
        raise CheckpointError(f"{path} is not a readable esper_lab checkpoint (corrupt or foreign file: {reason})") from exc
    if not isinstance(payload, dict) or payload.get("schema") != CHECKPOINT_SCHEMA:
        found = payload.get("schema") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: expected checkpoint schema {CHECKPOINT_SCHEMA!r}, found {found!r}")
    return payload


# --- writers (trainer side, and the dashboard before its trainer starts) ----------------------------------------


def create_run(run_dir: Path | str, config: dict[str, Any]) -> Path:
    """Make `run_dir` a run: write its config.json. Refuses a directory that already holds a run with metrics."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.jsonl").exists() and read_jsonl(run_dir / "metrics.jsonl"):
        raise RunDirError(f"{run_dir} already holds a run; pass --resume to continue it or choose a new --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.json", json.dumps(config, indent=2))
    return run_dir


def mark_launched(run_dir: Path | str, pid: int, updates_total: int) -> None:
    """A 'running' status for a trainer just started by the dashboard, unless the trainer has written one already
    (a hard link of a complete temporary file: atomic, and never overwrites)."""
    now = time.time()
    text = dumps({"state": "running", "pid": pid, "error": None, "update": 0, "updates_total": updates_total,
                  "started_at": now, "updated_at": now})
    path = Path(run_dir) / "status.json"
    tmp = path.with_name(f".{path.name}.launch.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def mark_killed(run_dir: Path | str, error: str) -> None:
    """Record that a trainer had to be killed (it could not write its own final status)."""
    path = Path(run_dir) / "status.json"
    status = read_json(path) or {}
    atomic_write(path, dumps({**status, "state": "stopped", "updated_at": time.time(), "error": error}))


class RunWriter:
    """Writes one run directory. `resume=True` keeps what is there (metrics beyond the checkpoint are trimmed)."""

    def __init__(self, run_dir: Path | str, config: dict[str, Any], *, resume: bool = False):
        self.dir = Path(run_dir)
        if resume:
            if not (self.dir / "config.json").is_file():
                raise RunDirError(f"cannot resume: {self.dir} is not a run directory (no config.json)")
        else:
            create_run(self.dir, config)
        (self.dir / "snapshots").mkdir(exist_ok=True)
        self._status: dict[str, Any] = read_json(self.dir / "status.json") or {}

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    def status(self, state: str, **fields: Any) -> None:
        if state not in RUN_STATES:
            raise ValueError(f"unknown run state {state!r}")
        self._status.update(fields, state=state, pid=os.getpid(), updated_at=time.time())
        atomic_write(self.dir / "status.json", dumps(self._status))

    def metrics(self, record: dict[str, Any]) -> None:
        self._append("metrics.jsonl", [record])

    def events(self, records: Iterable[dict[str, Any]]) -> None:
        self._append("events.jsonl", list(records))

    def snapshot(self, update: int, data: dict[str, Any]) -> None:
        atomic_write(self.dir / "snapshots" / f"update_{update:06d}.json", dumps({"update": update, **data}))

    def checkpoint(self, payload: dict[str, Any]) -> None:
        save_checkpoint(self.checkpoint_path, payload)

    def has_baselines(self) -> bool:
        return (self.dir / "baselines.json").is_file()

    def baselines(self, reference: dict[str, dict[str, float]]) -> None:
        """`{policy: {"episode_return", "val_acc"}}`: the baselines' results on this run's world (reference lines)."""
        atomic_write(self.dir / "baselines.json", dumps(reference))

    def truncate_after(self, update: int) -> None:
        """On resume: drop records newer than the checkpoint's update so the logs match the restored state."""
        for name in ("metrics.jsonl", "events.jsonl"):
            rows = [r for r in read_jsonl(self.dir / name) if r.get("update", 0) <= update]
            atomic_write(self.dir / name, "".join(dumps(r) + "\n" for r in rows))

    def _append(self, name: str, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with open(self.dir / name, "a", encoding="utf-8") as f:
            f.write("".join(dumps(r) + "\n" for r in records))
            f.flush()


# --- reader (dashboard and notebook side) -------------------------------------------------------------------------


class RunReader:
    """Reads a run directory that may be missing, half-written or still being written."""

    def __init__(self, run_dir: Path | str):
        self.dir = Path(run_dir)

    @property
    def name(self) -> str:
        return self.dir.name

    def exists(self) -> bool:
        return (self.dir / "config.json").is_file()

    def require(self) -> "RunReader":
        if not self.exists():
            raise RunDirError(f"no run directory at {self.dir} (expected {self.dir / 'config.json'})")
        return self

    def config(self) -> dict[str, Any]:
        return read_json(self.dir / "config.json") or {}

    def status(self) -> dict[str, Any]:
        return read_json(self.dir / "status.json") or {}

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.dir / "metrics.jsonl")

    def events(self, update: int | None = None) -> list[dict[str, Any]]:
        rows = read_jsonl(self.dir / "events.jsonl")
        return rows if update is None else [r for r in rows if r.get("update") == update]

    def snapshot_updates(self) -> list[int]:
        folder = self.dir / "snapshots"
        if not folder.is_dir():
            return []
        updates = []
        for p in folder.glob("update_*.json"):
            try:
                updates.append(int(p.stem.split("_")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(updates)

    def snapshot(self, update: int) -> dict[str, Any] | None:
        return read_json(self.dir / "snapshots" / f"update_{update:06d}.json")

    def latest_snapshot(self) -> dict[str, Any] | None:
        for update in reversed(self.snapshot_updates()):
            snap = self.snapshot(update)
            if snap is not None:
                return snap
        return None
