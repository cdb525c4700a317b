"""How a set of worlds steps (`WorldConfig.engine`), whatever the transport that holds them ('local', 'process',
'ray'): `make_engine(cfg, worlds)` is what `VectorEnv` and each `WorldGroup` step their worlds with.

    reset(seeds) -> [WorldReport]                      episode seeds[e] in world e; epoch 1 trained
    step(rows)   -> [(reward, truncated, info)]       rows[e] = world e's 8 head values; World.step for each

'sequential' calls `World.reset` / `World.step` one world after another; 'batched' (`env/batched/`) runs the same
per-world decisions and trains all the worlds' hosts and seeds as one computation.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from esper_lab.config import ENGINES, WorldConfig
from esper_lab.env.batched.engine import BatchedWorlds
from esper_lab.env.morpho_env import World, WorldReport, for_each_world


class Engine(Protocol):
    worlds: list[World]

    def reset(self, seeds: Sequence[int]) -> list[WorldReport]: ...

    def step(self, rows: Sequence[Sequence[int]]) -> list[tuple[float, bool, dict[str, Any]]]: ...


class SequentialWorlds:
    """The worlds stepped one after another (`World.reset` / `World.step`). `labels` (env ids) name a failing
    world in errors."""

    def __init__(self, worlds: Sequence[World], labels: Sequence[int] | None = None):
        self.worlds, self.labels = list(worlds), labels

    def reset(self, seeds: Sequence[int]) -> list[WorldReport]:
        return for_each_world(self.worlds, World.reset, seeds, self.labels)

    def step(self, rows: Sequence[Sequence[int]]) -> list[tuple[float, bool, dict[str, Any]]]:
        return for_each_world(self.worlds, World.step, rows, self.labels)


def make_engine(cfg: WorldConfig, num_worlds: int, labels: Sequence[int] | None = None) -> Engine:
    """`num_worlds` fresh worlds of `cfg`, stepped by the engine `cfg.engine` names."""
    worlds = [World(cfg) for _ in range(num_worlds)]
    if cfg.engine == "sequential":
        return SequentialWorlds(worlds, labels)
    if cfg.engine == "batched":
        return BatchedWorlds(worlds, labels)
    raise ValueError(f"unknown engine {cfg.engine!r}; choose one of {ENGINES}")
