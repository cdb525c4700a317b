"""Every term of the reward modes 'simplified', 'sparse' and 'basic' on hand-built states (sign, scale, the terminal,
PRUNE's forfeit), one discount for every mode with potential shaping, and the `mode` field through the config.
The contribution mode's own terms are pinned in test_reward.py."""

from dataclasses import replace

import pytest

from esper_lab import cli
from esper_lab.actions import AlphaMode, LifecycleOp, SeedStage
from esper_lab.config import PRESETS, REWARD_MODES, ConfigError, RewardConfig, TrainConfig, WorldConfig, preset
from esper_lab.env.morpho_env import World
from esper_lab.env.reward import (
    PBRS_MODES,
    REWARD_TERMS,
    StepOutcome,
    check_gamma,
    compute_reward,
    harmonic_mean,
    world_potential,
)

from test_reward import HOST, seed  # the same hand-built slot reports as the contribution tests

GAMMA = RewardConfig().gamma
MODE_TERMS = {  # the terms each mode may pay; every other term stays 0
    "contribution": set(REWARD_TERMS) - {"fossilize"},
    "simplified": {"pbrs", "action_cost", "terminal"},
    "sparse": {"terminal"},
    "basic": {"pbrs", "rent", "fossilize", "terminal"},
}


def outcome(before, after=None, op=LifecycleOp.WAIT, requested=None, slot=0, val_acc=55.0, terminal=False,
            succeeded=True, start_acc=10.0, best_acc=None) -> StepOutcome:
    before = tuple(before) + (None,) * (3 - len(before))
    after = before if after is None else tuple(after) + (None,) * (3 - len(after))
    return StepOutcome(requested_op=requested or op, executed_op=op, slot=slot, succeeded=succeeded, val_acc=val_acc,
                       acc_delta=1.0, before=before, after=after, host_params=HOST, terminal=terminal,
                       start_acc=start_acc, best_acc=val_acc if best_acc is None else best_acc)


def terms(o: StepOutcome, mode: str, **cfg) -> dict:
    return compute_reward(o, RewardConfig(mode=mode, **cfg)).as_dict()


def busy_step() -> StepOutcome:
    """A step where every contribution term is non-zero: a PRUNE of a hurting blending seed beside a good holding
    seed, alpha moving, a terminal with a fossil."""
    hurting = seed(contribution=-2.0, alpha=0.4, seed_params=500, epochs_in_stage=4, acc_at_germination=60.0)
    holding = seed(SeedStage.HOLDING, slot_id="r0c1", contribution=3.0, interaction_sum=1.0, seed_params=300,
                   epochs_in_stage=3, acc_at_germination=40.0)
    fossil = seed(SeedStage.FOSSILIZED, slot_id="r0c2", contribution=4.0, seed_params=100, acc_at_germination=30.0)
    after = [replace(hurting, alpha=0.0, stage=SeedStage.PRUNED), holding, fossil]
    return outcome([hurting, holding, fossil], after=after, op=LifecycleOp.PRUNE, terminal=True)


# --- every mode: the breakdown --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", REWARD_MODES)
def test_every_mode_fills_the_one_breakdown_and_only_its_own_terms(mode):
    b = compute_reward(busy_step(), RewardConfig(mode=mode))
    values = b.as_dict()
    assert tuple(values) == REWARD_TERMS and b.total == pytest.approx(sum(values.values()))
    assert {name for name, v in values.items() if v != 0.0} <= MODE_TERMS[mode]
    assert values["terminal"] > 0  # every mode pays something at the end


def test_the_default_mode_is_simplified_and_contribution_pays_no_fossilize_term():
    assert RewardConfig().mode == "simplified" and TrainConfig().world.reward.mode == "simplified"
    good = seed(SeedStage.HOLDING, contribution=5.0, epochs_in_stage=5)
    phase4 = RewardConfig(mode="contribution")
    assert compute_reward(outcome([good], op=LifecycleOp.FOSSILIZE), phase4).fossilize == 0.0


# --- simplified -------------------------------------------------------------------------------------------------


