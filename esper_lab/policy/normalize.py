"""Running normalisers for observations and rewards (Esper's Simic normalisers).

Both are FROZEN during a rollout: the policy acts on `normalize(x)` with fixed statistics, so the stored
(normalised) observations and rewards are exactly what the policy saw. The trainer calls `update(...)` once per
rollout, just before the PPO update. Both carry `state_dict()` / `load_state_dict()` so a checkpoint restores them
(Esper commit 7d981fb (tachyon-beep/esper-lite): normaliser state now saved in checkpoints, so a resume no longer
shifts the observation distribution).

- `RunningMeanStd`: mean and variance over every sample ever seen (the parallel-Welford merge of Chan et al.);
  `normalize(x) = clip((x - mean) / sqrt(var + eps), -10, 10)`.
- `RewardNormalizer`: divides rewards by the running std of the DISCOUNTED RETURN (the "reward scaling" detail of
  the 37 PPO implementation details, as in gymnasium's NormalizeReward), no mean subtracted, clipped to +-10.
  Why the return and not the raw rewards (Esper's choice): what PPO regresses is the return, and scaling by the
  return's std keeps value targets near unit scale whatever the episode length and gamma; the sign of every
  reward is preserved because no mean is subtracted.
"""

from __future__ import annotations

import torch

DEFAULT_CLIP = 10.0
DEFAULT_EPSILON = 1e-8


class RunningMeanStd:
    """Running mean and variance of a `shape`-dim signal, updated from batches.

    Args:
        shape: shape of one sample, e.g. `(obs_dim,)`; `()` for a scalar signal.
        clip: `normalize` clips its output to [-clip, clip].
        epsilon: added to the variance before the square root.
    """

    def __init__(
        self, shape: tuple[int, ...] | int = (), clip: float = DEFAULT_CLIP, epsilon: float = DEFAULT_EPSILON
    ):
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.mean = torch.zeros(self.shape, dtype=torch.float64)
        self.var = torch.ones(self.shape, dtype=torch.float64)
        self.count = 0  # samples seen; with count 0, normalize(x) = clip(x)

    def update(self, batch: torch.Tensor) -> None:
        """Merge a batch `[..., *shape]` (every leading dim is a sample) into the running statistics."""
        batch = self._check(batch, "update").detach().to(torch.float64)
        samples = batch.reshape(-1, *self.shape)  # [N, *shape]
        n = samples.shape[0]
        if n == 0:
            return
        batch_mean = samples.mean(dim=0)
        batch_var = samples.var(dim=0, correction=0)
        total = self.count + n
        delta = batch_mean - self.mean
        # Chan et al.: combine the two (mean, M2) pairs.
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """`clip((x - mean) / sqrt(var + eps), -clip, clip)`, in x's dtype and device; x is `[..., *shape]`."""
        x = self._check(x, "normalize")
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        std = torch.sqrt(self.var + self.epsilon).to(device=x.device, dtype=x.dtype)
        return ((x - mean) / std).clamp(-self.clip, self.clip)

    @property
    def std(self) -> torch.Tensor:
        return torch.sqrt(self.var + self.epsilon)

    def state_dict(self) -> dict:
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count, "shape": list(self.shape)}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["shape"]) != self.shape:
            raise ValueError(f"RunningMeanStd: checkpoint has shape {tuple(state['shape'])}, this one {self.shape}")
        self.mean = state["mean"].to(torch.float64).clone()
        self.var = state["var"].to(torch.float64).clone()
        self.count = int(state["count"])

    def _check(self, x: torch.Tensor, where: str) -> torch.Tensor:
        if x.dim() < len(self.shape) or tuple(x.shape[x.dim() - len(self.shape):]) != self.shape:
            expected = ", ".join(["...", *map(str, self.shape)])
            raise ValueError(f"RunningMeanStd.{where}: expected [{expected}], got {tuple(x.shape)}")
        return x


class RewardNormalizer:
    """Scale rewards by the running std of the discounted return; no mean subtracted; clip to [-clip, clip].

    `update(rewards [E, T], dones [E, T])` replays each env row forwards, `G_t = r_t + gamma * G_{t-1}` (reset after
    a done), and merges every `G_t` into a scalar `RunningMeanStd`. `normalize(r) = clip(r / std(G), -clip, clip)`.
    Before the first update std is 1, so the first rollout's rewards pass through unscaled (only clipped).

    Args:
        gamma: the discount of the return whose std is tracked (the run's `world.reward.gamma`).
        clip: output clip.
        epsilon: added to the variance before the square root.
    """

    def __init__(self, gamma: float, clip: float = DEFAULT_CLIP, epsilon: float = DEFAULT_EPSILON):
        self.gamma = float(gamma)
        self.clip = float(clip)
        self.return_stats = RunningMeanStd((), clip=clip, epsilon=epsilon)

    def update(
        self, rewards: torch.Tensor, dones: torch.Tensor | None = None, valid: torch.Tensor | None = None
    ) -> None:
        """Merge the discounted returns of RAW rewards `[E, T]` (or `[T]`); `dones`/`valid` bool of the same shape."""
        rewards = rewards.detach().to(torch.float64)
        if rewards.dim() == 1:
            rewards = rewards.unsqueeze(0)  # [1, T]
            dones = None if dones is None else dones.unsqueeze(0)
            valid = None if valid is None else valid.unsqueeze(0)
        if rewards.dim() != 2:
            raise ValueError(f"RewardNormalizer.update: expected rewards [E, T] or [T], got {tuple(rewards.shape)}")
        dones = torch.zeros_like(rewards, dtype=torch.bool) if dones is None else dones.to(torch.bool)
        valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.to(torch.bool)
        if dones.shape != rewards.shape or valid.shape != rewards.shape:
            raise ValueError(
                f"RewardNormalizer.update: rewards {tuple(rewards.shape)}, dones {tuple(dones.shape)} and valid "
                f"{tuple(valid.shape)} must have the same shape"
            )
        returns = torch.zeros_like(rewards)  # [E, T]
        running = torch.zeros(rewards.shape[0], dtype=torch.float64)  # [E]
        for t in range(rewards.shape[1]):
            running = rewards[:, t] + self.gamma * running
            returns[:, t] = running
            running = running * (~dones[:, t]).to(torch.float64)  # a new episode starts after a done
        self.return_stats.update(returns[valid])

    def normalize(self, rewards: torch.Tensor) -> torch.Tensor:
        """`clip(r / std(G), -clip, clip)` in the rewards' dtype; any shape."""
        std = self.return_stats.std.to(device=rewards.device, dtype=rewards.dtype)
        return (rewards / std).clamp(-self.clip, self.clip)

    @property
    def std(self) -> float:
        return float(self.return_stats.std)

    def state_dict(self) -> dict:
        return {"gamma": self.gamma, "return_stats": self.return_stats.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if float(state["gamma"]) != self.gamma:
            raise ValueError(f"RewardNormalizer: checkpoint gamma {state['gamma']} != this normaliser's {self.gamma}")
        self.return_stats.load_state_dict(state["return_stats"])
