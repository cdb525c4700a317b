"""The Phase-4-era action space (Esper's Leyline `factored_actions.py` + `causal_masks.py` + `stages.py`).

One definition for every shared fact about actions:
- the eight head enums and `HEAD_NAMES` (the order every dict, tensor and MultiDiscrete space uses);
- `head_sizes(num_slots)`;
- `HEAD_RELEVANCE`: which heads causally matter for each op. Everything else (per-head advantages, the PPO
  loss masks, entropy weighting, the dashboard's dimming) is derived from this one table;
- the seed lifecycle (`SeedStage`, `VALID_TRANSITIONS`) and `compute_action_masks`, the legal-action masks,
  with the op-conditioned slot masks (`OP_SLOT_KEY`) from the same `is_op_legal_for_slot` the world executes by;
- `MASKED_LOGIT_VALUE`, `OP_NAMES`, `EMPTY_BLUEPRINT_INDEX` (-1) and `BLUEPRINT_NULL_INDEX` (its embedding row).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence

import torch

MASKED_LOGIT_VALUE = -1e4  # fp16/bf16-safe; -inf is never used
MIN_PRUNE_AGE = 1  # epochs a seed must have lived before PRUNE is legal (Phase 4 value)
EMBARGO_EPOCHS = 5  # epochs a slot stays EMBARGOED after a prune


class LifecycleOp(IntEnum):
    WAIT = 0
    GERMINATE = 1
    SET_ALPHA_TARGET = 2
    PRUNE = 3
    FOSSILIZE = 4
    ADVANCE = 5


class BlueprintAction(IntEnum):
    NOOP = 0
    CONV_LIGHT = 1
    ATTENTION = 2
    NORM = 3
    DEPTHWISE = 4
    BOTTLENECK = 5
    CONV_SMALL = 6
    CONV_HEAVY = 7
    LORA = 8
    LORA_LARGE = 9
    MLP_SMALL = 10
    MLP = 11
    FLEX_ATTENTION = 12


class GerminationStyle(IntEnum):
    LINEAR_ADD = 0
    LINEAR_MULTIPLY = 1
    SIGMOID_ADD = 2
    GATED_GATE = 3


class TempoAction(IntEnum):
    FAST = 0
    STANDARD = 1
    SLOW = 2


class AlphaTargetAction(IntEnum):
    HALF = 0
    SEVENTY = 1
    FULL = 2


class AlphaSpeedAction(IntEnum):
    INSTANT = 0
    FAST = 1
    MEDIUM = 2
    SLOW = 3


class AlphaCurveAction(IntEnum):
    LINEAR = 0
    COSINE = 1
    SIGMOID_GENTLE = 2
    SIGMOID = 3
    SIGMOID_SHARP = 4


class BlendOp(IntEnum):
    """How a seed's output is blended into the host stream (Esper's AlphaAlgorithm: values start at 1)."""

    ADD = 1
    MULTIPLY = 2
    GATE = 3


class AlphaCurve(IntEnum):
    """Shape of the alpha ramp, decoded from the style (tempo ramps) or from AlphaCurveAction."""

    LINEAR = 0
    COSINE = 1
    SIGMOID = 2


# Decoded values of the parameter heads.
TEMPO_EPOCHS = {TempoAction.FAST: 3, TempoAction.STANDARD: 5, TempoAction.SLOW: 8}
ALPHA_TARGET_VALUES = {AlphaTargetAction.HALF: 0.5, AlphaTargetAction.SEVENTY: 0.7, AlphaTargetAction.FULL: 1.0}
ALPHA_SPEED_TICKS = {AlphaSpeedAction.INSTANT: 0, AlphaSpeedAction.FAST: 3, AlphaSpeedAction.MEDIUM: 5, AlphaSpeedAction.SLOW: 8}
ALPHA_CURVE_STEEPNESS = {  # None = not a sigmoid
    AlphaCurveAction.LINEAR: None,
    AlphaCurveAction.COSINE: None,
    AlphaCurveAction.SIGMOID_GENTLE: 6.0,
    AlphaCurveAction.SIGMOID: 12.0,
    AlphaCurveAction.SIGMOID_SHARP: 24.0,
}
STYLE_DECODE: dict[GerminationStyle, tuple[AlphaCurve | None, BlendOp]] = {
    # (ramp curve for the tempo blend; None = gated, i.e. linear ramp of a learned gate), blend op
    GerminationStyle.LINEAR_ADD: (AlphaCurve.LINEAR, BlendOp.ADD),
    GerminationStyle.LINEAR_MULTIPLY: (AlphaCurve.LINEAR, BlendOp.MULTIPLY),
    GerminationStyle.SIGMOID_ADD: (AlphaCurve.SIGMOID, BlendOp.ADD),
    GerminationStyle.GATED_GATE: (AlphaCurve.LINEAR, BlendOp.GATE),
}

NUM_OPS = len(LifecycleOp)
OP_NAMES = tuple(op.name for op in LifecycleOp)
NUM_BLUEPRINTS = len(BlueprintAction)
EMPTY_BLUEPRINT_INDEX = -1  # blueprint index of an empty slot, as the features report it
BLUEPRINT_NULL_INDEX = NUM_BLUEPRINTS  # embedding row that index -1 maps to
DEFAULT_SLOT_IDS = ("r0c0", "r0c1", "r0c2")
DEFAULT_NUM_SLOTS = len(DEFAULT_SLOT_IDS)

CNN_BLUEPRINTS = (
    BlueprintAction.NORM,
    BlueprintAction.ATTENTION,
    BlueprintAction.CONV_LIGHT,
    BlueprintAction.DEPTHWISE,
    BlueprintAction.BOTTLENECK,
    BlueprintAction.CONV_SMALL,
    BlueprintAction.CONV_HEAVY,
)
TRANSFORMER_BLUEPRINTS = (
    BlueprintAction.NORM,
    BlueprintAction.ATTENTION,
    BlueprintAction.LORA,
    BlueprintAction.LORA_LARGE,
    BlueprintAction.MLP_SMALL,
    BlueprintAction.MLP,
    BlueprintAction.FLEX_ATTENTION,
)

HEAD_NAMES = ("slot", "blueprint", "style", "tempo", "alpha_target", "alpha_speed", "alpha_curve", "op")
NUM_HEADS = len(HEAD_NAMES)
HEAD_INDEX = {name: i for i, name in enumerate(HEAD_NAMES)}  # column of each head in a joint action [..., 8]
_FIXED_HEAD_SIZES = {
    "blueprint": NUM_BLUEPRINTS,
    "style": len(GerminationStyle),
    "tempo": len(TempoAction),
    "alpha_target": len(AlphaTargetAction),
    "alpha_speed": len(AlphaSpeedAction),
    "alpha_curve": len(AlphaCurveAction),
    "op": NUM_OPS,
}


def head_sizes(num_slots: int = DEFAULT_NUM_SLOTS) -> dict[str, int]:
    """Number of choices per head, in `HEAD_NAMES` order."""
    if num_slots < 1:
        raise ValueError(f"num_slots must be at least 1, got {num_slots}")
    sizes = {"slot": num_slots, **_FIXED_HEAD_SIZES}
    return {name: sizes[name] for name in HEAD_NAMES}


HEAD_SIZES = head_sizes()


def unpack_heads(joint: torch.Tensor) -> dict[str, torch.Tensor]:
    """A joint action (or per-head log-prob, entropy) `[..., 8]`, columns in HEAD_NAMES order -> `{head: [...]}`."""
    return {name: joint[..., i] for i, name in enumerate(HEAD_NAMES)}

# The one causal-mask table: for each op, the heads whose choice changes what the op does.
HEAD_RELEVANCE: dict[LifecycleOp, frozenset[str]] = {
    LifecycleOp.WAIT: frozenset({"op"}),
    LifecycleOp.GERMINATE: frozenset({"op", "slot", "blueprint", "style", "tempo", "alpha_target"}),
    LifecycleOp.SET_ALPHA_TARGET: frozenset({"op", "slot", "style", "alpha_target", "alpha_speed", "alpha_curve"}),
    LifecycleOp.PRUNE: frozenset({"op", "slot", "alpha_speed", "alpha_curve"}),
    LifecycleOp.FOSSILIZE: frozenset({"op", "slot"}),
    LifecycleOp.ADVANCE: frozenset({"op", "slot"}),
}
# Tensor form of the same table: [NUM_OPS, NUM_HEADS] bool, row = op, column = head in HEAD_NAMES order.
HEAD_RELEVANCE_TABLE = torch.tensor(
    [[name in HEAD_RELEVANCE[op] for name in HEAD_NAMES] for op in LifecycleOp], dtype=torch.bool
)


def causal_masks(op: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-head relevance of each step, from the (effective) op: `op [...] int64 -> {head: bool [...]}`."""
    rows = HEAD_RELEVANCE_TABLE.to(op.device)[op]  # [..., NUM_HEADS]
    return {name: rows[..., i] for i, name in enumerate(HEAD_NAMES)}


