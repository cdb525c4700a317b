"""Evaluate policies on the same episodes: return, final validation accuracy, fossilized seeds, seed parameters.

Every policy plays the same episode seeds (common random numbers: the same initial hosts and data orders), so the
differences between policies are the differences their decisions make. Any `baselines.Policy` can be evaluated,
so a trained policy plugs in by implementing `reset` and `act`.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from esper_lab.config import WorldConfig
from esper_lab.env.backends import close_vector_env, make_worlds
from esper_lab.env.morpho_env import SUMMARY_KEY
from esper_lab.env.process_vector import default_workers
from esper_lab.policy.baselines import Policy, make_baseline

METRICS = ("return", "final_val_acc", "fossilized", "seed_params")


def episode_seeds(seed: int, episodes: int) -> list[int]:
    """The evaluation episodes for `seed`: `seed, seed + 1, ...`."""
    return [seed + i for i in range(episodes)]


def run_episodes(
    policy: Policy, cfg: WorldConfig, seeds: Sequence[int], batch: int = 8, workers: int | None = None
) -> list[dict[str, Any]]:
    """Play one episode per seed (up to `batch` worlds at a time); returns each episode's summary.

    The worlds step in `workers` worker processes (default: one per core; 1 = in this process). The policy always
    acts in this process, and the numbers do not depend on `workers`."""
    summaries: list[dict[str, Any]] = []
    for start in range(0, len(seeds), batch):
        chunk = list(seeds[start:start + batch])
        n = default_workers(len(chunk)) if workers is None else min(workers, len(chunk))
        env = make_worlds(cfg, len(chunk), seed=0, backend="local" if n == 1 else "process", workers=n)
        try:
            reports = env.reset(chunk)
            policy.reset(len(chunk))
            done = False
            while not done:
                actions = policy.act(reports, env.masks())  # [E, 8]
                reports, _, _, truncated, infos = env.step(actions)
                done = bool(truncated.all())
        finally:
            close_vector_env(env)
        summaries += [{**info[SUMMARY_KEY], "episode_seed": s, "steps": cfg.max_epochs}
                      for info, s in zip(infos, chunk)]
    return summaries


def summarize(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (population) of each metric, the per-episode lists, and `illegal_fraction` (illegal actions /
    env steps over every episode)."""
    out: dict[str, Any] = {"episodes": len(summaries)}
    out["illegal_fraction"] = sum(s["illegal_actions"] for s in summaries) / max(sum(s["steps"] for s in summaries), 1)
    for key in (*METRICS, "germinated", "pruned", "illegal_actions", "episode_seed"):
        values = [s[key] for s in summaries]
        out[key if key == "episode_seed" else f"{key}_list"] = values
        if key in METRICS:
            out[f"{key}_mean"] = statistics.fmean(values)
            out[f"{key}_std"] = statistics.pstdev(values)
    return out


def evaluate_policies(
    policy_names: Sequence[str | Policy], cfg: WorldConfig, episodes: int, seed: int, workers: int | None = None
) -> dict[str, dict[str, Any]]:
    """`{policy name: summary}` over `episodes` episodes starting at episode seed `seed`. Names are baselines
    ('heuristic', 'random', 'wait'); a `Policy` object is evaluated under its `name`. The random baseline's own
    sampling is seeded with `seed`. `workers`: as in `run_episodes`."""
    seeds = episode_seeds(seed, episodes)
    results = {}
    for entry in policy_names:
        policy = make_baseline(entry, seed) if isinstance(entry, str) else entry
        results[policy.name] = summarize(run_episodes(policy, cfg, seeds, workers=workers))
    return results


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A fixed-width text table: one row per policy, mean +- std of each metric."""
    header = (f"{'policy':<12}{'episodes':>9}{'return':>18}{'final val acc %':>20}{'fossilized':>14}{'seed params':>18}"
              f"{'illegal %':>11}")
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        cells = [f"{r[f'{m}_mean']:.2f} ± {r[f'{m}_std']:.2f}" for m in METRICS]
        lines.append(f"{name:<12}{r['episodes']:>9}{cells[0]:>18}{cells[1]:>20}{cells[2]:>14}{cells[3]:>18}"
                     f"{100 * r['illegal_fraction']:>11.1f}")
    return "\n".join(lines)
