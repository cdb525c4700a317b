"""The trainer as a child process: start it, tell whether it still runs, stop it.

The dashboard never trains in its own threads. `start_run` launches
`<python> -m esper_lab.cli train ... --run-dir DIR` in its own session with output to DIR/trainer.log; everything
else is read back from the run directory, so a refreshed or reopened page finds the run where it is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from esper_lab.runs import LOG_NAME, RunReader, create_run, mark_killed, mark_launched

REPO_ROOT = Path(__file__).resolve().parent.parent

# Children started by this server process, by pid, so that they are reaped (no zombies) when they end.
_children: dict[int, subprocess.Popen] = {}


def train_command(run_dir: Path, preset: str, critic: str, num_envs: int, seed: int, updates: int,
                  backend: str = "local", masks: str = "conditional", reward: str | None = None) -> list[str]:
    """The trainer's command line; `reward` (a REWARD_MODES name) None keeps the preset's reward mode."""
    command = [sys.executable, "-m", "esper_lab.cli", "train", "--preset", preset, "--run-dir", str(run_dir),
               "--updates", str(updates), "--critic", critic, "--num-envs", str(num_envs), "--seed", str(seed),
               "--backend", backend, "--set", f"policy.masks={masks}"]
    return command + ([] if reward is None else ["--set", f"world.reward.mode={reward}"])


def new_run_dir(root: Path, preset: str, critic: str, seed: int) -> Path:
    """runs/<preset>-<critic>-s<seed>-<time>, made unique with a suffix."""
    stem = f"{preset}-{critic}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, i = root / stem, 1
    while run_dir.exists():
        i += 1
        run_dir = root / f"{stem}-{i}"
    return run_dir


def start_run(root: Path, preset: str, critic: str, num_envs: int, seed: int, updates: int,
              backend: str = "local", masks: str = "conditional", reward: str | None = None) -> Path:
    """Launch a trainer and return its run directory.

    config.json and a 'running' status with the child's pid are written here, so the run is listed at once.
    """
    from esper_lab.config import preset as build_preset

    overrides = {"policy.critic": critic, "policy.masks": masks}
    if reward is not None:
        overrides["world.reward.mode"] = reward
    config = build_preset(preset, num_envs=num_envs, seed=seed, updates=updates, backend=backend, **overrides)
    run_dir = create_run(new_run_dir(Path(root), preset, critic, seed), config.to_dict())
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(run_dir / LOG_NAME, "wb") as log:
        command = train_command(run_dir.resolve(), preset, critic, num_envs, seed, updates, backend, masks, reward)
        proc = subprocess.Popen(command,
                                cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    _children[proc.pid] = proc
    mark_launched(run_dir, proc.pid, updates)
    return run_dir


def reap() -> None:
    """Collect the exit status of finished children (so their pids stop existing)."""
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def trainer_alive(pid: object, run_dir: Path) -> bool:
    """Whether `pid` is a live trainer of `run_dir` (not a zombie, and its command line names the run)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    reap()
    if pid in _children:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return True  # no /proc: trust the signal check
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return ("esper_lab" in cmdline or "esper-lab" in cmdline) and run_dir.name in cmdline


def log_tail(run_dir: Path, lines: int = 15) -> str:
    """The last lines of the trainer's output (carriage-return progress collapsed), or ''."""
    try:
        data = (run_dir / LOG_NAME).read_bytes()[-20000:].decode(errors="replace")
    except OSError:
        return ""
    rows = [row.rsplit("\r", 1)[-1] for row in data.splitlines()]
    return "\n".join(rows[-lines:])


def run_status(run_dir: Path) -> dict:
    """status.json, except that a 'running' run whose process is gone reads as 'failed' with an explanation."""
    status = RunReader(run_dir).status()
    if status.get("state") != "running":
        return status
    if trainer_alive(status.get("pid"), run_dir):
        return status
    status = RunReader(run_dir).status()  # it may have written its final state just before exiting
    if status.get("state") != "running":
        return status
    return {**status, "state": "failed", "error": (
        f"The trainer process (pid {status.get('pid')}) is gone without writing a final status "
        f"(killed, out of memory, or crashed before it could report). See {LOG_NAME} below.")}


def stop_run(run_dir: Path, timeout: float = 5.0) -> str:
    """SIGTERM the run's trainer and wait for it to end (SIGKILL after `timeout`); returns what happened."""
    pid = RunReader(run_dir).status().get("pid")
    if not trainer_alive(pid, run_dir):
        return "The trainer is not running."
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not trainer_alive(pid, run_dir):
            return "Stopped."
        time.sleep(0.05)
    if os.getpgid(pid) == pid:  # our own session (started here): take any helpers with it
        os.killpg(pid, signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while trainer_alive(pid, run_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    mark_killed(run_dir, f"killed: the trainer did not exit within {timeout:.0f} s of SIGTERM")
    return "Killed (it did not answer SIGTERM)."
