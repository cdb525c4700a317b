"""What the out-of-process backends share ('process' and 'ray'): the worlds split into contiguous groups, one
`WorldGroup` per worker, and one driver class, `GroupedVectorEnv`, that keeps the episode-seed stream and the last
reports and turns each call into one request per group. A backend supplies only the transport: `_call(method,
per-group arguments) -> per-group results`, and `close()`. Snapshots (`get_states` / `set_states`) cross as bytes,
one `World.get_state()` per world.

`reports()` and `masks()` cost no round trip: the driver keeps the last reports, and a `WorldReport` computes its own
legal-action masks (exactly what `World.action_masks()` returns). Only plain picklable values cross to the workers.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np
import torch

from esper_lab.actions import NUM_HEADS
from esper_lab.config import WorldConfig
from esper_lab.env.engines import make_engine, require_snapshots, snapshot_engine
from esper_lab.env.morpho_env import WorldReport, stack_masks

StepResult = tuple[WorldReport, float, bool, dict[str, Any]]


def split_envs(num_envs: int, workers: int) -> list[list[int]]:
    """Contiguous env groups, one per actor, sizes differing by at most one: split_envs(5, 2) = [[0, 1, 2], [3, 4]]."""
    return [list(map(int, part)) for part in np.array_split(np.arange(num_envs), workers)]


def masks_of(reports: Sequence[WorldReport]) -> dict[str, torch.Tensor]:
    """Legal-action masks `{head: bool [E, k]}` and `OP_SLOT_KEY: [E, NUM_OPS, S]`, computed from the reports alone
    (no round trip to the workers)."""
    return stack_masks([report.action_masks() for report in reports])


def step_batch(
    results: Sequence[tuple[WorldReport, float, bool, dict[str, Any]]],
) -> tuple[list[WorldReport], torch.Tensor, torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Per-world `(report, reward, truncated, info)` in env order -> `VectorEnv.step`'s return value."""
    rewards = torch.tensor([r for _, r, _, _ in results], dtype=torch.float32)  # [E]
    truncated = torch.tensor([t for _, _, t, _ in results], dtype=torch.bool)  # [E]
    terminated = torch.zeros(len(results), dtype=torch.bool)  # [E]
    return [report for report, _, _, _ in results], rewards, terminated, truncated, [r[3] for r in results]


class WorldGroup:
    """Some worlds of one vector env, living in one worker: a forked process ('process') or a Ray actor ('ray',
    where `ray.remote` wraps this plain class). They step by `cfg.engine`: with 'batched', the worker's worlds are
    one batched computation."""

    def __init__(self, cfg: WorldConfig, env_ids: Sequence[int]):
        torch.set_num_threads(1)  # a world's ops are tiny; the world itself uses cfg.env_threads while it works
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set in this process
            pass
        self.cfg, self.env_ids = cfg, list(env_ids)
        self.engine = make_engine(cfg, len(self.env_ids), labels=self.env_ids)
        self.worlds = self.engine.worlds
        self._last: list[tuple[WorldReport, float, bool, dict[str, Any]]] = []

    def ready(self) -> dict[str, Any]:
        """Where this actor lives (for error messages): pid, node IP and id, torch threads."""
        import ray

        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "node_id": ray.get_runtime_context().get_node_id(), "threads": torch.get_num_threads()}

    def cpu_seconds(self) -> float:
        """CPU time this actor process has used (all its threads): what a step costs, whatever else shares the
        cores (benchmarks)."""
        return time.process_time()

    def reset(self, seeds: Sequence[int]) -> list[WorldReport]:
        return self.engine.reset(seeds)

    def step(self, rows: Sequence[Sequence[int]]) -> list[tuple[WorldReport, float, bool, dict[str, Any]]]:
        """Step every world with its row of 8 head values: `[(report, reward, truncated, info)]` in env order."""
        results = self.engine.step(rows)
        self._last = [(world.report(), float(reward), bool(truncated), info)
                      for world, (reward, truncated, info) in zip(self.worlds, results)]
        return self._last

    def get_states(self, _: None = None) -> list[bytes]:
        """`World.get_state()` of every world of the group, in env order."""
        return snapshot_engine(self.engine, self.cfg).get_states()

    def set_states(self, states: Sequence[bytes]) -> list[tuple[int, WorldReport]]:
        """Replace the group's worlds by `states` (in env order): `[(episode seed, report)]` of the new worlds."""
        reports = snapshot_engine(self.engine, self.cfg).set_states(states)
        return [(world.seed, report) for world, report in zip(self.worlds, reports)]

    def echo(self, rows: Sequence[Sequence[int]]) -> list[tuple[WorldReport, float, bool, dict[str, Any]]]:
        """The last `step`'s results again, with no world work: the round trip Ray adds to a step (benchmarks)."""
        return self._last


