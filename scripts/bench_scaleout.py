"""Env steps per second, 'local' vs 'ray', at 2, 4 and 8 worlds, plus what Ray adds per step (docs/scale-out.md).

    .venv/bin/python scripts/bench_scaleout.py                       # demo world, 2/4/8 worlds, 30 timed steps
    .venv/bin/python scripts/bench_scaleout.py --worlds 2 4 --steps 10 --json bench.json

Each measurement: build the envs, reset, play `--warmup` steps, reset again, then time `--steps` calls of
`envs.step` (one full demo episode at 30). The heuristic policy chooses the actions (so seeds germinate, blend and
fossilize as in a real run); its time is not counted. env steps/s = worlds x steps / seconds inside `step`.

Ray layouts: 'ray' = the default (one world per actor, as many actors as the CPUs hold at 1 CPU each, i.e. 2 actors
here), 'ray-1pw' = one actor per world whatever the core count (ray_cpus_per_actor = cores / worlds).
CPU ms per env step = CPU time of the trainer process during `step` plus that of every actor process, per world
step: what a step costs whatever else shares the cores (the wall-clock figures depend on the machine's load, which
is printed with each row). The echo column times `RayVectorEnv.echo`: each actor returns its last step's results
without doing any work, so it is Ray's round trip (submit, schedule, serialise, ship, deserialise) for a real
payload. Also printed: the pickled bytes one world sends and receives per step.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time
from pathlib import Path

import torch

from esper_lab.bench.timing import measure
from esper_lab.config import preset
from esper_lab.env.ray_vector import RayVectorEnv, connect
from esper_lab.env.vector import VectorEnv
from esper_lab.policy.baselines import HeuristicPolicy


def play(envs, steps: int, warmup: int, seed: int) -> dict[str, float]:
    """Seconds inside `envs.step` over `steps` steps (after `warmup` untimed ones and a fresh reset)."""
    n = envs.num_envs
    policy = HeuristicPolicy()
    reports = envs.reset([seed + i for i in range(n)])
    policy.reset(n)
    for _ in range(warmup):
        reports, *_ = envs.step(policy.act(reports, envs.masks()))
    reports = envs.reset([seed + 100 + i for i in range(n)])
    policy.reset(n)
    spent, cpu, wire = 0.0, 0.0, []
    actor_cpu0 = sum(envs.actor_cpu_seconds()) if hasattr(envs, "actor_cpu_seconds") else 0.0
    for _ in range(steps):
        actions = policy.act(reports, envs.masks())  # [n, 8]
        t0, c0 = time.perf_counter(), time.process_time()
        reports, rewards, _, truncated, infos = envs.step(actions)
        spent, cpu = spent + time.perf_counter() - t0, cpu + time.process_time() - c0
        wire.append(len(pickle.dumps((reports[0], float(rewards[0]), bool(truncated[0]), infos[0]))))
        if bool(truncated.all()):
            reports = envs.reset([seed + 200 + i for i in range(n)])
            policy.reset(n)
    actor_cpu = sum(envs.actor_cpu_seconds()) - actor_cpu0 if hasattr(envs, "actor_cpu_seconds") else 0.0
    return {"seconds": spent, "steps_per_s": n * steps / spent, "ms_per_step": 1e3 * spent / steps,
            "driver_cpu_ms_per_env_step": 1e3 * cpu / (n * steps),
            "cpu_ms_per_env_step": 1e3 * (cpu + actor_cpu) / (n * steps),
            "bytes_back_per_world": statistics.mean(wire),
            "bytes_out_per_world": len(pickle.dumps(actions[0].tolist()))}


def echo_ms(envs: RayVectorEnv, repeats: int) -> float:
    """Median ms of a no-work step round trip (after at least one real step)."""
    actions = torch.zeros(envs.num_envs, 8, dtype=torch.int64)
    return measure(lambda: envs.echo(actions), repeats=repeats, warmup=0, scale=1e3)["median"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo")
    p.add_argument("--worlds", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--steps", type=int, default=30, help="timed steps (default 30: one demo episode)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--echo", type=int, default=50, help="no-work round trips to time (default 50)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import ray

    torch.set_num_threads(2)  # as the trainer (the worlds switch to WorldConfig.env_threads = 1 while they work)
    world = preset(args.preset).world
    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    connect(None, num_cpus=cores)  # what `--backend ray` does without an address (retried if the start fails)
    ray_init_s = time.perf_counter() - t0
    rows = []
    print(f"{args.preset}: {world.max_epochs} epochs/episode, {cores} cores, load {os.getloadavg()[0]:.2f}, "
          f"ray.init {ray_init_s:.1f} s", file=sys.stderr)
    for n in args.worlds:
        layouts = [("local", None), ("ray", {}), ("ray-1pw", {"workers": n, "cpus_per_actor": cores / n})]
        for name, kw in layouts:
            if name == "ray-1pw" and n <= cores:
                continue  # the same as 'ray' when every world already has its own core
            t1 = time.perf_counter()
            envs = VectorEnv(world, n, seed=0) if kw is None else RayVectorEnv(world, n, seed=0, **kw)
            start_s = time.perf_counter() - t1
            try:
                row = {"backend": name, "worlds": n, "actors": len(envs.groups) if kw is not None else 0,
                       "start_s": start_s, **play(envs, args.steps, args.warmup, seed=1000)}
                if kw is not None:
                    row["echo_ms"] = echo_ms(envs, args.echo)
            finally:
                if kw is not None:
                    envs.close()
            row["load"] = os.getloadavg()[0]
            rows.append(row)
            print(f"{name:8s} worlds {n}  actors {row['actors']}  {row['steps_per_s']:6.1f} env steps/s  "
                  f"{row['ms_per_step']:7.1f} ms/step  CPU {row['cpu_ms_per_env_step']:5.1f} ms/env step "
                  f"(driver {row['driver_cpu_ms_per_env_step']:4.1f})  "
                  f"echo {row.get('echo_ms', float('nan')):5.2f} ms  "
                  f"wire {row['bytes_out_per_world']} B out / {row['bytes_back_per_world']:.0f} B back per world  "
                  f"(start {start_s:.1f} s, load {row['load']:.2f})", file=sys.stderr)
    ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "cores": cores, "steps": args.steps,
                                         "ray_init_s": ray_init_s, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
