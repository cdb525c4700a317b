"""SeedSlot: every lifecycle transition, the gates, the alpha controller, the blends, straight-through training."""

import itertools

import pytest
import torch
import torch.nn as nn

from esper_lab.actions import (
    EMBARGO_EPOCHS,
    VALID_TRANSITIONS,
    AlphaCurve,
    AlphaMode,
    BlendOp,
    BlueprintAction,
    GerminationStyle,
    SeedStage,
)
from esper_lab.env.blueprints import make_seed
from esper_lab.env.host import HostCNN
from esper_lab.env.slot import (
    IllegalTransitionError,
    LifecycleError,
    SeedSlot,
    curve_progress,
    decode_curve,
)

C = 4


def fresh_slot(style=GerminationStyle.LINEAR_ADD, tempo=3, target=1.0, blueprint=BlueprintAction.CONV_SMALL):
    torch.manual_seed(0)
    slot = SeedSlot("r0c1", C)
    slot.germinate(make_seed(blueprint, C), nn.Linear(C, 1), style, tempo, target, acc_at_germination=50.0)
    return slot


def slot_in(stage: SeedStage) -> SeedSlot:
    slot = fresh_slot()
    slot.stage = stage
    return slot


# --- the transition table -------------------------------------------------------------------------------------


@pytest.mark.parametrize("src, dst", list(itertools.product(SeedStage, SeedStage)))
def test_every_transition_is_legal_or_raises(src, dst):
    slot = slot_in(src)
    if dst in VALID_TRANSITIONS[src]:
        slot.transition(dst)
        assert slot.stage == (None if dst == SeedStage.DORMANT else dst)
        assert slot.pop_events()[-1]["to"] == dst.name
    else:
        with pytest.raises(IllegalTransitionError) as err:
            slot.transition(dst)
        assert (err.value.from_stage, err.value.to_stage) == (src, dst)
        assert src.name in str(err.value) and dst.name in str(err.value)
        assert slot.stage == src


def test_empty_slot_counts_as_dormant():
    slot = SeedSlot("r0c0", C)
    with pytest.raises(IllegalTransitionError, match="DORMANT -> TRAINING"):
        slot.transition(SeedStage.TRAINING)


@pytest.mark.parametrize("stage", [s for s in SeedStage if s not in (SeedStage.GERMINATED, SeedStage.TRAINING,
                                                                     SeedStage.BLENDING)])
def test_advance_outside_advanceable_stages_raises(stage):
    with pytest.raises(LifecycleError, match="ADVANCE"):
        slot_in(stage).advance()


@pytest.mark.parametrize("stage", [s for s in SeedStage if s != SeedStage.HOLDING])
def test_fossilize_outside_holding_raises(stage):
    with pytest.raises(LifecycleError, match="FOSSILIZE"):
        slot_in(stage).fossilize()


@pytest.mark.parametrize("stage", [SeedStage.FOSSILIZED, SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING])
def test_prune_outside_prunable_stages_raises(stage):
    with pytest.raises(LifecycleError, match="PRUNE"):
        slot_in(stage).prune(0, AlphaCurve.LINEAR)


def test_germinate_on_occupied_slot_raises():
    slot = fresh_slot()
    with pytest.raises(LifecycleError, match="empty"):
        slot.germinate(make_seed(BlueprintAction.NORM, C), nn.Linear(C, 1), GerminationStyle.LINEAR_ADD, 3, 1.0, 0.0)


# --- the happy path and the gates ------------------------------------------------------------------------------


def test_full_lifecycle_with_gates_and_tempo_ramp():
    slot = fresh_slot(style=GerminationStyle.LINEAR_ADD, tempo=3)
    assert slot.stage == SeedStage.GERMINATED and slot.alpha == 0.0
    assert slot.advance() and slot.stage == SeedStage.TRAINING  # G1
    assert not slot.advance() and slot.stage == SeedStage.TRAINING  # G2: no epoch in TRAINING yet
    slot.step_epoch()
    assert slot.advance() and slot.stage == SeedStage.BLENDING
    assert slot.alpha_mode == AlphaMode.UP
    alphas = []
    for _ in range(3):
        assert not slot.advance()  # G3: alpha not there yet
        slot.step_epoch()
        alphas.append(slot.alpha)
    assert alphas == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert slot.alpha_mode == AlphaMode.HOLD and slot.alpha == 1.0
    assert slot.advance() and slot.stage == SeedStage.HOLDING
    assert not slot.fossilize()  # G5: no counterfactual yet
    slot.record_counterfactual(2.5)
    assert slot.fossilize() and slot.stage == SeedStage.FOSSILIZED
    path = [(e["from"], e["to"]) for e in slot.pop_events()]
    assert path == [("DORMANT", "GERMINATED"), ("GERMINATED", "TRAINING"), ("TRAINING", "BLENDING"),
                    ("BLENDING", "HOLDING"), ("HOLDING", "FOSSILIZED")]


