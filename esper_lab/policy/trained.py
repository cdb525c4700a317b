"""A trained policy from a checkpoint, behind the same `reset` / `act` protocol as the baselines."""

from __future__ import annotations

from pathlib import Path

import torch

from esper_lab.actions import HEAD_NAMES
from esper_lab.config import TrainConfig, WorldConfig
from esper_lab.features import OBS_DIM, batch_obs_to_features
from esper_lab.policy.bundle import LSTMPolicyBundle
from esper_lab.rl.normalize import RunningMeanStd
from esper_lab.runs import load_checkpoint


class TrainedPolicy:
    """Acts with a trained bundle: normalises features with the checkpoint's statistics and carries the LSTM state."""

    def __init__(self, bundle: LSTMPolicyBundle, obs_norm: RunningMeanStd, *, deterministic: bool = False,
                 name: str = "trained"):
        self.bundle, self.obs_norm, self.deterministic, self.name = bundle, obs_norm, deterministic, name
        self.hidden: tuple[torch.Tensor, torch.Tensor] | None = None

    def reset(self, num_envs: int) -> None:
        self.hidden = self.bundle.initial_hidden(num_envs)

    def act(self, reports: list, masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """`reports` of E worlds and their masks `{head: [E, k]}` -> actions `[E, 8]` int64 in HEAD_NAMES order."""
        if self.hidden is None:
            self.reset(len(reports))
        obs, bp_idx = batch_obs_to_features(reports)  # [E, D], [E, S]
        result = self.bundle.get_action(self.obs_norm.normalize(obs), bp_idx, masks, self.hidden,
                                        deterministic=self.deterministic)
        self.hidden = result.hidden
        return torch.stack([result.actions[h] for h in HEAD_NAMES], dim=1)  # [E, 8]


def load_trained_policy(path: Path | str, *, deterministic: bool = False) -> tuple[TrainedPolicy, WorldConfig]:
    """Policy and world config from a training checkpoint (loaded with weights_only=True)."""
    ckpt = load_checkpoint(path)
    cfg = TrainConfig.from_dict(ckpt["config"])
    bundle = LSTMPolicyBundle.from_config(OBS_DIM, cfg.policy)
    bundle.load_state_dict(ckpt["policy"])
    obs_norm = RunningMeanStd(OBS_DIM)
    obs_norm.load_state_dict(ckpt["obs_norm"])
    return TrainedPolicy(bundle, obs_norm, deterministic=deterministic), cfg.world
