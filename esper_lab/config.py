"""Dataclass configs and the three presets (`tiny`, `demo`, `phase4`).

Every field's docstring is its `--help` text, and its annotation says what it allows: the type, and a `Rule`
(range, choices) as in `lr: Annotated[float, POSITIVE]`. A config round-trips through `to_dict` / `from_dict` (the
run directory's `config.json`), and `preset(name, **overrides)` is the one way the CLI, the dashboard and the
notebooks build one. `validate` is the one check, used by `preset`, `with_overrides` and `from_dict`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import reprlib
import types
from dataclasses import dataclass, field
from typing import Annotated, Any, NoReturn, Sequence, Union, get_args, get_origin, get_type_hints

CRITIC_MODES = ("q_op", "v", "q_marginal")
MASK_MODES = ("conditional", "independent")
BACKENDS = ("local", "process", "ray")
ENGINES = ("sequential", "batched")
REWARD_MODES = ("contribution", "simplified", "sparse", "basic")
HOSTS = ("impaired", "strong")  # env/host.py gives each its width

MOVED_FIELDS = {"ppo.gamma": ("world.reward.gamma", "the stage-potential shaping and PPO share one discount")}
"""Fields that moved: old path -> (new path, why). Old config files are migrated; setting the old path is an error."""

CHANGED_DEFAULTS = {"world.reward.mode": ("contribution", "every run before reward modes existed trained on "
                                                          "Phase 4's contribution reward")}
"""Fields whose default changed: path -> (the value a config file written without the field used, why). Every
config file holds every field it knew (`to_dict`), so a missing field means an older file; it is migrated to the
value it ran with, never to today's default."""

RESUMABLE_FIELDS = ("updates", "max_minutes", "torch_threads", "backend", "ray_address", "workers",
                    "ray_cpus_per_actor", "ray_gpus_per_actor", "truth.every", "truth.budget", "truth.rollouts")
"""What `--resume` may change: how long the run goes on, where its worlds run and how often the critic is measured
against ground truth (which draws on its own RNG stream: tests/test_truth.py), never what it trains."""


class ConfigError(ValueError):
    """A config value or preset name is not valid."""


@dataclass(frozen=True)
class Rule:
    """What a field allows beyond its type, written in its annotation: `Annotated[float, POSITIVE]`.

    Numbers lie in [low, high] (`open` names the open ends: 'low', 'high' or 'both') and are always finite; `even`
    asks for an even integer; `choices` lists the allowed values of a string. A field without a Rule takes any
    value of its type (any finite number).
    """

    low: float = -math.inf
    high: float = math.inf
    open: str = ""
    even: bool = False
    choices: tuple = ()

    @property
    def low_open(self) -> bool:
        return self.open in ("low", "both")

    @property
    def high_open(self) -> bool:
        return self.open in ("high", "both")

    def allows(self, value: Any) -> bool:
        """Whether `value` (already of the field's type) is allowed."""
        if self.choices:
            return value in self.choices
        if isinstance(value, str):
            return True
        low_ok = value > self.low if self.low_open else value >= self.low
        high_ok = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and low_ok and high_ok and not (self.even and value % 2)

    def text(self) -> str:
        """The rule in words: "one of 'a', 'b'", '>= 1', '> 0', 'in (0, 1]', or '' for any finite number."""
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        low_open, high_open = self.low_open, self.high_open
        if self.high == math.inf:
            return "" if self.low == -math.inf else f"{'>' if low_open else '>='} {self.low}"
        if self.low == -math.inf:
            return f"{'<' if high_open else '<='} {self.high}"
        return f"in {'(' if low_open else '['}{self.low}, {self.high}{')' if high_open else ']'}"