def test_simplified_shapes_with_the_stage_potential():
    germinated = seed(SeedStage.GERMINATED, alpha=0.0)
    t = terms(outcome([], after=[germinated], op=LifecycleOp.GERMINATE), "simplified")
    assert t["pbrs"] == pytest.approx(0.3 * GAMMA * 1.0)
    assert t["action_cost"] == pytest.approx(-0.01)
    blending = seed(contribution=20.0, epochs_in_stage=2)  # a big contribution earns nothing here
    assert terms(outcome([blending], after=[replace(blending, epochs_in_stage=3)]), "simplified") == pytest.approx(
        {**dict.fromkeys(REWARD_TERMS, 0.0), "pbrs": 0.3 * (GAMMA * (3.5 + 0.9) - (3.5 + 0.6))})


@pytest.mark.parametrize("op", list(LifecycleOp))
def test_simplified_costs_every_executed_op_but_wait(op):
    assert terms(outcome([seed()], op=op), "simplified")["action_cost"] == (0.0 if op == LifecycleOp.WAIT else -0.01)


def test_simplified_does_not_charge_an_illegal_request_that_ran_as_wait():
    t = terms(outcome([seed()], op=LifecycleOp.WAIT, requested=LifecycleOp.FOSSILIZE), "simplified")
    assert t["action_cost"] == 0.0 and t["illegal"] == 0.0


def test_simplified_terminal_pays_accuracy_and_good_fossils():
    good = seed(SeedStage.FOSSILIZED, acc_at_germination=50.0)  # improvement 10 >= 1
    weak = replace(good, slot_id="r0c1", acc_at_germination=59.5)  # improvement 0.5 < 1
    live = seed(slot_id="r0c2", acc_at_germination=20.0)  # not fossilized
    end = outcome([good, weak, live], val_acc=60.0, terminal=True)
    assert terms(end, "simplified")["terminal"] == pytest.approx(3.0 * 0.60 + 2.0 * 1)
    assert terms(replace(end, terminal=False), "simplified")["terminal"] == 0.0


def test_simplified_slow_prune_keeps_the_potential_until_the_seed_leaves():
    holding = seed(SeedStage.HOLDING, epochs_in_stage=2)
    pending = replace(holding, epochs_in_stage=3, prune_pending=True, alpha=0.5, alpha_mode=AlphaMode.DOWN)
    slow = terms(outcome([holding], after=[pending], op=LifecycleOp.PRUNE), "simplified")
    assert slow["pbrs"] == pytest.approx(0.3 * (GAMMA * (5.5 + 0.9) - (5.5 + 0.6)))


# --- sparse -----------------------------------------------------------------------------------------------------


def test_sparse_pays_nothing_before_the_end():
    assert all(v == 0.0 for v in terms(replace(busy_step(), terminal=False), "sparse").values())


def test_sparse_terminal_is_best_accuracy_minus_the_parameters_alive_at_the_end():
    live = seed(seed_params=2000)
    fossil = seed(SeedStage.FOSSILIZED, slot_id="r0c1", seed_params=1200)
    pruned = seed(SeedStage.EMBARGOED, slot_id="r0c2", seed_params=5000)  # gone: costs nothing
    end = outcome([live, fossil, pruned], val_acc=60.0, best_acc=70.0, terminal=True)
    assert terms(end, "sparse")["terminal"] == pytest.approx(0.70 - 0.1 * 3200 / 32_000)
    assert terms(outcome([], val_acc=60.0, best_acc=70.0, terminal=True), "sparse")["terminal"] == pytest.approx(0.70)


def test_sparse_clamps_before_scaling():
    huge = outcome([seed(seed_params=10**9)], best_acc=70.0, terminal=True)
    assert terms(huge, "sparse")["terminal"] == -1.0
    assert terms(huge, "sparse", sparse_scale=2.5)["terminal"] == -2.5
    fine = outcome([], best_acc=80.0, terminal=True)
    assert terms(fine, "sparse", sparse_scale=2.5)["terminal"] == pytest.approx(2.0)


def test_sparse_needs_the_best_accuracy_at_the_end():
    with pytest.raises(ValueError, match="best_acc"):
        compute_reward(replace(outcome([], terminal=True), best_acc=None), RewardConfig(mode="sparse"))


# --- basic ------------------------------------------------------------------------------------------------------


