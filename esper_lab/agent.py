"""The agent: Policy Network V2 and its observation normaliser behind one set of calls (Esper's `LSTMPolicyBundle`).

Everything that acts with or trains the policy goes through an `Agent`: the rollout and its bootstrap, the PPO
update, a checkpoint under evaluation, the probes, the notebooks and the app. One argument order everywhere:
features, blueprint_indices, (actions,) masks, hidden. "Normalise the features, call the policy, carry the hidden
state" is written once, in `act`:

    reports --act(reports, masks, hidden)--> Observation(raw [E, D], obs [E, D] normalised, blueprint_indices [E, S])
                                             GetActionResult(joint_actions [E, 8], joint_log_probs [E, 8], value [E],
                                                             op_values [E, 6], hidden)
    end of rollout: bootstrap(post-action reports, masks, carried hidden) -> value [E]   (deterministic get_action)
    PPO update:     evaluate_relevant(obs [B, T, D], bp [B, T, S], actions [B, T, 8], relevant [B, T, 8], valid,
                                      executed op, masks, hidden0) -> RelevantEvaluation (flat over valid steps)
                    (evaluate_actions: the same numbers on every step and head, for inspection and notebooks)

The normaliser is frozen while the agent acts: the trainer calls `obs_norm.update` once per rollout, just before
the update, so the normalised observation the buffer stores is exactly what the policy saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from esper_lab.actions import DEFAULT_NUM_SLOTS, OP_SLOT_KEY, check_op_slot_masks
from esper_lab.config import MASK_MODES, PolicyConfig, TrainConfig, WorldConfig
from esper_lab.features import OBS_DIM, batch_obs_to_features
from esper_lab.policy.network import EvaluateOutput, FactoredRecurrentActorCritic, ForwardOutput, GetActionResult, Hidden
from esper_lab.policy.normalize import RunningMeanStd
from esper_lab.policy.relevant import RelevantEvaluation, evaluate_relevant
from esper_lab.runs import load_checkpoint, restoring

Masks = Mapping[str, torch.Tensor] | None


@dataclass(frozen=True)
class Observation:
    """What the policy saw at one step of E worlds."""

    raw: torch.Tensor  # [E, D] features before normalisation (what the normaliser learns from)
    obs: torch.Tensor  # [E, D] normalised: the policy's input, and what the buffer stores
    blueprint_indices: torch.Tensor  # [E, S] int64, -1 = empty slot


class Agent:
    """Policy Network V2 plus its observation normaliser.

    Args:
        network: a `FactoredRecurrentActorCritic`.
        obs_norm: the running feature normaliser (a fresh one of the network's width when None).
        masks: 'conditional' (sample the op, then the slot among the slots where that op can execute: the world's
            `masks[OP_SLOT_KEY]` reach `get_action`) or 'independent' (Phase 4 as shipped: that table is dropped).
    Attributes: `network` (the nn.Module), `obs_norm`, `masks`, `spec` (the network's constructor arguments).
    """

    is_recurrent = True

    def __init__(self, network: FactoredRecurrentActorCritic, obs_norm: RunningMeanStd | None = None,
                 masks: str = "conditional"):
        if masks not in MASK_MODES:
            raise ValueError(f"unknown masks mode {masks!r}; choose one of {MASK_MODES}")
        self.network, self.masks = network, masks
        self.obs_norm = obs_norm if obs_norm is not None else RunningMeanStd(network.state_dim)

    @classmethod
    def from_config(cls, cfg: PolicyConfig, num_slots: int = DEFAULT_NUM_SLOTS, state_dim: int = OBS_DIM) -> "Agent":
        """A fresh agent of the sizes and modes in `cfg` (feature_dim, lstm_hidden_dim, critic, masks)."""
        network = FactoredRecurrentActorCritic(state_dim, num_slots, feature_dim=cfg.feature_dim,
                                               lstm_hidden_dim=cfg.lstm_hidden_dim, critic=cfg.critic)
        return cls(network, masks=cfg.masks)

    @property
    def spec(self) -> dict[str, Any]:
        n = self.network
        return dict(state_dim=n.state_dim, num_slots=n.num_slots, feature_dim=n.feature_net[0].out_features,
                    lstm_hidden_dim=n.lstm_hidden_dim, critic=n.critic)

    @property
    def critic(self) -> str:
        return self.network.critic

    def initial_hidden(self, batch: int) -> Hidden:
        """Zero (h, c), each `[1, batch, H]`: ordinary tensors, safe to feed into a graph later."""
        return self.network.initial_hidden(batch)

    # --- acting -------------------------------------------------------------------------------------------------

    def observe(self, reports: Sequence[Any]) -> Observation:
        """Features of E world reports, normalised with the current (frozen) statistics."""
        raw, blueprint_indices = batch_obs_to_features(reports)  # [E, D], [E, S]
        return Observation(raw, self.obs_norm.normalize(raw), blueprint_indices)

    def act(
        self, reports: Sequence[Any], masks: Masks, hidden: Hidden, deterministic: bool = False
    ) -> tuple[Observation, GetActionResult]:
        """One step for E worlds: observe, then `get_action`. Returns what was seen and what was chosen."""
        seen = self.observe(reports)
        return seen, self.get_action(seen.obs, seen.blueprint_indices, masks, hidden, deterministic)

    def bootstrap(self, reports: Sequence[Any], masks: Masks, hidden: Hidden) -> torch.Tensor:
        """The value of the POST-action state with the CARRIED hidden state: `get_action(deterministic=True)`, so
        the value is Q(s', argmax op) in critic 'q_op' (never `get_value` with a stale op). `[E]`."""
        return self.act(reports, masks, hidden, deterministic=True)[1].value

    def executed_value(self, result: GetActionResult, executed_op: torch.Tensor) -> torch.Tensor:
        """The baseline to store for a step whose op may have run as another one (`executed_op [E]`): in critic
        'q_op' Q(s, executed op) from `result.op_values` where the world ran another op, else `result.value`
        (the other critics do not depend on the op). Keeps the stored value the one the update fits. `[E]`."""
        if self.critic != "q_op":
            return result.value
        other = result.op_values.gather(1, executed_op.unsqueeze(1)).squeeze(1)  # [E]
        return torch.where(executed_op == result.sampled_op, result.value, other)

    # --- the network's four calls, with blueprint_indices right after the features -----------------------------

    def get_action(self, features: torch.Tensor, blueprint_indices: torch.Tensor, masks: Masks = None,
                   hidden: Hidden | None = None, deterministic: bool = False) -> GetActionResult:
        """One step, no graph: `features [B, D]` (already normalised), `blueprint_indices [B, S]`, masks
        `{head: [B, k]}` plus, for conditional sampling, `OP_SLOT_KEY: [B, 6, S]`. `result.masks` are the masks
        each head was sampled under: what the buffer stores and the update re-evaluates with."""
        if masks and self.masks == "independent":
            masks = {name: m for name, m in masks.items() if name != OP_SLOT_KEY}
        return self.network.get_action(features, blueprint_indices, hidden, masks, deterministic)

    def forward(self, features: torch.Tensor, blueprint_indices: torch.Tensor, masks: Masks = None,
                hidden: Hidden | None = None) -> ForwardOutput:
        """Sequence pass `[B, T, D]`, `[B, T, S]` -> ForwardOutput (masked logits, value, sampled_op, op_values)."""
        return self.network(features, blueprint_indices, hidden, masks)

    def evaluate_actions(self, features: torch.Tensor, blueprint_indices: torch.Tensor,
                         actions: Mapping[str, torch.Tensor] | torch.Tensor, masks: Masks = None,
                         hidden: Hidden | None = None, value_op: torch.Tensor | None = None) -> EvaluateOutput:
        """PPO pass over stored sequences; `actions` is the joint `[B, T, 8]` or `{head: [B, T]}`, `masks` the ones
        each head was sampled under; the value is conditioned on `value_op` (default the stored op)."""
        return self.network.evaluate_actions(features, blueprint_indices, actions, hidden, masks, value_op)

    def evaluate_relevant(self, features: torch.Tensor, blueprint_indices: torch.Tensor, actions: torch.Tensor,
                          relevant: torch.Tensor, valid: torch.Tensor, value_op: torch.Tensor, masks: Masks = None,
                          hidden: Hidden | None = None) -> RelevantEvaluation:
        """The PPO update's pass (`policy/relevant.py`): each head only on the valid steps where it mattered
        (`relevant [B, T, 8]`), the critic on valid steps, conditioned on `value_op [B, T]`; flat `[N]` outputs."""
        return evaluate_relevant(self.network, features, blueprint_indices, actions, relevant, valid, value_op,
                                 masks, hidden)

    def get_value(self, features: torch.Tensor, blueprint_indices: torch.Tensor, hidden: Hidden | None,
                  op: torch.Tensor, masks: Masks = None) -> torch.Tensor:
        """Debug only, no graph: the baseline for `op`. `[B, D]`, `op [B]` -> `[B]` (or `[B, T]` for sequences)."""
        return self.network.get_value(features, blueprint_indices, hidden, op, masks)

    # --- nn.Module plumbing and checkpoints ---------------------------------------------------------------------

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.network.parameters()

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return self.network.named_parameters()

    def train(self, mode: bool = True) -> "Agent":
        self.network.train(mode)
        return self

    def eval(self) -> "Agent":
        return self.train(False)

    def state_dict(self) -> dict[str, Any]:
        """The network's state_dict (embedding null index included); the normaliser is `obs_norm.state_dict()`."""
        return self.network.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
        return self.network.load_state_dict(state_dict, strict=strict)

    def checkpoint_state(self) -> dict[str, Any]:
        """`{"policy": network state, "obs_norm": normaliser state}`: the agent's part of a checkpoint."""
        return {"policy": self.state_dict(), "obs_norm": self.obs_norm.state_dict()}

    def load_checkpoint_state(self, ckpt: Mapping[str, Any]) -> None:
        self.load_state_dict(ckpt["policy"])
        self.obs_norm.load_state_dict(ckpt["obs_norm"])


def load_agent(path: Path | str) -> tuple[Agent, TrainConfig]:
    """The agent of a training checkpoint (loaded weights-only) and the run's config; `CheckpointError` if the file
    is not one or its contents do not fit the config it carries."""
    ckpt = load_checkpoint(path)
    with restoring(path):
        cfg = TrainConfig.from_dict(ckpt["config"])
        agent = Agent.from_config(cfg.policy)  # sizes and the mask mode it was trained with
        agent.load_checkpoint_state(ckpt)
    return agent, cfg


class AgentPolicy:
    """An agent behind the baselines' `reset` / `act` protocol (for `evaluate_policies`): carries the LSTM state."""

    def __init__(self, agent: Agent, *, deterministic: bool = False, name: str = "trained"):
        self.agent, self.deterministic, self.name = agent, deterministic, name
        self.hidden: Hidden | None = None
        self.step = 0

    def reset(self, num_envs: int) -> None:
        self.hidden, self.step = self.agent.initial_hidden(num_envs), 0

    def act(self, reports: Sequence[Any], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """`reports` of E worlds and their masks `{head: [E, k]}` -> the joint action `[E, 8]` int64."""
        if self.hidden is None:
            self.reset(len(reports))
        self.step += 1
        check_op_slot_masks(masks, self.step)
        _, result = self.agent.act(reports, masks, self.hidden, self.deterministic)
        self.hidden = result.hidden
        return result.joint_actions  # [E, 8]


def load_trained_policy(path: Path | str, *, deterministic: bool = False) -> tuple[AgentPolicy, WorldConfig]:
    """A checkpoint's agent as a `reset` / `act` policy, and the world it was trained on."""
    agent, cfg = load_agent(path)
    return AgentPolicy(agent, deterministic=deterministic), cfg.world
