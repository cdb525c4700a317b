"""Env steps per second of the 'sequential' and 'batched' world engines on the 'local' backend (one process, one
torch thread), and the matmul floor: what the worlds' GEMMs alone would take at --gflops.

    GLIBC_TUNABLES=$(.venv/bin/python -m esper_lab.malloc) nice -n 19 .venv/bin/python scripts/bench_engines.py
    ... scripts/bench_engines.py --policy random --batched 16 32 64 --sequential 4 --episodes 2 --json out.json

Each row plays `--episodes` whole episodes of the preset's world (30 epochs for demo) on fresh episode seeds, the
actions chosen by `--policy` (heuristic: seeds germinate, blend and fossilize; random: random-legal, many blueprints
and blends at once; wait: hosts alone); one untimed step first. Times only `envs.step` (the policy's time is not
counted): env steps/s = worlds x steps / seconds, and this thread's CPU ms per world step, which stays meaningful
when other processes share the cores. MFLOP per world step counts every matmul of one episode (forward, backward,
validation, counterfactuals: torch's FlopCounterMode; the same for both engines).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from esper_lab.config import preset
from esper_lab.env.vector import VectorEnv
from esper_lab.policy.baselines import HeuristicPolicy, RandomLegalPolicy, WaitPolicy

POLICIES = {"heuristic": HeuristicPolicy, "random": lambda: RandomLegalPolicy(seed=7), "wait": WaitPolicy}


def play(engine: str, worlds: int, args: argparse.Namespace, count_flops: bool = False) -> dict[str, float]:
    cfg = dataclasses.replace(preset(args.preset).world, engine=engine)
    envs, policy = VectorEnv(cfg, worlds, seed=0), POLICIES[args.policy]()
    wall = cpu = flops = 0.0
    steps = 0
    for episode in range(args.episodes):
        reports = envs.reset([1000 * episode + i for i in range(worlds)])
        policy.reset(worlds)
        truncated = torch.zeros(worlds, dtype=torch.bool)
        while not truncated.all():
            actions = policy.act(reports, envs.masks())
            counter = FlopCounterMode(display=False) if count_flops else None
            t0, c0 = time.perf_counter(), time.thread_time()
            if counter is None:
                reports, _, _, truncated, _ = envs.step(actions)
            else:
                with counter:
                    reports, _, _, truncated, _ = envs.step(actions)
                flops += counter.get_total_flops()
            if episode or steps:  # the very first step is warm-up
                wall, cpu = wall + time.perf_counter() - t0, cpu + time.thread_time() - c0
            steps += 1
    timed = worlds * (steps - 1)
    return {"engine": engine, "worlds": worlds, "env_steps_per_s": timed / wall, "cpu_ms_per_world_step":
            1e3 * cpu / timed, "mflop_per_world_step": flops / (worlds * steps) / 1e6 if count_flops else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo")
    p.add_argument("--policy", choices=sorted(POLICIES), default="heuristic")
    p.add_argument("--sequential", type=int, nargs="*", default=[4], help="worlds per row, sequential engine")
    p.add_argument("--batched", type=int, nargs="*", default=[4, 16, 32, 64], help="worlds per row, batched")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--gflops", type=float, default=100.0, help="matmul rate of one core, for the floor column")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{args.preset} world, policy {args.policy}, {args.episodes} episode(s) per row, 1 torch thread, "
          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    floor = play("batched", 2, args, count_flops=True)["mflop_per_world_step"]  # the same matmuls either engine
    print(f"matmuls: {floor:.0f} MFLOP per world step = {floor / args.gflops:.2f} ms at {args.gflops:g} GFLOP/s",
          file=sys.stderr)
    rows = []
    for engine, counts in (("sequential", args.sequential), ("batched", args.batched)):
        for worlds in counts:
            row = play(engine, worlds, args)
            row["load"] = os.getloadavg()[0]
            rows.append(row)
            print(f"{engine:10s} worlds {worlds:3d}  {row['env_steps_per_s']:7.1f} env steps/s  "
                  f"CPU {row['cpu_ms_per_world_step']:6.2f} ms/world step  (load {row['load']:.2f})",
                  file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "policy": args.policy, "episodes": args.episodes,
                                         "mflop_per_world_step": floor, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