def test_basic_shapes_with_the_stage_potential():
    training = seed(SeedStage.TRAINING, alpha=0.0, epochs_in_stage=2)
    blending = seed(SeedStage.BLENDING, alpha=0.0, epochs_in_stage=0)
    t = terms(outcome([training], after=[blending], op=LifecycleOp.ADVANCE), "basic")
    assert t["pbrs"] == pytest.approx(0.3 * (GAMMA * 3.5 - (2.0 + 0.6)))


@pytest.mark.parametrize("mode, forfeits", [("basic", True), ("contribution", False), ("simplified", False)])
def test_prune_forfeits_the_potential_at_once_in_basic(mode, forfeits):
    """A slow PRUNE leaves the seed in its stage while alpha ramps down; 'basic' drops its potential at the PRUNE."""
    holding = seed(SeedStage.HOLDING, epochs_in_stage=2)
    pending = replace(holding, epochs_in_stage=3, prune_pending=True, alpha=0.5, alpha_mode=AlphaMode.DOWN)
    pbrs = terms(outcome([holding], after=[pending], op=LifecycleOp.PRUNE), mode)["pbrs"]
    forfeit = -0.3 * (5.5 + 0.6)
    assert (pbrs == pytest.approx(forfeit)) == forfeits
    assert pbrs < 0 if forfeits else pbrs > 0
    # and the pending seed stays at 0 until it is gone: nothing is paid back
    gone = replace(pending, stage=SeedStage.PRUNED, prune_pending=False, alpha=0.0)
    later = terms(outcome([pending], after=[gone]), mode)["pbrs"]
    assert later == (0.0 if forfeits else pytest.approx(-0.3 * (5.5 + 0.9)))


def test_basic_fast_prune_forfeits_like_every_mode():
    holding = seed(SeedStage.HOLDING, epochs_in_stage=2)
    pruned = replace(holding, stage=SeedStage.PRUNED, epochs_in_stage=0, alpha=0.0)
    for mode in PBRS_MODES:
        assert terms(outcome([holding], after=[pruned], op=LifecycleOp.PRUNE), mode)["pbrs"] == pytest.approx(
            -0.3 * (5.5 + 0.6))


def test_basic_rent_is_linear_in_the_effective_parameters():
    s = seed(alpha=0.5, seed_params=800)
    effective = 0.5 * 800 + 0.0039 * HOST
    assert terms(outcome([s]), "basic")["rent"] == pytest.approx(-0.1 * effective / 32_000)
    two = [s, replace(s, slot_id="r0c1")]
    assert terms(outcome(two), "basic")["rent"] == pytest.approx(2 * terms(outcome([s]), "basic")["rent"])
    fossil = seed(SeedStage.FOSSILIZED, seed_params=800)  # a fossil is part of the model: it pays too
    assert terms(outcome([fossil]), "basic")["rent"] == pytest.approx(-0.1 * (800 + 0.0039 * HOST) / 32_000)
    assert terms(outcome([]), "basic")["rent"] == 0.0
    big = seed(seed_params=10**7)  # no cap, unlike the contribution rent
    assert terms(outcome([big]), "basic")["rent"] < -30


def test_basic_rent_reads_the_state_the_policy_saw():
    s = seed(seed_params=3200)
    assert terms(outcome([s], after=[None], op=LifecycleOp.PRUNE), "basic")["rent"] == pytest.approx(
        -0.1 * (3200 + 0.0039 * HOST) / 32_000)


def test_basic_fossilize_bonus_scales_with_the_contribution():
    good = seed(SeedStage.HOLDING, contribution=20.0, epochs_in_stage=5)
    fossilize = dict(op=LifecycleOp.FOSSILIZE)
    assert terms(outcome([good], **fossilize), "basic")["fossilize"] == pytest.approx(0.3 + 0.05 * 20.0)
    better = replace(good, contribution=40.0)
    assert terms(outcome([better], **fossilize), "basic")["fossilize"] == pytest.approx(0.3 + 0.05 * 40.0)
    young = replace(good, epochs_in_stage=2)  # legitimacy: 2 of 5 holding epochs
    assert terms(outcome([young], **fossilize), "basic")["fossilize"] == pytest.approx((0.3 + 0.05 * 20.0) * 0.4)


