"""Baseline policies: the heuristic (Esper's HeuristicTamiyo, adapted to this world), random-legal and wait-only.

A policy is anything with `reset(num_envs)` and `act(reports, masks) -> actions [E, 8] int64` (heads in
`HEAD_NAMES` order); `Policy` states that protocol, and the evaluator and the trainer's evaluation accept any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import torch

from esper_lab.actions import (
    HEAD_NAMES,
    AlphaCurveAction,
    AlphaMode,
    AlphaSpeedAction,
    AlphaTargetAction,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    SeedStage,
    TempoAction,
)

# Canonical values for heads an op does not use (Esper's HEAD placeholders), when the mask allows them.
PLACEHOLDERS = {
    "blueprint": BlueprintAction.NOOP,
    "style": GerminationStyle.SIGMOID_ADD,
    "tempo": TempoAction.STANDARD,
    "alpha_target": AlphaTargetAction.FULL,
    "alpha_speed": AlphaSpeedAction.INSTANT,
    "alpha_curve": AlphaCurveAction.LINEAR,
}


@runtime_checkable
class Policy(Protocol):
    """What the evaluator (and later the trainer's evaluation) drives."""

    name: str

    def reset(self, num_envs: int) -> None:
        """Forget per-episode state; the next `act` sees the first step of `num_envs` new episodes."""

    def act(self, reports: Sequence, masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """`reports` (E `WorldReport`s) and masks `{head: bool [E, k]}` -> actions `[E, 8]` int64."""


def default_heads(masks: dict[str, torch.Tensor], env: int) -> dict[str, int]:
    """A legal value for every head of env `env`: the placeholder when the mask allows it, else the first legal."""
    heads = {}
    for name in HEAD_NAMES:
        row = masks[name][env]
        preferred = PLACEHOLDERS.get(name)
        heads[name] = int(preferred) if preferred is not None and bool(row[preferred]) else int(row.int().argmax())
    return heads


def to_actions(rows: list[dict[str, int]]) -> torch.Tensor:
    """Per-env head dicts -> `[E, 8]` int64 in `HEAD_NAMES` order."""
    return torch.tensor([[row[name] for name in HEAD_NAMES] for row in rows], dtype=torch.int64)


def legal_slots(report, op: LifecycleOp) -> list[int]:
    """Slots on which `op` would execute as itself."""
    return [i for i in range(report.num_slots) if report.can_execute(op, i)]


class WaitPolicy:
    """Always WAIT: the host trains alone."""

    name = "wait"

    def reset(self, num_envs: int) -> None:
        pass

    def act(self, reports, masks):
        rows = [{**default_heads(masks, e), "op": int(LifecycleOp.WAIT)} for e in range(len(reports))]
        return to_actions(rows)


class RandomLegalPolicy:
    """Uniform over the legal ops, then uniform over the slots where that op is legal, then uniform over each
    other head's mask. Never executes an illegal action. Seeded."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.gen = torch.Generator().manual_seed(seed)

    def reset(self, num_envs: int) -> None:
        pass

    def _choice(self, options: Sequence[int]) -> int:
        return int(options[int(torch.randint(len(options), (1,), generator=self.gen))])

    def act(self, reports, masks):
        rows = []
        for e, report in enumerate(reports):
            row = {name: self._choice(masks[name][e].nonzero().flatten().tolist()) for name in HEAD_NAMES}
            op = LifecycleOp(row["op"])
            slots = legal_slots(report, op) if op != LifecycleOp.WAIT else masks["slot"][e].nonzero().flatten().tolist()
            row["slot"] = self._choice(slots)
            rows.append(row)
        return to_actions(rows)


@dataclass
class HeuristicConfig:
    """Thresholds of the heuristic (Esper's values, scaled to 30-epoch digits episodes where noted)."""

    min_epoch: int = 2
    """Never germinate before this epoch (Esper: 5 of a 25-epoch CIFAR run)."""
    plateau_epochs: int = 2
    """Germinate once the host has plateaued this long (Esper: 3)..."""
    germinate_when_stabilized: bool = True
    """...or as soon as the host counts as stabilised."""
    training_epochs: int = 2
    """Epochs a seed trains (straight-through) before ADVANCE to BLENDING."""
    prune_after_epochs: int = 5
    """A TRAINING/BLENDING seed this long in its stage..."""
    prune_below_improvement: float = -2.0
    """...whose improvement since germination is below this (pp) is pruned."""
    fossilize_min_contribution: float = 0.5
    """A HOLDING seed contributing more than this (pp) is fossilized, otherwise pruned."""
    ransomware_contribution: float = 0.1
    """A HOLDING seed contributing more than this while the host got worse is pruned."""
    rotation: tuple[BlueprintAction, ...] = (
        BlueprintAction.CONV_LIGHT,
        BlueprintAction.CONV_HEAVY,
        BlueprintAction.ATTENTION,
        BlueprintAction.NORM,
        BlueprintAction.DEPTHWISE,
    )
    """Blueprints to germinate, in turn."""
    prune_penalty: float = 2.0
    """A pruned blueprint gains this penalty..."""
    penalty_decay: float = 0.5
    """...which decays by this factor every epoch..."""
    penalty_skip: float = 3.0
    """...and blueprints at or above this penalty are skipped."""
    tempo: TempoAction = TempoAction.FAST
    """Blend tempo of new seeds."""
    style: GerminationStyle = GerminationStyle.SIGMOID_ADD
    """Germination style of new seeds."""


@dataclass
class _EnvMemory:
    rotation_index: int = 0
    penalties: dict[int, float] = field(default_factory=dict)
    last_epoch: int = 0


class HeuristicPolicy:
    """Esper's HeuristicTamiyo for a three-slot world: one action per step, existing seeds first.

    Seed management, first slot that needs it: GERMINATED -> ADVANCE; TRAINING -> PRUNE if it has been there
    `prune_after_epochs` and the host lost more than 2 pp since germination, else ADVANCE after `training_epochs`;
    BLENDING -> the same prune rule, ADVANCE once alpha holds at the full target; HOLDING -> PRUNE a "ransomware" seed,
    FOSSILIZE a contributing one, PRUNE the rest. Otherwise, when no seed is between GERMINATED and BLENDING, an empty
    slot exists, the epoch is at least `min_epoch` and the host has plateaued (or stabilised): GERMINATE the next
    blueprint of the rotation whose prune penalty is low enough.
    """

    name = "heuristic"

    def __init__(self, cfg: HeuristicConfig | None = None):
        self.cfg = cfg or HeuristicConfig()
        self.memory: list[_EnvMemory] = []

    def reset(self, num_envs: int) -> None:
        self.memory = [_EnvMemory() for _ in range(num_envs)]

    def act(self, reports, masks):
        if len(self.memory) != len(reports):
            self.reset(len(reports))
        rows = []
        for e, report in enumerate(reports):
            self._age_penalties(self.memory[e], report.epoch)
            op, slot, blueprint = self._decide(report, self.memory[e])
            row = default_heads(masks, e)
            row.update(op=int(op), slot=slot)
            if op == LifecycleOp.GERMINATE:
                row.update(blueprint=int(blueprint), style=int(self.cfg.style), tempo=int(self.cfg.tempo),
                           alpha_target=int(AlphaTargetAction.FULL))
            rows.append(row)
        return to_actions(rows)

    def _decide(self, report, mem: _EnvMemory) -> tuple[LifecycleOp, int, BlueprintAction | None]:
        for i, seed in enumerate(report.slots):
            op = self._manage(seed, report.val_acc) if seed is not None else None
            if op is not None and report.can_execute(op, i):
                if op == LifecycleOp.PRUNE:
                    bp = int(seed.blueprint)
                    mem.penalties[bp] = mem.penalties.get(bp, 0.0) + self.cfg.prune_penalty
                return op, i, None
        empty = [i for i, s in enumerate(report.slots) if s is None and report.can_execute(LifecycleOp.GERMINATE, i)]
        if empty and self._should_germinate(report):
            blueprint = self._next_blueprint(mem)
            if blueprint is not None:
                return LifecycleOp.GERMINATE, empty[0], blueprint
        return LifecycleOp.WAIT, 0, None

    def _manage(self, seed, val_acc: float) -> LifecycleOp | None:
        """The op this seed needs now, or None."""
        cfg, improvement = self.cfg, val_acc - seed.acc_at_germination
        failing = seed.epochs_in_stage >= cfg.prune_after_epochs and improvement < cfg.prune_below_improvement
        if seed.stage == SeedStage.GERMINATED:
            return LifecycleOp.ADVANCE
        if seed.stage == SeedStage.TRAINING:
            if failing:
                return LifecycleOp.PRUNE
            return LifecycleOp.ADVANCE if seed.epochs_in_stage >= cfg.training_epochs else None
        if seed.stage == SeedStage.BLENDING:
            if failing and seed.alpha_mode == AlphaMode.HOLD:
                return LifecycleOp.PRUNE
            at_full = seed.alpha_mode == AlphaMode.HOLD and seed.alpha == seed.alpha_target == 1.0
            return LifecycleOp.ADVANCE if at_full else None
        if seed.stage == SeedStage.HOLDING:
            c = seed.contribution if seed.contribution is not None else 0.0
            if c > cfg.ransomware_contribution and improvement < 0:
                return LifecycleOp.PRUNE
            return LifecycleOp.FOSSILIZE if c > cfg.fossilize_min_contribution else LifecycleOp.PRUNE
        return None

    def _should_germinate(self, report) -> bool:
        in_progress = any(s is not None and s.stage in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING)
                          for s in report.slots)
        if in_progress or report.epoch < self.cfg.min_epoch:
            return False
        stalled = report.plateau_epochs >= self.cfg.plateau_epochs
        return stalled or (self.cfg.germinate_when_stabilized and report.host_stabilized)

    def _next_blueprint(self, mem: _EnvMemory) -> BlueprintAction | None:
        rotation = self.cfg.rotation
        for k in range(len(rotation)):
            candidate = rotation[(mem.rotation_index + k) % len(rotation)]
            if mem.penalties.get(int(candidate), 0.0) < self.cfg.penalty_skip:
                mem.rotation_index = (mem.rotation_index + k + 1) % len(rotation)
                return candidate
        return None

    def _age_penalties(self, mem: _EnvMemory, epoch: int) -> None:
        for _ in range(max(epoch - mem.last_epoch, 0)):
            mem.penalties = {bp: p * self.cfg.penalty_decay for bp, p in mem.penalties.items()}
        mem.last_epoch = epoch


BASELINES = {"heuristic": HeuristicPolicy, "random": RandomLegalPolicy, "wait": WaitPolicy}


def make_baseline(name: str, seed: int = 0) -> Policy:
    """A baseline policy by name ('heuristic', 'random' or 'wait')."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline policy {name!r}; choose one of {sorted(BASELINES)}")
    return RandomLegalPolicy(seed) if name == "random" else BASELINES[name]()
