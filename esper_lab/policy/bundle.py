"""LSTMPolicyBundle: what the trainer talks to (Esper's `lstm_bundle.py`).

A thin wrapper over FactoredRecurrentActorCritic with the trainer's argument order: `blueprint_indices` always
right after the features, then masks, then hidden (the addendum's Step 2). It adds nothing to the maths, so the
invariants tested on the network (one op sample for action and value, stored-op values) hold here unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Mapping

import torch
import torch.nn as nn

from esper_lab.policy.network import (
    EvaluateOutput,
    FactoredRecurrentActorCritic,
    ForwardOutput,
    GetActionResult,
    Hidden,
)

if TYPE_CHECKING:
    from esper_lab.config import PolicyConfig

Masks = Mapping[str, torch.Tensor] | None


class LSTMPolicyBundle:
    """The recurrent policy as the trainer sees it.

    Args: as FactoredRecurrentActorCritic (`state_dim, num_slots=3, *, feature_dim, lstm_hidden_dim, critic`).
    Attributes: `network` (the nn.Module), `spec` (the constructor arguments, for checkpoints), `is_recurrent`.
    """

    is_recurrent = True

    def __init__(
        self,
        state_dim: int,
        num_slots: int = 3,
        *,
        feature_dim: int = 512,
        lstm_hidden_dim: int = 512,
        critic: str = "q_op",
    ):
        self.spec = dict(
            state_dim=state_dim,
            num_slots=num_slots,
            feature_dim=feature_dim,
            lstm_hidden_dim=lstm_hidden_dim,
            critic=critic,
        )
        self.network = FactoredRecurrentActorCritic(
            state_dim, num_slots, feature_dim=feature_dim, lstm_hidden_dim=lstm_hidden_dim, critic=critic
        )

    @classmethod
    def from_config(cls, state_dim: int, cfg: "PolicyConfig", num_slots: int = 3) -> "LSTMPolicyBundle":
        """Build from a `config.PolicyConfig` (feature_dim, lstm_hidden_dim, critic)."""
        return cls(
            state_dim, num_slots, feature_dim=cfg.feature_dim, lstm_hidden_dim=cfg.lstm_hidden_dim, critic=cfg.critic
        )

    @property
    def critic(self) -> str:
        return self.network.critic

    def get_action(
        self,
        features: torch.Tensor,
        blueprint_indices: torch.Tensor,
        masks: Masks = None,
        hidden: Hidden | None = None,
        deterministic: bool = False,
    ) -> GetActionResult:
        """One step, no graph: `features [B, D]`, `blueprint_indices [B, S]`, masks `{head: [B, k]}` -> per-head
        `[B]` actions / log_probs, `value [B]` for `actions["op"]`, `op_values [B, 6]`, `hidden`."""
        return self.network.get_action(features, blueprint_indices, hidden, masks, deterministic)

    def forward(
        self,
        features: torch.Tensor,
        blueprint_indices: torch.Tensor,
        masks: Masks = None,
        hidden: Hidden | None = None,
    ) -> ForwardOutput:
        """Sequence pass `[B, T, D]`, `[B, T, S]` -> ForwardOutput (masked logits, value, sampled_op, op_values)."""
        return self.network(features, blueprint_indices, hidden, masks)

    def evaluate_actions(
        self,
        features: torch.Tensor,
        blueprint_indices: torch.Tensor,
        actions: Mapping[str, torch.Tensor],
        masks: Masks = None,
        hidden: Hidden | None = None,
    ) -> EvaluateOutput:
        """PPO pass over stored sequences -> EvaluateOutput(log_probs, value (stored op), entropy, hidden, q_value)."""
        return self.network.evaluate_actions(features, blueprint_indices, actions, hidden, masks)

    def get_value(
        self,
        features: torch.Tensor,
        blueprint_indices: torch.Tensor,
        hidden: Hidden | None,
        op: torch.Tensor,
        masks: Masks = None,
    ) -> torch.Tensor:
        """Debug only, no graph: the baseline for `op`. `[B, D]`, `op [B]` -> `[B]` (or `[B, T]` for sequences)."""
        return self.network.get_value(features, blueprint_indices, hidden, op, masks)

    def initial_hidden(self, batch: int) -> Hidden:
        """Zero (h, c), each `[1, batch, H]`: ordinary tensors, safe to feed into a graph later."""
        return self.network.initial_hidden(batch)

    # nn.Module plumbing the trainer needs
    def parameters(self) -> Iterator[nn.Parameter]:
        return self.network.parameters()

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return self.network.named_parameters()

    def to(self, *args: Any, **kwargs: Any) -> "LSTMPolicyBundle":
        self.network.to(*args, **kwargs)
        return self

    def train(self, mode: bool = True) -> "LSTMPolicyBundle":
        self.network.train(mode)
        return self

    def eval(self) -> "LSTMPolicyBundle":
        return self.train(False)

    def state_dict(self) -> dict[str, Any]:
        """The network's state_dict (embedding null index included)."""
        return self.network.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
        return self.network.load_state_dict(state_dict, strict=strict)
