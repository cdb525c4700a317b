"""Op-conditioned masks: the op is sampled first, then the slot among the slots where that op can execute, so every
sampled joint action executes; the buffer keeps the masks each head was sampled under, so re-evaluation is exact;
the update credits the op that ran; `policy.masks="independent"` keeps Phase 4 as shipped."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper_lab.actions import (
    HEAD_INDEX,
    OP_SLOT_KEY,
    AlphaMode,
    LifecycleOp,
    SeedStage,
    SlotView,
    check_op_slot_masks,
    compute_action_masks,
    head_sizes,
    is_op_legal_for_slot,
)
from esper_lab.agent import Agent, AgentPolicy
from esper_lab.config import PolicyConfig, PPOConfig, preset
from esper_lab.evaluate import evaluate_policies
from esper_lab.rl.buffer import RolloutBuffer
from esper_lab.rl.ppo import PPOUpdater
from esper_lab.rl.rollout import Telemetry, collect
from esper_lab.rl.trainer import Trainer, episode_seeds

D, S, W = 16, 3, 32
STAGES = [None, *SeedStage]
slot_views = st.builds(SlotView, stage=st.sampled_from(STAGES), alpha_mode=st.sampled_from(list(AlphaMode)),
                       seed_age=st.integers(0, 6), enabled=st.booleans())
worlds = st.tuples(st.lists(slot_views, min_size=S, max_size=S).filter(lambda v: any(s.enabled for s in v)),
                   st.sampled_from([None, 0, 1, 3]), st.integers(0, 3))


def masks_of(world) -> dict[str, torch.Tensor]:
    views, max_seeds, used = world
    return compute_action_masks(views, max_seeds=max_seeds, seeds_used=used)


def stacked(batch) -> dict[str, torch.Tensor]:
    per_world = [masks_of(w) for w in batch]
    return {key: torch.stack([m[key] for m in per_world]) for key in per_world[0]}  # [B, ...]


def agent(masks: str = "conditional", seed: int = 0) -> Agent:
    torch.manual_seed(seed)
    return Agent.from_config(PolicyConfig(feature_dim=W, lstm_hidden_dim=W, masks=masks), S, D)


@settings(max_examples=60, deadline=None)
@given(world=worlds)
def test_op_slot_masks_are_the_execution_rule(world):
    views, max_seeds, used = world
    masks = masks_of(world)
    can_germinate = max_seeds is None or used < max_seeds
    for op in LifecycleOp:
        for s, view in enumerate(views):
            expected = view.enabled and is_op_legal_for_slot(op, view, can_germinate=can_germinate)
            assert bool(masks[OP_SLOT_KEY][op, s]) == expected
    assert torch.equal(masks["op"], masks[OP_SLOT_KEY].any(-1))  # an op is legal exactly when some slot allows it
    assert masks["op"][LifecycleOp.WAIT]


@settings(max_examples=40, deadline=None)
@given(batch=st.lists(worlds, min_size=1, max_size=6), seed=st.integers(0, 2**16), deterministic=st.booleans())
def test_every_sampled_joint_action_is_legal_and_re_evaluates_exactly(batch, seed, deterministic):
    policy = agent(seed=seed % 3)
    masks = stacked(batch)
    B = len(batch)
    g = torch.Generator().manual_seed(seed)
    obs, bp_idx = torch.randn(B, D, generator=g), torch.randint(-1, 7, (B, S), generator=g)
    torch.manual_seed(seed)
    result = policy.get_action(obs, bp_idx, masks, policy.initial_hidden(B), deterministic)
    for (views, max_seeds, used), action in zip(batch, result.joint_actions.tolist()):
        op, slot = LifecycleOp(action[HEAD_INDEX["op"]]), action[HEAD_INDEX["slot"]]
        can_germinate = max_seeds is None or used < max_seeds
        assert views[slot].enabled and is_op_legal_for_slot(op, views[slot], can_germinate=can_germinate), (op, slot)
    assert OP_SLOT_KEY not in result.masks
    slot_rows = masks[OP_SLOT_KEY][torch.arange(B), result.sampled_op]  # [B, S]
    assert torch.equal(result.masks["slot"], slot_rows)  # the slot head was sampled under the op's slots
    out = policy.evaluate_actions(obs[:, None], bp_idx[:, None], result.joint_actions[:, None],
                                  {h: m[:, None] for h, m in result.masks.items()})
    for head, column in HEAD_INDEX.items():
        torch.testing.assert_close(out.log_probs[head][:, 0], result.joint_log_probs[:, column], atol=1e-6, rtol=0)


def test_independent_masks_are_phase_4_as_shipped_and_can_sample_an_illegal_action():
    """A state where FOSSILIZE is legal only in slot 2: independent masks let the slot head pick 0 or 1 for it."""
    views = [SlotView(None), SlotView(SeedStage.TRAINING, seed_age=3), SlotView(SeedStage.HOLDING, seed_age=9)]
    masks = {k: v.expand(256, *v.shape) for k, v in compute_action_masks(views).items()}
    counts = {}
    for mode in ("conditional", "independent"):
        policy = agent(mode)
        torch.manual_seed(0)
        result = policy.get_action(torch.zeros(256, D), torch.full((256, S), -1), masks, policy.initial_hidden(256))
        legal = [is_op_legal_for_slot(LifecycleOp(a[HEAD_INDEX["op"]]), views[a[HEAD_INDEX["slot"]]])
                 for a in result.joint_actions.tolist()]
        counts[mode] = legal.count(False)
        assert torch.equal(result.masks["slot"], masks["slot"]) == (mode == "independent")
    assert counts["conditional"] == 0 and counts["independent"] > 0


def test_a_legal_op_with_no_slot_is_a_clear_error_naming_world_op_and_step():
    masks = {k: v.expand(3, *v.shape).clone() for k, v in compute_action_masks([SlotView(None)] * S).items()}
    check_op_slot_masks(masks, step=4)  # consistent: nothing raised
    masks[OP_SLOT_KEY][1, LifecycleOp.GERMINATE] = False  # world 1 says GERMINATE is legal, but in no slot
    with pytest.raises(ValueError, match=r"world 1 at step 4: op GERMINATE is legal but its conditional slot mask"):
        check_op_slot_masks(masks, step=4)


def test_the_rollout_refuses_a_world_reporting_inconsistent_masks():
    trainer = Trainer(preset("tiny", backend="local"))
    honest = trainer.envs.masks

    def broken():
        masks = honest()
        masks[OP_SLOT_KEY][0, LifecycleOp.WAIT] = False  # WAIT legal (op mask) but in no slot
        return masks

    trainer.envs.masks = broken
    with pytest.raises(ValueError, match=r"world 0 at step 1: op WAIT"):
        collect(trainer.agent, trainer.envs, trainer.buffer, trainer.reward_norm,
                episode_seeds(0, 0, trainer.cfg.num_envs), Telemetry(update=1))


@pytest.mark.parametrize("mode", ["conditional", "independent"])
def test_rollouts_report_the_illegal_fraction_and_it_is_zero_for_conditional(mode):
    trainer = Trainer(preset("tiny", backend="local", **{"policy.masks": mode, "world.max_epochs": 12}))
    records = [trainer.train_step() for _ in range(2)]
    fractions = [r["illegal_fraction"] for r in records]
    assert all(r["illegal_fraction"] == r["illegal_actions"] / (2 * 12) for r in records)
    assert (max(fractions) == 0.0) if mode == "conditional" else (max(fractions) > 0.0)
    assert records[0]["ratio_first"] < 1e-5  # the stored masks reproduce the sampling log-probs


def test_evaluation_of_a_conditional_agent_makes_no_illegal_action():
    cfg = preset("tiny")
    torch.manual_seed(0)
    trained = AgentPolicy(Agent.from_config(cfg.policy), name="trained")
    results = evaluate_policies([trained, "random"], cfg.world, episodes=4, seed=100, workers=1)
    assert results["trained"]["illegal_fraction"] == 0.0
    assert sum(results["trained"]["illegal_actions_list"]) == 0


def test_the_update_credits_the_executed_op():
    """A requested FOSSILIZE that ran as WAIT: only the op head is causally relevant, and the value is Q(s, WAIT)."""
    policy = agent()
    E, T = 2, 3
    buf = RolloutBuffer(E, T, D, S, W)
    buf.reset(policy.initial_hidden(E))
    masks = {head: torch.ones(E, k, dtype=torch.bool) for head, k in head_sizes(S).items()}
    for t in range(T):
        obs, bp = torch.randn(E, D), torch.full((E, S), -1)
        result = policy.get_action(obs, bp, masks, None)
        joint = result.joint_actions.clone()
        joint[:, HEAD_INDEX["op"]] = LifecycleOp.FOSSILIZE
        lp = policy.evaluate_actions(obs[:, None], bp[:, None], joint[:, None], {h: m[:, None] for h, m in masks.items()})
        joint_lp = torch.stack([lp.log_probs[h][:, 0] for h in HEAD_INDEX], -1)
        waited = torch.full((E,), int(LifecycleOp.WAIT))
        buf.add(obs=obs, blueprint_indices=bp, actions=joint, log_probs=joint_lp,
                value=result.op_values[:, LifecycleOp.WAIT],
                op_values=result.op_values, executed_op=waited, reward=torch.zeros(E), done=torch.zeros(E, dtype=bool),
                truncated=torch.zeros(E, dtype=bool), masks=masks)
    batch = buf.batched()
    terms, stats, _ = PPOUpdater(policy, PPOConfig(minibatches=1), 0.99)._minibatch_losses(
        batch, torch.randn(E, T), torch.randn(E, T))
    assert stats["entropy_op"][1] == E * T  # the op head chose FOSSILIZE: it is trained on what that caused
    assert stats["entropy_slot"][1] == 0  # the slot of an op that never ran is not trained
    out = policy.evaluate_actions(batch.obs, batch.blueprint_indices, batch.actions, batch.masks,
                                  batch.initial_hidden, value_op=batch.executed_ops)
    q_wait = policy.network.q_values(policy.network.encode(batch.obs, batch.blueprint_indices,
                                                           batch.initial_hidden)[0])[..., LifecycleOp.WAIT]
    torch.testing.assert_close(out.value, q_wait, atol=1e-5, rtol=0)


def test_executed_value_is_q_of_the_executed_op_in_critic_q_op():
    policy = agent()
    masks = {k: v.expand(4, *v.shape) for k, v in compute_action_masks([SlotView(None)] * S).items()}
    result = policy.get_action(torch.randn(4, D), torch.full((4, S), -1), masks, None)
    same = policy.executed_value(result, result.sampled_op)
    assert torch.equal(same, result.value)  # nothing changed where the requested op ran
    waited = torch.zeros(4, dtype=torch.long)
    torch.testing.assert_close(policy.executed_value(result, waited), result.op_values[:, LifecycleOp.WAIT])