@pytest.mark.parametrize("tempo", [3, 5, 8])
def test_tempo_sets_ramp_length(tempo):
    slot = fresh_slot(tempo=tempo)
    slot.advance()
    slot.step_epoch()
    slot.advance()
    for _ in range(tempo - 1):
        slot.step_epoch()
        assert slot.alpha < 1.0 and slot.alpha_mode == AlphaMode.UP
    slot.step_epoch()
    assert slot.alpha == 1.0 and slot.alpha_mode == AlphaMode.HOLD
    assert (slot.alpha_steps_total, slot.alpha_steps_done) == (tempo, tempo)


def blending_slot(target=1.0, style=GerminationStyle.LINEAR_ADD, tempo=3) -> SeedSlot:
    slot = fresh_slot(style=style, tempo=tempo, target=target)
    slot.advance()
    slot.step_epoch()
    slot.advance()
    for _ in range(tempo):
        slot.step_epoch()
    return slot


def test_partial_target_blocks_holding_until_retargeted():
    slot = blending_slot(target=0.7)
    assert slot.alpha == pytest.approx(0.7) and not slot.advance()
    slot.set_alpha_target(1.0, 0, AlphaCurve.LINEAR, 12.0, BlendOp.ADD)  # INSTANT
    assert slot.alpha == 1.0 and slot.advance() and slot.stage == SeedStage.HOLDING


def test_set_alpha_target_from_holding_reblends_and_ramps_down():
    slot = blending_slot()
    slot.advance()
    slot.set_alpha_target(0.5, 5, AlphaCurve.COSINE, 12.0, BlendOp.MULTIPLY)
    assert slot.stage == SeedStage.BLENDING and slot.alpha_mode == AlphaMode.DOWN
    assert slot.blend_op == BlendOp.MULTIPLY
    with pytest.raises(LifecycleError, match="still moving"):
        slot.set_alpha_target(1.0, 3, AlphaCurve.LINEAR, 12.0, BlendOp.ADD)
    values = []
    for _ in range(5):
        slot.step_epoch()
        values.append(slot.alpha)
    assert values[-1] == 0.5 and all(a > b for a, b in zip(values, values[1:]))
    assert slot.alpha_mode == AlphaMode.HOLD


def test_instant_prune_then_embargo_then_empty():
    slot = blending_slot()
    slot.prune(0, AlphaCurve.LINEAR)
    assert slot.stage == SeedStage.PRUNED and slot.alpha == 0.0
    stages = []
    for _ in range(1 + EMBARGO_EPOCHS + 1):
        slot.step_epoch()
        stages.append(None if slot.stage is None else slot.stage.name)
    assert stages == ["EMBARGOED"] * EMBARGO_EPOCHS + ["RESETTING", None]
    assert slot.is_empty and slot.seed is None


def test_scheduled_prune_ramps_alpha_down_first():
    slot = blending_slot()
    slot.prune(3, AlphaCurve.LINEAR)
    assert slot.stage == SeedStage.BLENDING and slot.prune_pending and slot.alpha_mode == AlphaMode.DOWN
    slot.step_epoch()
    slot.step_epoch()
    assert slot.alpha == pytest.approx(1 / 3) and slot.stage == SeedStage.BLENDING
    slot.step_epoch()
    assert slot.alpha == 0.0 and slot.stage == SeedStage.PRUNED


def test_prune_of_untrained_seed_is_immediate_even_with_speed():
    slot = fresh_slot()
    slot.prune(8, AlphaCurve.LINEAR)
    assert slot.stage == SeedStage.PRUNED


def test_curves_run_from_zero_to_one_and_are_monotone():
    for curve, k in [(AlphaCurve.LINEAR, 12.0), (AlphaCurve.COSINE, 12.0), (AlphaCurve.SIGMOID, 6.0),
                     (AlphaCurve.SIGMOID, 24.0)]:
        values = [curve_progress(u / 10, curve, k) for u in range(11)]
        assert values[0] == pytest.approx(0.0, abs=1e-12) and values[-1] == pytest.approx(1.0)
        assert all(a < b for a, b in zip(values, values[1:]))
        assert curve_progress(0.5, curve, k) == pytest.approx(0.5)
    assert curve_progress(0.25, AlphaCurve.SIGMOID, 24.0) < curve_progress(0.25, AlphaCurve.SIGMOID, 6.0)
    assert decode_curve(4) == (AlphaCurve.SIGMOID, 24.0)


