"""Plot learning curves from one or more run directories' metrics.jsonl into a PNG (for the README).

    python scripts/plot_learning_curve.py runs/demo-q_op-s0 runs/demo-q_op-s1 --out docs/learning_curve.png \
        --baselines results/baselines_demo.json

Each run is one line (the metric, smoothed by the dashboard's EMA); baseline means are drawn as horizontal lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from esper_lab.plots.compare import smooth  # noqa: E402  (the dashboard's EMA: one smoothing everywhere)
from esper_lab.runs import RunReader  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--out", type=Path, default=Path("docs/learning_curve.png"))
    parser.add_argument("--baselines", type=Path, help="JSON from `esper-lab evaluate --json` (mean returns drawn)")
    parser.add_argument("--smoothing", type=float, default=0.8,
                        help="EMA weight in [0, 1), as the dashboard's Compare slider (default 0.8)")
    parser.add_argument("--metric", default="episode_return")
    args = parser.parse_args()

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for run in args.runs:
        rows = RunReader(run).require().metrics()
        if not rows:
            raise SystemExit(f"{run}: no metrics yet")
        x = np.array([r["env_steps"] for r in rows])
        y = smooth([r.get(args.metric) for r in rows], args.smoothing)
        ax.plot(x, np.array([np.nan if v is None else v for v in y], dtype=float), label=run.name)
    if args.baselines:
        ref = json.loads(args.baselines.read_text())
        for (name, res), style in zip(sorted(ref.items()), (":", "--", "-.", (0, (1, 4)))):
            key = {"episode_return": "return", "val_acc": "final_val_acc"}.get(args.metric, args.metric)
            value = res.get(f"{key}_mean")
            if value is not None:
                ax.axhline(value, color="grey", linestyle=style, label=f"{name} (mean)")
    ax.set_xlabel("environment steps (host epochs)")
    ax.set_ylabel(args.metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
