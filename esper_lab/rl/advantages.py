"""GAE with truncation bootstrap, and per-head advantages from the one causal-mask table.

Esper's Simic `compute_advantages_and_returns` + `compute_per_head_advantages`, for per-env rows: each row of a
`[num_envs, T]` tensor is one env's contiguous steps, and the backward recursion never crosses rows (the "P0 fix"
for GAE leaking across interleaved envs).

What comes after step t (the `next value` of its TD error):
- a true terminal (done and not truncated): 0, and the lambda chain is cut;
- a truncation (truncated, with or without done): `bootstrap_values[t]`, V of the post-action state computed by the
  trainer with the carried hidden state; the lambda chain is cut (the next row entry, if any, is a new episode);
- the last stored step that is neither: also `bootstrap_values[t]` (the rollout cut the episode; 0 if never set);
- otherwise: `values[t + 1]`.
"""

from __future__ import annotations

import torch

from esper_lab.actions import HEAD_NAMES, causal_masks


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    truncated: torch.Tensor,
    bootstrap_values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation on `[T]` or `[num_envs, T]` tensors.

    Args:
        rewards, values, bootstrap_values: float, `[T]` or `[E, T]`.
        dones, truncated: bool, same shape. Esper stores a time-limit end as done=True, truncated=True.
    Returns:
        (advantages, returns), both in the input's shape and float dtype; `returns = advantages + values`.
    """
    squeeze = rewards.dim() == 1
    tensors = [rewards, values, dones, truncated, bootstrap_values]
    if squeeze:
        tensors = [x.unsqueeze(0) for x in tensors]  # [1, T]
    rewards, values, dones, truncated, bootstrap_values = tensors
    if rewards.dim() != 2:
        raise ValueError(f"compute_gae: expected [T] or [num_envs, T] tensors, got rewards {tuple(rewards.shape)}")
    for name, x in zip(("values", "dones", "truncated", "bootstrap_values"), tensors[1:]):
        if x.shape != rewards.shape:
            raise ValueError(f"compute_gae: {name} has shape {tuple(x.shape)}, rewards {tuple(rewards.shape)}")

    dones, truncated = dones.to(torch.bool), truncated.to(torch.bool)
    values = values.to(rewards.dtype)
    terminal = dones & ~truncated  # [E, T] true terminals: nothing follows
    episode_end = dones | truncated  # [E, T] the lambda chain stops here
    num_steps = rewards.shape[1]

    advantages = torch.zeros_like(rewards)  # [E, T]
    last_gae = torch.zeros_like(rewards[:, 0])  # [E]
    for t in reversed(range(num_steps)):
        following = values[:, t + 1] if t + 1 < num_steps else bootstrap_values[:, t]  # [E]
        next_value = torch.where(truncated[:, t], bootstrap_values[:, t], following).to(rewards.dtype)  # [E]
        next_value = next_value * (~terminal[:, t]).to(rewards.dtype)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * gae_lambda * (~episode_end[:, t]).to(rewards.dtype) * last_gae
        advantages[:, t] = last_gae
    returns = advantages + values

    if squeeze:
        return advantages.squeeze(0), returns.squeeze(0)
    return advantages, returns


def per_head_advantages(advantages: torch.Tensor, op: torch.Tensor) -> dict[str, torch.Tensor]:
    """`{head: advantages * causal_mask[head]}` over `HEAD_NAMES`, from `actions.causal_masks(op)`.

    The op head is relevant for every op in the table, so it gets the full advantage; a head that did not matter for
    the stored op gets 0 on that step. Multiplying by a bool mask keeps the advantages' dtype (fp16/bf16 included).
    `advantages` and `op` share a shape (`[T]`, `[E, T]`, ...).
    """
    if advantages.shape != op.shape:
        raise ValueError(f"per_head_advantages: advantages {tuple(advantages.shape)} and op {tuple(op.shape)} differ")
    masks = causal_masks(op.to(torch.long))
    return {name: advantages * masks[name] for name in HEAD_NAMES}