def test_basic_fossilize_improvement_is_the_largest_contribution():
    good = seed(SeedStage.HOLDING, contribution=20.0, epochs_in_stage=5)
    other = seed(slot_id="r0c1", contribution=30.0)  # improvement 30: harmonic(30, 20) = 24
    assert harmonic_mean(30.0, 20.0) == pytest.approx(24.0) and harmonic_mean(0.0, 5.0) == 0.0
    assert terms(outcome([good, other], op=LifecycleOp.FOSSILIZE), "basic")["fossilize"] == pytest.approx(
        0.3 + 0.05 * 24.0)


def test_basic_fossilize_penalties():
    holding = seed(SeedStage.HOLDING, contribution=0.5, epochs_in_stage=5)
    assert terms(outcome([holding], op=LifecycleOp.FOSSILIZE), "basic")["fossilize"] == -0.2  # below 1 pp
    unmeasured = replace(holding, contribution=None)
    assert terms(outcome([unmeasured], op=LifecycleOp.FOSSILIZE), "basic")["fossilize"] == -0.2
    held = replace(holding, contribution=20.0)  # the gate held: nothing fossilized
    assert terms(outcome([held], op=LifecycleOp.FOSSILIZE, succeeded=False), "basic")["fossilize"] == -0.5
    # an illegal FOSSILIZE runs as WAIT and is judged as one, as in Esper
    illegal = terms(outcome([seed()], op=LifecycleOp.WAIT, requested=LifecycleOp.FOSSILIZE), "basic")
    assert illegal["fossilize"] == 0.0 and illegal["illegal"] == 0.0
    assert terms(outcome([held], op=LifecycleOp.ADVANCE), "basic")["fossilize"] == 0.0


def test_basic_terminal_pays_the_episode_accuracy_gain():
    end = outcome([], val_acc=62.0, start_acc=10.0, terminal=True)
    assert terms(end, "basic")["terminal"] == pytest.approx(5.0 * 52.0 / 100)
    assert terms(replace(end, val_acc=8.0), "basic")["terminal"] == pytest.approx(-0.1)  # lost accuracy: negative
    assert terms(replace(end, terminal=False), "basic")["terminal"] == 0.0
    with pytest.raises(ValueError, match="start_acc"):
        compute_reward(replace(end, start_acc=None), RewardConfig(mode="basic"))


# --- one discount for every mode with potential shaping ------------------------------------------------------------


def episode_states() -> list[tuple]:
    """Slot states along an episode: germinate, train, blend, a slow prune (pending), gone, a second seed."""
    g = seed(SeedStage.GERMINATED, alpha=0.0, epochs_in_stage=0)
    t1, t2 = replace(g, stage=SeedStage.TRAINING), replace(g, stage=SeedStage.TRAINING, epochs_in_stage=1)
    b = replace(g, stage=SeedStage.BLENDING, alpha=0.5, contribution=3.0)
    pending = replace(b, epochs_in_stage=1, prune_pending=True)
    pruned = replace(b, stage=SeedStage.PRUNED, alpha=0.0)
    other = replace(g, slot_id="r0c1")
    other_later = replace(other, epochs_in_stage=1)
    states = [(), (g,), (t1,), (t2,), (b,), (pending,), (pruned,), (None, other), (None, other_later)]
    return [tuple(s) + (None,) * (3 - len(s)) for s in states]


@pytest.mark.parametrize("mode", PBRS_MODES)
def test_shaping_telescopes_under_the_one_discount(mode):
    """sum_t gamma^t F_t = gamma^T phi(s_T) - phi(s_0) with F the mode's pbrs term, under the discount PPO uses
    (cfg.gamma): the shaping then leaves the optimal policy unchanged. Under another discount it does not add up."""
    cfg = preset("demo", **{"world.reward.mode": mode})
    check_gamma(cfg.world.reward, cfg.gamma)
    states = episode_states()
    ops = [LifecycleOp.GERMINATE, LifecycleOp.ADVANCE, LifecycleOp.WAIT, LifecycleOp.ADVANCE, LifecycleOp.PRUNE,
           LifecycleOp.WAIT, LifecycleOp.GERMINATE, LifecycleOp.WAIT]
    shaping = [compute_reward(outcome(states[t], after=states[t + 1], op=ops[t]), cfg.world.reward).pbrs
               for t in range(len(ops))]
    phi = [world_potential(s, cfg.world.reward) for s in states]

    def discounted(gamma: float) -> float:
        return sum(gamma ** t * f for t, f in enumerate(shaping))

    T = len(ops)
    assert discounted(cfg.gamma) == pytest.approx(0.3 * (cfg.gamma ** T * phi[-1] - phi[0]))
    assert discounted(0.9) != pytest.approx(0.3 * (0.9 ** T * phi[-1] - phi[0]))