FINITE = Rule()
AT_LEAST_0 = Rule(low=0)
AT_LEAST_1 = Rule(low=1)
POSITIVE = Rule(low=0, open="low")
FRACTION = Rule(0, 1)  # [0, 1]
OPEN_FRACTION = Rule(0, 1, open="both")  # (0, 1)
DISCOUNT = Rule(0, 1, open="low")  # (0, 1]
SEED = Rule(0, 2**32 - 1)  # what every RNG of the stack takes (numpy's and scikit-learn's stop there)
EVEN_WIDTH = Rule(low=2, even=True)


def _stage_names() -> tuple[str, ...]:
    """The seed-stage names (imported when the annotations are first evaluated: actions.py imports torch)."""
    from esper_lab.actions import SeedStage

    return tuple(stage.name for stage in SeedStage)


@dataclass
class RewardConfig:
    """Every constant of the reward modes (docs/reward_modes.md). Defaults are Esper's, scaled to this world where
    its scale does not fit (each such field says why)."""

    mode: Annotated[str, Rule(choices=REWARD_MODES)] = "simplified"
    """The reward: 'simplified' (the default: PBRS, a cost per non-WAIT op, terminal accuracy and fossils),
    'contribution' (Phase 4's, Esper's SHAPED: attribution, warnings, PBRS, synergy, rent, alpha shock, action costs,
    terminal), 'sparse' (terminal only: best accuracy minus a parameter cost) or 'basic' (Esper HEAD's: PBRS where
    PRUNE forfeits the potential, per-step parameter rent, contribution-scaled FOSSILIZE bonus, terminal accuracy
    gain). The default was chosen by measurement (README, "Which reward pays for accuracy?"): of the modes whose
    return ranks trained, heuristic, random and wait like their final accuracy, it gains the most accuracy per seed
    parameter. Phase 4's own reward is `--set world.reward.mode=contribution`."""
    gamma: Annotated[float, DISCOUNT] = 0.995
    """The discount: of the stage-potential shaping AND of PPO's returns and GAE (one field, so they cannot differ:
    potential-based shaping leaves the optimal policy unchanged only under the same discount, Ng, Harada and
    Russell 1999, "Policy invariance under reward transformations")."""
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
    holding_warning_min_epochs: Annotated[int, AT_LEAST_0] = 2
    """Holding warning: WAIT while a HOLDING seed with positive attribution has been there this many epochs..."""
    holding_warning_base: float = 0.1
    """...costs `-min(base + per_epoch * (epochs_in_stage - min_epochs), cap)` per such seed."""
    holding_warning_per_epoch: float = 0.05
    """See `holding_warning_base`."""
    holding_warning_cap: float = 0.3
    """See `holding_warning_base`."""
    pbrs_weight: float = 0.3
    """Stage-potential shaping: `pbrs_weight * (gamma * phi(s') - phi(s))`."""
    stage_potentials: dict[Annotated[str, Rule(choices=_stage_names())], float] = field(
        default_factory=lambda: {"GERMINATED": 1.0, "TRAINING": 2.0, "BLENDING": 3.5, "HOLDING": 5.5, "FOSSILIZED": 6.0}
    )
    """phi per stage name (SeedStage names; live stages only, empty and failure stages have 0). Esper's table."""
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
    rent_host_params_floor: Annotated[int, AT_LEAST_0] = 200
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
    fossilize_legitimacy_epochs: Annotated[int, AT_LEAST_1] = 5
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
    """See `terminal_fossil_bonus` (also counts the fossils of 'simplified')."""
    simplified_action_cost: float = -0.01
    """'simplified': cost of every executed op but WAIT. Esper's value."""
    simplified_acc_weight: float = 3.0
    """'simplified' terminal: `simplified_acc_weight * final val_acc / 100`... Esper's value (scaled there for a
    25-epoch episode; demo's is 30, so it fits)."""
    simplified_fossil_bonus: float = 2.0
    """...plus this per fossilized seed whose improvement is at least `terminal_fossil_min_improvement`. Esper's."""
    sparse_scale: float = 1.0
    """'sparse', the last step only: `sparse_scale * clamp(best val_acc / 100 - param_penalty_weight * seed_params /
    param_budget, -1, 1)` (best accuracy of the episode, parameters of the seeds alive at the end); 0 before."""
    param_penalty_weight: float = 0.1
    """Parameter cost of 'sparse' (at the end) and 'basic' (every step, on the alpha-weighted effective parameters):
    `param_penalty_weight * params / param_budget`. Esper's."""
    param_budget: Annotated[int, AT_LEAST_1] = 32_000
    """See `param_penalty_weight`. Esper: 500,000, about 80 times its default CIFAR host (~6K parameters); at that
    budget a seed here (13 to 1,177 parameters) would cost ~1e-4 per step, nothing. The same 80 times this world's
    impaired host (386) is ~32,000, so a seed as large as the host pays 0.1 * 386 / 32,000 = 0.0012 per step 'basic',
    as one as large as Esper's host does there."""
    basic_fossilize_base_bonus: float = 0.3
    """'basic', an executed FOSSILIZE of a HOLDING seed with improvement > 0 and `c >= min_fossilize_contribution`:
    `(base + basic_contribution_scale * harmonic_mean(improvement, c)) * min(1, epochs_in_stage /
    fossilize_legitimacy_epochs)`, the improvement being the seeds' counterfactual total (the largest contribution
    measured). Esper's base."""
    basic_contribution_scale: float = 0.05
    """See `basic_fossilize_base_bonus`. Esper: 0.5; scaled by the same 0.1 as `contribution_weight`, because a
    counterfactual here reaches 15-50 points (a few on CIFAR)."""
    basic_fossilize_invalid_penalty: float = -0.5
    """'basic': a FOSSILIZE whose gate held (Esper's 'invalid fossilize'; its ransomware case, improvement <= 0 while
    `c > 0.1`, cannot occur with the improvement measured here). Esper's."""
    basic_fossilize_noncontributing_penalty: float = -0.2
    """'basic': any other FOSSILIZE (contribution below `min_fossilize_contribution`). Esper's."""
    basic_acc_delta_weight: float = 5.0
    """'basic' terminal: `basic_acc_delta_weight * (final val_acc - val_acc of epoch 1) / 100`. Esper's weight:
    points are points in both worlds; here epoch 1 is at chance (~10 %) and an episode gains 45-65 points, so the
    term is worth ~2-3 (the host's own learning, mostly: a policy moves it by a few tenths)."""



