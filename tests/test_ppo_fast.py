"""The fast PPO update computes the loss it computed before: each head only where it mattered, the fused gradient
norms and clip, and zero gradients for heads no step used, pinned against the all-steps computation on fixed batches.

`reference_losses` is the update's loss as it was written before the speed work (every head on every step, masked
means, `evaluate_actions`); `reference_norms` its per-head gradient norms and `clip_grad_norm_`."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

from esper_lab.actions import HEAD_INDEX, HEAD_NAMES, LifecycleOp, causal_masks
from esper_lab.agent import Agent
from esper_lab.bench.synthetic import synthetic_update, world_masks
from esper_lab.config import PolicyConfig, PPOConfig
from esper_lab.rl.advantages import compute_gae, per_head_advantages
from esper_lab.rl.ppo import ENTROPY_COEF_PER_HEAD, LOG_RATIO_CLAMP, PPOUpdater, head_parameters, masked_mean, relevance

E, T = 6, 10
CFG = PPOConfig(epochs=1, minibatches=1, target_kl=None)


def reference_losses(agent: Agent, cfg: PPOConfig, mb, advantages, returns) -> dict[str, torch.Tensor]:
    """The loss before the speed work: `evaluate_actions` on every step and head, masked means."""
    op = mb.executed_ops
    out = agent.evaluate_actions(mb.obs, mb.blueprint_indices, mb.actions, masks=mb.masks, hidden=mb.initial_hidden,
                                 value_op=op)
    valid = mb.valid
    relevant = {h: m & valid for h, m in causal_masks(op).items()}
    head_adv = per_head_advantages(advantages, op)
    policy_loss = entropy_loss = advantages.new_zeros(())
    for head in HEAD_NAMES:
        mask = relevant[head]
        log_ratio = (out.log_probs[head] - mb.log_probs[..., HEAD_INDEX[head]]).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        ratio = log_ratio.exp()
        surrogate = torch.min(ratio * head_adv[head], ratio.clamp(1 - cfg.clip_ratio, 1 + cfg.clip_ratio) * head_adv[head])
        policy_loss = policy_loss - masked_mean(surrogate, mask)
        entropy_loss = entropy_loss - ENTROPY_COEF_PER_HEAD[head] * masked_mean(out.entropy[head], mask)
    value_clipped = mb.values + (out.value - mb.values).clamp(-cfg.value_clip, cfg.value_clip)
    value_error = torch.max((out.value - returns).pow(2), (value_clipped - returns).pow(2))
    value_loss = 0.5 * masked_mean(value_error, valid)
    q_aux = 0.5 * masked_mean((out.q_value - returns).pow(2), valid) if agent.network.critic == "v" else None
    return dict(policy_loss=policy_loss, value_loss=value_loss, entropy_loss=entropy_loss, q_aux_loss=q_aux)


def reference_norms(network: nn.Module, max_norm: float) -> dict[str, float]:
    """Per-head norms and the clipped total as computed before: one norm per head, then `clip_grad_norm_`."""
    out = {}
    for head, params in head_parameters(network).items():
        grads = [p.grad for p in params if p.grad is not None]
        out[f"grad_norm_{head}"] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    out["grad_norm_total"] = float(nn.utils.clip_grad_norm_(network.parameters(), max_norm))
    return out


def _setup(critic: str, germinate: bool, seed: int = 0):
    torch.manual_seed(seed)
    agent = Agent.from_config(PolicyConfig(feature_dim=64, lstm_hidden_dim=32, critic=critic), 3)
    batch, _ = synthetic_update(agent, CFG, world_masks(E), T, seed=seed, truncate=True)
    if not germinate:  # no GERMINATE anywhere: the blueprint, style and tempo heads matter on no step
        ops = batch.executed_ops.clone()
        ops[ops == LifecycleOp.GERMINATE] = LifecycleOp.WAIT
        batch.executed_ops.copy_(ops)
    batch.valid[0, T // 2:] = False  # a row that ended early: padding the loss must ignore
    adv, ret = compute_gae(batch.rewards, batch.values, batch.dones, batch.truncated, batch.bootstrap_values,
                           0.99, 0.95)
    adv = torch.where(batch.valid, (adv - adv[batch.valid].mean()) / adv[batch.valid].std(), 0.0)
    return agent, batch, adv, ret


@pytest.mark.parametrize("critic", ["q_op", "v", "q_marginal"])
@pytest.mark.parametrize("germinate", [True, False])
def test_losses_and_gradients_equal_the_all_steps_computation(critic, germinate):
    agent, batch, adv, ret = _setup(critic, germinate)
    twin = copy.deepcopy(agent)
    updater = PPOUpdater(agent, CFG, 0.99)
    fast, stats, ratio_dev = updater._minibatch_losses(batch, adv, ret, relevance(batch.executed_ops, batch.valid))
    ref = reference_losses(twin, CFG, batch, adv, ret)
    for key in ("policy_loss", "value_loss", "entropy_loss"):
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-6, atol=1e-6, msg=key)
    if critic == "v":
        torch.testing.assert_close(fast["q_aux_loss"], ref["q_aux_loss"], rtol=1e-6, atol=1e-6)
    assert ratio_dev < 1e-5  # nothing has changed: the stored log-probs are reproduced
    assert (stats["entropy_blueprint"][1] == 0.0) == (not germinate)  # steps where the blueprint head mattered

    def total(terms):
        q_aux = terms["q_aux_loss"] if terms["q_aux_loss"] is not None else 0.0
        return (terms["policy_loss"] + CFG.value_coef * terms["value_loss"] + CFG.entropy_coef * terms["entropy_loss"]
                + CFG.q_aux_coef * q_aux)

    total(fast).backward()
    total(ref).backward()
    for (name, p), q in zip(agent.network.named_parameters(), twin.network.parameters()):
        if p.grad is None:  # a head no step used: the reference's gradient there is exactly zero
            assert not germinate and name.split(".")[1] in ("blueprint", "style", "tempo"), name
            assert torch.count_nonzero(q.grad) == 0, name
        else:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("germinate", [True, False])
def test_one_optimizer_step_moves_every_parameter_as_before(germinate):
    """The fused norms, the clip and the zero gradients of unused heads: after one full update step the parameters
    equal those of the reference step (all-steps loss, per-head norms, clip_grad_norm_, Adam) and so do the norms."""
    agent, batch, adv, ret = _setup("q_op", germinate)
    twin = copy.deepcopy(agent)
    cfg = PPOConfig(epochs=1, minibatches=1, target_kl=None, max_grad_norm=0.05)  # small: the clip acts
    updater = PPOUpdater(agent, cfg, 0.99)
    fast, _, _ = updater._minibatch_losses(batch, adv, ret, relevance(batch.executed_ops, batch.valid))
    loss = fast["policy_loss"] + cfg.value_coef * fast["value_loss"] + cfg.entropy_coef * fast["entropy_loss"]
    norms = updater._step(loss, fast)

    optimizer = torch.optim.Adam(twin.network.parameters(), lr=cfg.lr, eps=1e-5, fused=True)
    ref = reference_losses(twin, cfg, batch, adv, ret)
    (ref["policy_loss"] + cfg.value_coef * ref["value_loss"] + cfg.entropy_coef * ref["entropy_loss"]).backward()
    expected = reference_norms(twin.network, cfg.max_grad_norm)
    optimizer.step()
    assert expected["grad_norm_total"] > cfg.max_grad_norm  # the clip did something
    for key, value in expected.items():
        assert norms[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    for (name, p), q in zip(agent.network.named_parameters(), twin.network.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=name)


def test_a_whole_update_gives_the_metrics_of_the_reference_loss():
    """Two epochs of two minibatches: every metric is finite where defined and ratio_first is ~0."""
    agent, batch, adv, ret = _setup("q_op", True)
    metrics = PPOUpdater(agent, PPOConfig(epochs=2, minibatches=2, target_kl=None), 0.99).update(batch)
    assert metrics["optimizer_steps"] == 4 and metrics["ratio_first"] < 1e-5
    assert all(math.isfinite(metrics[f"grad_norm_{h}"]) for h in HEAD_NAMES)
    assert 0.0 <= metrics["clip_fraction"] <= 1.0
