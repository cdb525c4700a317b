"""The PPO update for the factored recurrent policy (Esper's Simic `ppo.py`, Phase 4, with K epochs of minibatches).

One call, `PPOUpdater(policy, cfg).update(batch)`, reads top to bottom:

1. GAE on the stored rows (unless advantages and returns are passed in), explained variance and the Q telemetry
   from what the rollout stored, then advantage normalisation over every valid step of the batch.
2. K = `cfg.epochs` passes; each shuffles the env rows into `cfg.minibatches` minibatches of WHOLE episodes. A
   minibatch re-runs its rows as one sequence each, from their stored initial hidden state: one
   `evaluate_relevant` call (policy/relevant.py: each head only on the steps where it mattered), one LSTM call, no
   Python loop over time.
3. Per head: log ratio (clamped to +-20) against the stored per-head log-prob, the clipped surrogate and the
   entropy, both averaged only over the steps where that head mattered for the EXECUTED op (`relevance`: the
   head-relevance table of `executed_ops`, once per update; an action that could not run as requested ran as WAIT,
   and only its op head chose that).
   The value, Q(s, op) in critic 'q_op', is conditioned on the executed op too.
4. Approximate KL, per head `(r - 1) - log r` over its causal steps, weighted by causal fraction. It is checked
   BEFORE the optimizer step: above 1.5 x target_kl the update stops and that step never happens (Esper commit
   e3f72b3 (tachyon-beep/esper-lite): the KL check moved before the step, so target_kl works even with one epoch).
5. Loss = policy + value_coef * value + entropy_coef * entropy_loss (+ q_aux_coef * q_aux in critic 'v');
   backward, per-head gradient norms and the total from one fused pass, global clip, Adam step.

Advantages are normalised once over the whole batch rather than per minibatch: a minibatch is only a few episodes
here, and per-minibatch statistics of so few rows are noisy.

Metrics (`runs.PPO_METRIC_KEYS`, one flat dict of floats / ints / bools per update):
- losses and approx_kl: means over every minibatch EVALUATED (the one that tripped the KL stop included);
  q_aux_loss is 0.0 outside critic 'v';
- entropy_<head> and clip_fraction: pooled over the (head, step) pairs where the head mattered; NaN for a head that
  never mattered in this batch;
- grad_norm_<head> (this head's own parameters) and grad_norm_total (all parameters, before clipping): means over
  the optimizer steps taken; NaN when no step was taken or the head has no parameters / no gradient;
- explained_variance, q_spread, q_variance, advantage_mean / advantage_std: from the stored rollout, before the
  update (EV is NaN when the returns have no variance);
- epochs_completed (epochs run to their end), optimizer_steps, early_stopped, and ratio_first = max |ratio - 1|
  over every (head, step) where the head mattered in the first minibatch of the first epoch (~1e-7: the
  re-evaluation is exact).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn as nn

from esper_lab.actions import HEAD_INDEX, HEAD_NAMES, HEAD_RELEVANCE_TABLE
from esper_lab.agent import Agent
from esper_lab.config import PPOConfig
from esper_lab.rl.advantages import compute_gae
from esper_lab.rl.buffer import RolloutBatch, RolloutBuffer
from esper_lab.runs import PPO_METRIC_KEYS

# Phase 5 per-head entropy multipliers (Esper's ENTROPY_COEF_PER_HEAD): the one definition in esper_lab.
ENTROPY_COEF_PER_HEAD = {
    "op": 1.0,
    "slot": 1.0,
    "blueprint": 1.3,
    "style": 1.2,
    "tempo": 1.3,
    "alpha_target": 1.2,
    "alpha_speed": 1.2,
    "alpha_curve": 1.2,
}
assert set(ENTROPY_COEF_PER_HEAD) == set(HEAD_NAMES)
KL_EARLY_STOP_FACTOR = 1.5  # stop before the step whose minibatch KL exceeds 1.5 x target_kl
LOG_RATIO_CLAMP = 20.0  # exp(20) is large but finite
ADAM_EPS = 1e-5

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the True entries of `mask` (same shape); 0 when the mask is empty."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def relevance(executed_ops: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`[E, T, 8]` bool: head h mattered at a step (`actions.HEAD_RELEVANCE` of the executed op) and the step is
    valid. `executed_ops [E, T]` int64, `valid [E, T]` bool."""
    return HEAD_RELEVANCE_TABLE.to(executed_ops.device)[executed_ops] & valid.unsqueeze(-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """`1 - Var(returns - values) / Var(returns)` on flat tensors; NaN when the returns have no variance."""
    var_returns = returns.var(correction=0)
    if returns.numel() == 0 or var_returns.item() < 1e-12:
        return float("nan")
    return float(1.0 - (returns - values).var(correction=0) / var_returns)


def q_statistics(op_values: torch.Tensor, op_mask: torch.Tensor, valid: torch.Tensor) -> tuple[float, float]:
    """(q_spread, q_variance) of the stored per-op values over LEGAL ops, averaged over valid steps.

    q_spread = max - min of Q(s, op) over legal ops; q_variance = population variance over legal ops. With one legal
    op both are 0. Both near 0 everywhere means the critic ignores the op (Esper's value collapse, where Q-spread
    fell to 0; Esper commit 636bc3a (tachyon-beep/esper-lite) deepened the critic in response).
    Shapes: op_values `[E, T, 6]`, op_mask `[E, T, 6]` bool, valid `[E, T]` bool.
    """
    legal = op_mask.to(op_values.dtype)  # [E, T, 6]
    count = legal.sum(-1).clamp_min(1.0)  # [E, T]
    q_max = op_values.masked_fill(~op_mask, -math.inf).amax(-1)  # [E, T]
    q_min = op_values.masked_fill(~op_mask, math.inf).amin(-1)  # [E, T]
    spread = torch.where(op_mask.any(-1), q_max - q_min, torch.zeros_like(q_max))  # [E, T]
    mean = (op_values * legal).sum(-1) / count  # [E, T]
    variance = ((op_values - mean.unsqueeze(-1)).pow(2) * legal).sum(-1) / count  # [E, T]
    return float(masked_mean(spread, valid)), float(masked_mean(variance, valid))


def head_parameters(network: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Each head's own parameters, by module name: `<head>_head` (e.g. `op_head`, `blueprint_head`) or `heads.<head>`.

    A head whose parameters cannot be found maps to an empty list (its gradient norm is reported as NaN).
    """
    out = {}
    for head in HEAD_NAMES:
        params: list[nn.Parameter] = []
        for name, param in network.named_parameters():
            if name.startswith(f"{head}_head.") or name.startswith(f"heads.{head}."):
                params.append(param)
        out[head] = params
    return out


class PPOUpdater:
    """Owns the Adam optimizer (eps 1e-5) and runs PPO updates on `RolloutBatch`es.

    Args:
        agent: the `Agent` whose network is trained (its `evaluate_actions` re-runs the stored rows).
        cfg: `PPOConfig`.
        gamma: the discount of GAE (the run's `world.reward.gamma`, shared with the shaping).
    """

    def __init__(self, agent: Agent, cfg: PPOConfig, gamma: float):
        self.agent, self.network = agent, agent.network
        self.cfg, self.gamma = cfg, float(gamma)
        self.critic = getattr(self.network, "critic", "q_op")
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=cfg.lr, eps=ADAM_EPS, fused=True)
        self.entropy_coef = torch.tensor([ENTROPY_COEF_PER_HEAD[h] for h in HEAD_NAMES])  # [8]
        self.params = list(self.network.parameters())
        position = {id(p): i for i, p in enumerate(self.params)}
        self.head_param_index = {head: torch.tensor([position[id(p)] for p in params], dtype=torch.long)
                                 for head, params in head_parameters(self.network).items()}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def update(
        self,
        batch: RolloutBatch | RolloutBuffer,
        advantages: torch.Tensor | None = None,
        returns: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """One PPO update; returns the metrics dict (keys `runs.PPO_METRIC_KEYS`).

        Args:
            batch: the rollout (`RolloutBuffer.batched()`, or the buffer itself), every field `[E, T, ...]`.
            advantages, returns: `[E, T]`; when both are None they are computed here with `compute_gae` and
                self.gamma / cfg.gae_lambda from the stored rewards, values, dones, truncations and bootstraps.
        """
        cfg = self.cfg
        if isinstance(batch, RolloutBuffer):
            batch = batch.batched()
        if (advantages is None) != (returns is None):
            raise ValueError("PPOUpdater.update: pass both advantages and returns, or neither")
        if cfg.minibatches < 1 or cfg.minibatches > batch.num_envs:
            raise ValueError(f"PPOUpdater.update: cfg.minibatches={cfg.minibatches} must be in [1, num_envs="
                             f"{batch.num_envs}]: a minibatch is a set of whole env rows")
        if advantages is None:
            advantages, returns = compute_gae(batch.rewards, batch.values, batch.dones, batch.truncated,
                                              batch.bootstrap_values, self.gamma, cfg.gae_lambda)  # [E, T] each
        valid = batch.valid  # [E, T]

        # Telemetry from what the rollout stored, before anything changes.
        metrics: dict[str, float] = {}
        metrics["explained_variance"] = explained_variance(batch.values[valid], returns[valid])
        metrics["q_spread"], metrics["q_variance"] = q_statistics(batch.op_values, batch.masks["op"], valid)
        adv_valid = advantages[valid]
        adv_mean, adv_std = adv_valid.mean(), adv_valid.std(correction=0)
        metrics["advantage_mean"], metrics["advantage_std"] = float(adv_mean), float(adv_std)
        advantages = torch.where(valid, (advantages - adv_mean) / (adv_std + 1e-8), torch.zeros_like(advantages))

        sums: dict[str, float] = defaultdict(float)  # running sums of per-minibatch metrics
        counts: dict[str, float] = defaultdict(float)
        epochs_completed, optimizer_steps, early_stopped, ratio_first = 0, 0, False, float("nan")
        relevant = relevance(batch.executed_ops, valid)  # [E, T, 8], once per update
        for epoch in range(cfg.epochs):
            order = torch.randperm(batch.num_envs, device=valid.device)
            for index, rows in enumerate(order.tensor_split(cfg.minibatches)):  # whole env rows
                mb = batch.rows(rows)
                losses, stats, ratio_dev = self._minibatch_losses(mb, advantages[rows], returns[rows],
                                                                  relevant[rows])
                if epoch == 0 and index == 0:
                    ratio_first = ratio_dev  # nothing has changed yet: must be ~0
                for key, (total, count) in stats.items():
                    sums[key] += total
                    counts[key] += count
                for key in ("policy_loss", "value_loss", "entropy_loss", "q_aux_loss", "approx_kl"):
                    sums[key] += float(losses[key].detach())
                    counts[key] += 1

                # Decide BEFORE the step (Esper commit e3f72b3): the step that would overshoot never happens.
                if cfg.target_kl is not None and float(losses["approx_kl"]) > KL_EARLY_STOP_FACTOR * cfg.target_kl:
                    early_stopped = True
                    break

                loss = (losses["policy_loss"] + cfg.value_coef * losses["value_loss"]
                        + cfg.entropy_coef * losses["entropy_loss"] + cfg.q_aux_coef * losses["q_aux_loss"])
                for key, norm in self._step(loss, losses).items():
                    if not math.isnan(norm):
                        sums[key] += norm
                        counts[key] += 1
                optimizer_steps += 1
            if early_stopped:
                break
            epochs_completed += 1

        metrics["epochs_completed"] = epochs_completed
        metrics["optimizer_steps"] = optimizer_steps
        metrics["early_stopped"] = early_stopped
        metrics["ratio_first"] = ratio_first
        for key in PPO_METRIC_KEYS:  # the rest are means of per-minibatch (or per-step) sums
            if key not in metrics:
                metrics[key] = sums[key] / counts[key] if counts[key] > 0 else float("nan")
        return {key: metrics[key] for key in PPO_METRIC_KEYS}

    def _step(self, loss: torch.Tensor, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """Backward, gradient norms (per head and the pre-clip total, from one fused pass), global clip, Adam step.

        A parameter the loss did not reach this step (a head no step of the minibatch used) gets a zero gradient,
        exactly what it got when every head ran on every step: Adam's moments decay and its step count advances
        the same way. The clip is `clip_grad_norm_`'s: total = ||(||g_i||)_i||, every gradient times
        min(1, max_norm / (total + 1e-6)).

        Returns `{grad_norm_<head>: float (NaN if the head has no parameters), grad_norm_total: float}`.
        """
        if not torch.isfinite(loss):
            parts = {k: float(v.detach()) for k, v in losses.items()}
            raise FloatingPointError(f"PPOUpdater: non-finite loss {float(loss.detach())} from {parts}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in self.params]
        norms = torch.stack(torch._foreach_norm(grads))  # [P] one norm per parameter tensor
        total = torch.linalg.vector_norm(norms)
        heads = [torch.linalg.vector_norm(norms[i]) if len(i) else total.new_tensor(math.nan)
                 for i in self.head_param_index.values()]
        torch._foreach_mul_(grads, (self.cfg.max_grad_norm / (total + 1e-6)).clamp(max=1.0))
        self.optimizer.step()
        values = torch.stack([*heads, total]).tolist()
        return dict(zip([*(f"grad_norm_{h}" for h in HEAD_NAMES), "grad_norm_total"], values))

    def _minibatch_losses(
        self, mb: RolloutBatch, advantages: torch.Tensor, returns: torch.Tensor, relevant: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[float, float]], float]:
        """Re-run a minibatch of env rows and build the loss terms.

        Args:
            mb: `e` env rows, fields `[e, T, ...]`.
            advantages: `[e, T]`, already normalised; returns: `[e, T]`.
            relevant: `[e, T, 8]` bool, `relevance(mb.executed_ops, mb.valid)` (computed here when None).
        Returns:
            losses: policy_loss, value_loss, entropy_loss, q_aux_loss (graph attached) and approx_kl (detached).
            stats: `{name: (sum, count)}` for entropy_<head> and clip_fraction.
            ratio_dev: max |ratio - 1| over every (head, step) where the head mattered (0 before any step: the
                stored data is exact).
        """
        cfg = self.cfg
        valid = mb.valid  # [e, T]
        if relevant is None:
            relevant = relevance(mb.executed_ops, valid)
        out = self.agent.evaluate_relevant(mb.obs, mb.blueprint_indices, mb.actions, relevant, valid,
                                           mb.executed_ops, masks=mb.masks, hidden=mb.initial_hidden)
        adv = advantages[valid].unsqueeze(-1)  # [N, 1]
        rel = out.relevant  # [N, 8]
        weight = rel.to(adv.dtype)
        count = weight.sum(0)  # [8] steps where each head mattered
        log_ratio = torch.where(rel, out.log_probs - mb.log_probs[valid], 0.0).clamp(-LOG_RATIO_CLAMP,
                                                                                    LOG_RATIO_CLAMP)  # [N, 8]
        ratio = log_ratio.exp()
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.clip_ratio, 1 + cfg.clip_ratio) * adv)  # [N, 8]
        per_step = count.clamp_min(1.0)  # a head that mattered nowhere adds 0, as masked_mean does
        policy_loss = -((surrogate * weight).sum(0) / per_step).sum()
        entropy_sums = (out.entropy * weight).sum(0)  # [8]
        entropy_loss = -(self.entropy_coef * entropy_sums / per_step).sum()
        with torch.no_grad():
            deviation = (ratio - 1).abs()  # 0 where the head did not matter
            table = torch.stack([
                (((ratio - 1) - log_ratio) * weight).sum(),  # KL: (r - 1) - log r >= 0, pooled over (head, step)
                ((deviation > cfg.clip_ratio) & rel).sum().to(adv.dtype),
                count.sum(),
                deviation.max() if deviation.numel() else adv.new_zeros(()),
            ]).tolist()
        entropy_list, count_list = entropy_sums.detach().tolist(), count.tolist()
        stats = {f"entropy_{head}": (entropy_list[i], count_list[i]) for i, head in enumerate(HEAD_NAMES)}
        kl_sum, clipped, steps, ratio_max_dev = table
        stats["clip_fraction"] = (clipped, steps)
        # Weighting each head's mean KL by its causal fraction (weights summing to 1) is the pooled mean.
        approx_kl = torch.tensor(kl_sum / steps if steps > 0 else 0.0)
        zero = adv.new_zeros(())

        value, old_value, target = out.value, mb.values[valid], returns[valid]  # [N] each
        if cfg.clip_value:
            value_clipped = old_value + (value - old_value).clamp(-cfg.value_clip, cfg.value_clip)
            value_error = torch.max((value - target).pow(2), (value_clipped - target).pow(2))
        else:
            value_error = (value - target).pow(2)
        value_loss = 0.5 * value_error.mean() if value.numel() else zero

        q_aux_loss = zero
        if out.q_value is not None and value.numel():
            # Q(s, executed op) on DETACHED trunk features: this loss moves the Q head only (as in Esper commit 6a27b8e).
            q_aux_loss = 0.5 * (out.q_value - target).pow(2).mean()

        losses = dict(policy_loss=policy_loss, value_loss=value_loss, entropy_loss=entropy_loss,
                      q_aux_loss=q_aux_loss, approx_kl=approx_kl)
        return losses, stats, ratio_max_dev
