"""The reward modes (`RewardConfig.mode`): Phase 4's contribution reward and three of Esper's later modes.

- 'contribution' (Esper's Simic `compute_contribution_reward`, reward mode SHAPED, the Phase-4 default): every term
  in `REWARD_TERMS` but `fossilize`.
- 'simplified' (Esper's `compute_simplified_reward`): pbrs, action_cost (per non-WAIT op), terminal.
- 'sparse' (Esper's `compute_sparse_reward` at Phase 4): terminal only.
- 'basic' (Esper HEAD's `compute_basic_reward`, tachyon-beep/esper-lite src/esper/simic/rewards/contribution.py):
  pbrs (PRUNE forfeits the potential), rent (linear in the effective parameters), fossilize, terminal.

One env step's reward is the sum of the terms in `REWARD_TERMS`; `compute_reward` returns every term separately
(`RewardBreakdown`, the same names in every mode, 0 where a mode has no such term) and the env copies them into
`info["reward_terms"]`. Esper computes the reward for the seed in the action's slot; this world has up to three seeds
at once, so the per-seed terms are summed over the slots and stage-potential shaping uses the potential of the whole
world (the sum over slots), which keeps it a true potential-based shaping: it telescopes over an episode and forfeits
a pruned seed's potential by itself ('basic' forfeits it at the PRUNE, not when a slow prune completes).

Signals: `c` is a seed's counterfactual contribution (validation accuracy with the seed minus with its alpha forced
to 0, percentage points, measured from BLENDING on); progress `p = val_acc - acc_at_germination` (pp), which is
also the seed's total improvement. Per-seed terms read the state the policy saw (before the action); the potential
and alpha-shock terms compare it with the state after the action and the slots' tick.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Sequence

from esper_lab.actions import MIN_PRUNE_AGE, LifecycleOp, SeedStage
from esper_lab.config import REWARD_MODES, RewardConfig
from esper_lab.env.slot import LIVE_STAGES, SlotReport

REWARD_TERMS = (
    "attribution",
    "blending_warning",
    "holding_warning",
    "pbrs",
    "synergy",
    "rent",
    "alpha_shock",
    "action_cost",
    "illegal",
    "fossilize",
    "terminal",
)

PBRS_MODES = ("contribution", "simplified", "basic")
"""The modes with stage-potential shaping: their discount must be PPO's (`check_gamma`)."""
FORFEIT_MODES = ("basic",)
"""The modes where a seed marked for PRUNE has potential 0 at once (Esper HEAD: PRUNE forfeits the potential)."""


@dataclass
class RewardBreakdown:
    """Every reward term of one step; `total` is their sum."""

    attribution: float = 0.0
    blending_warning: float = 0.0
    holding_warning: float = 0.0
    pbrs: float = 0.0
    synergy: float = 0.0
    rent: float = 0.0
    alpha_shock: float = 0.0
    action_cost: float = 0.0
    illegal: float = 0.0
    fossilize: float = 0.0
    terminal: float = 0.0

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


assert tuple(f.name for f in fields(RewardBreakdown)) == REWARD_TERMS


@dataclass(frozen=True)
class StepOutcome:
    """What the reward needs to know about one step."""

    requested_op: LifecycleOp
    executed_op: LifecycleOp
    slot: int
    """The action's slot index."""
    succeeded: bool
    """The executed op changed the world (a legal op whose gate failed did not)."""
    val_acc: float
    """Validation accuracy (percent) of the epoch the policy saw."""
    acc_delta: float
    """`val_acc` minus the previous epoch's."""
    before: Sequence[SlotReport | None]
    """Slot reports the policy saw."""
    after: Sequence[SlotReport | None]
    """Slot reports after the action and the tick."""
    host_params: int
    terminal: bool
    """This step ends the episode."""
    start_acc: float | None = None
    """Validation accuracy (percent) of the episode's first epoch ('basic' needs it at the end)."""
    best_acc: float | None = None
    """Best validation accuracy (percent) of the episode so far ('sparse' needs it at the end)."""


