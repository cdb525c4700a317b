"""SeedSlot: one injection point's seed lifecycle, alpha controller and blend (Esper's Kasmina SeedSlot).

Lifecycle (`actions.VALID_TRANSITIONS`; any other move raises `IllegalTransitionError`):

    (empty = DORMANT) -> GERMINATED -> TRAINING -> BLENDING -> HOLDING -> FOSSILIZED
    GERMINATED | TRAINING | BLENDING | HOLDING -> PRUNED -> EMBARGOED (5 epochs) -> RESETTING -> DORMANT (empty again)

What the seed does to the host activation `h [B, C, 4, 4]` in each stage:
- GERMINATED: nothing (the seed exists but is not wired in).
- TRAINING: straight-through. The forward value is exactly `h`, but the seed receives the gradient it would get if
  it were fully blended: `out = h + (y1 - y1.detach())`, with `y1` the blend at alpha 1 on the detached input.
- BLENDING, HOLDING, FOSSILIZED (and a seed whose prune is ramping alpha down): the blend at the current alpha.
- PRUNED, EMBARGOED, RESETTING: nothing.
The seed's own function always sees `h.detach()` (gradient isolation): the host is never trained through the seed,
while the identity path keeps carrying the host's gradient.

Blend styles, with `f = seed.residual(h.detach())` (so the seed's output is `s = h + f`):
- ADD:      `lerp(h, s, alpha) = h + alpha * f`
- MULTIPLY: `h * (1 + alpha * tanh(s - h)) = h * (1 + alpha * tanh(f))`
- GATE:     `lerp(h, s, alpha * g(h))` with a learned per-sample gate `g in [0, 1]`
All three are exactly `h` at alpha 0, which is how a counterfactual switches a seed off.

Gates are permissive (the RL default): G1 GERMINATED->TRAINING always; G2 TRAINING->BLENDING after at least
`MIN_TRAINING_EPOCHS` epochs in TRAINING; G3 BLENDING->HOLDING when alpha has reached a target of 1.0 in HOLD mode;
G5 HOLDING->FOSSILIZED when a counterfactual exists, no prune is pending and the gradients are finite.
A gate that fails leaves the seed where it is and returns False; it is not an error.

Timers (run by `step_epoch`, once per epoch after the action): a PRUNED seed is EMBARGOED at the next tick, stays
EMBARGOED for `EMBARGO_EPOCHS`, is RESETTING for one epoch, and then the slot is empty (DORMANT) and can germinate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn as nn

from esper_lab.actions import (
    ACTIVE_STAGES,
    ADVANCEABLE_STAGES,
    ALPHA_CURVE_STEEPNESS,
    EMBARGO_EPOCHS,
    PRUNABLE_STAGES,
    RETARGETABLE_STAGES,
    STYLE_DECODE,
    VALID_TRANSITIONS,
    AlphaCurve,
    AlphaCurveAction,
    AlphaMode,
    BlendOp,
    BlueprintAction,
    GerminationStyle,
    SeedStage,
    SlotView,
)
from esper_lab.env.blueprints import SeedModule
from esper_lab.env.host import param_count

MIN_TRAINING_EPOCHS = 1  # G2 (permissive, Phase 4): epochs in TRAINING before BLENDING
PRUNED_EPOCHS = 1  # PRUNED -> EMBARGOED after this many epochs
RESETTING_EPOCHS = 1  # RESETTING -> DORMANT (empty) after this many epochs
DEFAULT_SIGMOID_STEEPNESS = 12.0  # the tempo ramp of a SIGMOID_* style
GRAD_VANISHING = 1e-7  # seed gradient norm below this counts as vanishing
GRAD_EXPLODING = 10.0  # seed gradient norm above this counts as exploding
FORWARD_STAGES = ACTIVE_STAGES  # stages whose seed is wired into the host's forward pass (and trains)
COUNTERFACTUAL_STAGES = ACTIVE_STAGES - {SeedStage.TRAINING}  # measured with alpha forced to 0 every epoch
LIVE_STAGES = ACTIVE_STAGES | {SeedStage.GERMINATED}  # a seed that is part of the model (not failed)
_TIMED_STAGES = {
    SeedStage.PRUNED: (PRUNED_EPOCHS, SeedStage.EMBARGOED),
    SeedStage.EMBARGOED: (EMBARGO_EPOCHS, SeedStage.RESETTING),
    SeedStage.RESETTING: (RESETTING_EPOCHS, SeedStage.DORMANT),
}


class LifecycleError(RuntimeError):
    """A lifecycle operation that the slot's current state does not allow."""