@dataclass
class WorldConfig:
    """The morphogenetic world: one host network training on digits, with seed slots."""

    max_epochs: Annotated[int, Rule(low=2)] = 30
    """Episode length: host epochs per episode (one env step = one epoch; at least 2). Episodes end by truncation."""
    host: Annotated[str, Rule(choices=HOSTS)] = "impaired"
    """Host size: 'impaired' (deliberately weak, seeds can rescue it) or 'strong'."""
    host_batch_size: Annotated[int, AT_LEAST_1] = 128
    """Minibatch size of the host's own SGD."""
    host_lr: Annotated[float, POSITIVE] = 3e-3
    """Adam learning rate of the host and its seeds."""
    max_seeds: Annotated[int | None, AT_LEAST_0] = None
    """Seeds an episode may germinate in total (None = unlimited)."""
    data_seed: Annotated[int, SEED] = 0
    """Seed of the fixed stratified train/validation split."""
    interactions: bool = True
    """Measure pairwise seed interactions (extra counterfactual passes) for the synergy term and the features."""
    env_threads: Annotated[int, AT_LEAST_1] = 1
    """torch threads while a world trains and validates (its ops are tiny: extra threads only add waiting)."""
    engine: Annotated[str, Rule(choices=ENGINES)] = "sequential"
    """How the worlds in one process (the trainer's with backend 'local', each worker's or Ray actor's otherwise) step:
    'sequential' (one after another) or 'batched' (their hosts and seeds train as one stacked computation,
    env/batched/; the same numbers, bit for bit but for the last bits of the reported train loss)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """The reward mode and every constant of the reward modes, and the discount `reward.gamma` that PPO uses too."""


@dataclass
class PolicyConfig:
    """Policy Network V2 sizes."""

    feature_dim: Annotated[int, EVEN_WIDTH] = 512
    """Width of the feature net (Linear(state + 4*slots) -> LayerNorm -> ReLU); even, at least 2."""
    lstm_hidden_dim: Annotated[int, EVEN_WIDTH] = 512
    """LSTM width; the heads' hidden width is half of it, so it is even (at least 2)."""
    critic: Annotated[str, Rule(choices=CRITIC_MODES)] = "q_op"
    """Baseline: 'q_op' (Phase 4, Q(s, op)), 'v' (op-independent V(s), Q as detached auxiliary) or 'q_marginal'."""
    masks: Annotated[str, Rule(choices=MASK_MODES)] = "conditional"
    """'conditional': the op is sampled first, then the slot among the slots where that op can execute, so every
    sampled action executes; 'independent': Phase 4 as shipped (op legal in any slot, slot any enabled slot), where
    an op drawn for a slot that cannot take it runs as WAIT."""


