"""The Phase-4 contribution reward (Esper's Simic `compute_contribution_reward`, reward mode SHAPED).

One env step's reward is the sum of the terms in `REWARD_TERMS`; `compute_reward` returns every term separately
(`RewardBreakdown`) and the env copies them into `info["reward_terms"]`. Esper computes the reward for the seed in
the action's slot; this world has up to three seeds at once, so the per-seed terms are summed over the slots and
stage-potential shaping uses the potential of the whole world (the sum over slots), which keeps it a true
potential-based shaping: it telescopes over an episode and forfeits a pruned seed's potential by itself.

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
    "terminal",
)


@dataclass
class RewardConfig:
    """Every constant of the contribution reward. Defaults are Esper's Phase-4 values."""

    gamma: float = 0.995
    """PBRS discount. Must equal the PPO discount (`check_gamma`), or shaping changes the optimal policy."""
    contribution_weight: float = 0.1
    """Scale of the bounded attribution (and of a negative contribution, which is paid in full). Esper: 1.0 on CIFAR,
    where a seed's counterfactual is a few points. Here the tiny host leans on its seeds and a counterfactual reaches
    15-50 points, so at 1.0 the attribution of one unfossilized seed (up to ~50 per step) swamps every other term;
    0.1 puts this world's points on Esper's scale (measured: README, 'Calibrating the reward')."""
    proxy_weight: float = 0.03
    """Before any counterfactual exists: reward `proxy_weight * acc_delta` when positive, once per step. Esper: 0.3;
    scaled by the same 0.1 as `contribution_weight` (a digits host gains points ~10x faster per epoch)."""
    no_baseline_factor: float = 0.5
    """Attribution when the seed has no accuracy-at-germination baseline: `no_baseline_factor * c`."""
    attribution_sigmoid_steepness: float = 3.0
    """Discount `sigmoid(steepness * total_improvement)` on the attribution of a seed whose improvement is < 0."""
    hacking_ratio_threshold: float = 5.0
    """Ratio penalty when `c / total_improvement` exceeds this (a seed claiming far more than the host gained)."""
    improvement_safe_threshold: float = 0.1
    """Below this total improvement (pp), a contribution above `ratio_min_contribution` is penalised by size."""
    ratio_min_contribution: float = 1.0
    """The ratio penalty only looks at seeds contributing more than this (pp)."""
    ratio_penalty_max: float = 0.3
    """Largest ratio penalty per seed."""
    blending_warning_base: float = 0.1
    """Blending warning: `-(base + min(per_epoch * epochs_in_stage, cap))` for a BLENDING seed with improvement < 0."""
    blending_warning_per_epoch: float = 0.05
    """See `blending_warning_base`."""
    blending_warning_cap: float = 0.3
    """See `blending_warning_base`."""
    holding_warning_min_epochs: int = 2
    """Holding warning: WAIT while a HOLDING seed with positive attribution has been there this many epochs..."""
    holding_warning_base: float = 0.1
    """...costs `-min(base + per_epoch * (epochs_in_stage - min_epochs), cap)` per such seed."""
    holding_warning_per_epoch: float = 0.05
    """See `holding_warning_base`."""
    holding_warning_cap: float = 0.3
    """See `holding_warning_base`."""
    pbrs_weight: float = 0.3
    """Stage-potential shaping: `pbrs_weight * (gamma * phi(s') - phi(s))`."""
    stage_potentials: dict[str, float] = field(
        default_factory=lambda: {"GERMINATED": 1.0, "TRAINING": 2.0, "BLENDING": 3.5, "HOLDING": 5.5, "FOSSILIZED": 6.0}
    )
    """phi per stage name (live stages only; empty and failure stages have 0). Esper's table."""
    epoch_progress_bonus: float = 0.3
    """phi adds `min(epoch_progress_bonus * epochs_in_stage, max_progress_bonus)` for a live seed."""
    max_progress_bonus: float = 2.0
    """See `epoch_progress_bonus`."""
    synergy_weight: float = 0.1
    """Synergy: `synergy_weight * tanh(synergy_scale * interaction_sum)` for a seed with positive attribution and
    positive interaction."""
    synergy_scale: float = 0.5
    """See `synergy_weight`."""
    rent_weight: float = 0.5
    """Rent: `-min(rent_weight * ln(1 + effective_params / max(host_params, rent_host_params_floor)), max_rent)`."""
    max_rent: float = 8.0
    """Cap of the per-step rent (Phase 4: 8.0; Esper's HEAD: 1.5)."""
    rent_host_params_floor: int = 200
    """Floor on the host size in the rent, so a tiny host is not crushed by any seed."""
    base_slot_rent_ratio: float = 0.0039
    """Each live seed adds `base_slot_rent_ratio * host_params` to the alpha-weighted effective parameters."""
    alpha_shock_coef: float = 0.1958
    """Alpha shock: `-alpha_shock_coef * sum over slots of (alpha change this step)^2`..."""
    alpha_shock_cap: float = 1.0
    """...never below `-alpha_shock_cap`."""
    germinate_cost: float = -0.02
    """Cost of an executed GERMINATE (the potential term adds the germination bonus `pbrs_weight * gamma * 1`)."""
    set_alpha_cost: float = -0.005
    """Cost of an executed SET_ALPHA_TARGET."""
    fossilize_cost: float = -0.01
    """Cost of an executed FOSSILIZE."""
    prune_cost: float = -0.005
    """Cost of an executed PRUNE."""
    min_fossilize_contribution: float = 1.0
    """FOSSILIZE shaping: a seed with `c >= this` earns `(base + scale * c) * min(1, holding_epochs / legit)`."""
    fossilize_base_bonus: float = 0.5
    """See `min_fossilize_contribution`."""
    fossilize_contribution_scale: float = 0.1
    """See `min_fossilize_contribution`."""
    fossilize_legitimacy_epochs: int = 5
    """See `min_fossilize_contribution`."""
    fossilize_noncontributing_penalty: float = -0.2
    """FOSSILIZE of a seed below `min_fossilize_contribution` (and with improvement >= 0)."""
    fossilize_regression_penalty: float = -0.5
    """FOSSILIZE of a seed whose improvement is < 0: this, minus `min(0.2 * |improvement|, 1)`..."""
    fossilize_ransomware_penalty: float = -0.3
    """...and this too when `c > 0.1` while the improvement is below -0.2 (the seed made itself indispensable)."""
    prune_hurting_threshold: float = -0.5
    """PRUNE shaping: `c < this` earns `prune_hurting_bonus`, `c < 0` earns `prune_acceptable_bonus`..."""
    prune_hurting_bonus: float = 0.3
    """See `prune_hurting_threshold`."""
    prune_acceptable_bonus: float = 0.1
    """See `prune_hurting_threshold`."""
    prune_good_seed_penalty: float = -0.3
    """...and pruning a helping seed costs `prune_good_seed_penalty - 0.05 * c`, floored at 3x this."""
    young_prune_penalty: float = -0.3
    """PRUNE of a seed younger than MIN_PRUNE_AGE costs this per missing epoch."""
    germinate_occupied_penalty: float = -0.3
    """A requested GERMINATE on an occupied slot (it executes as WAIT)."""
    invalid_fossilize_penalty: float = -1.0
    """A requested FOSSILIZE on a slot that is not HOLDING (it executes as WAIT)."""
    terminal_acc_weight: float = 0.05
    """Terminal: `terminal_acc_weight * final val_acc` (percent)..."""
    terminal_fossil_bonus: float = 3.0
    """...plus this per fossilized seed whose improvement is at least `terminal_fossil_min_improvement`."""
    terminal_fossil_min_improvement: float = 1.0
    """See `terminal_fossil_bonus`."""


