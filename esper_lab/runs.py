"""The run directory: the contract between the trainer, the dashboard and the notebooks.

```
runs/<name>/
  config.json     the full resolved config
  status.json     state (running | finished | failed | stopped), pid, error, update, updates_total, updated_at
  metrics.jsonl   one JSON object per PPO update (appended, flushed per line)
  events.jsonl    seed lifecycle events: update, env, slot, epoch, from/to stage, blueprint, alpha
  snapshots/      update_000010.json: blueprint-embedding table, per-op values on fixed probe states, slot traces
                  truth.jsonl: Monte Carlo Q^pi(s, op) on the probe states beside the critic's (rl/truth.py), per update
  baselines.json  heuristic / random / wait return and accuracy on this run's world (the charts' reference lines)
  checkpoint.pt   latest; written to a temporary file then os.replace'd
  trainer.log     stdout/stderr of a trainer the dashboard started (the only file written outside this module)
  .lock           the writer's `flock`, with its pid and host: one trainer owns a run directory at a time
```

This module is the only code that writes a run directory (`create_run`, `mark_launched`, `mark_killed`,
`RunWriter`) and owns the metrics schema (`METRIC_KEYS`). A writer takes the run's lock before it writes anything
(`RunLock`), refuses a folder that is not a run, and removes the temporary files a killed writer left. Writers never
leave a half file where a reader looks (`atomic_write`); readers never crash on a missing, half-written or foreign
run (a partial last line of a `.jsonl` is skipped, a missing file or one of the wrong JSON type reads as empty).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import math
import os
import socket
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from esper_lab.actions import HEAD_NAMES, OP_NAMES
from esper_lab.config import TrainConfig

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
# ... and the time the critic's ground truth took this update (rl/truth.py; 0 when none was measured).
TRUTH_METRIC_KEYS = ("truth_seconds",)
METRIC_KEYS = ROLLOUT_METRIC_KEYS + PPO_METRIC_KEYS + TRUTH_METRIC_KEYS
assert len(set(METRIC_KEYS)) == len(METRIC_KEYS), "a metric name is defined twice"
# Beside them, one `reward_term_<name>` per term of env.reward.REWARD_TERMS (rl/trainer.py writes them; this layer
# cannot import env, so readers find them by the prefix; runs from before issue 17 lack them).
REWARD_TERM_PREFIX = "reward_term_"
CHECKPOINT_SCHEMA = "esper_lab.checkpoint/1"
CHECKPOINT_KEYS = ("config", "update", "env_steps", "policy", "obs_norm", "optimizer", "reward_norm", "torch_rng")
DEFAULT_RUNS_ROOT = "runs"
TRUTH_FILE = "snapshots/truth.jsonl"
LOCK_NAME = ".lock"
LOG_NAME = "trainer.log"
TRAINER_FILES = ("metrics.jsonl", "events.jsonl", "baselines.json", "checkpoint.pt")  # what a fresh start replaces
LOCK_PATIENCE_S = 0.25  # how long a writer retries a lock that a reader's probe (`lock_holder`) holds for microseconds


class RunDirError(RuntimeError):
    """A run directory is missing or unusable."""


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or not an esper_lab checkpoint of this schema."""


class RunLockedError(RunDirError):
    """Another live process holds the run directory's lock; `holder` is its `{"pid", "host", "since"}` or None."""

    def __init__(self, run_dir: Path, holder: dict[str, Any] | None):
        self.holder = holder
        who = f"pid {holder['pid']} on {holder['host']}" if holder else "a process that just exited"
        super().__init__(f"{run_dir} is in use by another trainer ({who}); stop it first or choose another --run-dir")


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


def _object(text: str | bytes) -> dict[str, Any] | None:
    """The JSON object in `text`, or None if it is not JSON or holds another type (`[1, 2]`, a number, a string)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None if it is missing, unreadable or not an object (never raises for a half-written
    or foreign file)."""
    try:
        return _object(path.read_bytes())
    except OSError:
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSONL file that holds an object; a missing file is empty and a partial, corrupt or
    non-object line is skipped."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [row for row in map(_object, text.splitlines()) if row is not None]


