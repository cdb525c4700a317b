"""Every term of the Phase-4 contribution reward, with numbers."""

import math
from dataclasses import replace

import pytest

from esper_lab.actions import AlphaMode, BlendOp, BlueprintAction, LifecycleOp, SeedStage
from esper_lab.config import PPOConfig, TrainConfig, preset
from esper_lab.env.reward import (
    REWARD_TERMS,
    RewardBreakdown,
    RewardConfig,
    StepOutcome,
    bounded_attribution,
    compute_reward,
    ratio_penalty,
    world_potential,
)
from esper_lab.env.slot import SlotReport

CFG = RewardConfig(mode="contribution", contribution_weight=1.0, proxy_weight=0.3)  # Esper's unit weights
HOST = 400


def seed(stage=SeedStage.BLENDING, **kw) -> SlotReport:
    values = dict(
        slot_id="r0c0", stage=stage, blueprint=BlueprintAction.CONV_LIGHT, alpha=1.0, alpha_target=1.0,
        alpha_mode=AlphaMode.HOLD, alpha_steps_total=3, alpha_steps_done=3, alpha_velocity=0.0, blend_op=BlendOp.ADD,
        tempo_epochs=3, contribution=None, contribution_velocity=0.0, interaction_sum=0.0, gradient_norm=0.1,
        gradient_health=1.0, gradient_health_prev=1.0, has_vanishing=False, has_exploding=False, epochs_in_stage=0,
        seed_age=5, epochs_since_counterfactual=None, acc_at_germination=50.0, seed_params=0, prune_pending=False,
    )
    return SlotReport(**{**values, **kw})


def outcome(before, after=None, op=LifecycleOp.WAIT, requested=None, slot=0, val_acc=55.0, acc_delta=0.0,
            terminal=False, succeeded=True) -> StepOutcome:
    before = tuple(before) + (None,) * (3 - len(before))
    after = before if after is None else tuple(after) + (None,) * (3 - len(after))
    return StepOutcome(requested_op=requested or op, executed_op=op, slot=slot, succeeded=succeeded, val_acc=val_acc,
                       acc_delta=acc_delta, before=before, after=after, host_params=HOST, terminal=terminal)


def terms(o: StepOutcome) -> dict:
    return compute_reward(o, CFG).as_dict()


def test_terms_are_named_once_and_sum_to_total():
    b = RewardBreakdown(**{name: i + 1.0 for i, name in enumerate(REWARD_TERMS)})
    assert tuple(b.as_dict()) == REWARD_TERMS
    assert b.total == sum(range(1, len(REWARD_TERMS) + 1))


def test_one_gamma_serves_the_shaping_and_ppo():
    """The PBRS discount and PPO's are one field, so they cannot differ; old config files are migrated."""
    assert RewardConfig().gamma == 0.995 and not hasattr(PPOConfig(), "gamma")
    cfg = preset("tiny", **{"world.reward.gamma": 0.9})
    assert cfg.gamma == 0.9
    old = cfg.to_dict()
    old["ppo"]["gamma"] = 0.9  # a config.json written before the fields were merged
    assert TrainConfig.from_dict(old).gamma == 0.9
    old["ppo"]["gamma"] = 0.99
    with pytest.raises(ValueError, match="world.reward.gamma"):
        TrainConfig.from_dict(old)


# --- attribution ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c, p, expected", [
    (-2.0, 5.0, -2.0),  # hurting: paid in full
    (3.0, -1.0, 0.0),  # the host got worse: nothing
    (3.0, 0.0, 0.0),
    (8.0, 2.0, 4.0),  # c >= p: sqrt(p * c)
    (2.0, 5.0, 2.0),  # c < p: c
    (4.0, None, 2.0),  # no baseline: c / 2
])
def test_bounded_attribution(c, p, expected):
    assert bounded_attribution(c, p, CFG) == pytest.approx(expected)
    assert bounded_attribution(c, p, RewardConfig()) == pytest.approx(0.1 * expected)  # the calibrated default


