"""Named variants of `demo` trained on the same budget, seed by seed, and evaluated on the same unseen episodes.

The default variants are the README's "Every sampled action can execute" table (conditional vs independent masks);
`--variant NAME[:FIELD=VALUE,...]` (repeatable) names others, each a set of `--set` overrides on `demo`. For each seed,
one run per variant (interleaved, variant by variant), each on the same budget: a wall-clock budget (`--minutes`, what
a user of the dashboard spends) or a number of updates (`--updates`, the same experience whatever the machine's
load); then each checkpoint is evaluated on the same unseen episodes (episode seeds from 5,000,000 on: no training
world of seeds 0 to 4 uses them), beside the baselines.

    .venv/bin/python scripts/budget_runs.py                               # masks: 3 seeds x 10 minutes x 2 (~70 min)
    .venv/bin/python scripts/budget_runs.py --updates 100                 # masks: 3 seeds x 100 updates x 2
    .venv/bin/python scripts/budget_runs.py --prefix engine --variant batched   # demo as it is, 3 seeds x 10 min
    .venv/bin/python scripts/budget_runs.py --minutes 1 --seeds 0         # a quick look
    .venv/bin/python scripts/budget_runs.py --summarize-only              # the table from results/ (printed only)
    .venv/bin/python scripts/budget_runs.py --seeds 0 ...; ... --summarize-only --write-summary   # re-run one seed

Runs go to `--runs-root` (default /tmp/esper-budget-runs, not the user's runs/); evaluations and the summary to
`results/<prefix>-<budget>-<variant>-s<seed>.json` and `results/<prefix>-<budget>-summary.json` (budget `10min` or
`u100`; prefix `masks` by default), the baselines to `results/<prefix>-baselines.json`.
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
from esper_lab.runs import RunReader  # noqa: E402
from esper_lab.stats import paired_difference  # noqa: E402

MASK_VARIANTS = ("conditional:policy.masks=conditional,world.reward.mode=contribution",
                 "independent:policy.masks=independent,world.reward.mode=contribution")  # measured under contribution
EVAL_SEED = 5_000_000


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def budget_name(args: argparse.Namespace) -> str:
    """`u100` for an updates budget, `10min` for a wall-clock one: the tag of every file of one comparison."""
    return f"u{args.updates}" if args.updates else f"{args.minutes:g}min"


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'name:a=1,b=2' -> ('name', ['a=1', 'b=2']); 'name' -> ('name', [])."""
    name, _, sets = text.partition(":")
    return name, [s for s in sets.split(",") if s]


def run_dir_of(mode: str, seed: int, args: argparse.Namespace) -> Path:
    return args.runs_root / f"demo-{budget_name(args)}-{mode}-s{seed}"


def eval_json(mode: str, seed: int, args: argparse.Namespace) -> Path:
    return args.out / f"{args.prefix}-{budget_name(args)}-{mode}-s{seed}.json"


def train_and_evaluate(mode: str, seed: int, args: argparse.Namespace) -> None:
    run_dir = run_dir_of(mode, seed, args)
    exe = str(REPO / ".venv" / "bin" / "esper-lab")
    budget = ["--updates", str(args.updates)] if args.updates else ["--updates", "100000", "--max-minutes",
                                                                      str(args.minutes)]
    sets = [item for field in args.variants[mode] for item in ("--set", field)]
    run([exe, "train", "--preset", "demo", "--seed", str(seed), *budget, *sets, "--run-dir", str(run_dir), "--quiet",
         "--overwrite"])
    run([exe, "evaluate", "--checkpoint", str(run_dir / "checkpoint.pt"), "--policy", "none", "--episodes",
         str(args.episodes), "--seed", str(EVAL_SEED), "--json", str(eval_json(mode, seed, args))])


