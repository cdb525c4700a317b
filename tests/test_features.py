"""Obs V3 layout: sizes, names, and every index of one constructed state."""

import math

import pytest
import torch

from esper_lab.actions import STAGE_TO_INDEX, AlphaMode, BlendOp, BlueprintAction, LifecycleOp, SeedStage
from esper_lab.env.morpho_env import WorldReport
from esper_lab.env.slot import SlotReport
from esper_lab.features import (
    ACTION_FEEDBACK_SIZE,
    BASE_FEATURE_NAMES,
    BASE_FEATURE_SIZE,
    OBS_DIM,
    SLOT_FEATURE_NAMES,
    SLOT_FEATURE_SIZE,
    SLOTS_OFFSET,
    batch_obs_to_features,
    feature_names,
    obs_dim,
    slot_feature_index,
)

LN16 = math.log(16.0)

BLENDING_SLOT = SlotReport(
    slot_id="r0c1", stage=SeedStage.BLENDING, blueprint=BlueprintAction.CONV_HEAVY, alpha=0.4, alpha_target=0.7,
    alpha_mode=AlphaMode.UP, alpha_steps_total=6, alpha_steps_done=2, alpha_velocity=0.2, blend_op=BlendOp.MULTIPLY,
    tempo_epochs=5, contribution=3.0, contribution_velocity=-25.0, interaction_sum=2.5, gradient_norm=4.0,
    gradient_health=0.8, gradient_health_prev=0.6, has_vanishing=False, has_exploding=True, epochs_in_stage=3,
    seed_age=9, epochs_since_counterfactual=2, acc_at_germination=40.0, seed_params=1172, prune_pending=False,
)
EMBARGOED_SLOT = SlotReport(
    slot_id="r0c2", stage=SeedStage.EMBARGOED, blueprint=BlueprintAction.NORM, alpha=0.0, alpha_target=1.0,
    alpha_mode=AlphaMode.HOLD, alpha_steps_total=0, alpha_steps_done=0, alpha_velocity=0.0, blend_op=BlendOp.ADD,
    tempo_epochs=3, contribution=None, contribution_velocity=0.0, interaction_sum=0.0, gradient_norm=float("nan"),
    gradient_health=1.0, gradient_health_prev=1.0, has_vanishing=False, has_exploding=False, epochs_in_stage=40,
    seed_age=12, epochs_since_counterfactual=None, acc_at_germination=30.0, seed_params=8, prune_pending=False,
)
REPORT = WorldReport(
    epoch=6, max_epochs=30, val_loss=1.5, val_acc=62.0, prev_val_loss=1.8, prev_val_acc=59.0, train_loss=1.4,
    loss_history=(2.3, 2.0, 1.8), acc_history=(20.0, 45.0, 59.0), best_acc=62.0, best_loss=1.5, plateau_epochs=3,
    host_stabilized=True, host_params=386, seed_params=1172, slots=(None, BLENDING_SLOT, EMBARGOED_SLOT),
    last_action_success=False, last_op=LifecycleOp.ADVANCE, seeds_germinated=2, max_seeds=None,
)


def test_dimensions_are_derived():
    assert (BASE_FEATURE_SIZE, ACTION_FEEDBACK_SIZE, SLOT_FEATURE_SIZE) == (24, 7, 30)
    assert OBS_DIM == obs_dim(3) == 121 and obs_dim(5) == 31 + 150
    assert len(feature_names()) == OBS_DIM and len(set(feature_names())) == OBS_DIM
    assert SLOT_FEATURE_NAMES[1:11] == tuple(f"stage_{s.name.lower()}" for s in SeedStage)


def test_shapes_and_dtypes():
    obs, idx = batch_obs_to_features([REPORT, REPORT])
    assert obs.shape == (2, 121) and obs.dtype == torch.float32
    assert idx.shape == (2, 3) and idx.dtype == torch.int64
    assert bool(((obs >= -1) & (obs <= 1)).all())


