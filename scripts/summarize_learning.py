"""Markdown tables for the README from `esper-lab evaluate --json` results and run directories.

    python scripts/summarize_learning.py results/baselines.json results/demo-q_op-s*.json

Each trained-policy JSON is named after its run directory (runs/<name>); the table gives mean +- std over its
evaluation episodes, the pooled mean over runs, and each run's updates and wall-clock minutes of training.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from esper_lab.runs import RunReader  # noqa: E402


def row(name: str, r: dict, extra: str = "") -> str:
    return (f"| {name} | {r['return_mean']:.2f} ± {r['return_std']:.2f} | {r['final_val_acc_mean']:.1f} ± "
            f"{r['final_val_acc_std']:.1f} | {r['fossilized_mean']:.2f} | {r['seed_params_mean']:.0f} |{extra}")


def main() -> int:
    baselines, *trained = [Path(p) for p in sys.argv[1:]]
    print("| policy | return | final val acc % | fossilized | seed params | updates | minutes |")
    print("|---|---|---|---|---|---|---|")
    pooled: dict[str, list[float]] = {"return": [], "acc": []}
    for path in trained:
        r = json.loads(path.read_text())["trained"]
        rows = RunReader(Path("runs") / path.stem).metrics()
        minutes = (rows[-1]["time_s"] - rows[0]["time_s"] + rows[0]["rollout_seconds"] + rows[0]["update_seconds"]) / 60
        print(row(f"trained `{path.stem}`", r, f" {len(rows)} | {minutes:.1f} |"))
        pooled["return"] += r["return_list"]
        pooled["acc"] += r["final_val_acc_list"]
    if trained:
        print(f"| trained, pooled | {statistics.fmean(pooled['return']):.2f} ± {statistics.pstdev(pooled['return']):.2f} | "
              f"{statistics.fmean(pooled['acc']):.1f} ± {statistics.pstdev(pooled['acc']):.1f} | | | | |")
    for name, r in json.loads(baselines.read_text()).items():
        print(row(name, r, " | |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