def test_attribution_sums_seeds_flips_on_prune_and_skips_fossils():
    a = seed(contribution=2.0, acc_at_germination=50.0)  # p = 5 -> 2
    b = replace(a, slot_id="r0c1", contribution=-1.0)  # -> -1
    fossil = replace(a, slot_id="r0c2", stage=SeedStage.FOSSILIZED, contribution=9.0)
    assert terms(outcome([a, b, fossil]))["attribution"] == pytest.approx(1.0)
    assert terms(outcome([a, b, fossil], op=LifecycleOp.PRUNE, slot=1))["attribution"] == pytest.approx(3.0)


def test_ratio_penalty_for_claims_far_above_the_improvement():
    assert ratio_penalty(0.5, 0.01, CFG) == 0.0  # small contributions are never suspicious
    assert ratio_penalty(4.0, 2.0, CFG) == 0.0  # ratio 2 < 5
    assert ratio_penalty(20.0, 2.0, CFG) == pytest.approx(-0.1)  # ratio 10: -0.1 * (10 - 5) / 5
    assert ratio_penalty(5.0, 0.0, CFG) == pytest.approx(-0.15)  # no improvement: -0.3 * min(1, c / 10)
    s = seed(contribution=20.0, acc_at_germination=53.0)  # p = 2
    assert terms(outcome([s]))["attribution"] == pytest.approx(math.sqrt(40.0) - 0.1)


def test_proxy_before_any_counterfactual():
    training = seed(SeedStage.TRAINING, alpha=0.0)
    assert terms(outcome([training], acc_delta=2.0))["attribution"] == pytest.approx(0.6)
    assert terms(outcome([training], acc_delta=-2.0))["attribution"] == 0.0
    assert terms(outcome([], acc_delta=2.0))["attribution"] == 0.0


# --- warnings ------------------------------------------------------------------------------------------------


def test_blending_warning_escalates_while_the_host_regresses():
    regressing = seed(contribution=0.5, acc_at_germination=60.0, epochs_in_stage=3)  # p = -5
    assert terms(outcome([regressing]))["blending_warning"] == pytest.approx(-0.25)
    assert terms(outcome([replace(regressing, epochs_in_stage=20)]))["blending_warning"] == pytest.approx(-0.4)
    assert terms(outcome([replace(regressing, acc_at_germination=40.0)]))["blending_warning"] == 0.0


def test_holding_warning_for_waiting_on_a_good_seed():
    holding = seed(SeedStage.HOLDING, contribution=3.0, epochs_in_stage=4)
    assert terms(outcome([holding]))["holding_warning"] == pytest.approx(-0.2)
    assert terms(outcome([replace(holding, epochs_in_stage=1)]))["holding_warning"] == 0.0
    assert terms(outcome([replace(holding, epochs_in_stage=30)]))["holding_warning"] == pytest.approx(-0.3)
    assert terms(outcome([holding], op=LifecycleOp.FOSSILIZE))["holding_warning"] == 0.0


# --- potential shaping, synergy, rent, alpha shock -----------------------------------------------------------


def test_pbrs_germination_and_telescoping():
    germinated = seed(SeedStage.GERMINATED, alpha=0.0)
    assert terms(outcome([], after=[germinated]))["pbrs"] == pytest.approx(0.3 * 0.995 * 1.0)
    states = [(), (germinated,), (replace(germinated, stage=SeedStage.TRAINING),),
              (replace(germinated, stage=SeedStage.TRAINING, epochs_in_stage=1),), ()]
    total = sum(0.995 ** t * terms(outcome(states[t], after=states[t + 1]))["pbrs"] for t in range(len(states) - 1))
    phi = [world_potential(tuple(s) + (None,) * (3 - len(s)), CFG) for s in states]
    assert total == pytest.approx(0.3 * (0.995 ** 4 * phi[-1] - phi[0]))


def test_prune_forfeits_potential():
    holding = seed(SeedStage.HOLDING, epochs_in_stage=2)
    pruned = replace(holding, stage=SeedStage.EMBARGOED, epochs_in_stage=0)
    assert terms(outcome([holding], after=[pruned], op=LifecycleOp.PRUNE))["pbrs"] == pytest.approx(-0.3 * (5.5 + 0.6))


def test_synergy_needs_positive_attribution_and_interaction():
    s = seed(contribution=2.0, interaction_sum=4.0)
    assert terms(outcome([s]))["synergy"] == pytest.approx(0.1 * math.tanh(2.0))
    assert terms(outcome([replace(s, interaction_sum=-4.0)]))["synergy"] == 0.0
    assert terms(outcome([replace(s, contribution=-2.0)]))["synergy"] == 0.0