class IllegalTransitionError(LifecycleError):
    """A stage change that `VALID_TRANSITIONS` forbids. Names the slot and both stages."""

    def __init__(self, slot_id: str, from_stage: SeedStage, to_stage: SeedStage):
        self.slot_id, self.from_stage, self.to_stage = slot_id, from_stage, to_stage
        legal = ", ".join(s.name for s in sorted(VALID_TRANSITIONS[from_stage])) or "nothing (terminal)"
        super().__init__(
            f"slot {slot_id}: illegal lifecycle transition {from_stage.name} -> {to_stage.name}; "
            f"from {from_stage.name} the legal next stages are: {legal}"
        )


# --- the alpha controller -----------------------------------------------------------------------------------------


def curve_progress(u: float, curve: AlphaCurve, steepness: float = DEFAULT_SIGMOID_STEEPNESS) -> float:
    """Shape of a ramp: maps progress `u in [0, 1]` to `[0, 1]`, with 0 -> 0 and 1 -> 1."""
    u = min(max(u, 0.0), 1.0)
    if curve == AlphaCurve.LINEAR:
        return u
    if curve == AlphaCurve.COSINE:
        return 0.5 * (1.0 - math.cos(math.pi * u))
    lo, hi = _sigmoid(-steepness / 2), _sigmoid(steepness / 2)
    return (_sigmoid(steepness * (u - 0.5)) - lo) / (hi - lo)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def decode_curve(action: AlphaCurveAction | int) -> tuple[AlphaCurve, float]:
    """`AlphaCurveAction` -> (curve shape, sigmoid steepness)."""
    action = AlphaCurveAction(action)
    steepness = ALPHA_CURVE_STEEPNESS[action]
    if steepness is not None:
        return AlphaCurve.SIGMOID, steepness
    shape = AlphaCurve.COSINE if action == AlphaCurveAction.COSINE else AlphaCurve.LINEAR
    return shape, DEFAULT_SIGMOID_STEEPNESS


@dataclass
class AlphaRamp:
    """Alpha moving from `start` to `end` over `total` epochs along `curve`."""

    start: float
    end: float
    total: int
    curve: AlphaCurve = AlphaCurve.LINEAR
    steepness: float = DEFAULT_SIGMOID_STEEPNESS
    done: int = 0

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def value(self) -> float:
        if self.finished:
            return self.end
        return self.start + (self.end - self.start) * curve_progress(self.done / self.total, self.curve, self.steepness)


# --- what features and rewards read -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotReport:
    """An immutable snapshot of one occupied slot (an empty slot has no report)."""

    slot_id: str
    stage: SeedStage
    blueprint: BlueprintAction
    alpha: float
    alpha_target: float
    alpha_mode: AlphaMode
    alpha_steps_total: int
    alpha_steps_done: int
    alpha_velocity: float
    blend_op: BlendOp
    tempo_epochs: int
    contribution: float | None
    contribution_velocity: float
    interaction_sum: float
    gradient_norm: float
    gradient_health: float
    gradient_health_prev: float
    has_vanishing: bool
    has_exploding: bool
    epochs_in_stage: int
    seed_age: int
    epochs_since_counterfactual: int | None
    acc_at_germination: float
    seed_params: int
    prune_pending: bool

    @property
    def blueprint_index(self) -> int:
        return int(self.blueprint)

    @property
    def time_to_target(self) -> int:
        return max(self.alpha_steps_total - self.alpha_steps_done, 0)

    @property
    def effective_params(self) -> float:
        """Alpha-weighted parameters (what the rent charges, before the base slot rent)."""
        return self.alpha * self.seed_params


# --- the slot -------------------------------------------------------------------------------------------------------