@dataclass
class PPOConfig:
    """The PPO update."""

    lr: Annotated[float, POSITIVE] = 3e-4
    """Adam learning rate (eps 1e-5)."""
    gae_lambda: Annotated[float, FRACTION] = 0.98
    """GAE lambda."""
    clip_ratio: Annotated[float, OPEN_FRACTION] = 0.2
    """Clip range of the per-head ratios."""
    value_coef: Annotated[float, AT_LEAST_0] = 0.5
    """Weight of the value loss."""
    clip_value: bool = True
    """Clip the value loss around the stored values."""
    value_clip: Annotated[float, POSITIVE] = 10.0
    """Value clip range (used when clip_value)."""
    entropy_coef: Annotated[float, AT_LEAST_0] = 0.05
    """Entropy coefficient on normalised entropy (times the Phase 5 per-head multipliers)."""
    max_grad_norm: Annotated[float, POSITIVE] = 1.0
    """Global gradient-norm clip."""
    target_kl: Annotated[float | None, POSITIVE] = 0.015
    """Approximate-KL target; an update stops before the step that would exceed 1.5x this (None = off)."""
    epochs: Annotated[int, AT_LEAST_1] = 4
    """K: passes over the rollout per update."""
    minibatches: Annotated[int, AT_LEAST_1] = 2
    """Minibatches of env rows per epoch (each row is one whole episode); must divide num_envs."""
    q_aux_coef: Annotated[float, AT_LEAST_0] = 0.5
    """Critic 'v' only: weight of the detached Q(s, op) auxiliary loss."""


@dataclass
class TruthConfig:
    """Ground truth for the critic while training (esper_lab/rl/truth.py): Monte Carlo Q^pi(s, op) on the probe
    states, appended to snapshots/truth.jsonl beside the critic's Q(s, op)."""

    every: Annotated[int, AT_LEAST_0] = 25
    """Measure every N updates (0: never)."""
    budget: Annotated[float, Rule(0, 1, open="low")] = 0.10
    """At most this fraction of the wall time since training started goes to it: probe states are measured in
    turn, each only when its estimated cost fits what is left."""
    rollouts: Annotated[int, Rule(low=2)] = 8
    """Rollouts per op (K): the interval shrinks as 1/sqrt(K)."""


