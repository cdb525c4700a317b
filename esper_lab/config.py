"""Dataclass configs and the three presets (`tiny`, `demo`, `phase4`).

Every field's docstring is its `--help` text. A config round-trips through `to_dict` / `from_dict` (the run
directory's `config.json`), and `preset(name, **overrides)` is the one way the CLI, the dashboard and the notebooks
build one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

CRITIC_MODES = ("q_op", "v", "q_marginal")
MASK_MODES = ("conditional", "independent")
BACKENDS = ("local", "process", "ray")


class ConfigError(ValueError):
    """A config value or preset name is not valid."""


@dataclass
class RewardConfig:
    """Every constant of the contribution reward. Defaults are Esper's Phase-4 values."""

    gamma: float = 0.995
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



@dataclass
class WorldConfig:
    """The morphogenetic world: one host network training on digits, with seed slots."""

    max_epochs: int = 30
    """Episode length: host epochs per episode (one env step = one epoch). Episodes end by truncation."""
    host: str = "impaired"
    """Host size: 'impaired' (deliberately weak, seeds can rescue it) or 'strong'."""
    host_batch_size: int = 128
    """Minibatch size of the host's own SGD."""
    host_lr: float = 3e-3
    """Adam learning rate of the host and its seeds."""
    max_seeds: int | None = None
    """Seeds an episode may germinate in total (None = unlimited)."""
    data_seed: int = 0
    """Seed of the fixed stratified train/validation split."""
    interactions: bool = True
    """Measure pairwise seed interactions (extra counterfactual passes) for the synergy term and the features."""
    env_threads: int = 1
    """torch threads while a world trains and validates (its ops are tiny: extra threads only add waiting)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Contribution-reward constants, and the discount `reward.gamma` that PPO uses too."""


@dataclass
class PolicyConfig:
    """Policy Network V2 sizes."""

    feature_dim: int = 512
    """Width of the feature net (Linear(state + 4*slots) -> LayerNorm -> ReLU)."""
    lstm_hidden_dim: int = 512
    """LSTM width; the heads' hidden width is half of it."""
    critic: str = "q_op"
    """Baseline: 'q_op' (Phase 4, Q(s, op)), 'v' (op-independent V(s), Q as detached auxiliary) or 'q_marginal'."""
    masks: str = "conditional"
    """'conditional': the op is sampled first, then the slot among the slots where that op can execute, so every
    sampled action executes; 'independent': Phase 4 as shipped (op legal in any slot, slot any enabled slot), where
    an op drawn for a slot that cannot take it runs as WAIT."""


@dataclass
class PPOConfig:
    """The PPO update."""

    lr: float = 3e-4
    """Adam learning rate (eps 1e-5)."""
    gae_lambda: float = 0.98
    """GAE lambda."""
    clip_ratio: float = 0.2
    """Clip range of the per-head ratios."""
    value_coef: float = 0.5
    """Weight of the value loss."""
    clip_value: bool = True
    """Clip the value loss around the stored values."""
    value_clip: float = 10.0
    """Value clip range (used when clip_value)."""
    entropy_coef: float = 0.05
    """Entropy coefficient on normalised entropy (times the Phase 5 per-head multipliers)."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip."""
    target_kl: float | None = 0.015
    """Approximate-KL target; an update stops before the step that would exceed 1.5x this (None = off)."""
    epochs: int = 4
    """K: passes over the rollout per update."""
    minibatches: int = 2
    """Minibatches of env rows per epoch (each row is one whole episode)."""
    q_aux_coef: float = 0.5
    """Critic 'v' only: weight of the detached Q(s, op) auxiliary loss."""


