"""MorphoEnv and VectorEnv: the gym contract, determinism, illegal actions, counterfactuals, episode summaries."""

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from esper_lab.actions import (
    HEAD_NAMES,
    OP_SLOT_KEY,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    SeedStage,
    TempoAction,
)
from esper_lab.config import RewardConfig, WorldConfig
from esper_lab.env.morpho_env import SUMMARY_KEY, MorphoEnv, World, WorldAdam
from esper_lab.env.reward import REWARD_TERMS
from esper_lab.env.vector import VectorEnv
from esper_lab.features import OBS_DIM, batch_obs_to_features
from esper_lab.policy.baselines import RandomLegalPolicy

CFG = WorldConfig(max_epochs=6)


def act(op, slot=0, blueprint=BlueprintAction.CONV_HEAVY, style=GerminationStyle.LINEAR_ADD,
        tempo=TempoAction.FAST, target=2, speed=0, curve=0) -> list[int]:
    values = dict(slot=slot, blueprint=blueprint, style=style, tempo=tempo, alpha_target=target, alpha_speed=speed,
                  alpha_curve=curve, op=op)
    return [int(values[h]) for h in HEAD_NAMES]


WAIT = act(LifecycleOp.WAIT)


def play(seed: int, policy_seed: int = 0, cfg: WorldConfig = CFG) -> list[tuple]:
    """One random-legal episode; everything observable except wall-clock timings."""
    world, policy = World(cfg), RandomLegalPolicy(policy_seed)
    report = world.reset(seed)
    trace = [report]
    done = False
    while not done:
        action = policy.act([report], {k: v[None] for k, v in report.action_masks().items()})[0]
        reward, done, info = world.step(action.tolist())
        report = world.report()
        trace.append((action.tolist(), reward, info, report))
    return trace


def test_gymnasium_env_checker_passes():
    env = MorphoEnv(WorldConfig(max_epochs=4), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)


def test_spaces_and_observation_match_features():
    env = MorphoEnv(CFG, seed=3)
    assert list(env.action_space.nvec) == [3, 13, 4, 3, 3, 4, 5, 6]
    obs, info = env.reset()
    assert info["episode_seed"] == 3
    obs, reward, terminated, truncated, info = env.step(np.array(act(LifecycleOp.GERMINATE, slot=1)))
    assert env.observation_space.contains(obs) and obs["obs"].shape == (OBS_DIM,)
    expected_obs, expected_idx = batch_obs_to_features([env.report()])
    assert np.array_equal(obs["obs"], expected_obs[0].numpy())
    assert obs["blueprint_indices"].tolist() == [-1, int(BlueprintAction.CONV_HEAVY), -1] == expected_idx[0].tolist()
    assert not terminated and not truncated and isinstance(reward, float)
    assert set(env.action_masks_by_head()) == {*HEAD_NAMES, OP_SLOT_KEY}


def test_same_seed_same_episode_and_different_seed_differs():
    a, b, c = play(seed=11), play(seed=11), play(seed=12)
    assert a[0] == b[0]
    for (act_a, r_a, info_a, rep_a), (act_b, r_b, info_b, rep_b) in zip(a[1:], b[1:]):
        assert act_a == act_b and r_a == r_b and info_a == info_b and rep_a == rep_b
    assert a[0].val_acc != c[0].val_acc or a[0].val_loss != c[0].val_loss


