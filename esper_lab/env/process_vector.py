"""ProcessVectorEnv: the `VectorEnv` interface with the worlds in worker processes on this machine.

A world's step is one host epoch: a few hundred tiny torch ops, bound by per-op overhead on one core, so threads do
not help (the GIL) but processes do: on the 2-core machine two worker processes step twice as many worlds per
second as one (docs/performance.md). The worlds are split into `workers` contiguous groups (`split_envs`), each a
`WorldGroup` in its own process. Workers are forked, as PyTorch's DataLoader workers are: a fork starts in
milliseconds (a 'spawn' would re-import torch and re-run the user's `__main__`), and each worker drops to one torch
thread before it touches torch. Workers ignore Ctrl-C; the trainer stops them.

    trainer                                       worker w (envs i..j), one torch thread
    actions [E, 8] -> rows [j-i+1][8] ints   -->  its worlds step (cfg.engine: one by one, or as one batch)
    reports, rewards [E], flags [E], infos   <--  [(WorldReport, reward, truncated, info)] per world

Driver side, `GroupedVectorEnv` (env/groups.py) does everything but the transport: `reports()` and `masks()` cost
no round trip, and only plain picklable values cross the pipe; world snapshots (`get_states` / `set_states`, the
'sequential' engine only) cross as bytes, one `World.get_state()` per world. The numbers are those of 'local', bit
for bit: a world seeds its own generator and runs with one torch thread either way.

Failures never hang: each reply has a deadline (`timeout_s`); a worker that dies raises `WorkerDied` naming its envs
and exit code, and an exception inside a world comes back as `WorkerError` with the world's traceback. Workers exit
when the trainer closes them or when the trainer process goes away: a forked sibling may still hold the pipe open,
so an idle worker also checks every second that the trainer is still its parent.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

from esper_lab.config import ConfigError, WorldConfig
from esper_lab.env.data import load_digits_data
from esper_lab.env.groups import GroupedVectorEnv, WorldGroup, split_envs

DEFAULT_TIMEOUT_S = 300.0
START_TIMEOUT_S = 60.0
ORPHAN_CHECK_S = 1.0  # an idle worker checks this often whether the trainer is still its parent


class WorkerError(RuntimeError):
    """A world inside a worker process raised; the message carries its traceback."""


class WorkerDied(WorkerError):
    """A worker process exited or did not answer in time."""


def default_workers(num_envs: int) -> int:
    """One worker per core, never more than there are worlds."""
    return max(1, min(num_envs, os.cpu_count() or 1))


def _describe_error(exc: BaseException) -> str:
    """The error on one line, then the worker's traceback."""
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"


def _serve(conn: Any, cfg: WorldConfig, env_ids: list[int], trainer_pid: int) -> None:
    """A worker's loop: build the group, then answer (method, argument) requests until 'close' or a broken pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the trainer handles it
    sys.setprofile(None)  # a profiler's hook is inherited by the fork but its sampler thread is not: drop the hook
    threading.setprofile(None)
    try:
        group = WorldGroup(cfg, env_ids)
        conn.send(("ok", os.getpid()))
    except BaseException as exc:  # noqa: BLE001 - reported to the trainer, which raises it
        conn.send(("error", _describe_error(exc)))
        return
    while True:
        try:
            while not conn.poll(ORPHAN_CHECK_S):
                if os.getppid() != trainer_pid:  # the trainer died without closing us (SIGKILL, a crash)
                    return
            method, arg = conn.recv()
        except (EOFError, OSError):  # the trainer is gone
            return
        if method == "close":
            return
        try:
            conn.send(("ok", getattr(group, method)(arg)))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", _describe_error(exc)))


class ProcessVectorEnv(GroupedVectorEnv):
    """`num_envs` worlds in `workers` processes (default: one per core); the interface and numbers of `VectorEnv`."""

    def __init__(
        self, cfg: WorldConfig, num_envs: int, seed: int, *, workers: int | None = None, timeout_s: float | None = None
    ):
        if num_envs < 1:
            raise ValueError(f"ProcessVectorEnv needs at least one env, got num_envs={num_envs}")
        workers = default_workers(num_envs) if workers is None else workers
        if not 1 <= workers <= num_envs:
            raise ConfigError(f"workers must be between 1 and num_envs ({num_envs}), got {workers}")
        self.cfg, self.num_envs = cfg, num_envs
        self.timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
        self._init_streams(seed)
        self.groups = split_envs(num_envs, workers)
        load_digits_data(cfg.data_seed)  # cached here, inherited by every fork: the workers never import sklearn
        ctx = mp.get_context("fork")
        self.conns, self.procs = [], []
        try:
            for group in self.groups:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(child, cfg, group, os.getpid()), daemon=True,
                                   name=f"esper-worlds-{group}")
                proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)
            self.pids = self._gather("start", START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the workers (politely, then by force). Safe to call twice."""
        for conn in self.conns:
            try:
                conn.send(("close", None))
            except (OSError, ValueError):
                pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for conn in self.conns:
            conn.close()
        self.conns, self.procs = [], []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # --- the pipes --------------------------------------------------------------------------------------------

    def _call(self, method: str, args: list[Any]) -> list[Any]:
        if not self.conns:
            raise RuntimeError("ProcessVectorEnv is closed")
        for i, (conn, arg) in enumerate(zip(self.conns, args)):
            try:
                conn.send((method, arg))
            except (OSError, ValueError) as exc:
                raise WorkerDied(f"{self._describe(i)} is gone ({exc}) before {method}") from exc
        return self._gather(method)

    def _gather(self, what: str, timeout_s: float | None = None) -> list[Any]:
        """Every worker's reply in worker (= env) order, within one deadline; failures name the worker's envs."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        out = []
        for i, conn in enumerate(self.conns):
            while not conn.poll(0.5):
                if not self.procs[i].is_alive():
                    raise WorkerDied(f"{self._describe(i)} exited with code {self.procs[i].exitcode} during {what}")
                if time.monotonic() > deadline:
                    raise WorkerDied(f"{self._describe(i)} did not answer {what} in time")
            try:
                status, value = conn.recv()
            except (EOFError, OSError) as exc:
                raise WorkerDied(f"{self._describe(i)} closed its pipe during {what}") from exc
            if status != "ok":
                raise WorkerError(f"{self._describe(i)} failed in {what}: {value}")
            out.append(value)
        return out

    def _describe(self, i: int) -> str:
        group = self.groups[i]
        envs = f"env {group[0]}" if len(group) == 1 else f"envs {group}"
        pid = self.procs[i].pid if i < len(self.procs) else None
        return f"{envs} (worker process {i} of {len(self.groups)}, pid {pid})"
