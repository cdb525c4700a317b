"""Obs V3: the policy's view of one world (Esper's Leyline/Tamiyo `batch_obs_to_features`, the 121-dim design).

Layout for S slots (S = 3: 24 + 7 + 3 * 30 = 121):

    [0, 24)                 base features, `BASE_FEATURE_NAMES` (Esper's Obs V3 design: 24 base features)
    [24, 31)                action feedback, `ACTION_FEEDBACK_NAMES` (last action success, last op one-hot)
    [31 + 30*s, 61 + 30*s)  slot s, `SLOT_FEATURE_NAMES` (Esper's Obs V3 slot indices 0..29); an empty slot is all zeros

Every feature lies in [-1, 1]. Normalisations are the Phase-4 era's, with epoch-like counts divided by the
episode's `max_epochs`. `blueprint_indices [B, S]` holds each slot's `BlueprintAction` value, or -1 when the slot is
empty; any seed that is present counts, including PRUNED, EMBARGOED and RESETTING ones.

Address features by name: `BASE_INDEX["val_acc"]`, `slot_feature_index(slot, "alpha")`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from esper_lab.actions import DEFAULT_NUM_SLOTS, EMPTY_BLUEPRINT_INDEX, NUM_OPS, NUM_STAGES, STAGE_TO_INDEX, BlendOp, LifecycleOp, SeedStage

HISTORY_LEN = 5
LOSS_NORM = math.log(16.0)  # Phase-4 era: ln(1 + loss) / ln(16)
CONTRIBUTION_SCALE = 10.0  # contribution and its velocity: clamp(pp / 10, -1, 1)
INTERACTION_SCALE = 10.0
TEMPO_SCALE = 12.0
GRADIENT_NORM_CAP = 10.0  # Phase 4: clamp(norm, 0, 10) / 10
CF_FRESHNESS_DECAY = 0.995  # counterfactual freshness = 0.995 ** epochs since it was measured
MAX_ALPHA_MODE = 2  # AlphaMode HOLD=0, UP=1, DOWN=2

BASE_FEATURE_NAMES = (
    "epoch_progress",
    "val_loss",
    "loss_delta",
    "val_acc",
    "acc_delta",
    "plateau",
    "host_stabilized",
    *(f"loss_hist_{i}" for i in range(HISTORY_LEN)),
    *(f"acc_hist_{i}" for i in range(HISTORY_LEN)),
    "best_acc",
    "best_loss",
    "params_util",
    "slot_util",
    "n_training",
    "n_blending",
    "n_holding",
)
ACTION_FEEDBACK_NAMES = ("last_action_success", *(f"last_op_{op.name.lower()}" for op in LifecycleOp))
SLOT_FEATURE_NAMES = (
    "is_active",
    *(f"stage_{stage.name.lower()}" for stage in SeedStage),
    "alpha",
    "contribution",
    "contribution_velocity",
    "tempo",
    "alpha_target",
    "alpha_mode",
    "alpha_steps_total",
    "alpha_steps_done",
    "time_to_target",
    "alpha_velocity",
    "blend_op",
    "interaction_sum",
    "gradient_norm",
    "gradient_health",
    "has_vanishing",
    "has_exploding",
    "gradient_health_prev",
    "epochs_in_stage",
    "counterfactual_fresh",
)

BASE_FEATURE_SIZE = len(BASE_FEATURE_NAMES)  # 24
ACTION_FEEDBACK_SIZE = len(ACTION_FEEDBACK_NAMES)  # 7
SLOT_FEATURE_SIZE = len(SLOT_FEATURE_NAMES)  # 30
SLOTS_OFFSET = BASE_FEATURE_SIZE + ACTION_FEEDBACK_SIZE  # 31
BASE_INDEX = {name: i for i, name in enumerate(BASE_FEATURE_NAMES)}
FEEDBACK_INDEX = {name: BASE_FEATURE_SIZE + i for i, name in enumerate(ACTION_FEEDBACK_NAMES)}
SLOT_INDEX = {name: i for i, name in enumerate(SLOT_FEATURE_NAMES)}
STAGE_ONE_HOT_OFFSET = SLOT_INDEX["stage_unknown"]


def obs_dim(num_slots: int = DEFAULT_NUM_SLOTS) -> int:
    """Length of the observation vector for `num_slots` slots."""
    return SLOTS_OFFSET + SLOT_FEATURE_SIZE * num_slots


OBS_DIM = obs_dim()
assert (BASE_FEATURE_SIZE, ACTION_FEEDBACK_SIZE, SLOT_FEATURE_SIZE, OBS_DIM) == (24, 7, 30, 121)
assert ACTION_FEEDBACK_SIZE == 1 + NUM_OPS and SLOT_INDEX["alpha"] == 1 + NUM_STAGES


def slot_feature_index(slot: int, name: str) -> int:
    """Index in the observation vector of feature `name` of slot `slot`."""
    return SLOTS_OFFSET + SLOT_FEATURE_SIZE * slot + SLOT_INDEX[name]


def feature_names(num_slots: int = DEFAULT_NUM_SLOTS) -> tuple[str, ...]:
    """Name of every observation index, slot features prefixed with `slot{s}.`."""
    slot_names = (f"slot{s}.{n}" for s in range(num_slots) for n in SLOT_FEATURE_NAMES)
    return (*BASE_FEATURE_NAMES, *ACTION_FEEDBACK_NAMES, *slot_names)


# --- normalisations ---------------------------------------------------------------------------------------------


def _clamp(x: float, lo: float = -1.0, hi: float = 1.0) -> float:
    return min(max(x, lo), hi)


def norm_loss(loss: float) -> float:
    """ln(1 + loss) / ln(16), clamped to [0, 1]."""
    return _clamp(math.log1p(max(loss, 0.0)) / LOSS_NORM, 0.0, 1.0) if math.isfinite(loss) else 1.0


def norm_epochs(count: int, max_epochs: int) -> float:
    """An epoch count as a fraction of the episode, capped at 1."""
    return min(count / max_epochs, 1.0)


def _padded(values: Sequence[float], fn) -> list[float]:
    """The last HISTORY_LEN values normalised by `fn`, left-padded with 0 (Phase 4)."""
    tail = [fn(v) for v in list(values)[-HISTORY_LEN:]]
    return [0.0] * (HISTORY_LEN - len(tail)) + tail


# --- one world --------------------------------------------------------------------------------------------------


def base_features(r) -> list[float]:
    """The 24 base features of one `WorldReport`, in `BASE_FEATURE_NAMES` order."""
    n = r.num_slots
    stages = [s.stage for s in r.slots if s is not None]
    total_params = r.host_params + r.seed_params
    return [
        norm_epochs(r.epoch, r.max_epochs),
        norm_loss(r.val_loss),
        _clamp(r.val_loss - r.prev_val_loss),
        r.val_acc / 100.0,
        _clamp((r.val_acc - r.prev_val_acc) / 10.0),
        norm_epochs(r.plateau_epochs, r.max_epochs),
        float(r.host_stabilized),
        *_padded(r.loss_history, norm_loss),
        *_padded(r.acc_history, lambda a: a / 100.0),
        r.best_acc / 100.0,
        norm_loss(r.best_loss),
        r.seed_params / total_params if total_params else 0.0,
        len(stages) / n,
        stages.count(SeedStage.TRAINING) / n,
        stages.count(SeedStage.BLENDING) / n,
        (stages.count(SeedStage.HOLDING) + stages.count(SeedStage.FOSSILIZED)) / n,
    ]


def action_feedback(r) -> list[float]:
    """Last action success and a one-hot of the last op (7 values)."""
    one_hot = [0.0] * NUM_OPS
    one_hot[int(r.last_op)] = 1.0
    return [float(r.last_action_success), *one_hot]


def slot_features(s, max_epochs: int) -> list[float]:
    """The 30 features of one slot (`SlotReport` or None for an empty slot, which is all zeros)."""
    if s is None:
        return [0.0] * SLOT_FEATURE_SIZE
    stage = [0.0] * NUM_STAGES
    stage[STAGE_TO_INDEX[s.stage]] = 1.0
    contribution = 0.0 if s.contribution is None else _clamp(s.contribution / CONTRIBUTION_SCALE)
    finite = math.isfinite(s.gradient_norm)
    grad = _clamp(s.gradient_norm, 0.0, GRADIENT_NORM_CAP) / GRADIENT_NORM_CAP if finite else 0.0
    since = s.epochs_since_counterfactual
    return [
        1.0,
        *stage,
        s.alpha,
        contribution,
        _clamp(s.contribution_velocity / CONTRIBUTION_SCALE),
        _clamp(s.tempo_epochs / TEMPO_SCALE, 0.0, 1.0),
        s.alpha_target,
        int(s.alpha_mode) / MAX_ALPHA_MODE,
        norm_epochs(s.alpha_steps_total, max_epochs),
        norm_epochs(s.alpha_steps_done, max_epochs),
        norm_epochs(s.time_to_target, max_epochs),
        _clamp(s.alpha_velocity),
        (int(s.blend_op) - int(BlendOp.ADD)) / (int(BlendOp.GATE) - int(BlendOp.ADD)),
        _clamp(s.interaction_sum / INTERACTION_SCALE),
        grad,
        _clamp(s.gradient_health, 0.0, 1.0),
        float(s.has_vanishing),
        float(s.has_exploding),
        _clamp(s.gradient_health_prev, 0.0, 1.0),
        norm_epochs(s.epochs_in_stage, max_epochs),
        1.0 if since is None else CF_FRESHNESS_DECAY ** since,
    ]


def world_features(r) -> list[float]:
    """The full observation of one world (`obs_dim(num_slots)` values)."""
    values = base_features(r) + action_feedback(r)
    for s in r.slots:
        values += slot_features(s, r.max_epochs)
    return values


def blueprint_indices(r) -> list[int]:
    """Each slot's blueprint index, -1 for an empty slot."""
    return [EMPTY_BLUEPRINT_INDEX if s is None else s.blueprint_index for s in r.slots]


def batch_obs_to_features(reports: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """`reports` (B `WorldReport`s with the same slot count) -> `(obs [B, obs_dim] float32,
    blueprint_indices [B, S] int64)`. Filled on the CPU in one go."""
    if not reports:
        raise ValueError("batch_obs_to_features: no reports")
    obs = torch.tensor([world_features(r) for r in reports], dtype=torch.float32)  # [B, obs_dim]
    idx = torch.tensor([blueprint_indices(r) for r in reports], dtype=torch.int64)  # [B, S]
    if obs.shape[1] != obs_dim(idx.shape[1]):
        raise ValueError(f"batch_obs_to_features: {obs.shape[1]} features for {idx.shape[1]} slots")
    return obs, idx
