"""`esper-lab bench policy`: how fast the policy runs at a preset's sizes on this machine (default: `phase4`).

Two numbers matter for training speed:
- rollout: `get_action` milliseconds per vectorised step for 4, 8 and 16 worlds, with the hidden state carried from
  step to step and legal masks of plausible worlds (`synthetic.world_masks`); median over `steps` steps after 10
  warm-up steps;
- update: the real `PPOUpdater.update` (the preset's `PPOConfig` with `target_kl=None`, so no KL stop changes the
  work: epochs x minibatches optimizer steps) on one synthetic rollout of the preset's num_envs x world.max_epochs
  steps (`synthetic.synthetic_update`: random features, legal masks and the network's own actions, log-probs and
  values); median over `repeats` updates after one warm-up update.

Run: `python -m esper_lab.bench.policy [preset]` (prints the dict as JSON).
"""

from __future__ import annotations

import dataclasses
import json
import sys

import torch

from esper_lab.actions import DEFAULT_NUM_SLOTS
from esper_lab.agent import Agent
from esper_lab.bench.synthetic import random_inputs, synthetic_update, world_masks
from esper_lab.bench.timing import measure
from esper_lab.config import preset
from esper_lab.env.host import param_count
from esper_lab.features import OBS_DIM


def get_action_ms(agent: Agent, n: int, steps: int, seed: int = 0) -> float:
    """Median ms of one `get_action` step for `n` worlds (hidden carried, `world_masks(n)`), over `steps` steps
    after 10 warm-up steps."""
    obs, bp_idx = random_inputs(n, torch.Generator().manual_seed(seed))  # [n, D], [n, S]
    masks = world_masks(n)  # {head: [n, k]}, op_slot: [n, 6, S]
    carried = {"hidden": agent.initial_hidden(n)}  # (h, c), each [1, n, H]

    def step() -> None:
        carried["hidden"] = agent.get_action(obs, bp_idx, masks, carried["hidden"]).hidden

    return measure(step, repeats=steps, warmup=10, scale=1e3)["median"]


def bench_policy(
    preset_name: str = "phase4",
    threads: int = 2,
    *,
    env_counts: tuple[int, ...] = (4, 8, 16),
    steps: int = 100,
    repeats: int = 5,
    seed: int = 0,
) -> dict:
    """Time the rollout step and the real PPO update at the sizes of preset `preset_name`.

    Returns:
        dict with `preset`, `threads`, `params`, the sizes (`num_envs` E, `episode_length` T, `obs_dim`, `num_slots`,
        every `PolicyConfig` field: `feature_dim`, `lstm_hidden_dim`, `critic`, `masks`; `ppo_epochs`,
        `ppo_minibatches`), `get_action_ms`
        ({worlds: median ms per step}), `update_ms` and `update_iqr_ms` (median and IQR of ms per
        `PPOUpdater.update` over `repeats`), `update_shape` [E, T], `optimizer_steps` per update and `ratio_first`
        (max |ratio - 1| of the warm-up update's first minibatch: ~0, the stored log-probs are exact).
    """
    cfg = preset(preset_name)
    E, T = cfg.num_envs, cfg.world.max_epochs
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        agent = Agent.from_config(cfg.policy, DEFAULT_NUM_SLOTS)
        result: dict = dict(preset=preset_name, threads=threads, params=param_count(agent), num_envs=E,
                            episode_length=T, obs_dim=OBS_DIM, num_slots=DEFAULT_NUM_SLOTS,
                            **dataclasses.asdict(cfg.policy), ppo_epochs=cfg.ppo.epochs,
                            ppo_minibatches=cfg.ppo.minibatches)
        result["get_action_ms"] = {n: get_action_ms(agent, n, steps, seed) for n in env_counts}
        ppo = dataclasses.replace(cfg.ppo, target_kl=None)
        _, update = synthetic_update(agent, ppo, world_masks(E), T, gamma=cfg.gamma, seed=seed,
                                     truncate=True)  # batch [E, T, ...]
        first = update()  # warm-up
        timing = measure(update, repeats=repeats, warmup=0, scale=1e3)
        result.update(update_ms=timing["median"], update_iqr_ms=timing["iqr"], update_shape=[E, T],
                      optimizer_steps=first["optimizer_steps"], ratio_first=first["ratio_first"])
        return result
    finally:
        torch.set_num_threads(previous_threads)


if __name__ == "__main__":
    print(json.dumps(bench_policy(*sys.argv[1:2]), indent=2))