def test_rent_is_log_of_alpha_weighted_growth():
    s = seed(alpha=0.5, seed_params=800)
    effective = 0.5 * 800 + 0.0039 * HOST
    assert terms(outcome([s]))["rent"] == pytest.approx(-0.5 * math.log(1 + effective / HOST))
    assert terms(outcome([]))["rent"] == 0.0
    assert terms(outcome([replace(s, seed_params=10**12, alpha=1.0)]))["rent"] == pytest.approx(-8.0)


def test_alpha_shock_is_convex_and_capped():
    before, after = seed(alpha=0.2), seed(alpha=0.7)
    assert terms(outcome([before], after=[after]))["alpha_shock"] == pytest.approx(-0.1958 * 0.25)
    many = [seed(alpha=1.0)] * 3
    assert terms(outcome(many, after=[None, None, None]))["alpha_shock"] == pytest.approx(-0.1958 * 3)
    big = replace(CFG, alpha_shock_coef=1.0)
    assert compute_reward(outcome(many, after=[None] * 3), big).alpha_shock == -1.0


# --- action costs, illegal requests, terminal ------------------------------------------------------------------


def test_action_costs():
    assert terms(outcome([], op=LifecycleOp.GERMINATE))["action_cost"] == pytest.approx(-0.02)
    assert terms(outcome([seed()], op=LifecycleOp.SET_ALPHA_TARGET))["action_cost"] == pytest.approx(-0.005)
    assert terms(outcome([seed()], op=LifecycleOp.ADVANCE))["action_cost"] == 0.0


def test_fossilize_shaping():
    good = seed(SeedStage.HOLDING, contribution=5.0, epochs_in_stage=5)  # p = 5
    assert terms(outcome([good], op=LifecycleOp.FOSSILIZE))["action_cost"] == pytest.approx(-0.01 + 1.0)
    young = replace(good, epochs_in_stage=1)
    assert terms(outcome([young], op=LifecycleOp.FOSSILIZE))["action_cost"] == pytest.approx(-0.01 + 0.2)
    weak = replace(good, contribution=0.5)
    assert terms(outcome([weak], op=LifecycleOp.FOSSILIZE))["action_cost"] == pytest.approx(-0.21)
    ransom = replace(good, acc_at_germination=60.0)  # p = -5, c = 5
    assert terms(outcome([ransom], op=LifecycleOp.FOSSILIZE))["action_cost"] == pytest.approx(-0.01 - 0.5 - 1.0 - 0.3)
    gate_failed = terms(outcome([good], op=LifecycleOp.FOSSILIZE, succeeded=False))
    assert gate_failed["action_cost"] == pytest.approx(-0.01)


@pytest.mark.parametrize("c, expected", [(-1.0, 0.3), (-0.2, 0.1), (2.0, -0.4), (20.0, -0.9), (None, 0.0)])
def test_prune_shaping(c, expected):
    s = seed(contribution=c)
    assert terms(outcome([s], op=LifecycleOp.PRUNE))["action_cost"] == pytest.approx(-0.005 + expected)


def test_illegal_requests():
    occupied = terms(outcome([seed()], op=LifecycleOp.WAIT, requested=LifecycleOp.GERMINATE))
    assert occupied["illegal"] == -0.3
    bad_fossilize = terms(outcome([seed()], op=LifecycleOp.WAIT, requested=LifecycleOp.FOSSILIZE))
    assert bad_fossilize["illegal"] == -1.0
    assert terms(outcome([], op=LifecycleOp.WAIT, requested=LifecycleOp.ADVANCE))["illegal"] == 0.0
    assert terms(outcome([seed()], op=LifecycleOp.ADVANCE))["illegal"] == 0.0


def test_terminal_accuracy_and_contributing_fossils():
    good = seed(SeedStage.FOSSILIZED, acc_at_germination=50.0)
    poor = replace(good, slot_id="r0c1", acc_at_germination=54.5)  # improvement 0.5 < 1
    o = outcome([good, poor], val_acc=55.0, terminal=True)
    assert terms(o)["terminal"] == pytest.approx(0.05 * 55.0 + 3.0)
    assert terms(replace(o, terminal=False))["terminal"] == 0.0