class GroupedVectorEnv:
    """The `VectorEnv` interface over worker groups. Subclasses set `cfg`, `num_envs`, `groups` and call
    `_init_streams(seed)`, and implement `_call` and `close`."""

    cfg: WorldConfig
    num_envs: int
    groups: list[list[int]]

    def _init_streams(self, seed: int) -> None:
        self._seeds = np.random.default_rng(seed)  # the same episode-seed stream as VectorEnv
        self.episode_seeds: list[int] = []
        self._reports: list[WorldReport] | None = None

    def _call(self, method: str, args: list[Any]) -> list[Any]:
        """Send `args[g]` to group g's `WorldGroup.<method>`; return the results in group order."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def reset(self, episode_seeds: Sequence[int] | None = None) -> list[WorldReport]:
        """Start a fresh episode in every world (as `VectorEnv.reset`). Returns the reports of epoch 1."""
        if episode_seeds is None:
            episode_seeds = [int(s) for s in self._seeds.integers(0, 2**62, size=self.num_envs)]
        if len(episode_seeds) != self.num_envs:
            raise ValueError(f"reset: {len(episode_seeds)} episode seeds for {self.num_envs} envs")
        self.episode_seeds = [int(s) for s in episode_seeds]
        parts = self._call("reset", [[self.episode_seeds[e] for e in group] for group in self.groups])
        self._reports = [report for part in parts for report in part]
        return list(self._reports)

    def reports(self) -> list[WorldReport]:
        """What every world looks like now (kept from the last reset/step: no round trip)."""
        if self._reports is None:
            raise RuntimeError(f"{type(self).__name__}.reports called before reset()")
        return list(self._reports)

    def masks(self) -> dict[str, torch.Tensor]:
        """Legal-action masks of every world: `{head: bool [E, k]}` in `HEAD_NAMES` order."""
        return masks_of(self.reports())

    def step(
        self, actions: torch.Tensor
    ) -> tuple[list[WorldReport], torch.Tensor, torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
        """`actions [E, 8] int64` -> `(reports, rewards float32 [E], terminated bool [E] (always False),
        truncated bool [E], infos)`, as `VectorEnv.step`."""
        reports, rewards, terminated, truncated, infos = step_batch(self._step_results(actions, "step"))
        self._reports = reports
        return list(reports), rewards, terminated, truncated, infos

    def get_states(self) -> list[bytes]:
        """A snapshot of every world (`World.get_state`), in env order, as `VectorEnv.get_states`."""
        require_snapshots(self.cfg)
        if self._reports is None:
            raise RuntimeError(f"{type(self).__name__}.get_states called before reset()")
        parts = self._call("get_states", [None] * len(self.groups))
        return [state for part in parts for state in part]

    def set_states(self, states: Sequence[bytes]) -> list[WorldReport]:
        """Replace every world by its snapshot and return the reports, as `VectorEnv.set_states`; the cached
        reports and `episode_seeds` follow the new worlds. Each worker checks its own snapshots before changing its
        worlds; if one worker refuses (a snapshot of another config), the others have already changed: set the
        states again, or reset."""
        require_snapshots(self.cfg)
        if len(states) != self.num_envs:
            raise ValueError(f"set_states: {len(states)} states for {self.num_envs} envs")
        parts = self._call("set_states", [[states[e] for e in group] for group in self.groups])
        restored = [pair for part in parts for pair in part]  # [(seed, report)] in env order
        self.episode_seeds = [seed for seed, _ in restored]
        self._reports = [report for _, report in restored]
        return list(self._reports)

    def _step_results(self, actions: torch.Tensor, method: str) -> list[StepResult]:
        actions = torch.as_tensor(actions)
        if actions.shape != (self.num_envs, NUM_HEADS):
            raise ValueError(f"step: actions must be [{self.num_envs}, {NUM_HEADS}], got {list(actions.shape)}")
        rows = actions.to(torch.int64).tolist()  # [E][8] plain ints: 8 int64 per world on the wire
        parts = self._call(method, [[rows[e] for e in group] for group in self.groups])
        return [result for part in parts for result in part]
