"""Where the worlds run: one factory for every `VectorEnv` backend (the seam the trainer sees)."""

from __future__ import annotations

from esper_lab.config import TrainConfig
from esper_lab.env.vector import VectorEnv


def make_vector_env(cfg: TrainConfig) -> VectorEnv:
    """The trainer's worlds for `cfg.backend`: 'local' steps them in this process."""
    if cfg.backend == "local":
        return VectorEnv(cfg.world, cfg.num_envs, cfg.seed)
    raise ValueError(f"backend {cfg.backend!r} is not available in this build; use 'local'")