def summarize(args: argparse.Namespace) -> dict:
    """Per mode: illegal fraction at update 1 and over the last 10 updates, updates done, and the pooled evaluation."""
    summary: dict = {"eval_seed": EVAL_SEED, "budget": budget_name(args), "modes": {}}
    for mode in args.variants:
        seeds = [s for s in args.seeds if eval_json(mode, s, args).is_file()]
        rows = {s: RunReader(run_dir_of(mode, s, args)).metrics() for s in seeds}
        evals = {s: json.loads(eval_json(mode, s, args).read_text())["trained"] for s in seeds}
        if not seeds:
            continue
        pooled_return = [v for e in evals.values() for v in e["return_list"]]
        pooled_acc = [v for e in evals.values() for v in e["final_val_acc_list"]]
        summary["modes"][mode] = {
            "seeds": seeds,
            "set": args.variants[mode],
            "env_steps": [rows[s][-1]["env_steps"] for s in seeds if rows[s]],
            "updates": [len(rows[s]) for s in seeds],
            "minutes": [round((rows[s][-1]["time_s"] - rows[s][0]["time_s"] + rows[s][0]["rollout_seconds"]
                               + rows[s][0]["update_seconds"]) / 60, 1) for s in seeds if rows[s]],
            "eval_seed_params": [evals[s]["seed_params_mean"] for s in seeds],
            "eval_fossilized": [evals[s]["fossilized_mean"] for s in seeds],
            "illegal_fraction_update_1": [rows[s][0]["illegal_fraction"] for s in seeds if rows[s]],
            "illegal_fraction_last_10": [statistics.fmean(r["illegal_fraction"] for r in rows[s][-10:])
                                         for s in seeds if rows[s]],
            "eval_illegal_fraction": [evals[s]["illegal_fraction"] for s in seeds],
            "eval_return": [evals[s]["return_mean"] for s in seeds],
            "eval_final_val_acc": [evals[s]["final_val_acc_mean"] for s in seeds],
            "pooled_return": (statistics.fmean(pooled_return), statistics.pstdev(pooled_return)),
            "pooled_final_val_acc": (statistics.fmean(pooled_acc), statistics.pstdev(pooled_acc)),
            "episodes": len(pooled_return),
        }
    baselines = args.out / f"{args.prefix}-baselines.json"
    if baselines.is_file():
        summary["baselines"] = {name: {"return": (r["return_mean"], r["return_std"]),
                                       "final_val_acc": (r["final_val_acc_mean"], r["final_val_acc_std"]),
                                       "illegal_fraction": r["illegal_fraction"],
                                       "seed_params": r["seed_params_mean"]}
                                for name, r in json.loads(baselines.read_text()).items()}
        summary["paired"] = paired(summary, args, json.loads(baselines.read_text()))
    return summary


PAIRED_METRICS = {"final_val_acc": "final_val_acc_list", "return": "return_list"}


def paired(summary: dict, args: argparse.Namespace, baselines: dict) -> list[dict]:
    """Each variant, pooled over its seeds' evaluation episodes, minus each baseline and minus the first variant,
    paired by episode seed (and by run seed against a variant): mean difference with its 95 % t interval."""
    by_seed = lambda r: dict(zip(r["episode_seed"], zip(*(r[k] for k in PAIRED_METRICS.values()))))  # noqa: E731
    trained = {mode: {s: by_seed(json.loads(eval_json(mode, s, args).read_text())["trained"])
                      for s in summary["modes"][mode]["seeds"]} for mode in summary["modes"]}
    first = next(iter(trained))
    rows = []
    for mode, seeds in trained.items():
        others = {f"{name} (baseline)": {s: by_seed(r) for s in seeds} for name, r in baselines.items()}
        if mode != first:
            others[first] = trained[first]
        for other, theirs in others.items():
            pairs = [(mine[e], theirs[s][e]) for s, mine in seeds.items() if s in theirs for e in mine if e in theirs[s]]
            row = {"variant": mode, "versus": other, "episodes": len(pairs)}
            for i, metric in enumerate(PAIRED_METRICS):
                row[metric] = paired_difference([a[i] for a, _ in pairs], [b[i] for _, b in pairs]).as_dict()
            rows.append(row)
    return rows


