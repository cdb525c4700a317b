"""Env steps per second of `demo` for the sequential and the batched engine at 4, 16, 32 and 64 worlds, each
configuration in its own fresh process (tuned malloc), interleaved over rounds, with the share of env / policy /
update / other per update: the README's and docs/performance.md's engine table. PPO minibatches hold 2 env rows at
every size, as in `demo` (16 worlds, 8 minibatches).

    .venv/bin/python scripts/engine_scaling.py [--worlds 4,16,32,64] [--engines sequential,batched] [--updates 2]
                                               [--rounds 1] [--set FIELD=VALUE ...] [--json results/engine_scaling.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from esper_lab.bench.processes import available_settings, run_fresh  # noqa: E402
from esper_lab.bench.timing import Progress  # noqa: E402
from esper_lab.config import preset  # noqa: E402

KEYS = ("sps", "seconds_per_update", "env_fraction", "policy_fraction", "update_fraction", "other_fraction")


def parse(text: str):
    """A --set value: JSON when it parses ('16', 'true', '0.5'), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="4,16,32,64")
    parser.add_argument("--engines", default="sequential,batched")
    parser.add_argument("--updates", type=int, default=2, help="timed updates per process (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--json", type=Path, default=REPO / "results" / "engine_scaling.json")
    args = parser.parse_args()
    overrides = {k: parse(v) for k, _, v in (s.partition("=") for s in args.set)}
    configs = [(engine, int(n)) for engine in args.engines.split(",") for n in args.worlds.split(",")]
    log, setting = Progress("engine scaling"), available_settings()[0]
    results: dict[str, list[dict]] = {f"{e} {n}": [] for e, n in configs}
    for r in range(args.rounds):
        for engine, n in (configs if r % 2 == 0 else configs[::-1]):
            # minibatches of 2 env rows at every size, as demo has them: every sample takes the same gradient steps
            cfg = preset("demo", **{"world.engine": engine, "num_envs": n, "ppo.minibatches": max(1, n // 2),
                                    **overrides})
            spec = {"part": "train", "side": f"{engine} {n}", "config": cfg.to_dict(), "updates": args.updates}
            results[f"{engine} {n}"].append(run_fresh("esper_lab.bench.train", spec, setting, log))
    rows = []
    for label, runs in results.items():
        med = {k: statistics.median(run["rows"][k] for run in runs) for k in KEYS}
        rows.append({"config": label, **med, "processes": [run["process"] for run in runs]})
    reference = next((row["sps"] for row in rows if row["config"] == "sequential 4"), None)
    print("| engine, worlds | env steps / s | x sequential 4 | s per update | env | policy | update | other |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = f"{row['sps'] / reference:.2f}x" if reference else ""
        print(f"| {row['config']} | {row['sps']:.1f} | {ratio} | {row['seconds_per_update']:.2f} | "
              + " | ".join(f"{100 * row[k]:.0f} %" for k in KEYS[2:]) + " |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"overrides": overrides, "updates": args.updates, "rounds": args.rounds,
                                     "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
