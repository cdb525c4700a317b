"""Fixed probe states and the per-update snapshots the dashboard and notebooks read.

A probe is one heuristic-policy episode of a fixed world, recorded once at the start of training: its raw features,
blueprint indices and masks, and a snapshot of the world at each reported step (`states`, what the Monte Carlo ground
truth of rl/truth.py starts from). A snapshot re-runs the current policy over that episode as one sequence (from a zero
hidden state, with the current observation normaliser) and records, at a few chosen epochs, Q(s, op) for every op,
the op probabilities and the op mask, next to the blueprint-embedding table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from esper_lab.actions import EMPTY_BLUEPRINT_INDEX, HEAD_NAMES, OP_NAMES, BlueprintAction
from esper_lab.agent import Agent
from esper_lab.config import WorldConfig
from esper_lab.env.vector import VectorEnv
from esper_lab.features import batch_obs_to_features
from esper_lab.policy.baselines import HeuristicPolicy

BLUEPRINT_ROW_NAMES = tuple(bp.name for bp in BlueprintAction) + ("NULL",)
PROBE_COUNT = 6


@dataclass
class Probe:
    obs: torch.Tensor  # [1, T, D] raw features
    blueprint_indices: torch.Tensor  # [1, T, S]
    masks: dict[str, torch.Tensor]  # {head: [1, T, k]}
    steps: list[int]  # which time steps are reported
    names: list[str]
    states: list[bytes] = field(default_factory=list)  # the world at each reported step (`World.get_state`)


def make_probe(world: WorldConfig, seed: int) -> Probe:
    """Record one heuristic episode of a fixed world (seed-derived, separate from the training worlds), on the
    sequential engine (it can snapshot; the batched one gives the same numbers on one thread)."""
    env = VectorEnv(replace(world, engine="sequential"), 1, seed=seed)
    policy = HeuristicPolicy()
    reports = env.reset([10_000_019 + seed])
    policy.reset(1)
    T = world.max_epochs
    steps = sorted({round(i * (T - 1) / (PROBE_COUNT - 1)) for i in range(PROBE_COUNT)})
    obs, idx, masks, names, states = [], [], {h: [] for h in HEAD_NAMES}, [], []
    for t in range(T):
        if t in steps:
            states.append(env.get_states()[0])
        o, b = batch_obs_to_features(reports)  # [1, D], [1, S]
        m = env.masks()
        obs.append(o)
        idx.append(b)
        for h in HEAD_NAMES:
            masks[h].append(m[h])
        names.append(f"epoch {t}: " + describe_slots(b[0]))
        reports, *_ = env.step(policy.act(reports, m))
    return Probe(
        obs=torch.stack(obs, dim=1),  # [1, T, D]
        blueprint_indices=torch.stack(idx, dim=1),  # [1, T, S]
        masks={h: torch.stack(v, dim=1) for h, v in masks.items()},  # [1, T, k]
        steps=steps,
        names=[names[s] for s in steps],
        states=states,
    )


def describe_slots(blueprint_indices: torch.Tensor) -> str:
    """'CONV_LIGHT, -, -' for indices [S]."""
    return ", ".join("-" if int(i) == EMPTY_BLUEPRINT_INDEX else BlueprintAction(int(i)).name for i in blueprint_indices)


@torch.no_grad()
def snapshot(agent: Agent, probe: Probe) -> dict[str, Any]:
    """Embedding table and per-op values on the probe states, for snapshots/update_NNNNNN.json.

    The forward pass samples an op; `fork_rng` keeps that draw out of the training RNG stream, so a run with a run
    directory gives the same numbers as one without."""
    net = agent.network
    with torch.random.fork_rng(devices=[]):
        out = agent.forward(agent.obs_norm.normalize(probe.obs), probe.blueprint_indices, probe.masks)
    steps = torch.tensor(probe.steps)
    op_mask = probe.masks["op"][0, steps]  # [P, 6]
    op_logits = out.op_logits[0, steps].masked_fill(~op_mask, float("-inf"))  # [P, 6]
    return {
        "blueprint_names": list(BLUEPRINT_ROW_NAMES),
        "embedding": net.blueprint_embedding.table_weight().tolist(),  # [14, 4]
        "op_names": list(OP_NAMES),
        "probe_names": probe.names,
        "probe_op_values": out.op_values[0, steps].tolist(),  # [P, 6]
        "probe_op_probs": torch.softmax(op_logits, dim=-1).tolist(),  # [P, 6]
        "probe_op_masks": op_mask.tolist(),
    }

