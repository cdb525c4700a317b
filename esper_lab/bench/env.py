"""`esper-lab bench env`: how long one env step takes, split into host training, validation + counterfactuals and
features.

Wall-clock milliseconds (`*_ms`) are what a run experiences; CPU milliseconds of the stepping thread (`*_cpu_ms`)
are what the step costs, and stay meaningful when other processes share the cores (the wall figures then grow).

The benchmark plays the heuristic policy (so seeds are germinated, blended and fossilized as in a real episode) and
reports medians over `steps` steps, resetting whenever an episode ends. The very first step (warm-up) and each
episode's last step (which trains no further epoch) are not counted.
"""

from __future__ import annotations

import time

from esper_lab.bench.timing import summarize
from esper_lab.config import WorldConfig
from esper_lab.env.morpho_env import World
from esper_lab.features import batch_obs_to_features
from esper_lab.policy.baselines import HeuristicPolicy


def bench_env(cfg: WorldConfig, steps: int, seed: int) -> dict[str, float]:
    """Median milliseconds per env step: `train_ms`, `validate_ms` (validation + counterfactuals), `features_ms`,
    `total_ms` (the whole step plus features), each also as `*_cpu_ms`; plus `steps` and `env_threads`."""
    world, policy = World(cfg), HeuristicPolicy()
    keys = ("train", "validate", "features", "total")
    samples: dict[str, list[float]] = {f"{k}_{unit}": [] for k in keys for unit in ("ms", "cpu_ms")}
    episode, warm = 0, False
    report = world.reset(seed)
    policy.reset(1)
    while len(samples["total_ms"]) < steps:
        action = policy.act([report], {k: v[None] for k, v in report.action_masks().items()})[0]
        t0, c0 = time.perf_counter(), time.thread_time()
        _, truncated, _ = world.step(action.tolist())
        t1, c1 = time.perf_counter(), time.thread_time()
        report = world.report()
        batch_obs_to_features([report])
        t2, c2 = time.perf_counter(), time.thread_time()
        if warm and not truncated:
            for key in ("train_ms", "validate_ms", "train_cpu_ms", "validate_cpu_ms"):
                samples[key].append(world.timings[key])
            samples["features_ms"].append((t2 - t1) * 1e3)
            samples["features_cpu_ms"].append((c2 - c1) * 1e3)
            samples["total_ms"].append((t2 - t0) * 1e3)
            samples["total_cpu_ms"].append((c2 - c0) * 1e3)
        warm = True
        if truncated:
            episode += 1
            report = world.reset(seed + episode)
            policy.reset(1)
    medians = {key: summarize(values)["median"] for key, values in samples.items()}
    return {**medians, "steps": steps, "env_threads": cfg.env_threads}
