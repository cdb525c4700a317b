"""Baseline policies and the evaluator; the property that masks and execution agree."""

from dataclasses import replace

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esper_lab.actions import HEAD_NAMES, CNN_BLUEPRINTS, LifecycleOp, SeedStage
from esper_lab.config import WorldConfig
from esper_lab.env.morpho_env import SUMMARY_KEY, Action, World
from esper_lab.evaluate import evaluate_policies, format_table
from esper_lab.features import batch_obs_to_features
from esper_lab.policy.baselines import HeuristicPolicy, Policy, RandomLegalPolicy, WaitPolicy, make_baseline

CFG = WorldConfig(max_epochs=6)


def masks_of(report) -> dict[str, torch.Tensor]:
    return {k: v[None] for k, v in report.action_masks().items()}  # [1, k]


def legal_action(world: World, op: LifecycleOp, slot: int) -> bool:
    """The world's own execution check (not the mask) for `op` on `slot` with a legal blueprint."""
    values = dict.fromkeys(HEAD_NAMES, 0) | {"op": int(op), "slot": slot, "blueprint": int(CNN_BLUEPRINTS[0])}
    return world._is_legal(Action.from_heads([values[h] for h in HEAD_NAMES], len(world.slots)))


@settings(max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(episode_seed=st.integers(0, 2**31 - 1), data=st.data())
def test_masked_actions_always_execute_and_allowed_ops_are_executable(episode_seed, data):
    """Random legal play chosen by hypothesis: every op the mask allows has a slot where the world executes it, and
    every drawn legal action executes as itself (never as an illegal WAIT)."""
    world = World(CFG)
    report = world.reset(episode_seed)
    done = False
    while not done:
        masks = masks_of(report)
        slots_for = {op: [i for i in range(report.num_slots) if legal_action(world, op, i)] for op in LifecycleOp}
        for op in LifecycleOp:
            assert bool(masks["op"][0, op]) == bool(slots_for[op]), op
        op = data.draw(st.sampled_from([op for op in LifecycleOp if masks["op"][0, op]]))
        heads = {h: data.draw(st.sampled_from(masks[h][0].nonzero().flatten().tolist())) for h in HEAD_NAMES}
        heads.update(op=int(op), slot=data.draw(st.sampled_from(slots_for[op])))
        _, done, info = world.step([heads[h] for h in HEAD_NAMES])
        assert not info["illegal"] and info["executed_op"] == op.name
        report = world.report()
        obs, _ = batch_obs_to_features([report])
        assert bool(((obs >= -1) & (obs <= 1)).all())  # the gym Box bounds hold in every reachable state


def test_random_legal_policy_never_executes_an_illegal_action():
    world, policy = World(replace(CFG, max_epochs=10)), RandomLegalPolicy(4)
    report, done = world.reset(9), False
    while not done:
        masks = masks_of(report)
        action = policy.act([report], masks)[0]
        assert all(bool(masks[h][0, v]) for h, v in zip(HEAD_NAMES, action.tolist()))  # every head within its mask
        _, done, info = world.step(action.tolist())
        assert not info["illegal"] and info["executed_op"] == info["op"]
        report = world.report()


def test_random_legal_is_seeded():
    world = World(CFG)
    report = world.reset(0)
    a = RandomLegalPolicy(3).act([report] * 4, {k: v.expand(4, *v.shape[1:]) for k, v in masks_of(report).items()})
    b = RandomLegalPolicy(3).act([report] * 4, {k: v.expand(4, *v.shape[1:]) for k, v in masks_of(report).items()})
    assert torch.equal(a, b) and a.shape == (4, 8) and a.dtype == torch.int64


def test_wait_policy_waits_with_legal_placeholders():
    world = World(CFG)
    report = world.reset(0)
    action = WaitPolicy().act([report], masks_of(report))[0]
    masks = masks_of(report)
    assert action[HEAD_NAMES.index("op")] == LifecycleOp.WAIT
    assert all(bool(masks[h][0, v]) for h, v in zip(HEAD_NAMES, action.tolist()))


def test_heuristic_runs_a_seed_through_its_lifecycle():
    world, policy = World(WorldConfig(max_epochs=14)), HeuristicPolicy()
    report = world.reset(0)
    policy.reset(1)
    stages, done = set(), False
    while not done:
        _, done, info = world.step(policy.act([report], masks_of(report))[0].tolist())
        assert not info["illegal"]
        report = world.report()
        stages |= {s.stage for s in report.slots if s is not None}
    assert {SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING} <= stages
    assert SeedStage.FOSSILIZED in stages or info[SUMMARY_KEY]["pruned"] > 0


def test_policies_satisfy_the_protocol():
    for name in ("heuristic", "random", "wait"):
        assert isinstance(make_baseline(name), Policy) and make_baseline(name).name == name


def test_evaluate_policies_and_table():
    results = evaluate_policies(["wait", RandomLegalPolicy(1)], WorldConfig(max_epochs=3), episodes=2, seed=5)
    assert set(results) == {"wait", "random"}
    r = results["wait"]
    assert r["episodes"] == 2 and r["episode_seed"] == [5, 6]
    assert len(r["final_val_acc_list"]) == 2 and r["fossilized_mean"] == 0 and r["seed_params_mean"] == 0
    assert r["return_std"] >= 0 and set(r["illegal_actions_list"]) == {0}
    table = format_table(results)
    assert "wait" in table and "random" in table and "±" in table
