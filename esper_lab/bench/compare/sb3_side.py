"""Everything on sb3-contrib's side of `esper-lab bench compare`; the only module that imports sb3_contrib or
stable_baselines3, and only inside functions (`require_sb3` raises `BenchDependencyError` naming the install).

- `ToyEnv`: Box(121) random observations, OUR MultiDiscrete heads (HEAD_NAMES order), fixed episode length L.
- `make_toy_model`: RecurrentPPO("MlpLstmPolicy") on 8 toy envs, the shared-LSTM layout of parts A and B:
  `shared_lstm=True, enable_critic_lstm=False, net_arch=dict(pi=[256], vf=[256])`. With shared_lstm SB3 feeds the
  critic `latent_pi.detach()`, so the value loss never trains the LSTM (ours: one LSTM trained by both losses).
- `world_hyperparameters` / `make_world_model`: RecurrentPPO("MultiInputLstmPolicy") on MorphoEnv worlds with our
  PPO numbers where SB3 has the same knob (part C), and `budget_callback` to stop it on a wall-clock budget.
- `SB3Policy`: a trained RecurrentPPO behind the evaluator's `Policy` protocol (`reset` / `act`).
"""

from __future__ import annotations

import time
from functools import partial
from importlib import metadata
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from esper_lab.actions import NUM_HEADS
from esper_lab.config import TrainConfig
from esper_lab.bench.timing import Log, quiet
from esper_lab.env.morpho_env import MorphoEnv, action_space
from esper_lab.features import OBS_DIM, batch_obs_to_features

INSTALL_HINT = "pip install -e '.[bench]'"
SB3_ENT_COEF = 0.01
"""SB3's entropy bonus in part C. SB3's entropy is the UNNORMALISED sum over the 8 heads (nats); ours is each head's
entropy normalised to [0, 1], times `PPOConfig.entropy_coef` (0.05) and the Phase 5 per-head multipliers."""


class BenchDependencyError(ImportError):
    """sb3-contrib / stable-baselines3 are not installed in this environment."""


def require_sb3() -> None:
    """Import sb3_contrib and stable_baselines3, or raise `BenchDependencyError` saying how to install them."""
    try:
        import sb3_contrib  # noqa: F401
        import stable_baselines3  # noqa: F401
    except ImportError as exc:
        raise BenchDependencyError(
            f"esper-lab bench compare needs sb3-contrib==2.9.2 (it brings stable-baselines3): run `{INSTALL_HINT}` "
            f"in this environment, after torch is installed so no other torch build comes in ({exc})"
        ) from exc


def versions() -> dict[str, str | None]:
    """Installed versions of sb3_contrib and stable_baselines3 (None when missing)."""
    out: dict[str, str | None] = {}
    for name, dist in (("sb3_contrib", "sb3-contrib"), ("stable_baselines3", "stable-baselines3")):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# --- parts A and B: the toy env and the shared-LSTM model -----------------------------------------------------