# --- checkpoints --------------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically save `payload` (tensors, numbers, strings, lists, dicts; every `CHECKPOINT_KEYS`) with the schema
    tag."""
    import io

    missing = [key for key in CHECKPOINT_KEYS if key not in payload]
    if missing:
        raise ValueError(f"a checkpoint needs every runs.CHECKPOINT_KEYS; missing {missing}")
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
    missing = [key for key in CHECKPOINT_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: a {CHECKPOINT_SCHEMA!r} checkpoint with keys missing: {', '.join(missing)}")
    policy = payload["policy"] if isinstance(payload["policy"], dict) else {}
    broken = [name for name, value in policy.items()
              if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise CheckpointError(f"{path}: the policy's weights are not finite (NaN or inf) in {', '.join(broken[:3])}"
                              + (f" and {len(broken) - 3} more" if len(broken) > 3 else ""))
    return payload


@contextlib.contextmanager
def restoring(path: Path | str) -> Iterator[None]:
    """Around loading a checkpoint's contents into a model: a value that does not fit (a tensor of another size, a
    config of another type) becomes a one-line `CheckpointError` naming the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise CheckpointError(f"{path} does not fit the model its config describes: {detail}") from exc


# --- the lock: one trainer owns a run directory ------------------------------------------------------------------

_held_locks: "weakref.WeakSet[RunLock]" = weakref.WeakSet()


def _try_flock(fd: int, kind: int, patience_s: float) -> bool:
    """Take `flock(fd, kind)` without blocking, retrying for `patience_s`; whether it was taken."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


class RunLock:
    """An exclusive `flock` on `<run_dir>/.lock`, which records this process's pid and host.

    Held until `release()`, until the object is collected, or until the process dies: the kernel drops it then, so
    a lock file left by a dead process never blocks anyone (its stale pid is overwritten). Raises `RunLockedError`
    naming the holder when another live process has it, `RunDirError` when the file cannot be opened."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        try:
            self.file = open(self.path, "a+b")  # appending: never truncates a live holder's pid before we own it
        except OSError as exc:
            raise RunDirError(f"cannot write into {self.path.parent}: {exc.strerror or exc}") from None
        if not _try_flock(self.file.fileno(), fcntl.LOCK_EX, LOCK_PATIENCE_S):
            self.file.close()
            raise RunLockedError(self.path.parent, lock_holder(self.path.parent))
        self.pid = os.getpid()
        self.file.truncate(0)
        self.file.write(dumps({"pid": self.pid, "host": socket.gethostname(), "since": time.time()}).encode())
        self.file.flush()
        _held_locks.add(self)

    def release(self) -> None:
        """Give the lock up (a no-op in a forked child, whose copy `_drop_inherited_locks` already detached)."""
        if not self.file.closed and os.getpid() == self.pid:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
        self.file.close()
        _held_locks.discard(self)


def _drop_inherited_locks() -> None:
    """In a forked child (a world worker): point every inherited lock descriptor at /dev/null, so that the lock dies
    with the trainer, not with the last of its workers."""
    if not _held_locks:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for lock in list(_held_locks):
            if not lock.file.closed:
                os.dup2(null, lock.file.fileno(), inheritable=False)
    finally:
        os.close(null)


os.register_at_fork(after_in_child=_drop_inherited_locks)


def lock_holder(run_dir: Path | str) -> dict[str, Any] | None:
    """`{"pid", "host", "since"}` of the live process holding the run's lock, or None when nobody holds it (a lock
    file left by a dead process is free). A field the holder has not written yet reads as None."""
    try:
        file = open(Path(run_dir) / LOCK_NAME, "rb")
    except OSError:
        return None
    with file:  # closing drops the shared lock a free file gives us
        if _try_flock(file.fileno(), fcntl.LOCK_SH, 0.0):
            return None
        record = _object(file.read()) or {}
    return {key: record.get(key) for key in ("pid", "host", "since")}