def test_blueprint_indices_minus_one_for_empty_and_present_for_failed_seeds():
    _, idx = batch_obs_to_features([REPORT])
    assert idx[0].tolist() == [-1, int(BlueprintAction.CONV_HEAVY), int(BlueprintAction.NORM)]


def test_base_features_index_by_index():
    obs = batch_obs_to_features([REPORT])[0][0]
    expected = [
        6 / 30,  # epoch_progress
        math.log(2.5) / LN16,  # val_loss
        1.5 - 1.8,  # loss_delta
        0.62,  # val_acc
        (62 - 59) / 10,  # acc_delta
        3 / 30,  # plateau
        1.0,  # host_stabilized
        0.0, 0.0, math.log(3.3) / LN16, math.log(3.0) / LN16, math.log(2.8) / LN16,  # loss history, left-padded
        0.0, 0.0, 0.20, 0.45, 0.59,  # accuracy history
        0.62,  # best_acc
        math.log(2.5) / LN16,  # best_loss
        1172 / (1172 + 386),  # params_util
        2 / 3,  # slot_util (occupied slots, failed seeds included)
        0.0, 1 / 3, 0.0,  # TRAINING, BLENDING, HOLDING+FOSSILIZED counts
    ]
    assert len(expected) == len(BASE_FEATURE_NAMES)
    for i, (name, value) in enumerate(zip(BASE_FEATURE_NAMES, expected)):
        assert obs[i].item() == pytest.approx(value, abs=1e-6), name


def test_action_feedback():
    obs = batch_obs_to_features([REPORT])[0][0]
    feedback = obs[BASE_FEATURE_SIZE:SLOTS_OFFSET].tolist()
    assert feedback == [0.0, 0, 0, 0, 0, 0, 1.0]  # failed, last op ADVANCE (index 5)


def test_slot_features_index_by_index():
    obs = batch_obs_to_features([REPORT])[0][0]
    stage = [0.0] * 10
    stage[STAGE_TO_INDEX[SeedStage.BLENDING]] = 1.0
    expected = [
        1.0, *stage,
        0.4,  # alpha
        0.3,  # contribution / 10
        -1.0,  # velocity / 10, clamped
        5 / 12,  # tempo
        0.7,  # alpha_target
        0.5,  # alpha_mode UP / 2
        6 / 30, 2 / 30, 4 / 30,  # steps total, done, time to target
        0.2,  # alpha_velocity
        0.5,  # MULTIPLY -> (2 - 1) / 2
        0.25,  # interaction_sum / 10
        0.4,  # gradient norm clamp(0, 10) / 10
        0.8, 0.0, 1.0, 0.6,  # health, vanishing, exploding, health_prev
        3 / 30,  # epochs_in_stage
        0.995 ** 2,  # counterfactual freshness
    ]
    assert len(expected) == SLOT_FEATURE_SIZE
    for name, value in zip(SLOT_FEATURE_NAMES, expected):
        assert obs[slot_feature_index(1, name)].item() == pytest.approx(value, abs=1e-6), name


def test_empty_slot_is_all_zeros_and_failed_slot_is_encoded():
    obs = batch_obs_to_features([REPORT])[0][0]
    assert obs[SLOTS_OFFSET:SLOTS_OFFSET + SLOT_FEATURE_SIZE].abs().sum() == 0
    assert obs[slot_feature_index(2, "is_active")] == 1.0
    assert obs[slot_feature_index(2, "stage_embargoed")] == 1.0
    assert obs[slot_feature_index(2, "gradient_norm")] == 0.0  # non-finite -> 0
    assert obs[slot_feature_index(2, "counterfactual_fresh")] == 1.0  # untracked -> 1 (Phase 4)
    assert obs[slot_feature_index(2, "epochs_in_stage")] == 1.0  # capped


def test_empty_batch_is_rejected():
    with pytest.raises(ValueError, match="no reports"):
        batch_obs_to_features([])
