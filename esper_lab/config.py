"""Dataclass configs and the three presets (`tiny`, `demo`, `phase4`).

Every field's docstring is its `--help` text. A config round-trips through `to_dict` / `from_dict` (the run
directory's `config.json`), and `preset(name, **overrides)` is the one way the CLI, the dashboard and the notebooks
build one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from esper_lab.env.reward import RewardConfig

CRITIC_MODES = ("q_op", "v", "q_marginal")
BACKENDS = ("local", "process", "ray")


class ConfigError(ValueError):
    """A config value or preset name is not valid."""


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
    """Contribution-reward constants."""


@dataclass
class PolicyConfig:
    """Policy Network V2 sizes."""

    feature_dim: int = 512
    """Width of the feature net (Linear(state + 4*slots) -> LayerNorm -> ReLU)."""
    lstm_hidden_dim: int = 512
    """LSTM width; the heads' hidden width is half of it."""
    critic: str = "q_op"
    """Baseline: 'q_op' (Phase 4, Q(s, op)), 'v' (op-independent V(s), Q as detached auxiliary) or 'q_marginal'."""


@dataclass
class PPOConfig:
    """The PPO update."""

    lr: float = 3e-4
    """Adam learning rate (eps 1e-5)."""
    gamma: float = 0.995
    """Discount; must equal the reward's PBRS gamma."""
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
        return _from_dict(cls, data)


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
