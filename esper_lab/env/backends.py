"""Where the worlds run: one factory for every `VectorEnv` backend (the seam the trainer sees).

Every backend has the same interface and gives the same numbers for the same config and seed:

    reset(episode_seeds) -> list[WorldReport]          reports() -> list[WorldReport]
    masks() -> {head: bool [E, k]}                     step(actions [E, 8]) -> (reports, rewards, term, trunc, infos)
    close()                                             release workers (a no-op for 'local')
    get_states() -> list[bytes]                         a snapshot of every world (World.get_state), env order
    set_states(states) -> list[WorldReport]             every world replaced by its snapshot; their reports

Snapshots need `world.engine == 'sequential'` (ValueError otherwise); the bytes are pickles for our own processes,
never for storage (World.get_state).

'local' steps the worlds one after another in this process (`env/vector.py`); 'process' steps them in parallel in
worker processes on this machine, one per core (`env/process_vector.py`); 'ray' puts them in Ray actors, stepped in
parallel, on this machine or on a cluster (`env/ray_vector.py`, docs/scale-out.md).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch

from esper_lab.config import BACKENDS, TrainConfig, WorldConfig
from esper_lab.env.morpho_env import WorldReport
from esper_lab.env.vector import VectorEnv


class WorldBatch(Protocol):
    """What the trainer uses of a vector env."""

    num_envs: int

    def reset(self, episode_seeds: Sequence[int] | None = None) -> list[WorldReport]: ...

    def reports(self) -> list[WorldReport]: ...

    def masks(self) -> dict[str, torch.Tensor]: ...

    def step(
        self, actions: torch.Tensor
    ) -> tuple[list[WorldReport], torch.Tensor, torch.Tensor, torch.Tensor, list[dict[str, Any]]]: ...

    def get_states(self) -> list[bytes]: ...

    def set_states(self, states: Sequence[bytes]) -> list[WorldReport]: ...


def make_vector_env(cfg: TrainConfig) -> WorldBatch:
    """The trainer's worlds: `make_worlds` with the config's world, envs, seed, backend, workers and Ray options."""
    return make_worlds(cfg.world, cfg.num_envs, cfg.seed, cfg.backend, cfg.workers, ray_address=cfg.ray_address,
                       ray_cpus_per_actor=cfg.ray_cpus_per_actor, ray_gpus_per_actor=cfg.ray_gpus_per_actor)


def make_worlds(
    world: WorldConfig,
    num_envs: int,
    seed: int,
    backend: str = "local",
    workers: int | None = None,
    *,
    ray_address: str | None = None,
    ray_cpus_per_actor: float = 1.0,
    ray_gpus_per_actor: float = 0.0,
) -> WorldBatch:
    """`num_envs` worlds on `backend`: 'local' steps them in this process; 'process' in `workers` worker processes
    (None = one per core); 'ray' in Ray actors (starting a local Ray instance, or joining `ray_address`). Without Ray
    installed, 'ray' raises `BackendUnavailable` (a `ConfigError`) saying `pip install -e '.[ray]'`."""
    if backend == "local":
        return VectorEnv(world, num_envs, seed)
    if backend == "process":
        from esper_lab.env.process_vector import ProcessVectorEnv

        return ProcessVectorEnv(world, num_envs, seed, workers=workers)
    if backend == "ray":
        from esper_lab.env.ray_vector import RayVectorEnv

        return RayVectorEnv(world, num_envs, seed, address=ray_address, workers=workers,
                            cpus_per_actor=ray_cpus_per_actor, gpus_per_actor=ray_gpus_per_actor)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def close_vector_env(envs: Any) -> None:
    """Release a vector env's workers if it has any (`close()`); local envs have nothing to release."""
    close = getattr(envs, "close", None)
    if callable(close):
        close()
