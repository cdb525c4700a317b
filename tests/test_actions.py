"""The action space facts others build on: head order and sizes, the causal-mask table, the legal-action masks."""

import pytest
import torch

from esper_lab.actions import (
    CNN_BLUEPRINTS,
    HEAD_NAMES,
    HEAD_RELEVANCE,
    HEAD_RELEVANCE_TABLE,
    MIN_PRUNE_AGE,
    NUM_BLUEPRINTS,
    NUM_OPS,
    OP_SLOT_KEY,
    AlphaMode,
    AlphaTargetAction,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    SeedStage,
    SlotView,
    causal_masks,
    compute_action_masks,
    head_sizes,
    is_op_legal_for_slot,
)

EMPTY = SlotView(stage=None)


def test_head_order_and_sizes():
    assert HEAD_NAMES == ("slot", "blueprint", "style", "tempo", "alpha_target", "alpha_speed", "alpha_curve", "op")
    assert list(head_sizes(3).values()) == [3, 13, 4, 3, 3, 4, 5, 6]
    assert head_sizes(5)["slot"] == 5
    with pytest.raises(ValueError):
        head_sizes(0)


@pytest.mark.parametrize(
    "op, heads",
    [
        (LifecycleOp.WAIT, {"op"}),
        (LifecycleOp.GERMINATE, {"op", "slot", "blueprint", "style", "tempo", "alpha_target"}),
        (LifecycleOp.SET_ALPHA_TARGET, {"op", "slot", "style", "alpha_target", "alpha_speed", "alpha_curve"}),
        (LifecycleOp.PRUNE, {"op", "slot", "alpha_speed", "alpha_curve"}),
        (LifecycleOp.FOSSILIZE, {"op", "slot"}),
        (LifecycleOp.ADVANCE, {"op", "slot"}),
    ],
)
def test_head_relevance_matches_esper(op, heads):
    assert HEAD_RELEVANCE[op] == heads
    row = causal_masks(torch.tensor([int(op)]))
    assert {h for h in HEAD_NAMES if bool(row[h][0])} == heads
    assert HEAD_RELEVANCE_TABLE[op].sum().item() == len(heads)


def test_empty_world_allows_only_wait_and_germinate():
    masks = compute_action_masks([EMPTY] * 3)
    assert list(masks) == [*HEAD_NAMES, OP_SLOT_KEY]
    assert masks["op"].tolist() == [True, True, False, False, False, False]
    assert masks[OP_SLOT_KEY].shape == (NUM_OPS, 3) and masks[OP_SLOT_KEY][:2].all() and not masks[OP_SLOT_KEY][2:].any()
    assert masks["blueprint"].sum().item() == len(CNN_BLUEPRINTS)
    assert not masks["blueprint"][BlueprintAction.NOOP] and not masks["blueprint"][BlueprintAction.LORA]
    assert masks["blueprint"].shape == (NUM_BLUEPRINTS,)


def test_style_and_target_collapse_without_germinate_or_retarget():
    full = [SlotView(SeedStage.TRAINING, seed_age=3)] * 3
    masks = compute_action_masks(full)
    assert masks["style"].tolist() == [i == GerminationStyle.SIGMOID_ADD for i in range(4)]
    assert masks["alpha_target"].tolist() == [i == AlphaTargetAction.FULL for i in range(3)]
    assert masks["op"][LifecycleOp.ADVANCE] and masks["op"][LifecycleOp.PRUNE]


def test_prune_needs_age_and_hold_mode():
    young = SlotView(SeedStage.TRAINING, seed_age=MIN_PRUNE_AGE - 1)
    ramping = SlotView(SeedStage.BLENDING, alpha_mode=AlphaMode.UP, seed_age=4)
    assert not is_op_legal_for_slot(LifecycleOp.PRUNE, young)
    assert not is_op_legal_for_slot(LifecycleOp.PRUNE, ramping)
    assert not is_op_legal_for_slot(LifecycleOp.SET_ALPHA_TARGET, ramping)
    assert is_op_legal_for_slot(LifecycleOp.PRUNE, SlotView(SeedStage.HOLDING, seed_age=4))


def test_failure_stages_block_germination_in_their_slot_only():
    embargoed = SlotView(SeedStage.EMBARGOED, seed_age=4)
    assert not is_op_legal_for_slot(LifecycleOp.GERMINATE, embargoed)
    assert compute_action_masks([embargoed, EMPTY, EMPTY])["op"][LifecycleOp.GERMINATE]


def test_seed_limit_blocks_germination():
    masks = compute_action_masks([EMPTY] * 3, max_seeds=2, seeds_used=2)
    assert not masks["op"][LifecycleOp.GERMINATE]
    assert masks["op"][LifecycleOp.WAIT]
