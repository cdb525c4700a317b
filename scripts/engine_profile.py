"""Where a batched world step spends its time, per world-step, on one thread: the training epoch's backward and Adam
step, the rest of the training epoch (forward, loss, data), validation with its counterfactual passes, and the rest
of the step (actions, masks, rewards, reports), with the driving random-legal policy's own time apart; beside them
the floor, the matrix products alone (`bmm` / `baddbmm`, timed where they run, with their FLOPs and the share of
them on nonzero weights), and the ATen ops per batched step. One episode of `demo` worlds driven by random-legal
actions (fixed seed), after a warm-up episode. The table also goes to the JSON file's `.txt` sibling.

    .venv/bin/python scripts/engine_profile.py [--worlds 16,64] [--json results/engine_profile.json]

The timers wrap the ops from outside (no copy of the engine's code), and the op count runs in a separate episode
under a dispatch mode, so it does not slow the timed one.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from esper_lab.config import preset  # noqa: E402
from esper_lab.env.batched import engine as batched  # noqa: E402
from esper_lab.env.batched import layers  # noqa: E402
from esper_lab.env.batched.exact import one_world_at_a_time  # noqa: E402
from esper_lab.env.batched.stack import RowAdam  # noqa: E402
from esper_lab.env.vector import VectorEnv  # noqa: E402
from esper_lab.policy.baselines import RandomLegalPolicy  # noqa: E402

seconds: collections.Counter = collections.Counter()
flops: collections.Counter = collections.Counter()


def timed(owner, name: str, key: str, count_flops=None) -> None:
    """Replace `owner.name` by a wrapper adding its wall time to `seconds[key]` (and its FLOPs to `flops[key]`)."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        seconds[key] += time.perf_counter() - start
        if count_flops:
            flops[key] += count_flops(*args)
        return out

    setattr(owner, name, wrapper)


def bmm_flops(*args) -> int:
    a, b = args[-2], args[-1]  # bmm(a, b) or baddbmm(c, a, b): [G, M, K] @ [G, K, N]
    return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def nonzero_flops(x: torch.Tensor, weight: torch.Tensor, bias=None) -> int:
    """The products of `stacked_affine(x [G, B, K], weight [G, N, K])` on nonzero weights only, in the forward and in
    the backward passes the call will take: what a conv computed without its dense matrix's structural zeros (the
    Toeplitz zeros of a 3x3 conv, the cross-group zeros of a grouped one) would still have to do."""
    if one_world_at_a_time(*x.shape[1:], weight.shape[1]):
        return 0  # not a bmm: left out of the matmul figures on both sides
    grad = torch.is_grad_enabled()
    passes = 1 + (grad and weight.requires_grad) + (grad and x.requires_grad)  # forward, grad_weight, grad_x
    return 2 * x.shape[1] * int(torch.count_nonzero(weight)) * passes


class OpCount(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def episode(env: VectorEnv, policy: RandomLegalPolicy) -> int:
    """One episode; returns the env steps taken."""
    reports = env.reset()
    for _ in range(env.cfg.max_epochs - 1):
        reports, *_ = env.step(policy.act(reports, env.masks()))
    return env.num_envs * (env.cfg.max_epochs - 1)


def nonzero_episode(env: VectorEnv, policy: RandomLegalPolicy) -> float:
    """One more episode (untimed: counting nonzeros costs time): the share of its matmul FLOPs that fall on nonzero
    weights."""
    original, executed = layers.stacked_affine, flops["bmm"] + flops["baddbmm"]
    needed = 0

    def counting(x, weight, bias=None):
        nonlocal needed
        needed += nonzero_flops(x, weight)
        return original(x, weight, bias)

    layers.stacked_affine = counting
    try:
        episode(env, policy)
    finally:
        layers.stacked_affine = original
    return needed / (flops["bmm"] + flops["baddbmm"] - executed)


def profile(worlds: int) -> dict:
    cfg = preset("demo", **{"world.engine": "batched"}).world
    env = VectorEnv(cfg, worlds, seed=0)
    policy = RandomLegalPolicy(seed=0)
    policy.reset(worlds)
    episode(env, policy)  # warm-up
    seconds.clear(), flops.clear()
    start = time.perf_counter()
    steps = episode(env, policy)
    wall = time.perf_counter() - start
    ms = {k: 1000 * v / steps for k, v in seconds.items()}
    mflop = (flops["bmm"] + flops["baddbmm"]) / steps / 1e6
    counter = OpCount()
    with counter:
        episode(env, policy)
    nonzero_share = nonzero_episode(env, policy)
    train = ms.pop("train epoch")
    out = {
        "worlds": worlds,
        "ms_per_world_step": 1000 * wall / steps,
        "backward": ms["backward"],
        "adam": ms["adam"],
        "forward_loss_data": train - ms["backward"] - ms["adam"],
        "validation": ms["validation"],
        "rest_of_step": 1000 * wall / steps - train - ms["validation"] - ms["policy"],
        "policy": ms["policy"],  # the random-legal policy's act: the driver's time, not the world's
        "matmul": ms["bmm"] + ms["baddbmm"],
        "matmul_mflop_per_world_step": mflop,
        "matmul_nonzero_share": nonzero_share,
        "aten_ops_per_batched_step": counter.ops / (cfg.max_epochs - 1),
    }
    out["matmul_gflops"] = out["matmul_mflop_per_world_step"] / out["matmul"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="16,64")
    parser.add_argument("--json", type=Path, default=REPO / "results" / "engine_profile.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    timed(batched.BatchedWorlds, "_train_epoch", "train epoch")
    timed(batched.BatchedWorlds, "_validate", "validation")
    timed(RowAdam, "step", "adam")
    timed(torch.autograd, "backward", "backward")
    timed(RandomLegalPolicy, "act", "policy")
    timed(torch, "bmm", "bmm", bmm_flops)
    timed(torch, "baddbmm", "baddbmm", bmm_flops)
    rows = [profile(int(n)) for n in args.worlds.split(",")]
    keys = ("ms_per_world_step", "forward_loss_data", "backward", "adam", "validation", "rest_of_step", "policy",
            "matmul")
    lines = ["| worlds | ms / world-step | forward, loss, data | backward | Adam | validation | rest of step "
             "| random-legal policy | matmul alone | matmul MFLOP | on nonzero weights | matmul GFLOP/s "
             "| ATen ops / batched step |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = " | ".join(f"{r[k]:.2f}" for k in keys)
        lines.append(f"| {r['worlds']} | {cells} | {r['matmul_mflop_per_world_step']:.0f} "
                     f"| {100 * r['matmul_nonzero_share']:.0f} % | {r['matmul_gflops']:.0f} "
                     f"| {r['aten_ops_per_batched_step']:,.0f} |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"threads": 1, "rows": rows}, indent=1) + "\n")
        args.json.with_suffix(".txt").write_text("\n".join(lines) + "\n")
        print(f"wrote {args.json} and {args.json.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
