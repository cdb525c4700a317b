"""Part C: the same world. Our `Trainer` and sb3-contrib's RecurrentPPO learn on MorphoEnv (the `demo` preset) for
the same wall-clock budget per run, then play the same unseen evaluation episodes.

- ours: `Trainer(preset(name, seed=s))` with `max_minutes` = the budget (it stops after the first update that ends
  past it), evaluated through `agent.AgentPolicy` (the network and its observation normaliser, sampling
  like `esper-lab evaluate --checkpoint` does by default, i.e. not deterministic).
- SB3: RecurrentPPO("MultiInputLstmPolicy"): SB3's default two-LSTM layout (actor LSTM and critic LSTM), LSTM width =
  ours (512 in demo), default net_arch, no masks (an illegal action executes as WAIT in MorphoEnv), on `cfg.num_envs`
  MorphoEnv worlds: a DummyVecEnv when ours steps them in this process (backend 'local'), a SubprocVecEnv when ours
  runs them in parallel worker processes ('process', the demo default; `sb3_side.world_vec_env`); hyperparameters
  matched where SB3 has the knob (`sb3_side.world_hyperparameters`: one rollout = one episode per world). A callback
  ends `learn` once the budget is spent, checked after each update like ours. Evaluated through `sb3_side.SB3Policy`
  (`model.predict`, same sampling mode).

SPS = env steps / training wall seconds. Evaluation: `evaluate_policies([policy], cfg.world, episodes, seed=1000)`,
the same episode seeds for both. Seeds run in ABBA order (ours first on even runs, SB3 first on odd ones) so slow
drift of the machine's load does not favour one side.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from esper_lab.bench.timing import Log, quiet
from esper_lab.config import TrainConfig, preset
from esper_lab.evaluate import evaluate_policies

EVAL_SEED = 1000
DIFFERENCES = (
    "entropy: sb3 ent_coef 0.01 on the unnormalised sum of the 8 head entropies (nats); ours entropy_coef x per-head "
    "multipliers on each head's entropy normalised to [0, 1]",
    "normalisation: ours keeps running observation and reward normalisers; sb3 runs on raw features (all in [-1, 1]) "
    "and raw rewards (no VecNormalize)",
    "advantages: ours normalised once over the whole rollout; sb3 per minibatch",
    "value clip: ours max(unclipped, clipped) squared error with value_clip; sb3 clip_range_vf = value_clip on the "
    "clipped prediction only",
    "parallel worlds: with backend 'process' ours runs the worlds in one forked worker per core; sb3 gets "
    "SubprocVecEnv, one worker process per world (backend 'local': both step them one after another)",
    "masks: ours samples legal actions only; sb3 samples unmasked and illegal actions execute as WAIT",
    "critic: ours Q(s, op) on the shared LSTM; sb3 default layout, a separate critic LSTM and V(s)",
    "KL stop: both stop an update before the step whose minibatch KL exceeds 1.5 x target_kl (ours per-head pooled "
    "KL, sb3 joint)",
)


@dataclass
class SameWorldConfig:
    """Part C settings."""

    preset: str = "demo"
    """World, policy and PPO config of both sides."""
    budget_minutes: float = 5.0
    """Training wall-clock budget per run and side."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One run per seed and side."""
    episodes: int = 20
    """Evaluation episodes per run (episode seeds EVAL_SEED, EVAL_SEED + 1, ...)."""
    threads: int = 2
    """torch threads on both sides."""
    deterministic: bool = False
    """Evaluate with argmax actions (False = sample, the default of `esper-lab evaluate`)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Extra preset overrides (tests shrink the world with these)."""


def train_config(cfg: SameWorldConfig, seed: int) -> TrainConfig:
    """The preset for `seed`, with the thread count, the budget and updates high enough for the budget to decide."""
    return preset(cfg.preset, **{"seed": seed, "torch_threads": cfg.threads, "max_minutes": cfg.budget_minutes,
                                 "updates": 10**9, **cfg.overrides})


def _evaluation(policy, train_cfg: TrainConfig, cfg: SameWorldConfig) -> dict[str, Any]:
    return evaluate_policies([policy], train_cfg.world, episodes=cfg.episodes, seed=EVAL_SEED)[policy.name]


def run_ours(cfg: SameWorldConfig, seed: int, log: Log = quiet) -> dict[str, Any]:
    """Train our policy for the budget, evaluate it. Returns seconds, env_steps, sps, updates, params, eval."""
    from esper_lab.agent import AgentPolicy
    from esper_lab.rl.trainer import Trainer

    train_cfg = train_config(cfg, seed)
    trainer = Trainer(train_cfg)
    try:
        def progress(record: dict) -> None:
            log(f"C seed {seed} esper_lab: update {record['update']}, {record['env_steps']} env steps, "
                f"return {record['episode_return']:+.2f}")

        t0 = time.perf_counter()
        trainer.run(progress=progress)
        seconds = time.perf_counter() - t0
        if seconds < 60 * cfg.budget_minutes:  # with updates = 10**9 only a stop request (Ctrl-C, SIGTERM) ends early
            raise KeyboardInterrupt(f"esper_lab training (seed {seed}) stopped before its budget")
        log(f"C seed {seed} esper_lab: evaluating on {cfg.episodes} episodes")
        policy = AgentPolicy(trainer.agent, deterministic=cfg.deterministic, name="esper_lab")
        evaluation = _evaluation(policy, train_cfg, cfg)
        params = sum(p.numel() for p in trainer.agent.parameters())
        return dict(seconds=seconds, env_steps=trainer.env_steps, sps=trainer.env_steps / seconds,
                    updates=trainer.update_idx, params=params, eval=evaluation)
    finally:
        trainer.close()


