"""`esper-lab bench train`: steps per second of the whole loop, split into env, policy inference and update.

`bench_train` measures one config in this process. `back_to_back` measures a config and the REFERENCE (sequential
engine, 4 worlds) each in its own fresh process, interleaved, and prints both with the ratio: what
`esper-lab bench train --preset demo` shows.
"""

from __future__ import annotations

from typing import Any

from esper_lab.bench.timing import Log, Progress, quiet, summarize
from esper_lab.config import TrainConfig


def bench_train(cfg: TrainConfig, updates: int = 3) -> dict[str, Any]:
    """Run one warm-up update, then `updates` timed ones (no run directory). Returns medians per update: `sps`,
    `seconds_per_update`, `env_seconds` / `policy_seconds` / `update_seconds` and their fractions (`other_fraction`: the
    rest of the rollout: features, masks, buffer), plus the sizes."""
    from esper_lab.rl.trainer import Trainer

    trainer = Trainer(cfg)
    try:
        trainer.train_step()  # warm-up: allocator, oneDNN primitives
        records = [trainer.train_step() for _ in range(updates)]
    finally:
        trainer.close()

    def med(key: str) -> float:
        return summarize([r[key] for r in records])["median"]

    total = med("rollout_seconds") + med("update_seconds")
    return {
        "backend": cfg.backend,
        "torch_threads": cfg.torch_threads,
        "num_envs": cfg.num_envs,
        "episode_length": cfg.world.max_epochs,
        "steps_per_update": cfg.num_envs * cfg.world.max_epochs,
        "updates_timed": updates,
        "sps": med("sps"),
        "seconds_per_update": total,
        "env_seconds": med("env_seconds"),
        "policy_seconds": med("policy_seconds"),
        "update_seconds": med("update_seconds"),
        "env_fraction": med("env_seconds") / total,
        "policy_fraction": med("policy_seconds") / total,
        "update_fraction": med("update_seconds") / total,
        "other_fraction": 1.0 - (med("env_seconds") + med("policy_seconds") + med("update_seconds")) / total,
    }


REFERENCE = {"world.engine": "sequential", "num_envs": 4}
"""What `bench train` measures a config against: the worlds stepped one after another, 4 per update (the `demo`
preset before the batched engine)."""
SHARED = ("sps", "seconds_per_update", "env_seconds", "policy_seconds", "update_seconds", "env_fraction",
          "policy_fraction", "update_fraction", "other_fraction", "num_envs", "steps_per_update", "backend", "torch_threads")


def back_to_back(cfg: TrainConfig, reference: TrainConfig, updates: int = 3, rounds: int = 1,
                 log: Log = quiet) -> dict[str, Any]:
    """`bench_train` of `cfg` and of `reference`, each in its own fresh process (tuned malloc), interleaved for
    `rounds` (order alternating). Returns `{measured: {...}, reference: {...}, sps_ratio, engines, processes}` with
    the medians over rounds of each figure; sps_ratio = measured / reference."""
    from esper_lab.bench.processes import available_settings, run_fresh

    setting = available_settings()[0]
    runs: dict[str, list[dict]] = {"measured": [], "reference": []}
    for r in range(rounds):
        order = ("measured", "reference") if r % 2 == 0 else ("reference", "measured")
        for label in order:
            c = cfg if label == "measured" else reference
            spec = {"part": "train", "side": label, "config": c.to_dict(), "updates": updates}
            runs[label].append(run_fresh("esper_lab.bench.train", spec, setting, log))
    out: dict[str, Any] = {}
    for label, results in runs.items():
        rows = [result["rows"] for result in results]
        out[label] = {k: (summarize([row[k] for row in rows])["median"] if isinstance(rows[0][k], float) else rows[0][k])
                      for k in SHARED}
        out[label]["engine"] = (cfg if label == "measured" else reference).world.engine
    out["sps_ratio"] = out["measured"]["sps"] / out["reference"]["sps"]
    out["processes"] = [{"side": label, **result["process"]} for label, results in runs.items() for result in results]
    return out


def main(argv: list[str] | None = None) -> int:
    """Fresh-process entry: `python -m esper_lab.bench.train '<json spec>'` (config, updates) -> one RESULT line."""
    import json
    import sys

    import torch

    from esper_lab.bench.processes import emit

    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    cfg = TrainConfig.from_dict(spec["config"])
    torch.set_num_threads(cfg.torch_threads)
    Progress(f"bench train {spec['side']}")(f"{cfg.num_envs} worlds, engine {cfg.world.engine}, "
                                            f"backend {cfg.backend}: 1 warm-up + {spec['updates']} updates")
    emit(bench_train(cfg, updates=int(spec["updates"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
