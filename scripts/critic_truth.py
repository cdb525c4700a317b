"""Is each critic right? The three critic modes trained on one budget, then measured against Monte Carlo truth.

For each critic mode (interleaved, one run at a time): a `demo` run of `--minutes` with the default ground-truth
cadence (`truth.every` 25 updates within 10 % of the wall time), then `esper-lab probe` on its final checkpoint, every
probe state, K = `--rollouts` rollouts per op. Then a table per critic: the run's updates and env steps, the share of
its wall time the trainer spent on ground truth, and the final checkpoint's calibration (mean |Q - truth| in the
critic's units, op pairs ordered as the truth orders them, the same over the pairs the truth's intervals separate,
probe states whose best op agrees).

    .venv/bin/python scripts/critic_truth.py                   # 3 critics x 10 minutes, K = 16 (~40 min)
    .venv/bin/python scripts/critic_truth.py --minutes 1 --rollouts 4 --out /tmp/ct   # a quick look
    .venv/bin/python scripts/critic_truth.py --summarize-only  # the table from results/

Runs go to `--runs-root` (default /tmp/esper-critic-truth, not the user's runs/); the probe records to
`results/critic-truth-<critic>-s<seed>.json` and the table to `results/critic-truth-summary.{json,txt}`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from esper_lab.config import CRITIC_MODES  # noqa: E402
from esper_lab.plots.truth import pooled  # noqa: E402
from esper_lab.runs import RunReader  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from budget_runs import run  # noqa: E402  (print the command, run it from the repository, fail loudly)


def run_dir(critic: str, args: argparse.Namespace) -> Path:
    return args.runs_root / f"demo-{args.minutes:g}min-{critic}-s{args.seed}"


def probe_json(critic: str, args: argparse.Namespace) -> Path:
    return args.out / f"critic-truth-{critic}-s{args.seed}.json"


def train_and_probe(critic: str, args: argparse.Namespace) -> None:
    exe, folder = str(REPO / ".venv" / "bin" / "esper-lab"), run_dir(critic, args)
    run([exe, "train", "--preset", "demo", "--seed", str(args.seed), "--critic", critic, "--updates", "100000",
         "--max-minutes", str(args.minutes), "--set", f"world.reward.mode={args.reward}", "--run-dir", str(folder),
         "--quiet", "--overwrite"])
    run([exe, "probe", "--checkpoint", str(folder / "checkpoint.pt"), "--rollouts", str(args.rollouts), "--seed",
         str(args.seed), "--json", str(probe_json(critic, args))])


def training_side(folder: Path) -> dict:
    """Updates, env steps, wall minutes and the ground truth's share of the wall time, from the run directory."""
    reader = RunReader(folder)
    rows, status = reader.metrics(), reader.status()
    wall = rows[-1]["time_s"] - status["started_at"]
    truth_s = sum(r.get("truth_seconds") or 0.0 for r in rows)
    during = pooled(reader.truth())
    return {"updates": rows[-1]["update"], "env_steps": rows[-1]["env_steps"], "minutes": wall / 60,
            "truth_seconds": truth_s, "truth_share": truth_s / wall,
            "truth_records_in_training": sum(p["states"] for p in during)}


def summarize(args: argparse.Namespace) -> dict:
    out = {"seed": args.seed, "minutes": args.minutes, "rollouts": args.rollouts, "critics": {}}
    for critic in CRITIC_MODES:
        path = probe_json(critic, args)
        if not path.is_file():
            continue
        final = pooled(json.loads(path.read_text()))[-1]
        row = {**final}
        if run_dir(critic, args).is_dir():
            row.update(training_side(run_dir(critic, args)))
        out["critics"][critic] = row
    return out


def table(summary: dict) -> str:
    lines = ["| critic | updates | env steps | ground truth's share of wall time | mean abs(Q - truth) | op pairs ordered "
             "right | separated pairs ordered right | best op right |", "|---" * 8 + "|"]
    for critic, r in summary["critics"].items():
        share = f"{100 * r['truth_share']:.1f} %" if "truth_share" in r else ""
        sep = "-" if r["separated_agreement"] is None else f"{r['separated_agreement']:.2f} of {r['separated']}"
        lines.append(f"| {critic} | {r.get('updates', '')} | {r.get('env_steps', '')} | {share} | {r['mae']:.3f} | "
                     f"{r['pair_agreement']:.2f} of {r['pairs']} | {sep} | {r['best_agrees']} of {r['states']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget per run (default 10)")
    parser.add_argument("--rollouts", type=int, default=16, help="K for the final probe (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reward", default="contribution", help="world.reward.mode of the runs (default "
                        "contribution: what the README's table measured, before the default became simplified)")
    parser.add_argument("--critics", default=",".join(CRITIC_MODES), help="comma-separated (default: all three)")
    parser.add_argument("--runs-root", type=Path, default=Path("/tmp/esper-critic-truth"))
    parser.add_argument("--out", type=Path, default=REPO / "results")
    parser.add_argument("--summarize-only", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        for critic in args.critics.split(","):
            train_and_probe(critic, args)
    summary = summarize(args)
    text = table(summary)
    print(text)
    (args.out / "critic-truth-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "critic-truth-summary.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
