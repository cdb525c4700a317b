"""`esper-lab bench train`: steps per second of the whole loop, split into env, policy inference and update."""

from __future__ import annotations

from typing import Any

from esper_lab.bench.timing import summarize
from esper_lab.config import TrainConfig


def bench_train(cfg: TrainConfig, updates: int = 3) -> dict[str, Any]:
    """Run one warm-up update, then `updates` timed ones (no run directory). Returns medians per update: `sps`,
    `seconds_per_update`, `env_seconds` / `policy_seconds` / `update_seconds` and their fractions, plus the sizes."""
    from esper_lab.rl.trainer import Trainer

    trainer = Trainer(cfg)
    try:
        trainer.train_step()  # warm-up: allocator, oneDNN primitives
        records = [trainer.train_step() for _ in range(updates)]
    finally:
        trainer.close()

    def med(key: str) -> float:
        return summarize([r[key] for r in records])["median"]

    total = med("rollout_seconds") + med("update_seconds")
    return {
        "backend": cfg.backend,
        "num_envs": cfg.num_envs,
        "episode_length": cfg.world.max_epochs,
        "steps_per_update": cfg.num_envs * cfg.world.max_epochs,
        "updates_timed": updates,
        "sps": med("sps"),
        "seconds_per_update": total,
        "env_seconds": med("env_seconds"),
        "policy_seconds": med("policy_seconds"),
        "update_seconds": med("update_seconds"),
        "env_fraction": med("env_seconds") / total,
        "policy_fraction": med("policy_seconds") / total,
        "update_fraction": med("update_seconds") / total,
    }