class ToyEnv(gym.Env):
    """Random `[121]` observations, our 8 heads as a MultiDiscrete, reward 0/1, episodes of exactly
    `episode_length` steps that end as terminated (no bootstrap)."""

    def __init__(self, episode_length: int, seed: int = 0):
        super().__init__()
        self.observation_space = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        self.action_space = action_space()  # HEAD_NAMES order, our head sizes
        self.episode_length, self.rng, self.t = episode_length, np.random.default_rng(seed), 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self.rng.standard_normal(OBS_DIM, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.rng.standard_normal(OBS_DIM, dtype=np.float32)
        return obs, float(self.rng.random() < 0.5), self.t >= self.episode_length, False, {}


def shared_lstm_kwargs(lstm_hidden: int) -> dict[str, Any]:
    """policy_kwargs of parts A and B: one LSTM shared by actor and critic (the critic reads it detached)."""
    return dict(lstm_hidden_size=lstm_hidden, n_lstm_layers=1, shared_lstm=True, enable_critic_lstm=False,
                net_arch=dict(pi=[256], vf=[256]))


def make_toy_model(episode_length: int, lstm_hidden: int, *, n_envs: int = 8, n_steps: int = 128,
                   batch_size: int = 256, n_epochs: int = 4, seed: int = 0):
    """RecurrentPPO("MlpLstmPolicy") on `n_envs` ToyEnvs of fixed `episode_length`, shared-LSTM layout, cpu."""
    require_sb3()
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    envs = DummyVecEnv([partial(ToyEnv, episode_length, seed + i) for i in range(n_envs)])
    return RecurrentPPO("MlpLstmPolicy", envs, n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs,
                        policy_kwargs=shared_lstm_kwargs(lstm_hidden), verbose=0, device="cpu", seed=seed)


def initial_states(batch: int, lstm_hidden: int):
    """Zero `RNNStates` (actor and critic (h, c), each `[1, batch, H]`) for `policy.forward`."""
    from sb3_contrib.common.recurrent.type_aliases import RNNStates

    zeros = torch.zeros(1, batch, lstm_hidden)
    return RNNStates((zeros, zeros.clone()), (zeros.clone(), zeros.clone()))


# --- part C: the same world ---------------------------------------------------------------------------------


def world_hyperparameters(cfg: TrainConfig) -> dict[str, Any]:
    """RecurrentPPO arguments matched to `cfg` where SB3 has the same knob: one rollout = one episode per world
    (n_steps = max_epochs), the same number of minibatches, epochs, lr, gamma, lambda, clip, value weight and clip,
    gradient clip and KL target. SB3's policy keeps its defaults (two LSTMs, net_arch 64-64) except the LSTM width."""
    p, steps = cfg.ppo, cfg.num_envs * cfg.world.max_epochs
    return dict(
        n_envs=cfg.num_envs, n_steps=cfg.world.max_epochs, n_epochs=p.epochs, batch_size=steps // p.minibatches,
        learning_rate=p.lr, gamma=cfg.gamma, gae_lambda=p.gae_lambda, clip_range=p.clip_ratio,
        clip_range_vf=p.value_clip if p.clip_value else None, vf_coef=p.value_coef, max_grad_norm=p.max_grad_norm,
        target_kl=p.target_kl, ent_coef=SB3_ENT_COEF,
        policy_kwargs=dict(lstm_hidden_size=cfg.policy.lstm_hidden_dim),
    )


def world_vec_env(cfg: TrainConfig) -> str:
    """SB3's VecEnv for `cfg`: 'DummyVecEnv' (worlds stepped one after another, like our 'local' backend) or, when
    our worlds run in parallel ('process' or 'ray' backend), 'SubprocVecEnv' (one SB3 worker process per world)."""
    return "DummyVecEnv" if cfg.backend == "local" else "SubprocVecEnv"


def make_world_model(cfg: TrainConfig, seed: int):
    """RecurrentPPO("MultiInputLstmPolicy") on `world_vec_env(cfg)` of `cfg.num_envs` MorphoEnv worlds (no masks: an
    illegal action executes as WAIT), hyperparameters from `world_hyperparameters(cfg)`, cpu, seeded. No wrapper:
    MorphoEnv's own `info["episode"] = {r, l, t}` is what SB3's logger reads.
    Call `model.env.close()` when done (SubprocVecEnv holds worker processes)."""
    require_sb3()
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common import vec_env

    kwargs = world_hyperparameters(cfg)
    envs = getattr(vec_env, world_vec_env(cfg))([partial(MorphoEnv, cfg.world) for _ in range(kwargs.pop("n_envs"))])
    return RecurrentPPO("MultiInputLstmPolicy", envs, verbose=0, device="cpu", seed=seed, **kwargs)


def budget_callback(seconds: float, log: Log = quiet, label: str = "sb3"):
    """A callback that ends `learn` once `seconds` of wall clock have passed, checked when a rollout starts, i.e.
    after the previous rollout AND its `train()`: the same rule as our trainer (deadline checked after each update).
    The aborted rollout has taken one vectorised env step, counted in `model.num_timesteps`.
    `.updates` counts completed rollouts, each of which was followed by a `train()`."""
    require_sb3()
    from stable_baselines3.common.callbacks import BaseCallback

    class Budget(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.deadline, self.t0, self.updates, self.spent = 0.0, 0.0, 0, False

        def _on_training_start(self) -> None:
            self.t0 = time.monotonic()
            self.deadline = self.t0 + seconds

        def _on_rollout_start(self) -> None:
            self.spent = time.monotonic() >= self.deadline

        def _on_rollout_end(self) -> None:
            self.updates += 1
            log(f"{label}: rollout {self.updates} collected (train() next), {self.model.num_timesteps} env steps, "
                f"{time.monotonic() - self.t0:.1f}s of {seconds:.1f}s")

        def _on_step(self) -> bool:
            return not self.spent

    return Budget()


class SB3Policy:
    """A RecurrentPPO model behind the evaluator's `Policy` protocol.

    `act` builds the Dict observation MorphoEnv gives (`features.batch_obs_to_features`: `obs [E, 121]` float32,
    `blueprint_indices [E, 3]` int64) and calls `model.predict` with the carried LSTM state; masks are ignored
    (an illegal action executes as WAIT, as during SB3's training).
    """

    def __init__(self, model, *, deterministic: bool = False, name: str = "sb3"):
        self.model, self.deterministic, self.name = model, deterministic, name
        self.state: tuple[np.ndarray, np.ndarray] | None = None
        self.episode_start = np.ones(0, dtype=bool)

    def reset(self, num_envs: int) -> None:
        self.state, self.episode_start = None, np.ones(num_envs, dtype=bool)

    def act(self, reports: Sequence, masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """E reports -> actions `[E, 8]` int64 in HEAD_NAMES order."""
        if len(self.episode_start) != len(reports):
            self.reset(len(reports))
        obs, idx = batch_obs_to_features(reports)  # [E, D], [E, S]
        actions, self.state = self.model.predict({"obs": obs.numpy(), "blueprint_indices": idx.numpy()},
                                                 state=self.state, episode_start=self.episode_start,
                                                 deterministic=self.deterministic)
        self.episode_start = np.zeros(len(reports), dtype=bool)
        return torch.as_tensor(np.asarray(actions), dtype=torch.int64).reshape(len(reports), NUM_HEADS)  # [E, 8]
