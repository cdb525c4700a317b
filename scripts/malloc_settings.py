"""Three ways to run torch's allocator, each measured in its own fresh process: glibc's defaults, the thresholds set
at run time with `mallopt` (what `esper_lab/malloc.py` did before issue 15), and the same thresholds in
GLIBC_TUNABLES at process start (what every `esper-lab` command does now). docs/performance.md, "What was wrong
before", quotes its output.

    .venv/bin/python scripts/malloc_settings.py [--rounds 2] [--repeats 5] [--threads 2]

Per process: our real PPO update at L = 32 (32 rows x 32 steps, 4 epochs x 4 minibatches, H = 512) and the bare
trunk of the same shapes (`esper_lab.bench.floor`; skipped on a checkout that predates it, so the script also runs
in a worktree of an older commit with PYTHONPATH pointing there), in ms per 1k samples per epoch, and the minor page
faults per update. Settings run interleaved, one fresh process each per round; the table shows the median over
rounds of each process's median.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import statistics
import subprocess
import sys

SETTINGS = ("default", "mallopt", "tunables")
THRESHOLDS = {"mmap": 32 * 1024 * 1024, "trim": 4 * 1024**3}
TUNABLES = (f"glibc.malloc.mmap_threshold={THRESHOLDS['mmap']}:"
            f"glibc.malloc.trim_threshold={THRESHOLDS['trim']}")


def mallopt_now() -> None:
    """The old run-time path: M_MMAP_THRESHOLD (-3) and M_TRIM_THRESHOLD (-1) through libc's mallopt."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not (libc.mallopt(-3, THRESHOLDS["mmap"]) == 1 and libc.mallopt(-1, THRESHOLDS["trim"]) == 1):
        raise RuntimeError("mallopt refused the thresholds")


def measure(setting: str, repeats: int, threads: int) -> dict:
    """In this (fresh) process: the update and the bare trunk, ms per 1k samples per epoch, and faults per update."""
    if setting == "mallopt":
        mallopt_now()
    import resource

    import torch

    from esper_lab.agent import Agent
    from esper_lab.bench.synthetic import all_legal_masks, synthetic_update
    from esper_lab.bench.timing import measure as timed
    from esper_lab.config import PolicyConfig, PPOConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    agent = Agent.from_config(PolicyConfig(), 3)
    scale = 1e3 / 4 / 1.024  # seconds per update -> ms per 1k samples per epoch (4 epochs, 1,024 samples)
    _, update = synthetic_update(agent, PPOConfig(epochs=4, minibatches=4, target_kl=None), all_legal_masks(32), 32)
    update()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = {"update": timed(update, repeats=repeats, warmup=0, scale=scale)["median"]}
    out["faults_per_update"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeats
    try:
        from esper_lab.bench.floor import bare_update
    except ImportError:  # a checkout from before the floor existed
        return out
    bare = bare_update(agent.network, 32, 32, epochs=4, minibatches=4)
    bare()
    out["bare"] = timed(bare, repeats=repeats, warmup=0, scale=scale)["median"]
    return out


def run(setting: str, repeats: int, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if setting == "tunables":
        env["GLIBC_TUNABLES"] = TUNABLES
    proc = subprocess.run([sys.executable, __file__, "--child", setting, "--repeats", str(repeats),
                           "--threads", str(threads)], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeats, args.threads)))
        return 0
    results: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for setting in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
            results[setting].append(run(setting, args.repeats, args.threads))
            print(f"round {r + 1} {setting}: {results[setting][-1]}", file=sys.stderr, flush=True)
    print("| per 1k samples per epoch, L = 32 | " + " | ".join(SETTINGS) + " |")
    print("|---|" + "---|" * len(SETTINGS))
    for key, label in (("update", "our update, ms"), ("bare", "bare trunk, ms"), ("faults_per_update", "minor faults")):
        if all(key in x for runs in results.values() for x in runs):
            cells = [", ".join(f"{x[key]:.0f}" for x in runs) for runs in results.values()]
            medians = [statistics.median(x[key] for x in runs) for runs in results.values()]
            print(f"| {label} (each process; median) | " + " | ".join(f"{c} ({m:.0f})" for c, m in zip(cells, medians))
                  + " |")
    print(json.dumps({"threads": args.threads, "repeats": args.repeats, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