def run_sb3(cfg: SameWorldConfig, seed: int, log: Log = quiet) -> dict[str, Any]:
    """Train RecurrentPPO for the budget, evaluate it. Returns the same keys as `run_ours`."""
    from esper_lab.bench.compare.sb3_side import SB3Policy, budget_callback, make_world_model

    train_cfg = train_config(cfg, seed)
    torch.set_num_threads(cfg.threads)
    model = make_world_model(train_cfg, seed)
    callback = budget_callback(60 * cfg.budget_minutes, log, label=f"C seed {seed} sb3")
    try:
        t0 = time.perf_counter()
        model.learn(total_timesteps=10**12, callback=callback)
        seconds = time.perf_counter() - t0
    finally:
        model.env.close()
    log(f"C seed {seed} sb3: evaluating on {cfg.episodes} episodes")
    evaluation = _evaluation(SB3Policy(model, deterministic=cfg.deterministic, name="sb3"), train_cfg, cfg)
    params = sum(p.numel() for p in model.policy.parameters())
    return dict(seconds=seconds, env_steps=int(model.num_timesteps), sps=model.num_timesteps / seconds,
                updates=callback.updates, params=params, eval=evaluation)


def pooled(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Over all runs of one side: mean and std of return and final val acc over every evaluated episode, and
    SPS = all env steps / all training seconds."""
    returns = [x for r in runs for x in r["eval"]["return_list"]]
    accs = [x for r in runs for x in r["eval"]["final_val_acc_list"]]
    return dict(return_mean=statistics.fmean(returns), return_std=statistics.pstdev(returns),
                final_val_acc_mean=statistics.fmean(accs), final_val_acc_std=statistics.pstdev(accs),
                sps=sum(r["env_steps"] for r in runs) / sum(r["seconds"] for r in runs),
                updates_mean=statistics.fmean(r["updates"] for r in runs), episodes=len(returns))


def in_this_process(cfg: SameWorldConfig, side: str, seed: int, log: Log = quiet) -> dict[str, Any]:
    """One side's run in this process (`run_ours` or `run_sb3`)."""
    return (run_ours if side == "ours" else run_sb3)(cfg, seed, log)


def run_same_world(cfg: SameWorldConfig | None = None, log: Log = quiet,
                   run_side: Callable[..., dict[str, Any]] = in_this_process) -> dict[str, Any]:
    """Part C. `run_side(cfg, side, seed, log)` runs one side's training and evaluation (`bench compare` passes one
    that starts a fresh process each time). Returns `{config, hyperparameters, differences, runs, pooled,
    return_diff, sps_ratio}`; runs hold per seed `{seed, order, ours, sb3}`; return_diff = ours - sb3 pooled mean
    return, sps_ratio = ours / sb3."""
    from esper_lab.bench.compare.sb3_side import world_hyperparameters, world_vec_env

    cfg = cfg or SameWorldConfig()
    first = train_config(cfg, cfg.seeds[0])
    runs = []
    for i, seed in enumerate(cfg.seeds):
        order = ("ours", "sb3") if i % 2 == 0 else ("sb3", "ours")
        result: dict[str, Any] = {"seed": seed, "order": list(order)}
        for side in order:
            log(f"C seed {seed} {'esper_lab' if side == 'ours' else 'sb3'}: training for {cfg.budget_minutes:g} min")
            result[side] = run_side(cfg, side, seed, log)
        runs.append(result)
    pools = {side: pooled([r[side] for r in runs]) for side in ("ours", "sb3")}
    ours_hp = dict(num_envs=first.num_envs, max_epochs=first.world.max_epochs, host=first.world.host,
                   backend=first.backend, policy=asdict(first.policy), ppo=asdict(first.ppo))
    return {
        "config": asdict(cfg),
        "hyperparameters": {"ours": ours_hp, "sb3": {**world_hyperparameters(first), "policy": "MultiInputLstmPolicy",
                                                     "vec_env": world_vec_env(first)}},
        "differences": list(DIFFERENCES),
        "runs": runs,
        "pooled": pools,
        "return_diff": pools["ours"]["return_mean"] - pools["sb3"]["return_mean"],
        "sps_ratio": pools["ours"]["sps"] / pools["sb3"]["sps"],
    }