# --- what a folder is: a run, a folder a run may start in, or someone else's ----------------------------------------


def run_of_file(path: Path) -> Path | None:
    """The run directory `path` is one of the own files of (its config, status, lock, log, metrics, events, baselines,
    checkpoint, or a file under snapshots/), else None."""
    path = path.resolve()
    own = ("config.json", "status.json", LOCK_NAME, LOG_NAME, *TRAINER_FILES)
    for run, inside in ((path.parent, path.name in own), (path.parent.parent, path.parent.name == "snapshots")):
        if inside and is_run_config(read_json(run / "config.json")):
            return run
    return None


def is_run_config(data: Any) -> bool:
    """Whether a parsed config.json is an esper_lab config: an object with TrainConfig's fields only, whose
    sections (world, policy, ppo) are objects."""
    fields = TrainConfig().to_dict()
    sections = [name for name, value in fields.items() if isinstance(value, dict)]
    return isinstance(data, dict) and set(data) <= set(fields) and all(isinstance(data.get(k), dict) for k in sections)


def _is_temporary(name: str) -> bool:
    """A temporary file of `atomic_write` or `mark_launched` (`.<name>.<random>.tmp`)."""
    return name.startswith(".") and name.endswith(".tmp")


def _entries(folder: Path) -> list[str]:
    """The names in `folder` ([] if it does not exist); `RunDirError` if it cannot be listed."""
    try:
        return sorted(os.listdir(folder)) if folder.is_dir() else []
    except OSError as exc:
        raise RunDirError(f"cannot read {folder}: {exc.strerror or exc}") from None


def _check_writable_folder(run_dir: Path, resume: bool) -> None:
    """Refuse, before anything is written, a path that is a file, a resume of something that is not a run, and an
    existing folder that holds someone else's files (anything but a run, a launcher's trainer.log, lock or temporaries)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory")
    if is_run_config(read_json(run_dir / "config.json")):
        return
    if resume:
        raise RunDirError(f"cannot resume: {run_dir} is not a run directory (no esper_lab config.json)")
    foreign = [n for n in _entries(run_dir) if n not in (LOCK_NAME, LOG_NAME) and not _is_temporary(n)]
    if "config.json" in foreign:
        raise RunDirError(f"{run_dir} is not an esper_lab run: its config.json is not an esper_lab config; choose a "
                          "new or empty --run-dir")
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunDirError(f"{run_dir} is not empty and is not an esper_lab run (it holds {shown}); choose a new or "
                          "empty --run-dir")


def _make_folder(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None


def _check_fresh_start(run_dir: Path, overwrite: bool) -> None:
    """Refuse to start a run over one that has made progress (metrics or a checkpoint), unless `overwrite`."""
    updates = len(read_jsonl(run_dir / "metrics.jsonl"))
    if overwrite or not (updates or (run_dir / "checkpoint.pt").exists()):
        return
    if (run_dir / "checkpoint.pt").exists():
        raise RunDirError(f"{run_dir} already holds a run ({updates} updates and a checkpoint); pass --resume to "
                          "continue it, --overwrite to restart it from scratch, or choose a new --run-dir")
    raise RunDirError(f"{run_dir} already holds a run ({updates} updates, stopped before its first checkpoint); pass "
                      "--overwrite to restart it from scratch, or choose a new --run-dir")


def _check_resumable(run_dir: Path) -> None:
    if not (run_dir / "checkpoint.pt").is_file():
        raise RunDirError(f"cannot resume {run_dir}: it has no checkpoint.pt (it stopped before its first "
                          "checkpoint); pass --overwrite instead of --resume to restart it from scratch")


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _temporaries(run_dir: Path) -> list[Path]:
    """Temporary files a killed writer left in the run directory and its snapshots/."""
    return [folder / n for folder in (run_dir, run_dir / "snapshots") for n in _entries(folder) if _is_temporary(n)]


def _trainer_outputs(run_dir: Path) -> list[Path]:
    """What a fresh start replaces: the logs, baselines, checkpoint and snapshots of an earlier start."""
    snapshots = run_dir / "snapshots"
    return ([run_dir / n for n in TRAINER_FILES] + [run_dir / TRUTH_FILE]
            + [snapshots / n for n in _entries(snapshots) if n.startswith("update_")])


# --- writers (trainer side, and the dashboard before its trainer starts) ----------------------------------------


def create_run(run_dir: Path | str, config: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Make `run_dir` a run (its config.json) under the run's lock, then let the lock go; refusals as `RunWriter`."""
    writer = RunWriter(run_dir, config, overwrite=overwrite)
    writer.release()
    return writer.dir


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
    except (FileExistsError, FileNotFoundError):  # written already, or the starting trainer swept the temporary
        pass
    finally:
        tmp.unlink(missing_ok=True)