# --- seed lifecycle (Esper's SeedStage; the enum values skip 5 on purpose) ---------------------------------------


class SeedStage(IntEnum):
    UNKNOWN = 0
    DORMANT = 1
    GERMINATED = 2
    TRAINING = 3
    BLENDING = 4
    HOLDING = 6
    FOSSILIZED = 7
    PRUNED = 8
    EMBARGOED = 9
    RESETTING = 10


# Contiguous one-hot index of each stage (the enum values are not contiguous).
STAGE_TO_INDEX = {stage: i for i, stage in enumerate(SeedStage)}
NUM_STAGES = len(SeedStage)

VALID_TRANSITIONS: dict[SeedStage, frozenset[SeedStage]] = {
    SeedStage.UNKNOWN: frozenset({SeedStage.DORMANT}),
    SeedStage.DORMANT: frozenset({SeedStage.GERMINATED}),
    SeedStage.GERMINATED: frozenset({SeedStage.TRAINING, SeedStage.PRUNED}),
    SeedStage.TRAINING: frozenset({SeedStage.BLENDING, SeedStage.PRUNED}),
    SeedStage.BLENDING: frozenset({SeedStage.HOLDING, SeedStage.PRUNED}),
    SeedStage.HOLDING: frozenset({SeedStage.FOSSILIZED, SeedStage.BLENDING, SeedStage.PRUNED}),
    SeedStage.FOSSILIZED: frozenset(),
    SeedStage.PRUNED: frozenset({SeedStage.EMBARGOED}),
    SeedStage.EMBARGOED: frozenset({SeedStage.RESETTING}),
    SeedStage.RESETTING: frozenset({SeedStage.DORMANT}),
}
ADVANCEABLE_STAGES = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING})
PRUNABLE_STAGES = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING})
RETARGETABLE_STAGES = frozenset({SeedStage.BLENDING, SeedStage.HOLDING})
ACTIVE_STAGES = frozenset({SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED})
FAILURE_STAGES = frozenset({SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING})


