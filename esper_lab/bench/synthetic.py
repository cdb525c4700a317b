"""Random but legal policy inputs, and the one synthetic rollout that every update benchmark times.

- `random_inputs`, `all_legal_masks`, `world_masks`: one step's features, blueprint indices and masks for n worlds.
- `synthetic_update`: a `RolloutBuffer` filled by the agent's own `get_action` on random inputs (so the stored
  log-probs and values are exact and the first ratios are 1) and the real `PPOUpdater.update` on it. It is the only
  place in `esper_lab.bench` that calls `RolloutBuffer.add` or builds a `PPOUpdater`: adapt it here when their API
  changes (`bench policy` and `bench compare` part B both go through it).
"""

from __future__ import annotations

from typing import Callable

import torch

from esper_lab.actions import (DEFAULT_NUM_SLOTS, NUM_BLUEPRINTS, AlphaMode, SeedStage, SlotView, compute_action_masks,
                               head_sizes)
from esper_lab.agent import Agent
from esper_lab.config import PPOConfig, RewardConfig
from esper_lab.features import OBS_DIM
from esper_lab.rl.buffer import RolloutBatch, RolloutBuffer
from esper_lab.rl.ppo import PPOUpdater

Masks = dict[str, torch.Tensor]

WORLDS = (  # plausible three-slot worlds: early (all empty), mid, late
    (SlotView(None), SlotView(None), SlotView(None)),
    (SlotView(None), SlotView(SeedStage.TRAINING, seed_age=3), SlotView(SeedStage.HOLDING, seed_age=9)),
    (SlotView(SeedStage.FOSSILIZED, seed_age=20), SlotView(SeedStage.BLENDING, AlphaMode.UP, seed_age=6),
     SlotView(SeedStage.HOLDING, seed_age=12)),
)


def random_inputs(n: int, gen: torch.Generator, num_slots: int = DEFAULT_NUM_SLOTS) -> tuple[torch.Tensor, ...]:
    """Random observations `[n, OBS_DIM]` float32 and valid blueprint indices `[n, S]` int64 in [-1, 12]."""
    obs = torch.randn(n, OBS_DIM, generator=gen)  # [n, D]
    bp_idx = torch.randint(-1, NUM_BLUEPRINTS, (n, num_slots), generator=gen)  # [n, S]
    return obs, bp_idx


def all_legal_masks(n: int, num_slots: int = DEFAULT_NUM_SLOTS) -> Masks:
    """`{head: True [n, k]}` for every head (what an unmasked learner such as SB3 samples from)."""
    return {name: torch.ones(n, k, dtype=torch.bool) for name, k in head_sizes(num_slots).items()}


def world_masks(n: int) -> Masks:
    """Legal-action masks of n three-slot worlds, world i being `WORLDS[i % 3]`, through `compute_action_masks` (so
    some heads are constrained, as in a real rollout): `{head: bool [n, k]}` plus the op-slot table `[n, 6, S]`."""
    per_world = [compute_action_masks(WORLDS[i % len(WORLDS)]) for i in range(n)]  # n x {head: [k]}
    return {name: torch.stack([m[name] for m in per_world]) for name in per_world[0]}  # {head: [n, k]}


def synthetic_update(
    agent: Agent,
    ppo: PPOConfig,
    masks: Masks,
    steps: int,
    *,
    gamma: float = RewardConfig.gamma,
    seed: int = 0,
    warm_steps: int = 0,
    truncate: bool = False,
) -> tuple[RolloutBatch, Callable[[], dict[str, float]]]:
    """One synthetic rollout of E x T = (rows of `masks`) x `steps`, and the real PPO update on it.

    Each step: random features `[E, D]` and blueprint indices `[E, S]` (`random_inputs`, seeded by `seed`), then
    `agent.get_action(..., masks {head: [E, k]} (+ the op-slot table), hidden)` samples a legal joint action `[E, 8]`
    and returns its exact per-head log-probs `[E, 8]`, value, Q(s, op) and the masks each head was sampled under
    (stored); the sampled op is the executed one; reward is a random 0 or 1. `warm_steps` unstored steps run
    first, so the rows' initial hidden state is a mid-episode one. Every row ends at its last step: a truncation
    with a bootstrap value when `truncate`, else a terminal. Sampling uses torch's global RNG (seed it first for
    repeatable log-probs).

    Returns:
        `(batch, update)`: the `RolloutBatch` (every field `[E, T, ...]`) and `update()`, which runs
        `PPOUpdater(agent, ppo, gamma).update(batch)` (one updater: its Adam state carries over between calls) and
        returns its metrics; on the first call `ratio_first` is ~0.
    """
    E, S = masks["slot"].shape  # [E, S]: the slot head has one entry per slot
    gen = torch.Generator().manual_seed(seed)
    buffer = RolloutBuffer(E, steps, OBS_DIM, S, agent.network.lstm_hidden_dim)
    hidden = agent.initial_hidden(E)  # (h, c), each [1, E, H]
    for _ in range(warm_steps):
        hidden = agent.get_action(*random_inputs(E, gen, S), masks, hidden).hidden
    buffer.reset(hidden)  # the rows start from here
    for t in range(steps):
        obs, bp_idx = random_inputs(E, gen, S)  # [E, D], [E, S]
        result = agent.get_action(obs, bp_idx, masks, hidden)
        end = torch.full((E,), t == steps - 1)  # [E] bool
        buffer.add(obs=obs, blueprint_indices=bp_idx, actions=result.joint_actions, log_probs=result.joint_log_probs,
                   value=result.value, op_values=result.op_values, executed_op=result.sampled_op,
                   reward=torch.randint(0, 2, (E,), generator=gen).float(), done=end, truncated=end & truncate,
                   masks=result.masks)  # the masks each head was sampled under
        hidden = result.hidden
    if truncate:
        buffer.set_bootstrap(agent.get_action(*random_inputs(E, gen, S), masks, hidden, deterministic=True).value)
    batch, updater = buffer.batched(), PPOUpdater(agent, ppo, gamma)
    return batch, lambda: updater.update(batch)