@dataclass
class TrainConfig:
    """A training run."""

    preset: str = "demo"
    """Preset this config was built from."""
    num_envs: int = 4
    """Worlds stepped together; one update sees num_envs episodes."""
    updates: int = 100
    """PPO updates to run."""
    seed: int = 0
    """Seed of everything (worlds, policy, sampling)."""
    snapshot_every: int = 5
    """Write an embedding / per-op-value snapshot every N updates."""
    checkpoint_every: int = 5
    """Write checkpoint.pt every N updates (and at the end)."""
    torch_threads: int = 2
    """torch.set_num_threads for the trainer process."""
    max_minutes: float | None = None
    """Stop (as finished) after the first update that ends past this wall-clock budget; None = run all updates."""
    backend: str = "local"
    """Where the worlds run: 'local' (in this process), 'process' (worker processes on this machine, in parallel) or
    'ray' (one or more Ray actors)."""
    ray_address: str | None = None
    """Ray cluster to join (e.g. 'ray://head:10001' or 'auto'); None starts a local Ray instance sized to this machine."""
    workers: int | None = None
    """Worker processes ('process': None = one per core) or Ray actors ('ray': None = as many as the cluster's CPUs
    hold at ray_cpus_per_actor each) to spread the worlds over."""
    ray_cpus_per_actor: float = 1.0
    """CPUs each Ray actor requests."""
    ray_gpus_per_actor: float = 0.0
    """GPUs each Ray actor requests (0 on CPU-only clusters)."""
    world: WorldConfig = field(default_factory=WorldConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, _migrate(data))

    @property
    def gamma(self) -> float:
        """The discount (`world.reward.gamma`), shared by the shaping and PPO."""
        return self.world.reward.gamma


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Accept config.json files written before `ppo.gamma` was folded into `world.reward.gamma`."""
    ppo = data.get("ppo")
    if not isinstance(ppo, dict) or "gamma" not in ppo:
        return data
    reward_gamma = (data.get("world") or {}).get("reward", {}).get("gamma", RewardConfig.gamma)
    if ppo["gamma"] != reward_gamma:
        raise ConfigError(f"ppo.gamma ({ppo['gamma']}) differs from world.reward.gamma ({reward_gamma}); the discount "
                          "is now the one field world.reward.gamma")
    return {**data, "ppo": {k: v for k, v in ppo.items() if k != "gamma"}}


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        kwargs[name] = _from_dict(type(default), value) if dataclasses.is_dataclass(default) else value
    return cls(**kwargs)


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
    )


def _demo() -> TrainConfig:
    return TrainConfig(preset="demo", backend="process")  # worlds in worker processes: docs/performance.md


def _phase4() -> TrainConfig:
    return TrainConfig(preset="phase4", updates=100, backend="process", world=WorldConfig(max_epochs=150),
                       ppo=PPOConfig(minibatches=1))


PRESETS = {"tiny": _tiny, "demo": _demo, "phase4": _phase4}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """Build a preset; `overrides` set top-level fields or nested ones as 'world.max_epochs'."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    for key, value in overrides.items():
        target, attr = cfg, key
        while "." in attr:
            head, attr = attr.split(".", 1)
            target = getattr(target, head)
        if not hasattr(target, attr):
            raise ConfigError(f"unknown config field {key!r}")
        setattr(target, attr, value)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raise `ConfigError` naming the first field that cannot work."""
    if cfg.policy.critic not in CRITIC_MODES:
        raise ConfigError(f"unknown critic {cfg.policy.critic!r}; choose one of {CRITIC_MODES}")
    if cfg.policy.masks not in MASK_MODES:
        raise ConfigError(f"unknown policy.masks {cfg.policy.masks!r}; choose one of {MASK_MODES}")
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {cfg.backend!r}; choose one of {BACKENDS}")
    for name in ("num_envs", "updates", "snapshot_every", "checkpoint_every", "torch_threads"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.world.max_epochs < 2:
        raise ConfigError(f"world.max_epochs must be at least 2, got {cfg.world.max_epochs}")
    if cfg.num_envs % cfg.ppo.minibatches:
        raise ConfigError(f"num_envs ({cfg.num_envs}) must be a multiple of ppo.minibatches ({cfg.ppo.minibatches})")
    return cfg


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