class AlphaMode(IntEnum):
    HOLD = 0
    UP = 1
    DOWN = 2


@dataclass(frozen=True)
class SlotView:
    """What the action masks need to know about one slot. `stage=None` means the slot holds no seed at all."""

    stage: SeedStage | None
    alpha_mode: AlphaMode = AlphaMode.HOLD
    seed_age: int = 0
    enabled: bool = True


def is_op_legal_for_slot(op: LifecycleOp, view: SlotView, *, can_germinate: bool = True) -> bool:
    """Whether `op` can execute on this slot. The op mask is the OR of this over enabled slots."""
    if not view.enabled:
        return op == LifecycleOp.WAIT
    stage, hold = view.stage, view.alpha_mode == AlphaMode.HOLD
    if op == LifecycleOp.WAIT:
        return True
    if op == LifecycleOp.GERMINATE:
        return stage is None and can_germinate
    if op == LifecycleOp.ADVANCE:
        return stage in ADVANCEABLE_STAGES
    if op == LifecycleOp.FOSSILIZE:
        return stage == SeedStage.HOLDING
    if op == LifecycleOp.PRUNE:
        return stage in PRUNABLE_STAGES and view.seed_age >= MIN_PRUNE_AGE and hold
    if op == LifecycleOp.SET_ALPHA_TARGET:
        return stage in RETARGETABLE_STAGES and hold
    raise ValueError(f"unknown op {op!r}")