class SeedSlot(nn.Module):
    """One injection point. `forward(h)` applies the seed's blend; the lifecycle methods change its state."""

    def __init__(self, slot_id: str, channels: int):
        super().__init__()
        self.slot_id, self.channels = slot_id, channels
        self.seed: SeedModule | None = None
        self.gate: nn.Linear | None = None
        self.stage: SeedStage | None = None
        self._pending_events: list[dict] = []
        self._clear_state()

    # -- state ---------------------------------------------------------------------------------------------------

    def _clear_state(self) -> None:
        self.seed, self.gate, self.stage = None, None, None
        self.blueprint = BlueprintAction.NOOP
        self.blend_op, self.tempo_epochs, self.tempo_curve = BlendOp.ADD, 0, AlphaCurve.LINEAR
        self.alpha, self.alpha_target, self.alpha_mode = 0.0, 1.0, AlphaMode.HOLD
        self.ramp: AlphaRamp | None = None
        self.alpha_steps_total, self.alpha_steps_done, self.alpha_velocity = 0, 0, 0.0
        self._alpha_last_tick = 0.0
        self.prune_pending = False
        self.epochs_in_stage, self.seed_age = 0, 0
        self.contribution: float | None = None
        self.contribution_velocity, self.interaction_sum = 0.0, 0.0
        self.epochs_since_counterfactual: int | None = None
        self.gradient_norm, self.gradient_health, self.gradient_health_prev = 0.0, 1.0, 1.0
        self.has_vanishing = self.has_exploding = False
        self.acc_at_germination = 0.0

    @property
    def is_empty(self) -> bool:
        return self.stage is None

    @property
    def is_live(self) -> bool:
        return self.stage in LIVE_STAGES

    def view(self) -> SlotView:
        """What the action masks need."""
        return SlotView(stage=self.stage, alpha_mode=self.alpha_mode, seed_age=self.seed_age)

    def seed_params(self) -> int:
        """Parameters of the seed (plus its gate when the blend is GATE); 0 when empty."""
        if self.seed is None:
            return 0
        gate = param_count(self.gate) if self.gate is not None and self.blend_op == BlendOp.GATE else 0
        return param_count(self.seed) + gate

    def report(self) -> SlotReport | None:
        if self.stage is None:
            return None
        return SlotReport(
            slot_id=self.slot_id,
            stage=self.stage,
            blueprint=self.blueprint,
            alpha=self.alpha,
            alpha_target=self.alpha_target,
            alpha_mode=self.alpha_mode,
            alpha_steps_total=self.alpha_steps_total,
            alpha_steps_done=self.alpha_steps_done,
            alpha_velocity=self.alpha_velocity,
            blend_op=self.blend_op,
            tempo_epochs=self.tempo_epochs,
            contribution=self.contribution,
            contribution_velocity=self.contribution_velocity,
            interaction_sum=self.interaction_sum,
            gradient_norm=self.gradient_norm,
            gradient_health=self.gradient_health,
            gradient_health_prev=self.gradient_health_prev,
            has_vanishing=self.has_vanishing,
            has_exploding=self.has_exploding,
            epochs_in_stage=self.epochs_in_stage,
            seed_age=self.seed_age,
            epochs_since_counterfactual=self.epochs_since_counterfactual,
            acc_at_germination=self.acc_at_germination,
            seed_params=self.seed_params(),
            prune_pending=self.prune_pending,
        )

    def pop_events(self) -> list[dict]:
        """Lifecycle transitions since the last call: dicts with slot, from, to, blueprint, alpha."""
        events, self._pending_events = self._pending_events, []
        return events

    # -- transitions ---------------------------------------------------------------------------------------------

    def transition(self, to_stage: SeedStage) -> None:
        """Move to `to_stage`; raises `IllegalTransitionError` unless `VALID_TRANSITIONS` allows it."""
        from_stage = SeedStage.DORMANT if self.stage is None else self.stage
        if to_stage not in VALID_TRANSITIONS[from_stage]:
            raise IllegalTransitionError(self.slot_id, from_stage, to_stage)
        if from_stage != SeedStage.DORMANT and self.seed is None:
            raise LifecycleError(f"slot {self.slot_id}: stage {from_stage.name} without a seed module")
        self._pending_events.append(
            {"slot": self.slot_id, "from": from_stage.name, "to": to_stage.name,
             "blueprint": self.blueprint.name, "alpha": self.alpha}
        )
        self.stage, self.epochs_in_stage = to_stage, 0
        if to_stage == SeedStage.DORMANT:
            self._clear_state()

    def _require(self, allowed: frozenset[SeedStage], op: str) -> None:
        if self.stage not in allowed:
            stage = "empty" if self.stage is None else self.stage.name
            names = ", ".join(sorted(s.name for s in allowed))
            raise LifecycleError(f"slot {self.slot_id}: {op} is not possible from {stage} (needs one of: {names})")

    # -- lifecycle operations (what the policy's ops call) -----------------------------------------------------

    def germinate(
        self,
        seed: SeedModule,
        gate: nn.Linear,
        style: GerminationStyle,
        tempo_epochs: int,
        alpha_target: float,
        acc_at_germination: float,
    ) -> None:
        """Plant `seed` in an empty slot (DORMANT -> GERMINATED). `gate` is used when the blend is GATE."""
        if self.stage is not None:
            raise LifecycleError(f"slot {self.slot_id}: GERMINATE needs an empty slot, found {self.stage.name}")
        self.blueprint = seed.blueprint
        self.transition(SeedStage.GERMINATED)
        self.seed, self.gate = seed, gate
        self.tempo_curve, self.blend_op = STYLE_DECODE[GerminationStyle(style)]
        self.tempo_epochs, self.alpha_target = tempo_epochs, alpha_target
        self.acc_at_germination = acc_at_germination

    def advance(self) -> bool:
        """ADVANCE through the next gate (G1, G2 or G3). Returns whether the gate passed."""
        self._require(ADVANCEABLE_STAGES, "ADVANCE")
        if self.stage == SeedStage.GERMINATED:
            self.transition(SeedStage.TRAINING)
            return True
        if self.stage == SeedStage.TRAINING:
            if self.epochs_in_stage < MIN_TRAINING_EPOCHS:
                return False
            self.transition(SeedStage.BLENDING)
            self._start_ramp(self.alpha_target, self.tempo_epochs, self.tempo_curve, DEFAULT_SIGMOID_STEEPNESS)
            return True
        at_full = self.alpha_target == 1.0 and self.alpha == 1.0 and self.alpha_mode == AlphaMode.HOLD
        if not at_full:
            return False
        self.transition(SeedStage.HOLDING)
        return True

    def fossilize(self) -> bool:
        """FOSSILIZE through G5. Returns whether the gate passed."""
        self._require(frozenset({SeedStage.HOLDING}), "FOSSILIZE")
        healthy = math.isfinite(self.gradient_norm) and not self.has_exploding
        if self.contribution is None or self.prune_pending or not healthy:
            return False
        self.transition(SeedStage.FOSSILIZED)
        return True

    def prune(self, ticks: int, curve: AlphaCurve, steepness: float = DEFAULT_SIGMOID_STEEPNESS) -> None:
        """PRUNE: at once when `ticks == 0` or alpha is already 0, otherwise ramp alpha to 0 and prune then."""
        self._require(PRUNABLE_STAGES, "PRUNE")
        if ticks == 0 or self.alpha == 0.0:
            self.alpha = 0.0
            self.transition(SeedStage.PRUNED)
            return
        self.prune_pending = True
        self._start_ramp(0.0, ticks, curve, steepness)

    def set_alpha_target(
        self, target: float, ticks: int, curve: AlphaCurve, steepness: float, blend_op: BlendOp
    ) -> None:
        """SET_ALPHA_TARGET: ramp from the current alpha to `target`; a HOLDING seed goes back to BLENDING."""
        self._require(RETARGETABLE_STAGES, "SET_ALPHA_TARGET")
        if self.alpha_mode != AlphaMode.HOLD:
            raise LifecycleError(f"slot {self.slot_id}: SET_ALPHA_TARGET while alpha is still moving")
        if self.stage == SeedStage.HOLDING:
            self.transition(SeedStage.BLENDING)
        self.blend_op, self.alpha_target = blend_op, target
        self._start_ramp(target, ticks, curve, steepness)

    def _start_ramp(self, end: float, ticks: int, curve: AlphaCurve, steepness: float) -> None:
        self.alpha_steps_total, self.alpha_steps_done = ticks, 0
        if ticks == 0 or end == self.alpha:
            self.alpha = end
            self.ramp, self.alpha_mode = None, AlphaMode.HOLD
            return
        self.ramp = AlphaRamp(self.alpha, end, ticks, curve, steepness)
        self.alpha_mode = AlphaMode.UP if end > self.alpha else AlphaMode.DOWN

    # -- the mechanical tick (once per epoch, after the action) ------------------------------------------------

    def step_epoch(self) -> None:
        """Age the seed, move alpha one step along its ramp, finish a pending prune, run the embargo timers."""
        if self.stage is None:
            return
        self.epochs_in_stage += 1
        self.seed_age += 1
        if self.epochs_since_counterfactual is not None:
            self.epochs_since_counterfactual += 1
        self._tick_ramp()
        self.alpha_velocity = self.alpha - self._alpha_last_tick  # change since the previous observation
        self._alpha_last_tick = self.alpha
        if self.prune_pending and self.ramp is None:
            self.prune_pending = False
            self.transition(SeedStage.PRUNED)
        elif self.stage in _TIMED_STAGES:
            duration, next_stage = _TIMED_STAGES[self.stage]
            if self.epochs_in_stage >= duration:
                self.transition(next_stage)

    def _tick_ramp(self) -> None:
        if self.ramp is None:
            return
        self.ramp.done += 1
        self.alpha_steps_done = self.ramp.done
        self.alpha = self.ramp.value()
        if self.ramp.finished:
            self.ramp, self.alpha_mode = None, AlphaMode.HOLD

    # -- measurements the env writes after each epoch -----------------------------------------------------------

    def record_counterfactual(self, contribution: float) -> None:
        """Store this epoch's counterfactual contribution (percentage points)."""
        if self.contribution is not None:
            self.contribution_velocity = contribution - self.contribution
        self.contribution, self.epochs_since_counterfactual = contribution, 0

    def record_gradient(self, norm: float) -> None:
        """Store this epoch's seed gradient norm and derive health (1 healthy, falling towards 0 when the norm
        vanishes or explodes; 0 when non-finite)."""
        self.gradient_health_prev = self.gradient_health
        self.gradient_norm = norm
        finite = math.isfinite(norm)
        self.has_vanishing = finite and norm < GRAD_VANISHING
        self.has_exploding = (not finite) or norm > GRAD_EXPLODING
        if not finite:
            self.gradient_health = 0.0
        elif self.has_exploding:
            self.gradient_health = GRAD_EXPLODING / norm
        elif self.has_vanishing:
            self.gradient_health = norm / GRAD_VANISHING
        else:
            self.gradient_health = 1.0

    # -- the blend ------------------------------------------------------------------------------------------------

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """`h [B, C, H, W] -> [B, C, H, W]`: the host activation with this slot's seed applied for its stage."""
        if self.seed is None or self.stage not in FORWARD_STAGES:
            return h
        return seed_forward(h, self.seed.residual, self.stage, self.alpha, self.blend_op, self._gate())

    def blend(self, h: torch.Tensor, f: torch.Tensor, alpha: float, hd: torch.Tensor) -> torch.Tensor:
        """Blend the seed's residual `f` into `h` at `alpha` with this slot's blend op (`hd` feeds the gate)."""
        return blend(h, f, alpha, hd, self.blend_op, self._gate())

    def _gate(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return None if self.gate is None else partial(gate_weight, self.gate)


# --- the blend, as functions (the slot above, and the batched engine on many worlds' seeds at once) ---------------


def seed_forward(
    h: torch.Tensor,
    residual: Callable[[torch.Tensor], torch.Tensor],
    stage: SeedStage,
    alpha: float | torch.Tensor,
    blend_op: BlendOp,
    gate: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    """`h [B, C, H, W]` with a wired-in seed applied for its `stage` (one of FORWARD_STAGES): straight-through in
    TRAINING, else the blend at `alpha` (a float, or a tensor `[B, 1, 1, 1]`: one alpha per sample). The seed's
    `residual` and the `gate` (`hd -> [B, 1, 1, 1]`, `gate_weight` of the slot's gate; used by GATE) only ever see
    `h.detach()`."""
    hd = h.detach()  # gradient isolation: the seed never trains the host through its input
    return stage_blend(h, hd, residual(hd), stage, alpha, blend_op, gate)


def stage_blend(
    h: torch.Tensor,
    hd: torch.Tensor,
    f: torch.Tensor,
    stage: SeedStage,
    alpha: float | torch.Tensor,
    blend_op: BlendOp,
    gate: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    """`seed_forward` given the seed's residual `f = residual(hd)` on `hd = h.detach()`."""
    if stage == SeedStage.TRAINING:
        y1 = blend(hd, f, 1.0, hd, blend_op, gate)
        return h + (y1 - y1.detach())  # value exactly h; the seed gets the alpha-1 gradient
    return blend(h, f, alpha, hd, blend_op, gate)


def blend(
    h: torch.Tensor,
    f: torch.Tensor,
    alpha: float | torch.Tensor,
    hd: torch.Tensor,
    blend_op: BlendOp,
    gate: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    """Blend the seed's residual `f` into `h` at `alpha` with `blend_op` (`gate(hd)` is GATE's weight). All
    `[B, C, H, W]`."""
    if blend_op == BlendOp.ADD:
        return h + alpha * f
    if blend_op == BlendOp.MULTIPLY:
        return h * (1.0 + alpha * torch.tanh(f))
    return h + (alpha * gate(hd)) * f


def gate_weight(
    gate: Callable[[torch.Tensor], torch.Tensor], hd: torch.Tensor, sigmoid: Callable = torch.sigmoid
) -> torch.Tensor:
    """The GATE blend's per-sample weight in [0, 1]: `sigmoid(gate(hd averaged over H, W))`, `[B, 1, 1, 1]`
    (`gate` is the slot's `nn.Linear(C, 1)`)."""
    return sigmoid(gate(hd.mean(dim=(2, 3))))[:, :, None, None]