def check_gamma(reward: RewardConfig, ppo_gamma: float) -> None:
    """Raise if the shaping discount differs from the PPO discount (PBRS is only policy-invariant when equal)."""
    if reward.gamma != ppo_gamma:
        raise ValueError(f"PBRS gamma {reward.gamma} != PPO gamma {ppo_gamma}; they must be equal")


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


def compute_reward(o: StepOutcome, cfg: RewardConfig) -> RewardBreakdown:
    """All terms of one step's reward."""
    per_seed = [_seed_attribution(i, s, o, cfg) if _has_signal(s) else 0.0 for i, s in enumerate(o.before)]
    return RewardBreakdown(
        attribution=sum(per_seed) + _proxy_attribution(o, cfg),
        blending_warning=sum(_blending_warning(s, o.val_acc, cfg) for s in o.before if s is not None),
        holding_warning=_holding_warning(o, per_seed, cfg),
        pbrs=cfg.pbrs_weight * (cfg.gamma * world_potential(o.after, cfg) - world_potential(o.before, cfg)),
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
    """phi of one slot: the stage potential plus the time-in-stage bonus; 0 when empty or failed."""
    if s is None or s.stage.name not in cfg.stage_potentials:
        return 0.0
    bonus = min(cfg.epoch_progress_bonus * s.epochs_in_stage, cfg.max_progress_bonus)
    return cfg.stage_potentials[s.stage.name] + bonus


def world_potential(slots: Sequence[SlotReport | None], cfg: RewardConfig) -> float:
    """phi of the world: the sum over slots."""
    return sum(slot_potential(s, cfg) for s in slots)


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
    fossils = [s for s in o.after if s is not None and s.stage == SeedStage.FOSSILIZED]
    good = sum(1 for s in fossils if o.val_acc - s.acc_at_germination >= cfg.terminal_fossil_min_improvement)
    return cfg.terminal_acc_weight * o.val_acc + cfg.terminal_fossil_bonus * good


def _sigmoid(x: float) -> float:
    x = max(min(x, 700.0), -700.0)
    return 1.0 / (1.0 + math.exp(-x))