def compute_reward(o: StepOutcome, cfg: RewardConfig) -> RewardBreakdown:
    """All terms of one step's reward under `cfg.mode`; the terms the mode does not have are 0."""
    return _MODE_REWARDS[cfg.mode](o, cfg)


def check_gamma(cfg: RewardConfig, gamma: float) -> None:
    """Raise ValueError when `cfg.mode` shapes with potentials and `gamma` (the discount PPO uses) is not the
    shaping's: potential-based shaping leaves the optimal policy unchanged only under the same discount (Ng, Harada
    and Russell 1999). Esper raises the same way (its PBRS gamma must equal DEFAULT_GAMMA); here one field,
    `world.reward.gamma`, serves both, so a config never fails it."""
    if cfg.mode in PBRS_MODES and gamma != cfg.gamma:
        raise ValueError(f"reward mode {cfg.mode!r} shapes with gamma {cfg.gamma}, but the returns are discounted "
                         f"with {gamma}: potential-based shaping needs one discount (world.reward.gamma)")


def _contribution(o: StepOutcome, cfg: RewardConfig) -> RewardBreakdown:
    """Phase 4's contribution reward (Esper's SHAPED)."""
    per_seed = [_seed_attribution(i, s, o, cfg) if _has_signal(s) else 0.0 for i, s in enumerate(o.before)]
    return RewardBreakdown(
        attribution=sum(per_seed) + _proxy_attribution(o, cfg),
        blending_warning=sum(_blending_warning(s, o.val_acc, cfg) for s in o.before if s is not None),
        holding_warning=_holding_warning(o, per_seed, cfg),
        pbrs=potential_shaping(o, cfg),
        synergy=sum(_synergy(s, a, cfg) for s, a in zip(o.before, per_seed) if s is not None),
        rent=rent(o.before, o.host_params, cfg),
        alpha_shock=_alpha_shock(o, cfg),
        action_cost=_action_cost(o, cfg),
        illegal=_illegal_penalty(o, cfg),
        terminal=_terminal(o, cfg),
    )


# --- attribution ---------------------------------------------------------------------------------------------------


def _has_signal(s: SlotReport | None) -> bool:
    return s is not None and s.stage in LIVE_STAGES and s.stage != SeedStage.FOSSILIZED and s.contribution is not None


def bounded_attribution(c: float, progress: float | None, cfg: RewardConfig) -> float:
    """Esper's bounded attribution of one seed with contribution `c` and progress `p` (both pp)."""
    if c < 0:
        return cfg.contribution_weight * c
    if progress is None:
        attributed = cfg.no_baseline_factor * c
    elif progress <= 0:
        attributed = 0.0
    elif c >= progress:
        attributed = math.sqrt(progress * c)
    else:
        attributed = c
    if progress is not None and progress < 0:
        attributed *= _sigmoid(cfg.attribution_sigmoid_steepness * progress)
    return cfg.contribution_weight * attributed


def ratio_penalty(c: float, improvement: float, cfg: RewardConfig) -> float:
    """Anti-gaming penalty (<= 0) for a contribution far larger than the accuracy the host actually gained."""
    if c <= cfg.ratio_min_contribution:
        return 0.0
    if improvement > cfg.improvement_safe_threshold:
        ratio = c / improvement
        if ratio <= cfg.hacking_ratio_threshold:
            return 0.0
        excess = (ratio - cfg.hacking_ratio_threshold) / cfg.hacking_ratio_threshold
        return -min(cfg.ratio_penalty_max, 0.1 * excess)
    return -cfg.ratio_penalty_max * min(1.0, c / 10.0)


def _seed_attribution(index: int, s: SlotReport, o: StepOutcome, cfg: RewardConfig) -> float:
    """Bounded attribution of the seed in slot `index`, sign-flipped when this step prunes it, plus its ratio
    penalty (which stays a penalty either way)."""
    progress = o.val_acc - s.acc_at_germination
    value = bounded_attribution(s.contribution, progress, cfg)
    if o.executed_op == LifecycleOp.PRUNE and index == o.slot:
        value = -value
    return value + ratio_penalty(s.contribution, progress, cfg)


