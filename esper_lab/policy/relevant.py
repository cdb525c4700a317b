"""The PPO update's pass over stored steps: every head evaluated only where it mattered.

A head's clipped surrogate, entropy and KL are averaged over the steps where that head mattered for the executed op
(`actions.HEAD_RELEVANCE`) and valid. `evaluate_actions` computes all eight heads on every step and the loss then
multiplies most of them by 0: in a rollout of mostly WAIT, the blueprint head (512 -> 512 -> 256 -> 13) runs on
every step for the few GERMINATE steps that use it, forward and backward. `evaluate_relevant` runs the shared trunk
once, then each head on its own steps only (`index_select` of the trunk output, packed back into the rollout's
`[N, 8, 13]` layout so the distribution, ratios and losses are one computation for all heads), and the critic on
valid steps only.
The numbers are those of `evaluate_actions` at those steps up to float reassociation (tests/test_ppo_fast.py pins the
losses and gradients of the update against the all-steps computation).

Flat layout: the valid steps of `[B, T]` in row-major order, N of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F

from esper_lab.actions import HEAD_INDEX, HEAD_NAMES, NUM_OPS
from esper_lab.policy.distributions import MaskedCategorical
from esper_lab.policy.network import FactoredRecurrentActorCritic, Hidden


@dataclass(frozen=True)
class RelevantEvaluation:
    """What the PPO loss needs, on flat valid steps (N of them), heads in HEAD_NAMES columns."""

    relevant: torch.Tensor  # [N, 8] bool, the head mattered at the step (the only entries the loss may use)
    log_probs: torch.Tensor  # [N, 8], log pi of the stored action where relevant, 0 elsewhere
    entropy: torch.Tensor  # [N, 8], normalised to [0, 1] where relevant, 0 elsewhere
    value: torch.Tensor  # [N] the baseline for value_op (critic "q_op": Q(s, value_op))
    q_value: torch.Tensor | None  # [N] Q(s, value_op) on DETACHED trunk features (critic "v" only, else None)


def _rows(x: torch.Tensor, index: torch.Tensor, total: int) -> torch.Tensor:
    """`x [total, ...]` restricted to `index`; `x` itself when the index keeps every row (no copy, no scatter)."""
    return x if index.numel() == total else x.index_select(0, index)


def q_of_op(network: FactoredRecurrentActorCritic, lstm_out: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    """Q(s, op) for one op per step, `[N, H]`, `[N]` -> `[N]`: W @ cat(h, e_op) = W_h @ h + W[:, H + op], the split
    `q_values` uses, without building cat(h, one_hot) (equals `_compute_value` up to rounding)."""
    first, last = network.value_head[0], network.value_head[-1]
    H = lstm_out.shape[-1]
    pre = F.linear(lstm_out, first.weight[:, :H], first.bias) + first.weight[:, H:].t().index_select(0, op)
    return last(F.relu(pre)).squeeze(-1)  # [N]


def packed_logits(network: FactoredRecurrentActorCritic, x: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Every head's logits on its relevant rows of `x [N, H]`, packed like the rollout's: `[N, 8, 13]`, zeros
    where a head did not matter (and in the padding); a head that mattered nowhere costs nothing."""
    N, K = x.shape[0], network.max_head_size
    columns = []
    for i, (name, k) in enumerate(network.head_sizes.items()):
        where = relevant[:, i].nonzero().squeeze(1)  # [n_h]
        if where.numel() == 0:
            columns.append(x.new_zeros(N, K))
            continue
        logits = F.pad(network.heads[name](_rows(x, where, N)), (0, K - k))  # [n_h, 13]
        columns.append(logits if where.numel() == N else x.new_zeros(N, K).index_copy(0, where, logits))
    return torch.stack(columns, dim=1)  # [N, 8, 13]


def evaluate_relevant(
    network: FactoredRecurrentActorCritic,
    state: torch.Tensor,
    blueprint_indices: torch.Tensor,
    actions: torch.Tensor,
    relevant: torch.Tensor,
    valid: torch.Tensor,
    value_op: torch.Tensor,
    masks: Mapping[str, torch.Tensor] | None = None,
    hidden: Hidden | None = None,
) -> RelevantEvaluation:
    """Re-run stored sequences and evaluate each head where it mattered.

    Args:
        state `[B, T, D]`, blueprint_indices `[B, T, S]` int64, actions `[B, T, 8]` int64 (HEAD_NAMES columns),
        relevant `[B, T, 8]` bool (head mattered for the executed op; False on invalid steps), valid `[B, T]`
        bool, value_op `[B, T]` int64 (the executed op), masks `{head: bool [B, T, k]}` as sampled under, hidden
        (h, c) at the start of the rows.
    """
    lstm_out, _ = network.encode(state, blueprint_indices, hidden)  # [B, T, H]
    H = lstm_out.shape[-1]
    total = valid.numel()
    steps = valid.reshape(-1).nonzero().squeeze(1)  # [N] flat indices of the valid steps
    x = _rows(lstm_out.reshape(total, H), steps, total)  # [N, H]
    rel = _rows(relevant.reshape(total, -1), steps, total)  # [N, 8]
    packed_masks = network._pack_masks(masks, valid.shape)  # [B, T, 8, 13]
    packed_masks = _rows(packed_masks.reshape(total, *packed_masks.shape[2:]), steps, total)  # [N, 8, 13]
    dist = MaskedCategorical(packed_logits(network, x, rel), packed_masks, row_names=HEAD_NAMES)
    chosen = _rows(actions.reshape(total, -1), steps, total).masked_fill(~rel, 0)  # [N, 8]; 0 is always an entry
    illegal = rel & ~packed_masks.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)  # [N, 8]
    if bool(illegal.any()):
        raise ValueError(f"evaluate_relevant: stored action illegal under its stored mask at (step, head) "
                         f"{[(int(n), HEAD_NAMES[h]) for n, h in illegal.nonzero()[:5].tolist()]}: actions and "
                         "masks have drifted apart")
    log_probs = dist.log_probs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).masked_fill(~rel, 0.0)  # [N, 8]
    entropy = dist.entropy().masked_fill(~rel, 0.0)  # [N, 8]
    op = _rows(value_op.reshape(total), steps, total)  # [N]
    if network.critic == "q_op":
        value = q_of_op(network, x, op)
    elif network.critic == "v":
        value = network.state_value_head(x).squeeze(-1)  # [N]
    else:  # q_marginal: pi(op|s) on every valid step (the op head matters on every step)
        value = (dist.probs[:, HEAD_INDEX["op"], :NUM_OPS].detach() * network.q_values(x)).sum(-1)  # [N]
    q_value = q_of_op(network, x.detach(), op) if network.critic == "v" else None
    return RelevantEvaluation(relevant=rel, log_probs=log_probs, entropy=entropy, value=value, q_value=q_value)