@dataclass
class TrainConfig:
    """A training run."""

    preset: Annotated[str, Rule(choices=tuple(PRESETS))] = "demo"
    """Preset this config was built from."""
    num_envs: Annotated[int, AT_LEAST_1] = 4
    """Worlds stepped together; one update sees num_envs episodes. A multiple of ppo.minibatches."""
    updates: Annotated[int, AT_LEAST_1] = 100
    """PPO updates to run."""
    seed: Annotated[int, SEED] = 0
    """Seed of everything (worlds, policy, sampling): 0 to 2**32 - 1."""
    snapshot_every: Annotated[int, AT_LEAST_1] = 5
    """Write an embedding / per-op-value snapshot every N updates."""
    checkpoint_every: Annotated[int, AT_LEAST_1] = 5
    """Write checkpoint.pt every N updates (and at the end)."""
    torch_threads: Annotated[int, AT_LEAST_1] = 2
    """torch.set_num_threads for the trainer process."""
    max_minutes: Annotated[float | None, POSITIVE] = None
    """Stop (as finished) after the first update that ends past this wall-clock budget; None = run all updates."""
    backend: Annotated[str, Rule(choices=BACKENDS)] = "local"
    """Where the worlds run: 'local' (in this process), 'process' (worker processes on this machine, in parallel) or
    'ray' (one or more Ray actors)."""
    ray_address: str | None = None
    """Ray cluster to join (e.g. 'ray://head:10001' or 'auto'); None starts a local Ray instance sized to this machine."""
    workers: Annotated[int | None, AT_LEAST_1] = None
    """Worker processes ('process': None = one per core) or Ray actors ('ray': None = as many as the cluster's CPUs
    hold at ray_cpus_per_actor each) to spread the worlds over; at most num_envs."""
    ray_cpus_per_actor: Annotated[float, POSITIVE] = 1.0
    """CPUs each Ray actor requests."""
    ray_gpus_per_actor: Annotated[float, AT_LEAST_0] = 0.0
    """GPUs each Ray actor requests (0 on CPU-only clusters)."""
    world: WorldConfig = field(default_factory=WorldConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    truth: TruthConfig = field(default_factory=TruthConfig)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON types (what config.json holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        """The config `to_dict` wrote (config.json, a checkpoint's), old files migrated (MOVED_FIELDS), validated;
        raises ConfigError naming the key for an unknown key, a wrong JSON type or a value that is not allowed."""
        return validate(_build(cls, _migrate(data)))

    @property
    def gamma(self) -> float:
        """The discount (`world.reward.gamma`), shared by the shaping and PPO."""
        return self.world.reward.gamma


def _tiny() -> TrainConfig:
    return TrainConfig(
        preset="tiny",
        num_envs=2,
        updates=2,
        snapshot_every=1,
        checkpoint_every=1,
        world=WorldConfig(max_epochs=8),
        policy=PolicyConfig(feature_dim=64, lstm_hidden_dim=64),
        ppo=PPOConfig(epochs=2, minibatches=1),
        truth=TruthConfig(every=0),
    )


def _demo() -> TrainConfig:
    return TrainConfig(preset="demo", backend="process")  # worlds in worker processes: docs/performance.md


def _phase4() -> TrainConfig:
    return TrainConfig(preset="phase4", updates=100, backend="process", world=WorldConfig(max_epochs=150),
                       ppo=PPOConfig(minibatches=1))


PRESETS = {"tiny": _tiny, "demo": _demo, "phase4": _phase4}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The preset `name` with `overrides` set (top-level fields, or nested ones as 'world.max_epochs'), validated."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return with_overrides(PRESETS[name](), **overrides)


def with_overrides(cfg: TrainConfig, **overrides: Any) -> TrainConfig:
    """A validated copy of `cfg` with `overrides` set: top-level fields, or nested ones as 'world.max_epochs'."""
    cfg = copy.deepcopy(cfg)
    for path, value in overrides.items():
        holder, name = _locate(cfg, path)
        setattr(holder, name, value)
    return validate(cfg)


def config_differences(a: TrainConfig, b: TrainConfig, ignore: Sequence[str] = RESUMABLE_FIELDS) -> list[str]:
    """The field paths (other than `ignore`) whose values differ between two configs: [] when one run could have
    written both (a checkpoint and its run's config.json)."""
    return [path for path in _field_paths(TrainConfig)
            if path not in ignore and field_value(a, path) != field_value(b, path)]


def field_value(cfg: TrainConfig, path: str) -> Any:
    """The value of the field `path` ('seed', 'world.max_epochs'); raises ConfigError when it is not a field."""
    holder, name = _locate(cfg, path)
    return getattr(holder, name)


# --- validation: the one check of every config ------------------------------------------------------------------


def validate(cfg: TrainConfig) -> TrainConfig:
    """`cfg` itself when every field holds a value its annotation allows and the rules between fields hold; else
    raises ConfigError naming the first field that does not, its value and what is allowed."""
    if not isinstance(cfg, TrainConfig):
        _fail("config", cfg, "a TrainConfig")
    _check_fields(cfg)
    _check_cross_fields(cfg)
    return cfg


def _check_cross_fields(cfg: TrainConfig) -> None:
    """The rules between fields (each field alone is already allowed). One discount (world.reward.gamma) makes
    'PPO's gamma equals the shaping's' true by construction."""
    num_envs, minibatches = cfg.num_envs, cfg.ppo.minibatches
    if minibatches > num_envs:
        _fail("ppo.minibatches", minibatches, f"<= num_envs ({num_envs}): each minibatch holds whole env rows")
    if num_envs % minibatches:
        _fail("num_envs", num_envs, f"a multiple of ppo.minibatches ({minibatches})")
    if cfg.workers is not None and cfg.workers > num_envs:
        _fail("workers", cfg.workers, f"<= num_envs ({num_envs}) or None: each worker holds at least one world")


def _check_fields(obj: Any, prefix: str = "") -> None:
    for name, hint in _hints(type(obj)).items():
        _check(prefix + name, getattr(obj, name), hint)


def _check(path: str, value: Any, hint: Any) -> None:
    """Raise ConfigError unless `value` is what the annotation `hint` allows (into nested configs and dicts)."""
    kind, rule, optional = _unpack(hint)
    if value is None and optional:
        return
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, kind):
            _fail(path, value, f"a {kind.__name__}")
        _check_fields(value, path + ".")
    elif get_origin(kind) is dict:
        if not isinstance(value, dict):
            _fail(path, value, "an object (a dict)")
        key_hint, value_hint = get_args(kind)
        for key, item in value.items():
            _check(f"{path} key", key, key_hint)
            _check(f"{path}.{key}", item, value_hint)
    elif not (_is_kind(value, kind) and rule.allows(value)):
        _fail(path, value, _allowed(kind, rule, optional))


def _is_kind(value: Any, kind: type) -> bool:
    """isinstance, except that a bool is no number and an int is a float."""
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _allowed(kind: type, rule: Rule, optional: bool) -> str:
    """What a field allows, in words: 'an integer >= 1', 'a number in (0, 1)', "one of 'a', 'b'", ... 'or None'."""
    if rule.choices:
        text = rule.text()
    elif rule == FINITE and kind is float:
        text = "a finite number"
    else:
        text = " ".join(filter(None, ("an even integer" if rule.even else KIND_NAMES[kind], rule.text())))
    return text + (" or None" if optional else "")


def _fail(path: str, value: Any, allowed: str) -> NoReturn:
    raise ConfigError(f"{path} = {reprlib.repr(value)}: must be {allowed}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Each field's annotation, with its Rule (evaluated on first use, when every name the annotations use exists)."""
    hints = get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unpack(hint: Any) -> tuple[Any, Rule, bool]:
    """(the bare type, its Rule, whether None is allowed) of an annotation: `Annotated[int | None, AT_LEAST_1]`."""
    rule = FINITE
    if get_origin(hint) is Annotated:
        hint, rule = get_args(hint)[:2]
    args = get_args(hint)
    optional = get_origin(hint) in (Union, types.UnionType) and type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    return hint, rule, optional


def _locate(cfg: Any, path: str) -> tuple[Any, str]:
    """(the config holding the field `path`, the field's name); raises ConfigError when `path` is not a field."""
    holder, target = None, cfg
    for name in path.split("."):
        if not (dataclasses.is_dataclass(target) and name in _hints(type(target))):
            raise ConfigError(_unknown(path))
        holder, target = target, getattr(target, name)
    return holder, name


def _unknown(path: str) -> str:
    """'unknown config field ...', with where it moved (MOVED_FIELDS) or the field most likely meant."""
    if path in MOVED_FIELDS:
        new, why = MOVED_FIELDS[path]
        return f"{path} is not a config field ({why}): set {new}"
    parent, _, name = path.rpartition(".")
    paths = [p.rpartition(".") for p in _field_paths(TrainConfig)]  # (parent, '.', name)
    near = difflib.get_close_matches(name, [n for up, _, n in paths if up == parent], n=1)
    near = [f"{parent}.{n}" if parent else n for n in near] or ["".join(p) for p in paths if p[2] == name]
    return f"unknown config field {path!r}" + (f" (did you mean {near[0]!r}?)" if near else "")


def _field_paths(cls: type, prefix: str = "") -> list[str]:
    """Every leaf field of `cls` as a dotted path."""
    paths = []
    for name, hint in _hints(cls).items():
        kind = _unpack(hint)[0]
        paths += _field_paths(kind, f"{prefix}{name}.") if dataclasses.is_dataclass(kind) else [prefix + name]
    return paths


# --- from_dict ----------------------------------------------------------------------------------------------------


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    """A `cls` from a dict of its fields, nested configs from nested dicts; raises ConfigError for a value that is not
    a dict or for an unknown key (the values are `validate`'s to check)."""
    if not isinstance(data, dict):
        _fail(prefix[:-1] or "config", data, f"an object of {cls.__name__} fields")
    kwargs = {}
    for name, value in data.items():
        if name not in _hints(cls):
            raise ConfigError(_unknown(f"{prefix}{name}"))
        kind = _unpack(_hints(cls)[name])[0]
        kwargs[name] = _build(kind, value, f"{prefix}{name}.") if dataclasses.is_dataclass(kind) else value
    return cls(**kwargs)


_MISSING = object()


def _lookup(data: Any, path: str, default: Any = _MISSING) -> Any:
    """The value at the dotted `path` of nested dicts, or `default`."""
    for name in path.split("."):
        if not isinstance(data, dict) or name not in data:
            return default
        data = data[name]
    return data


def _migrate(data: Any) -> Any:
    """`data` without the old paths of MOVED_FIELDS, each dropped when it agrees with its new place (config files
    written before the move; raises ConfigError when they differ), and with each field of CHANGED_DEFAULTS it lacks
    set to the value it ran with."""
    for path, (old_default, _) in CHANGED_DEFAULTS.items():
        if isinstance(data, dict) and _lookup(data, path) is _MISSING:
            data = copy.deepcopy(data)
            *parents, name = path.split(".")
            node = data
            for parent in parents:
                if not isinstance(node.get(parent, {}), dict):
                    break  # not an object: _build names the bad value
                node = node.setdefault(parent, {})
            else:
                node[name] = old_default
    for old, (new, why) in MOVED_FIELDS.items():
        value = _lookup(data, old)
        if value is _MISSING:
            continue
        current = _lookup(data, new, field_value(TrainConfig(), new))
        if value != current:
            raise ConfigError(f"{old} = {value!r} differs from {new} = {current!r} ({why}): keep {new}, drop {old}")
        data = copy.deepcopy(data)
        parent, _, name = old.rpartition(".")
        (_lookup(data, parent) if parent else data).pop(name)
    return data


def field_help(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (what `--help` shows), read from its source."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs
