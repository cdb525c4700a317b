"""Evaluate policies on the same episodes: return, final validation accuracy, fossilized seeds, seed parameters.

Every policy plays the same episode seeds (common random numbers: the same initial hosts and data orders), so the
differences between policies are the differences their decisions make. Any `baselines.Policy` can be evaluated,
so a trained policy plugs in by implementing `reset` and `act`.

With `compare=True` (what `esper-lab evaluate` does) each policy also gets what a user looks at: its accuracy gain
over `wait` on the same episode, the seed parameters it paid per point of that gain, and every policy that is not a
baseline a paired comparison with each baseline on the common episode seeds (esper_lab.stats).
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from esper_lab.config import WorldConfig
from esper_lab.env.backends import close_vector_env, make_worlds
from esper_lab.env.morpho_env import SUMMARY_KEY
from esper_lab.env.process_vector import default_workers
from esper_lab.policy.baselines import BASELINES, Policy, make_baseline
from esper_lab.stats import LEVEL, paired_difference

METRICS = ("return", "final_val_acc", "fossilized", "seed_params")
REFERENCE = "wait"  # the gain's reference: the policy that never germinates, on the same episode
GAIN = f"gain_over_{REFERENCE}"  # the gain's fields: gain_over_wait_list / _mean / _std (points of final val acc)
PAIRED = ("final_val_acc", "return")  # the metrics of the paired comparison


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
    policy_names: Sequence[str | Policy], cfg: WorldConfig, episodes: int, seed: int, workers: int | None = None,
    compare: bool = False,
) -> dict[str, dict[str, Any]]:
    """`{policy name: summary}` over `episodes` episodes starting at episode seed `seed`. Names are baselines
    ('heuristic', 'random', 'wait'); a `Policy` object is evaluated under its `name`. The random baseline's own
    sampling is seeded with `seed`. `workers`: as in `run_episodes`. `compare`: also `add_comparisons`, first
    running `wait` on the same episodes when it is not among the policies (its summary then has `run_for_gain`)."""
    seeds = episode_seeds(seed, episodes)
    results = {}
    for entry in policy_names:
        policy = make_baseline(entry, seed) if isinstance(entry, str) else entry
        results[policy.name] = summarize(run_episodes(policy, cfg, seeds, workers=workers))
    if compare:
        if REFERENCE not in results:
            reference = run_episodes(make_baseline(REFERENCE, seed), cfg, seeds, workers=workers)
            results[REFERENCE] = {**summarize(reference), "run_for_gain": True}
        add_comparisons(results)
    return results


def _by_seed(summary: dict[str, Any], metric: str) -> dict[int, float]:
    return dict(zip(summary["episode_seed"], summary[f"{metric}_list"]))


def common_seeds(a: dict[str, Any], b: dict[str, Any]) -> list[int]:
    """The episode seeds both summaries played, in `a`'s order."""
    theirs = set(b["episode_seed"])
    return [s for s in a["episode_seed"] if s in theirs]


def paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Policy `a` minus policy `b` on their common episode seeds: `{"episodes": n, metric: Interval.as_dict()}` for
    each metric in PAIRED (mean difference, sample std, 95 % t interval or None with a note)."""
    seeds = common_seeds(a, b)
    if not seeds:
        raise ValueError("no common episode seeds to pair")
    out: dict[str, Any] = {"episodes": len(seeds)}
    for metric in PAIRED:
        x, y = _by_seed(a, metric), _by_seed(b, metric)
        out[metric] = paired_difference([x[s] for s in seeds], [y[s] for s in seeds]).as_dict()
    return out


def params_per_point(seed_params: float, gain: float) -> float | None:
    """Seed parameters paid per point of accuracy gained; None (shown "n/a") when the gain is not positive."""
    return seed_params / gain if gain > 0 else None


def add_comparisons(results: dict[str, dict[str, Any]]) -> None:
    """Adds to every summary in `results` (which must hold `wait`), in place: `gain_over_wait_list` (final val acc
    minus wait's on the same episode seed, per common episode), its `_mean` and `_std` (population, as the other
    metrics), and `seed_params_per_point` (seed_params_mean / gain_over_wait_mean, None when the gain is not
    positive); and to every policy whose name is not a baseline's, `paired`: `{baseline: paired(policy, baseline)}`
    for each baseline in `results`."""
    if REFERENCE not in results:
        raise ValueError(f"the gain needs {REFERENCE!r} among the results")
    reference = results[REFERENCE]
    ref = _by_seed(reference, "final_val_acc")
    for name, r in results.items():
        acc = _by_seed(r, "final_val_acc")
        gains = [acc[s] - ref[s] for s in common_seeds(r, reference)]
        if not gains:
            raise ValueError(f"{name} shares no episode seed with {REFERENCE}")
        r[f"{GAIN}_list"] = gains
        r[f"{GAIN}_mean"] = statistics.fmean(gains)
        r[f"{GAIN}_std"] = statistics.pstdev(gains)
        r["seed_params_per_point"] = params_per_point(r["seed_params_mean"], r[f"{GAIN}_mean"])
        if name not in BASELINES:
            r["paired"] = {b: paired(r, results[b]) for b in BASELINES if b in results}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A fixed-width text table: one row per policy, mean +- std of each metric; after `add_comparisons`, also the
    gain over wait and seed params per point, then the paired comparisons and notes on what is missing."""
    compared = all(f"{GAIN}_mean" in r for r in results.values()) and bool(results)
    header = (f"{'policy':<12}{'episodes':>9}{'return':>18}{'final val acc %':>20}{'fossilized':>14}{'seed params':>18}"
              f"{'illegal %':>11}" + (f"{'gain vs ' + REFERENCE:>16}{'params/pt':>11}" if compared else ""))
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        cells = [f"{r[f'{m}_mean']:.2f} ± {r[f'{m}_std']:.2f}" for m in METRICS]
        row = (f"{name:<12}{r['episodes']:>9}{cells[0]:>18}{cells[1]:>20}{cells[2]:>14}{cells[3]:>18}"
               f"{100 * r['illegal_fraction']:>11.1f}")
        if compared:
            per_point = r["seed_params_per_point"]
            gain = f"{r[f'{GAIN}_mean']:+.2f} ± {r[f'{GAIN}_std']:.2f}"
            row += f"{gain:>16}{'n/a' if per_point is None else f'{per_point:.0f}':>11}"
        lines.append(row)
    return "\n".join(line.rstrip() for line in lines + (_comparison_lines(results) if compared else []))


def _comparison_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """The paired comparison of each non-baseline policy and the notes under the table."""
    lines = [f"gain vs {REFERENCE}: final val acc minus {REFERENCE}'s on the same episode seed (points)",
             "params/pt: seed params per point of mean gain (n/a where the mean gain is not positive)"]
    if results[REFERENCE].get("run_for_gain"):
        lines.append(f"{REFERENCE} was not asked for: it ran on the same episode seeds as the gain's reference")
    candidates = [name for name, r in results.items() if "paired" in r]
    if not candidates:
        lines.append("no trained policy among the results: no paired comparison (esper-lab evaluate --checkpoint)")
    for name in candidates:
        lines += ["", f"{name} minus each baseline, paired by episode seed: mean [{100 * LEVEL:.0f} % t interval]",
                  f"{'vs':<12}{'episodes':>9}{'final val acc (points)':>30}{'return':>30}"]
        notes = set()
        for baseline, pair in results[name]["paired"].items():
            cells = [_difference(pair[m]) for m in PAIRED]
            lines.append(f"{baseline:<12}{pair['episodes']:>9}{cells[0]:>30}{cells[1]:>30}")
            notes |= {pair[m]["note"] for m in PAIRED if pair[m]["note"]}
        lines += sorted(notes) if notes else ["* marks an interval that excludes 0"]
    return lines


def _difference(d: dict[str, Any]) -> str:
    """`+1.00 [-5.20, +7.20]`, with ` *` when the interval excludes 0; the bare mean when there is no interval."""
    if d["low"] is None:
        return f"{d['mean']:+.2f}"
    star = " *" if d["low"] > 0 or d["high"] < 0 else "  "
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]{star}"