def _proxy_attribution(o: StepOutcome, cfg: RewardConfig) -> float:
    """Before a live seed has a counterfactual, a fraction of a positive accuracy step stands in for it."""
    waiting = any(s is not None and s.stage in LIVE_STAGES and s.stage != SeedStage.FOSSILIZED
                  and s.contribution is None for s in o.before)
    return cfg.proxy_weight * o.acc_delta if waiting and o.acc_delta > 0 else 0.0


# --- warnings, shaping, rent ---------------------------------------------------------------------------------------


def _blending_warning(s: SlotReport, val_acc: float, cfg: RewardConfig) -> float:
    if s.stage != SeedStage.BLENDING or val_acc - s.acc_at_germination >= 0:
        return 0.0
    return -(cfg.blending_warning_base + min(cfg.blending_warning_per_epoch * s.epochs_in_stage,
                                             cfg.blending_warning_cap))


def _holding_warning(o: StepOutcome, per_seed: list[float], cfg: RewardConfig) -> float:
    if o.executed_op != LifecycleOp.WAIT:
        return 0.0
    total = 0.0
    for s, attribution in zip(o.before, per_seed):
        if s is None or s.stage != SeedStage.HOLDING or attribution <= 0:
            continue
        if s.epochs_in_stage >= cfg.holding_warning_min_epochs:
            extra = cfg.holding_warning_per_epoch * (s.epochs_in_stage - cfg.holding_warning_min_epochs)
            total -= min(cfg.holding_warning_base + extra, cfg.holding_warning_cap)
    return total


def slot_potential(s: SlotReport | None, cfg: RewardConfig) -> float:
    """phi of one slot: the stage potential plus the time-in-stage bonus; 0 when empty or failed (and, in
    `FORFEIT_MODES`, when marked for PRUNE)."""
    if s is None or s.stage.name not in cfg.stage_potentials:
        return 0.0
    if s.prune_pending and cfg.mode in FORFEIT_MODES:
        return 0.0
    bonus = min(cfg.epoch_progress_bonus * s.epochs_in_stage, cfg.max_progress_bonus)
    return cfg.stage_potentials[s.stage.name] + bonus


def world_potential(slots: Sequence[SlotReport | None], cfg: RewardConfig) -> float:
    """phi of the world: the sum over slots."""
    return sum(slot_potential(s, cfg) for s in slots)


def potential_shaping(o: StepOutcome, cfg: RewardConfig) -> float:
    """Stage-potential shaping `pbrs_weight * (gamma * phi(after) - phi(before))`."""
    return cfg.pbrs_weight * (cfg.gamma * world_potential(o.after, cfg) - world_potential(o.before, cfg))


def _synergy(s: SlotReport, attribution: float, cfg: RewardConfig) -> float:
    if attribution <= 0 or s.interaction_sum <= 0:
        return 0.0
    return cfg.synergy_weight * math.tanh(cfg.synergy_scale * s.interaction_sum)


def effective_seed_params(slots: Sequence[SlotReport | None], host_params: int, cfg: RewardConfig) -> float:
    """Alpha-weighted seed parameters plus the base slot rent of every live seed."""
    live = [s for s in slots if s is not None and s.stage in LIVE_STAGES]
    return sum(s.effective_params + cfg.base_slot_rent_ratio * host_params for s in live)


def rent(slots: Sequence[SlotReport | None], host_params: int, cfg: RewardConfig) -> float:
    """The per-step parameter rent (<= 0)."""
    overhead = effective_seed_params(slots, host_params, cfg)
    if overhead <= 0:
        return 0.0
    growth = overhead / max(host_params, cfg.rent_host_params_floor)
    return -min(cfg.rent_weight * math.log1p(growth), cfg.max_rent)


def _alpha_shock(o: StepOutcome, cfg: RewardConfig) -> float:
    squares = sum((_alpha(a) - _alpha(b)) ** 2 for b, a in zip(o.before, o.after))
    return max(-cfg.alpha_shock_coef * squares, -cfg.alpha_shock_cap)


def _alpha(s: SlotReport | None) -> float:
    return 0.0 if s is None else s.alpha


# --- actions and the end of the episode ----------------------------------------------------------------------------


def _action_cost(o: StepOutcome, cfg: RewardConfig) -> float:
    op, seed = o.executed_op, o.before[o.slot]
    if op == LifecycleOp.GERMINATE:
        return cfg.germinate_cost
    if op == LifecycleOp.SET_ALPHA_TARGET:
        return cfg.set_alpha_cost
    if op == LifecycleOp.FOSSILIZE:
        shaping = fossilize_shaping(seed, o.val_acc, cfg) if o.succeeded else 0.0
        return cfg.fossilize_cost + shaping
    if op == LifecycleOp.PRUNE:
        return cfg.prune_cost + prune_shaping(seed, cfg)
    return 0.0


def fossilize_shaping(seed: SlotReport, val_acc: float, cfg: RewardConfig) -> float:
    """Shaping of a FOSSILIZE of `seed` (as it was before the action)."""
    improvement = val_acc - seed.acc_at_germination
    c = seed.contribution
    if improvement < 0:
        damage = min(0.2 * abs(improvement), 1.0)
        ransomware = c is not None and c > 0.1 and improvement < -0.2
        return cfg.fossilize_regression_penalty - damage + (cfg.fossilize_ransomware_penalty if ransomware else 0.0)
    if c is not None and c >= cfg.min_fossilize_contribution:
        legitimacy = min(1.0, seed.epochs_in_stage / cfg.fossilize_legitimacy_epochs)
        return (cfg.fossilize_base_bonus + cfg.fossilize_contribution_scale * c) * legitimacy
    return cfg.fossilize_noncontributing_penalty


def prune_shaping(seed: SlotReport, cfg: RewardConfig) -> float:
    """Shaping of a PRUNE of `seed` (as it was before the action)."""
    if seed.seed_age < MIN_PRUNE_AGE:
        return cfg.young_prune_penalty * (MIN_PRUNE_AGE - seed.seed_age)
    c = seed.contribution
    if c is None:
        return 0.0
    if c < cfg.prune_hurting_threshold:
        return cfg.prune_hurting_bonus
    if c < 0:
        return cfg.prune_acceptable_bonus
    return max(cfg.prune_good_seed_penalty - 0.05 * c, 3.0 * cfg.prune_good_seed_penalty)


def _illegal_penalty(o: StepOutcome, cfg: RewardConfig) -> float:
    if o.executed_op == o.requested_op:
        return 0.0
    if o.requested_op == LifecycleOp.GERMINATE and o.before[o.slot] is not None:
        return cfg.germinate_occupied_penalty
    if o.requested_op == LifecycleOp.FOSSILIZE:
        return cfg.invalid_fossilize_penalty
    return 0.0


def _terminal(o: StepOutcome, cfg: RewardConfig) -> float:
    if not o.terminal:
        return 0.0
    return cfg.terminal_acc_weight * o.val_acc + cfg.terminal_fossil_bonus * good_fossils(o, cfg)


def good_fossils(o: StepOutcome, cfg: RewardConfig) -> int:
    """Fossilized seeds after the step whose improvement is at least `terminal_fossil_min_improvement`."""
    fossils = [s for s in o.after if s is not None and s.stage == SeedStage.FOSSILIZED]
    return sum(1 for s in fossils if o.val_acc - s.acc_at_germination >= cfg.terminal_fossil_min_improvement)


def _sigmoid(x: float) -> float:
    x = max(min(x, 700.0), -700.0)
    return 1.0 / (1.0 + math.exp(-x))


# --- the other modes -----------------------------------------------------------------------------------------------


def _simplified(o: StepOutcome, cfg: RewardConfig) -> RewardBreakdown:
    """Esper's SIMPLIFIED: PBRS, a small cost per executed op but WAIT, and at the end accuracy and good fossils."""
    terminal = 0.0
    if o.terminal:
        terminal = cfg.simplified_acc_weight * o.val_acc / 100 + cfg.simplified_fossil_bonus * good_fossils(o, cfg)
    return RewardBreakdown(
        pbrs=potential_shaping(o, cfg),
        action_cost=cfg.simplified_action_cost if o.executed_op != LifecycleOp.WAIT else 0.0,
        terminal=terminal,
    )


