"""How a set of worlds steps (`WorldConfig.engine`), whatever the transport that holds them ('local', 'process',
'ray'): `make_engine(cfg, worlds)` is what `VectorEnv` and each `WorldGroup` step their worlds with.

    reset(seeds) -> [WorldReport]                      episode seeds[e] in world e; epoch 1 trained
    step(rows)   -> [(reward, truncated, info)]       rows[e] = world e's 8 head values; World.step for each
    get_states() -> [bytes]                            'sequential' only: World.get_state of each world
    set_states(states) -> [WorldReport]                'sequential' only: the worlds become the snapshots

'sequential' calls `World.reset` / `World.step` one world after another; 'batched' (`env/batched/`) runs the same
per-world decisions and trains all the worlds' hosts and seeds as one computation. Snapshots need 'sequential':
the batched engine keeps the parameters in stacked tensors, not in the worlds (`require_snapshots` says so).
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

    def get_states(self) -> list[bytes]:
        """`World.get_state()` of every world, in order."""
        return [world.get_state() for world in self.worlds]

    def set_states(self, states: Sequence[bytes]) -> list[WorldReport]:
        """Replace world e by the snapshot `states[e]` (taken after a reset, of a world with this config); returns
        the reports. Every snapshot is checked before any world changes."""
        if len(states) != len(self.worlds):
            raise ValueError(f"set_states: {len(states)} states for {len(self.worlds)} worlds")
        restored = for_each_world(self.worlds, _restore, states, self.labels)
        self.worlds[:] = restored  # in place: the vector env holding this list sees the new worlds
        return [world.report() for world in self.worlds]


def _restore(world: World, state: bytes) -> World:
    """The world in `state`, which must have `world`'s config and have started an episode (else ValueError)."""
    restored = World.from_state(state, world.cfg)
    if restored.host is None:
        raise ValueError("the snapshot was taken before reset(): it has no episode to report on")
    return restored


def require_snapshots(cfg: WorldConfig) -> None:
    """Raise ValueError unless worlds stepped by `cfg.engine` can be snapshotted (only 'sequential')."""
    if cfg.engine != "sequential":
        raise ValueError(f"world snapshots need world.engine='sequential', got {cfg.engine!r}: the batched engine "
                         "keeps the parameters in stacked tensors, not in the worlds")


def snapshot_engine(engine: Engine, cfg: WorldConfig) -> SequentialWorlds:
    """`engine` (made by `make_engine(cfg, ...)`) as an engine that snapshots its worlds; ValueError otherwise."""
    require_snapshots(cfg)
    assert isinstance(engine, SequentialWorlds), type(engine)  # make_engine's choice for 'sequential'
    return engine


def make_engine(cfg: WorldConfig, num_worlds: int, labels: Sequence[int] | None = None) -> Engine:
    """`num_worlds` fresh worlds of `cfg`, stepped by the engine `cfg.engine` names."""
    worlds = [World(cfg) for _ in range(num_worlds)]
    if cfg.engine == "sequential":
        return SequentialWorlds(worlds, labels)
    if cfg.engine == "batched":
        return BatchedWorlds(worlds, labels)
    raise ValueError(f"unknown engine {cfg.engine!r}; choose one of {ENGINES}")
