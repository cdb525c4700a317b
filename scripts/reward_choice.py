"""Choose the default reward mode by measurement (issue 17), from the 10-minute `demo` runs of every mode.

Reads `results/reward-10min-<mode>-s<seed>.json` (written by `scripts/budget_runs.py --prefix reward ...`), scores
the three baselines under each mode's own reward (`esper-lab evaluate --set world.reward.mode=<mode>`, the same
unseen episodes; cached in `results/reward-baselines-<mode>.json`), and applies the rule:

- the trained policies' final validation accuracy gain over `wait` (same episode) per seed parameter, pooled over
  seeds and episodes: the best mode wins...
- ...among the modes whose return ranks the four policies (trained, heuristic, random, wait) in the same order as
  their final accuracy.

Then the acceptance check: the chosen mode against the heuristic, paired by episode seed over all seeds (final
accuracy difference and its 95 % interval), and its seed parameters over the heuristic's (at most 1.5).

    .venv/bin/python scripts/reward_choice.py            # prints the table, writes results/reward-choice.{json,txt}
    .venv/bin/python scripts/reward_choice.py --episodes 100   # also the acceptance check of the chosen mode on
                                                               # 100 episodes per seed (evaluated if missing)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from esper_lab.config import REWARD_MODES  # noqa: E402
from esper_lab.stats import paired_difference  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from budget_runs import EVAL_SEED  # noqa: E402  (the unseen episodes every evaluation here plays)

EPISODES = 20  # scripts/budget_runs.py's default evaluation
RESULTS = REPO / "results"
POLICIES = ("trained", "heuristic", "random", "wait")


def trained_runs(mode: str) -> dict[int, dict]:
    runs = {}
    for path in sorted(RESULTS.glob(f"reward-10min-{mode}-s*.json")):
        runs[int(path.stem.rsplit("-s", 1)[1])] = json.loads(path.read_text())["trained"]
    return runs


def baselines(mode: str) -> dict[str, dict]:
    path = RESULTS / f"reward-baselines-{mode}.json"
    if not path.is_file():
        subprocess.run([str(REPO / ".venv" / "bin" / "esper-lab"), "evaluate", "--preset", "demo", "--policy", "all",
                        "--episodes", str(EPISODES), "--seed", str(EVAL_SEED), "--set", f"world.reward.mode={mode}",
                        "--json", str(path)], check=True, cwd=REPO)
    return json.loads(path.read_text())


def pooled(runs: dict[int, dict], key: str) -> list[float]:
    return [x for seed in sorted(runs) for x in runs[seed][key]]


def row(mode: str) -> dict | None:
    runs = trained_runs(mode)
    if not runs:
        return None
    base = baselines(mode)
    n = len(runs)
    assert all(r["episode_seed"] == base["heuristic"]["episode_seed"] for r in runs.values()), "episodes differ"
    policies = {"trained": {k: pooled(runs, k) for k in ("return_list", "final_val_acc_list", "seed_params_list",
                                                          "fossilized_list")}}
    for name in POLICIES[1:]:  # the baselines' episodes, repeated once per seed: the same episodes every seed saw
        policies[name] = {k: base[name][k] * n for k in policies["trained"]}
    mean = {p: {k: statistics.fmean(v) for k, v in d.items()} for p, d in policies.items()}
    by_acc = sorted(POLICIES, key=lambda p: -mean[p]["final_val_acc_list"])
    by_return = sorted(POLICIES, key=lambda p: -mean[p]["return_list"])
    gain = mean["trained"]["final_val_acc_list"] - mean["wait"]["final_val_acc_list"]
    params = mean["trained"]["seed_params_list"]
    vs_heuristic = paired_difference(policies["trained"]["final_val_acc_list"],
                                     policies["heuristic"]["final_val_acc_list"])
    return {
        "mode": mode, "seeds": sorted(runs), "episodes": len(policies["trained"]["return_list"]),
        "mean": mean, "order_by_accuracy": by_acc, "order_by_return": by_return,
        "return_orders_like_accuracy": by_acc == by_return,
        "gain_over_wait": gain, "seed_params": params,
        "gain_per_1000_params": 1000 * gain / params if params else None,
        "vs_heuristic_acc": vs_heuristic.as_dict(),
        "params_over_heuristic": params / mean["heuristic"]["seed_params_list"],
    }


def choose(rows: list[dict]) -> dict:
    """The rule: best gain per seed parameter among the modes whose return orders the policies like accuracy."""
    eligible = [r for r in rows if r["return_orders_like_accuracy"] and r["gain_per_1000_params"] is not None]
    pool = eligible or rows
    best = max(pool, key=lambda r: r["gain_per_1000_params"] if r["gain_per_1000_params"] is not None else -1e9)
    ci = best["vs_heuristic_acc"]
    return {"chosen": best["mode"], "eligible": [r["mode"] for r in eligible],
            "accepts": bool(ci["low"] is not None and ci["low"] > 0 and best["params_over_heuristic"] <= 1.5)}


def table(rows: list[dict], choice: dict) -> str:
    lines = ["| mode | seeds | episodes | trained return | heuristic / random / wait return | final val acc % "
             "(trained) | gain over wait, points | seed params | points per 1,000 params | fossils per episode | "
             "return orders like accuracy | trained minus heuristic, acc [95 % CI] | params / heuristic's |",
             "|---" * 13 + "|"]
    for r in rows:
        m, ci = r["mean"], r["vs_heuristic_acc"]
        base = " / ".join(f"{m[p]['return_list']:.1f}" for p in POLICIES[1:])
        lines.append(f"| {r['mode']} | {len(r['seeds'])} | {r['episodes']} | {m['trained']['return_list']:.1f} | "
                     f"{base} | {m['trained']['final_val_acc_list']:.1f} | {r['gain_over_wait']:+.1f} | "
                     f"{r['seed_params']:.0f} | {r['gain_per_1000_params']:.2f} | "
                     f"{m['trained']['fossilized_list']:.2f} | {'yes' if r['return_orders_like_accuracy'] else 'no'} | "
                     f"{ci['mean']:+.1f} [{ci['low']:+.1f}, {ci['high']:+.1f}] | {r['params_over_heuristic']:.2f} |")
    lines += ["", f"Chosen by the rule: **{choice['chosen']}** (modes whose return orders the four policies like "
              f"accuracy: {', '.join(choice['eligible']) or 'none'}); acceptance (beats the heuristic with the 95 % "
              f"interval above 0, at most 1.5x its seed parameters): {'met' if choice['accepts'] else 'not met'}."]
    return "\n".join(lines)


def evaluate_more(mode: str, episodes: int) -> tuple[list[Path], Path]:
    """Each seed's checkpoint of `mode` (and wait) and the heuristic on `episodes` unseen episodes, two processes at a
    time (one per core); cached in results/reward-<episodes>ep-*.json."""
    exe = str(REPO / ".venv" / "bin" / "esper-lab")
    common = ["--episodes", str(episodes), "--seed", str(EVAL_SEED)]
    heuristic = RESULTS / f"reward-{episodes}ep-heuristic.json"
    jobs = [] if heuristic.is_file() else [[exe, "evaluate", "--preset", "demo", "--policy", "heuristic", *common,
                                            "--json", str(heuristic)]]
    outs = []
    for seed in sorted(trained_runs(mode)):
        out = RESULTS / f"reward-{episodes}ep-{mode}-s{seed}.json"
        outs.append(out)
        checkpoint = Path("/tmp/esper-budget-runs") / f"demo-10min-{mode}-s{seed}" / "checkpoint.pt"
        if not out.is_file():
            jobs.append([exe, "evaluate", "--checkpoint", str(checkpoint), "--policy", "none", *common, "--json",
                         str(out)])
    for pair in (jobs[i:i + 2] for i in range(0, len(jobs), 2)):
        procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL) for cmd in pair]
        assert all(p.wait() == 0 for p in procs), pair
    return outs, heuristic


def acceptance(mode: str, episodes: int) -> dict:
    """The chosen mode against the heuristic on `episodes` episodes per seed, paired by episode seed."""
    outs, heuristic_path = evaluate_more(mode, episodes)
    heuristic = json.loads(heuristic_path.read_text())["heuristic"]
    runs = [json.loads(p.read_text())["trained"] for p in outs]
    assert all(r["episode_seed"] == heuristic["episode_seed"] for r in runs), "episodes differ"
    trained_acc = [x for r in runs for x in r["final_val_acc_list"]]
    heuristic_acc = heuristic["final_val_acc_list"] * len(runs)
    params = statistics.fmean(x for r in runs for x in r["seed_params_list"])
    diff = paired_difference(trained_acc, heuristic_acc).as_dict()
    ratio = params / heuristic["seed_params_mean"]
    return {"mode": mode, "episodes": len(trained_acc), "vs_heuristic_acc": diff, "seed_params": params,
            "params_over_heuristic": ratio, "accepts": bool(diff["low"] > 0 and ratio <= 1.5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, help="also check the chosen mode on this many episodes per seed")
    args = parser.parse_args()
    rows = [r for r in map(row, REWARD_MODES) if r is not None]
    choice = choose(rows)
    text = table(rows, choice)
    if args.episodes:
        check = acceptance(choice["chosen"], args.episodes)
        choice["acceptance_more_episodes"] = check
        d = check["vs_heuristic_acc"]
        text += (f"\n\nOn {args.episodes} episodes per seed ({check['episodes']} paired): {check['mode']} minus the "
                 f"heuristic, final val acc {d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] points; seed params "
                 f"{check['seed_params']:.0f} ({check['params_over_heuristic']:.2f}x the heuristic's): "
                 f"{'met' if check['accepts'] else 'not met'}.")
    print(text)
    (RESULTS / "reward-choice.json").write_text(json.dumps({"rows": rows, **choice}, indent=2) + "\n")
    (RESULTS / "reward-choice.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