@pytest.mark.parametrize("mode", REWARD_MODES)
def test_check_gamma(mode):
    reward = RewardConfig(mode=mode)
    for name in PRESETS:  # every preset: PPO discounts with cfg.gamma, the shaping's own field
        cfg = preset(name, **{"world.reward.mode": mode})
        check_gamma(cfg.world.reward, cfg.gamma)
    if mode in PBRS_MODES:
        with pytest.raises(ValueError, match="one discount"):
            check_gamma(reward, 0.99)
    else:
        check_gamma(reward, 0.99)  # nothing to telescope


# --- the mode through the config, the CLI and the world --------------------------------------------------------------


@pytest.mark.parametrize("mode", REWARD_MODES)
def test_mode_round_trips_through_the_config(mode):
    cfg = preset("tiny", **{"world.reward.mode": mode})
    data = cfg.to_dict()
    assert data["world"]["reward"]["mode"] == mode
    assert TrainConfig.from_dict(data) == cfg


def test_mode_is_set_from_the_command_line():
    args = cli.build_parser().parse_args(["train", "--preset", "tiny", "--set", "world.reward.mode=basic"])
    assert cli.train_config(args).world.reward.mode == "basic"


def test_unknown_mode_is_a_clear_error():
    allowed = "one of 'contribution', 'simplified', 'sparse', 'basic'"
    with pytest.raises(ConfigError, match=f"world.reward.mode = 'shaped': must be {allowed}"):
        preset("tiny", **{"world.reward.mode": "shaped"})
    data = preset("tiny").to_dict()
    data["world"]["reward"]["mode"] = "BASIC"
    with pytest.raises(ConfigError, match="world.reward.mode = 'BASIC'"):
        TrainConfig.from_dict(data)


@pytest.mark.parametrize("mode", REWARD_MODES)
def test_a_world_pays_each_mode_with_its_terms(mode):
    """Three WAIT steps of a real world: the reward is the sum of info['reward_terms'], and the terminal reads the
    episode's first and best accuracies."""
    world = World(WorldConfig(max_epochs=3, reward=RewardConfig(mode=mode)))
    world.reset(seed=7)
    done, infos, rewards = False, [], []
    while not done:
        reward, done, info = world.step([0] * 8)  # every head 0: WAIT
        infos.append(info)
        rewards.append(reward)
    for reward, info in zip(rewards, infos):
        assert tuple(info["reward_terms"]) == REWARD_TERMS
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
    terminal = infos[-1]["reward_terms"]["terminal"]
    first, last, best = world.val_accs[0], world.val_accs[-1], world.best_acc
    expected = {"contribution": 0.05 * last, "simplified": 3.0 * last / 100, "sparse": best / 100,
                "basic": 5.0 * (last - first) / 100}
    assert terminal == pytest.approx(expected[mode])
    assert all(i["reward_terms"]["terminal"] == 0.0 for i in infos[:-1])


def test_the_train_panel_starts_a_run_with_the_chosen_mode(runs_dir, monkeypatch):
    """The dashboard's Reward choice reaches config.json and the trainer's command line (the child is not started)."""
    from streamlit.testing.v1 import AppTest

    from app import process
    from conftest import DASHBOARD
    from esper_lab.runs import RunReader

    commands = []

    class NoChild:
        def __init__(self, command, **kwargs):
            commands.append(command)
            self.pid = 2**22 + 1  # above pid_max's default: no such process

        def poll(self):
            return 0

    monkeypatch.setattr(process.subprocess, "Popen", NoChild)
    at = AppTest.from_file(str(DASHBOARD), default_timeout=30).run()
    at.selectbox(key="train_preset").set_value("tiny").run()
    reward = at.selectbox(key="train_reward")
    assert reward.options == list(REWARD_MODES) and reward.value == "simplified"
    reward.set_value("basic")
    at.button(key="start").click().run()
    assert not at.exception
    run = runs_dir / at.selectbox(key="run").value
    assert RunReader(run).config()["world"]["reward"]["mode"] == "basic"
    assert commands and "world.reward.mode=basic" in commands[-1]