def mark_killed(run_dir: Path | str, error: str) -> None:
    """Record that a trainer had to be killed (it could not write its own final status)."""
    path = Path(run_dir) / "status.json"
    status = read_json(path) or {}
    atomic_write(path, dumps({**status, "state": "stopped", "updated_at": time.time(), "error": error}))


class RunWriter:
    """Writes one run directory, holding its lock (`RunLock`) from before the first write until `release()`.

    A fresh start refuses a file, a folder holding someone else's files, a live run and a run that made progress
    (unless `overwrite`), then replaces the outputs of any earlier start. `resume=True` needs a run with a
    checkpoint and keeps what is there (metrics beyond the checkpoint are trimmed by `truncate_after`). Either way
    the temporary files a killed writer left are removed. Writing after `release()` takes the lock again.

    With `deferred=True` the constructor only checks and locks; `start()` then replaces the earlier outputs, so a
    caller can build what may still fail (a trainer's worlds) before anything of the old run is gone."""

    def __init__(self, run_dir: Path | str, config: dict[str, Any], *, resume: bool = False, overwrite: bool = False,
                 deferred: bool = False):
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other")
        self.dir = Path(run_dir)
        _check_writable_folder(self.dir, resume)
        _make_folder(self.dir)
        self._lock: RunLock | None = RunLock(self.dir)
        try:
            _remove(_temporaries(self.dir))
            if resume:
                _check_resumable(self.dir)
            else:
                _check_fresh_start(self.dir, overwrite)
        except BaseException:
            self.release()
            raise
        self._resume, self._overwrite, self._config = resume, overwrite, config
        self._status: dict[str, Any] = (read_json(self.dir / "status.json") or {}) if resume else {}
        if not deferred:
            self.start()

    def start(self) -> None:
        """A fresh start replaces the outputs of any earlier start (and its status with `overwrite`) and writes
        config.json; either way snapshots/ exists afterwards."""
        try:
            if not self._resume:
                _remove(_trainer_outputs(self.dir) + ([self.dir / "status.json"] if self._overwrite else []))
                atomic_write(self._own("config.json"), json.dumps(self._config, indent=2))
            self._own("snapshots").mkdir(exist_ok=True)
        except BaseException:
            self.release()
            raise

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    def release(self) -> None:
        """Let the run's lock go (the trainer does when its loop ends); safe to call twice."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _own(self, name: str) -> Path:
        """`dir / name`, once this writer holds the run's lock (taken again after `release()`)."""
        if self._lock is None:
            self._lock = RunLock(self.dir)
        return self.dir / name

    def status(self, state: str, **fields: Any) -> None:
        if state not in RUN_STATES:
            raise ValueError(f"unknown run state {state!r}")
        self._status.update(fields, state=state, pid=os.getpid(), updated_at=time.time())
        atomic_write(self._own("status.json"), dumps(self._status))

    def metrics(self, record: dict[str, Any]) -> None:
        self._append("metrics.jsonl", [record])

    def events(self, records: Iterable[dict[str, Any]]) -> None:
        self._append("events.jsonl", list(records))

    def snapshot(self, update: int, data: dict[str, Any]) -> None:
        atomic_write(self._own("snapshots") / f"update_{update:06d}.json", dumps({"update": update, **data}))

    def truth(self, records: Iterable[dict[str, Any]]) -> None:
        """Ground-truth records (rl/truth.py), one per probe state measured, each with its `update`."""
        self._append(TRUTH_FILE, list(records))

    def checkpoint(self, payload: dict[str, Any]) -> None:
        save_checkpoint(self._own(self.checkpoint_path.name), payload)

    def has_baselines(self) -> bool:
        return read_json(self.dir / "baselines.json") is not None

    def baselines(self, reference: dict[str, dict[str, float]]) -> None:
        """`{policy: {"episode_return", "val_acc"}}`: the baselines' results on this run's world (reference lines)."""
        atomic_write(self._own("baselines.json"), dumps(reference))

    def truncate_after(self, update: int) -> None:
        """On resume: drop records newer than the checkpoint's update (and unreadable lines) so the logs match the
        restored state. A log with nothing to drop is left as it is, and a missing one is not created."""
        for name in ("metrics.jsonl", "events.jsonl", TRUTH_FILE):
            path = self.dir / name
            text = "".join(dumps(r) + "\n" for r in read_jsonl(path) if _update_of(r) <= update)
            try:
                unchanged = path.read_text(encoding="utf-8") == text
            except (OSError, UnicodeDecodeError):
                unchanged = not text and not path.exists()
            if not unchanged:
                atomic_write(self._own(name), text)

    def _append(self, name: str, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with open(self._own(name), "a", encoding="utf-8") as f:
            f.write("".join(dumps(r) + "\n" for r in records))
            f.flush()


def _update_of(row: dict[str, Any]) -> float:
    """A log row's update (0 if it has none, infinity if it is not a number: such a row is not kept on resume)."""
    update = row.get("update", 0)
    return update if isinstance(update, (int, float)) and not isinstance(update, bool) else math.inf


# --- the cache: results that depend only on a key and the code (the baselines of a run's world) --------------------


def cache_root() -> Path:
    """Where cached results live: `$ESPER_LAB_CACHE`, else `$XDG_CACHE_HOME/esper_lab`, else `~/.cache/esper_lab`."""
    if os.environ.get("ESPER_LAB_CACHE"):
        return Path(os.environ["ESPER_LAB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "esper_lab"


@functools.lru_cache(maxsize=1)
def _source_fingerprint() -> str:
    """sha256 of every .py file of the package: a cached result never outlives the code that computed it."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cache_path(kind: str, key: dict[str, Any]) -> Path:
    """`<cache_root>/<kind>/<sha256 of the canonical key JSON and the package's source>.json`."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"), default=_json_default)
    name = hashlib.sha256(f"{canonical}\0{_source_fingerprint()}".encode()).hexdigest()
    return cache_root() / kind / f"{name}.json"


def read_cached(kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The object cached under (`kind`, `key`), or None."""
    return read_json(cache_path(kind, key))


def write_cached(kind: str, key: dict[str, Any], value: dict[str, Any]) -> None:
    """Cache `value` under (`kind`, `key`); best effort: an unwritable cache only costs the next run the work."""
    try:
        atomic_write(cache_path(kind, key), dumps(value))
    except OSError:
        pass


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

    def lock_holder(self) -> dict[str, Any] | None:
        """`{"pid", "host", "since"}` of the trainer that owns the run now, or None (see `lock_holder`)."""
        return lock_holder(self.dir)

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

    def truth(self) -> list[dict[str, Any]]:
        """Every ground-truth record (rl/truth.py), oldest first; [] for a run without any."""
        return read_jsonl(self.dir / TRUTH_FILE)

    def latest_snapshot(self) -> dict[str, Any] | None:
        for update in reversed(self.snapshot_updates()):
            snap = self.snapshot(update)
            if snap is not None:
                return snap
        return None