def _sparse(o: StepOutcome, cfg: RewardConfig) -> RewardBreakdown:
    """Esper's SPARSE (Phase 4): nothing until the last step, then the episode's best accuracy minus a parameter cost
    on the seeds alive at the end, clamped to [-1, 1] before scaling."""
    if not o.terminal:
        return RewardBreakdown()
    params = sum(s.seed_params for s in o.after if s is not None and s.stage in LIVE_STAGES)
    base = _required(o.best_acc, "best_acc", cfg) / 100 - cfg.param_penalty_weight * params / cfg.param_budget
    return RewardBreakdown(terminal=cfg.sparse_scale * max(-1.0, min(1.0, base)))


def _basic(o: StepOutcome, cfg: RewardConfig) -> RewardBreakdown:
    """Esper HEAD's BASIC: PBRS (the potential of a seed marked for PRUNE is forfeited at once), a per-step rent
    linear in the effective seed parameters, a contribution-scaled FOSSILIZE bonus and, at the end, the episode's
    accuracy gain. (Esper's docstring calls the terminal's acc_delta the improvement since the episode start; its
    training loop passes the last epoch's delta, which makes the term ~0. This world pays the docstring's.)"""
    effective = effective_seed_params(o.before, o.host_params, cfg)
    terminal = 0.0
    if o.terminal:
        gain = o.val_acc - _required(o.start_acc, "start_acc", cfg)
        terminal = cfg.basic_acc_delta_weight * gain / 100
    return RewardBreakdown(
        pbrs=potential_shaping(o, cfg),
        rent=-cfg.param_penalty_weight * effective / cfg.param_budget,
        fossilize=basic_fossilize_bonus(o, cfg) if o.executed_op == LifecycleOp.FOSSILIZE else 0.0,
        terminal=terminal,
    )


def basic_fossilize_bonus(o: StepOutcome, cfg: RewardConfig) -> float:
    """'basic': the reward of an executed FOSSILIZE of the seed in `o.slot` (as it was before the action).

    The improvement is the seeds' counterfactual total, accuracy with every seed minus with none. This world does
    not measure the all-off pass, so it takes Esper's fallback, the largest single-seed contribution; that is at
    least the seed's own `c`, so Esper's ransomware branch (improvement <= 0 while c > 0.1) cannot fire here."""
    seed = o.before[o.slot]
    if not o.succeeded or seed is None or seed.stage != SeedStage.HOLDING:
        return cfg.basic_fossilize_invalid_penalty  # the gate held: nothing fossilized
    c = seed.contribution
    if c is None or c < cfg.min_fossilize_contribution:
        return cfg.basic_fossilize_noncontributing_penalty
    improvement = max(s.contribution for s in o.before if s is not None and s.contribution is not None)
    legitimacy = min(1.0, seed.epochs_in_stage / cfg.fossilize_legitimacy_epochs)
    return (cfg.basic_fossilize_base_bonus + cfg.basic_contribution_scale * harmonic_mean(improvement, c)) * legitimacy


def harmonic_mean(a: float, b: float) -> float:
    """`2ab / (a + b)`, 0 unless both are positive (dominated by the smaller: both signals must agree)."""
    return 2 * a * b / (a + b) if a > 0 and b > 0 else 0.0


def _required(value: float | None, name: str, cfg: RewardConfig) -> float:
    if value is None:
        raise ValueError(f"reward mode {cfg.mode!r} needs StepOutcome.{name} on the episode's last step")
    return value


_MODE_REWARDS = {"contribution": _contribution, "simplified": _simplified, "sparse": _sparse, "basic": _basic}
assert tuple(_MODE_REWARDS) == REWARD_MODES and set(PBRS_MODES + FORFEIT_MODES) <= set(REWARD_MODES)