def test_gradient_health():
    slot = fresh_slot()
    slot.record_gradient(0.5)
    assert slot.gradient_health == 1.0 and not slot.has_exploding
    slot.record_gradient(40.0)
    assert slot.has_exploding and slot.gradient_health == pytest.approx(0.25) and slot.gradient_health_prev == 1.0
    slot.record_gradient(float("nan"))
    assert slot.gradient_health == 0.0 and slot.has_exploding


# --- the blend, straight-through training, gradient isolation ----------------------------------------------------


def residual_of(slot: SeedSlot, h: torch.Tensor) -> torch.Tensor:
    return slot.seed.residual(h.detach())


@pytest.mark.parametrize("blend", list(BlendOp))
def test_every_blend_is_identity_at_alpha_zero(blend):
    slot = blending_slot()
    slot.blend_op, slot.alpha = blend, 0.0
    h = torch.randn(5, C, 4, 4)
    assert torch.equal(slot(h), h)


@pytest.mark.parametrize("blend", list(BlendOp))
def test_every_blend_at_alpha_one(blend):
    slot = blending_slot()
    slot.blend_op = blend
    h = torch.randn(5, C, 4, 4)
    f = residual_of(slot, h)
    expected = {
        BlendOp.ADD: h + f,
        BlendOp.MULTIPLY: h * (1 + torch.tanh(f)),
        BlendOp.GATE: h + torch.sigmoid(slot.gate(h.mean(dim=(2, 3))))[:, :, None, None] * f,
    }[blend]
    assert slot.alpha == 1.0
    torch.testing.assert_close(slot(h), expected)
    assert not torch.allclose(slot(h), h)


def test_gate_is_per_sample_and_bounded():
    slot = blending_slot(style=GerminationStyle.GATED_GATE)
    assert slot.blend_op == BlendOp.GATE
    h = torch.randn(6, C, 4, 4) * 3
    g = torch.sigmoid(slot.gate(h.mean(dim=(2, 3))))
    assert g.shape == (6, 1) and bool(((g >= 0) & (g <= 1)).all()) and g.std() > 0


def host_and_slot(stage: SeedStage):
    torch.manual_seed(1)
    host = HostCNN(C)
    slot = fresh_slot(blueprint=BlueprintAction.CONV_HEAVY)
    if stage != SeedStage.GERMINATED:
        slot.advance()
    return host, slot


def test_straight_through_training_leaves_host_untouched_and_trains_seed():
    host, slot = host_and_slot(SeedStage.TRAINING)
    assert slot.stage == SeedStage.TRAINING
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    alone = host(x)
    with_seed = host(x, {"r0c1": slot})
    assert torch.equal(alone, with_seed)  # the forward value is exactly the host's
    nn.functional.cross_entropy(alone, y).backward()
    host_grads = [p.grad.clone() for p in host.parameters()]
    host.zero_grad()
    nn.functional.cross_entropy(host(x, {"r0c1": slot}), y).backward()
    for g_alone, p in zip(host_grads, host.parameters()):
        torch.testing.assert_close(p.grad, g_alone)  # the host's gradient is unchanged
    seed_grad = sum(p.grad.abs().sum() for p in slot.seed.parameters())
    assert seed_grad > 0


def test_seed_sees_detached_input():
    slot = blending_slot()
    h = torch.randn(4, C, 4, 4, requires_grad=True)
    slot(h).sum().backward()
    assert torch.equal(h.grad, torch.ones_like(h))  # ADD: only the identity path reaches the host
    slot.blend_op = BlendOp.MULTIPLY
    h.grad = None
    slot(h).sum().backward()
    torch.testing.assert_close(h.grad, 1 + torch.tanh(residual_of(slot, h)).detach())


@pytest.mark.parametrize("stage", [SeedStage.GERMINATED, SeedStage.PRUNED, SeedStage.EMBARGOED])
def test_unwired_stages_do_nothing(stage):
    slot = fresh_slot()
    slot.stage = stage
    h = torch.randn(3, C, 4, 4)
    assert slot(h) is h