def table(summary: dict) -> str:
    lines = ["| variant | updates | minutes | illegal at update 1 | illegal, last 10 updates | illegal in evaluation | "
             "evaluated return | final val acc % | seed params |", "|---|---|---|---|---|---|---|---|---|"]
    pct = lambda xs: ", ".join(f"{100 * x:.1f} %" for x in xs)  # noqa: E731
    for mode, m in summary["modes"].items():
        lines.append(f"| {mode} | {', '.join(map(str, m['updates']))} | {', '.join(map(str, m['minutes']))} | "
                     f"{pct(m['illegal_fraction_update_1'])} | "
                     f"{pct(m['illegal_fraction_last_10'])} | {pct(m['eval_illegal_fraction'])} | "
                     f"{m['pooled_return'][0]:.1f} ± {m['pooled_return'][1]:.1f} | "
                     f"{m['pooled_final_val_acc'][0]:.1f} ± {m['pooled_final_val_acc'][1]:.1f} | "
                     f"{statistics.fmean(m['eval_seed_params']):.0f} |")
    for name, b in summary.get("baselines", {}).items():
        lines.append(f"| {name} (baseline) | | | | | {100 * b['illegal_fraction']:.1f} % | "
                     f"{b['return'][0]:.1f} ± {b['return'][1]:.1f} | "
                     f"{b['final_val_acc'][0]:.1f} ± {b['final_val_acc'][1]:.1f} | {b['seed_params']:.0f} |")
    if summary.get("paired"):
        lines += ["", "| variant | minus | episodes (paired by episode seed) | final val acc, points [95 % CI] | "
                  "return [95 % CI] |", "|---|---|---|---|---|"]
        ci = lambda d: f"{d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]" if d["low"] is not None else "n/a"  # noqa: E731
        for r in summary["paired"]:
            lines.append(f"| {r['variant']} | {r['versus']} | {r['episodes']} | {ci(r['final_val_acc'])} | "
                         f"{ci(r['return'])} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget per run (default 10)")
    parser.add_argument("--updates", type=int, help="an updates budget per run instead of a wall-clock one")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds (default 0,1,2)")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per run (default 20)")
    parser.add_argument("--variant", action="append", help="NAME[:FIELD=VALUE,...] (repeatable; default: the two "
                        "mask modes)")
    parser.add_argument("--prefix", default="masks", help="results file prefix (default masks)")
    parser.add_argument("--runs-root", type=Path, default=Path("/tmp/esper-budget-runs"))
    parser.add_argument("--out", type=Path, default=REPO / "results")
    parser.add_argument("--summarize-only", action="store_true", help="only print the table from results/")
    parser.add_argument("--write-summary", action="store_true", help="with --summarize-only: also write the summary "
                        "JSON (over every seed whose evaluation is in results/)")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.variants = dict(parse_variant(v) for v in (args.variant or MASK_VARIANTS))
    if not args.summarize_only:
        exe = str(REPO / ".venv" / "bin" / "esper-lab")
        if not (args.out / f"{args.prefix}-baselines.json").is_file():
            run([exe, "evaluate", "--preset", "demo", "--policy", "all", "--episodes", str(args.episodes), "--seed",
                 str(EVAL_SEED), "--json", str(args.out / f"{args.prefix}-baselines.json")])
        for seed in args.seeds:
            for mode in args.variants:
                train_and_evaluate(mode, seed, args)
    summary = summarize(args)
    if not args.summarize_only or args.write_summary:  # earlier runs may be gone: rewrite only when asked
        (args.out / f"{args.prefix}-{budget_name(args)}-summary.json").write_text(json.dumps(summary, indent=2))
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