OP_SLOT_KEY = "op_slot"  # the masks dict's entry for the op-conditioned slot masks, beside the eight heads


def op_slot_masks(slots: Sequence[SlotView], *, can_germinate: bool = True) -> torch.Tensor:
    """`[NUM_OPS, S]` bool: which slots each op can execute on (`is_op_legal_for_slot` on every enabled slot, so
    execution and masks share one definition). WAIT's row is the enabled slots (its slot does not matter)."""
    return torch.tensor(
        [[v.enabled and is_op_legal_for_slot(op, v, can_germinate=can_germinate) for v in slots] for op in LifecycleOp],
        dtype=torch.bool,
    )


def compute_action_masks(
    slots: Sequence[SlotView], *, max_seeds: int | None = None, seeds_used: int = 0
) -> dict[str, torch.Tensor]:
    """Legal-action masks for one world: `{head: bool [head_size]}` in `HEAD_NAMES` order, plus
    `masks[OP_SLOT_KEY]`, the op-conditioned slot masks `[NUM_OPS, S]`.

    Masks only what is physically or lifecycle-impossible, never timing. The op mask is "legal in some slot": the
    OR of the op's row of the conditional slot masks, so an op is legal exactly when some slot allows it. The
    `slot` entry is the unconditional mask (every enabled slot), what Phase 4 as shipped samples the slot under.
    NOOP and the transformer blueprints are always masked in this CNN world.
    """
    can_germinate = max_seeds is None or seeds_used < max_seeds
    sizes = head_sizes(len(slots))
    masks = {name: torch.ones(size, dtype=torch.bool) for name, size in sizes.items()}
    masks["slot"] = torch.tensor([v.enabled for v in slots], dtype=torch.bool)
    if not masks["slot"].any():
        raise ValueError("compute_action_masks: no slot is enabled")
    bp = torch.zeros(NUM_BLUEPRINTS, dtype=torch.bool)
    bp[list(CNN_BLUEPRINTS)] = True
    masks["blueprint"] = bp
    op_slot = op_slot_masks(slots, can_germinate=can_germinate)  # [NUM_OPS, S]
    masks["op"] = op_slot.any(-1)  # [NUM_OPS]
    style_free = bool(masks["op"][LifecycleOp.GERMINATE] or masks["op"][LifecycleOp.SET_ALPHA_TARGET])
    if not style_free:
        masks["style"] = _one_hot_mask(len(GerminationStyle), GerminationStyle.SIGMOID_ADD)
        masks["alpha_target"] = _one_hot_mask(len(AlphaTargetAction), AlphaTargetAction.FULL)
    masks[OP_SLOT_KEY] = op_slot
    return masks


def head_masks(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The eight per-head masks of a masks dict, without the op-conditioned slot table."""
    return {name: masks[name] for name in HEAD_NAMES}


def check_op_slot_masks(masks: dict[str, torch.Tensor], step: int) -> None:
    """Raise ValueError naming the world, the op and the step where an op is legal but its conditional slot mask
    allows no slot (impossible for masks built by `compute_action_masks`; a world that reports one is broken).
    `masks["op"] [E, NUM_OPS]`, `masks[OP_SLOT_KEY] [E, NUM_OPS, S]`; masks without the table pass unchecked."""
    if OP_SLOT_KEY not in masks:
        return
    bad = masks["op"] & ~masks[OP_SLOT_KEY].any(-1)  # [E, NUM_OPS]
    if bool(bad.any()):
        world, op = bad.nonzero()[0].tolist()
        raise ValueError(f"world {world} at step {step}: op {OP_NAMES[op]} is legal but its conditional slot mask "
                         f"allows no slot (masks['op'] and masks[{OP_SLOT_KEY!r}] disagree)")


def _one_hot_mask(size: int, index: int) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[index] = True
    return mask