def test_no_global_rng_leaks_in_or_out():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = play(seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from the global generator
    torch.manual_seed(999)
    second = play(seed=5)
    assert [t[1] for t in first[1:]] == [t[1] for t in second[1:]]


def test_illegal_action_executes_as_wait_and_says_so():
    world = World(replace(CFG, reward=RewardConfig(mode="contribution")))  # the mode with an illegal-op penalty
    world.reset(0)
    _, _, info = world.step(act(LifecycleOp.FOSSILIZE, slot=2))  # nothing to fossilize
    assert info["illegal"] and info["executed_op"] == "WAIT" and info["op"] == "FOSSILIZE"
    assert info["reward_terms"]["illegal"] == -1.0
    report = world.report()
    assert not report.last_action_success and report.last_op == LifecycleOp.FOSSILIZE
    _, _, info = world.step(act(LifecycleOp.GERMINATE, blueprint=BlueprintAction.LORA))  # transformer blueprint
    assert info["illegal"] and world.report().slots[0] is None


def test_info_events_and_episode_summary():
    world = World(CFG)
    world.reset(1)
    infos = []
    for action in [act(LifecycleOp.GERMINATE, slot=2), act(LifecycleOp.ADVANCE, slot=2)] + [WAIT] * 4:
        reward, _, info = world.step(action)
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
        infos.append(info)
    assert [info["epoch"] for info in infos] == [1, 2, 3, 4, 5, 6]
    assert set(infos[0]["reward_terms"]) == set(REWARD_TERMS)
    assert {"val_acc", "val_loss", "executed_op", "illegal", "success", "events"} <= set(infos[0])
    event = infos[0]["events"][0]
    assert event == {"slot": "r0c2", "epoch": 1, "from": "DORMANT", "to": "GERMINATED", "blueprint": "CONV_HEAVY",
                     "alpha": 0.0}
    assert SUMMARY_KEY not in infos[-2]
    summary = infos[-1][SUMMARY_KEY]
    assert summary["germinated"] == 1 and summary["fossilized"] == 0 and summary["epochs"] == 6
    assert summary["seed_params"] > 0 and summary["host_params"] == 386
    with pytest.raises(RuntimeError, match="episode ended"):
        world.step(WAIT)


def test_counterfactual_is_accuracy_with_minus_without_the_seed():
    world = World(WorldConfig(max_epochs=8, interactions=False))
    world.reset(2)
    for action in [act(LifecycleOp.GERMINATE, slot=1), act(LifecycleOp.ADVANCE, slot=1), WAIT,
                   act(LifecycleOp.ADVANCE, slot=1), WAIT]:
        world.step(action)
    seed = world.report().slots[1]
    assert seed.stage == SeedStage.BLENDING and seed.alpha > 0 and seed.contribution is not None
    x, y = world.data.x_val, world.data.y_val
    slot = world.slot_map["r0c1"]
    with torch.inference_mode():
        acc = (world.host(x, world.slot_map).argmax(1) == y).float().mean().item() * 100
        alpha = slot.alpha
        slot.alpha = 0.0
        acc_off = (world.host(x, world.slot_map).argmax(1) == y).float().mean().item() * 100
        slot.alpha = alpha
    assert acc == pytest.approx(world.report().val_acc)
    assert seed.contribution == pytest.approx(acc - acc_off)


def test_vector_env_shapes_and_contract():
    env = VectorEnv(CFG, num_envs=2, seed=0)
    reports = env.reset([4, 4])
    assert len(reports) == 2 and reports[0] == reports[1]  # same episode seed, same world
    masks = env.masks()
    assert list(masks) == [*HEAD_NAMES, OP_SLOT_KEY] and masks["op"].shape == (2, 6) and masks["op"].dtype == torch.bool
    assert masks[OP_SLOT_KEY].shape == (2, 6, 3) and torch.equal(masks[OP_SLOT_KEY].any(-1), masks["op"])
    actions = torch.tensor([WAIT, act(LifecycleOp.GERMINATE)], dtype=torch.int64)
    reports, rewards, terminated, truncated, infos = env.step(actions)
    assert rewards.dtype == torch.float32 and rewards.shape == (2,)
    assert terminated.dtype == torch.bool and not terminated.any() and not truncated.any()
    assert reports[1].slots[0] is not None and reports[0].slots[0] is None
    with pytest.raises(ValueError, match=r"\[2, 8\]"):
        env.step(torch.zeros(3, 8, dtype=torch.int64))
    stream = VectorEnv(CFG, num_envs=2, seed=7)
    stream.reset()
    assert stream.episode_seeds[0] != stream.episode_seeds[1]


def test_out_of_range_head_value_is_an_error_not_an_illegal_move():
    world = World(CFG)
    world.reset(0)
    with pytest.raises(ValueError, match="out of range"):
        world.step(act(LifecycleOp.WAIT, slot=3))


def test_world_adam_matches_torch_adam_and_skips_unwired_params():
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(s)) for s in [(4, 4), (4,), (10, 3)]]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt_ours, opt_ref = WorldAdam(ours[:2], lr=3e-3), torch.optim.Adam(ref[:2], lr=3e-3)
    opt_ours.add(ours[2:])
    opt_ref.add_param_group({"params": ref[2:]})
    for step in range(12):
        for params, opt in [(ours, opt_ours), (ref, opt_ref)]:
            opt.zero_grad()
            used = params if step % 3 else params[:2]  # the third tensor sometimes gets no gradient
            sum((p ** 2).sum() * (k + 1) for k, p in enumerate(used)).backward()
            opt.step()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    opt_ours.remove(ours[2:])
    assert len(opt_ours.params) == len(opt_ours.exp_avg) == 2
