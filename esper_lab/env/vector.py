"""VectorEnv: E worlds stepped together in this process, by the engine `cfg.engine` names (env/engines.py).

This is the seam where process or cluster workers plug in: the 'process' and 'ray' backends implement the same
methods (`reset`, `masks`, `step`, `reports`, and the snapshots `get_states` / `set_states`) with the same shapes.
There is no auto-reset: the trainer resets all worlds at the start of each update (one episode per env per update,
each with a fresh host, as in Esper), and stepping a world whose episode has ended raises.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from esper_lab.actions import NUM_HEADS
from esper_lab.config import WorldConfig
from esper_lab.env.engines import make_engine, snapshot_engine
from esper_lab.env.morpho_env import WorldReport, stack_masks


class VectorEnv:
    """`num_envs` worlds; episode seeds come from `seed` unless `reset` is given them explicitly."""

    def __init__(self, cfg: WorldConfig, num_envs: int, seed: int):
        if num_envs < 1:
            raise ValueError(f"VectorEnv needs at least one env, got num_envs={num_envs}")
        self.cfg, self.num_envs = cfg, num_envs
        self.engine = make_engine(cfg, num_envs)  # cfg.engine: 'sequential' or 'batched'
        self.worlds = self.engine.worlds
        self._seeds = np.random.default_rng(seed)
        self.episode_seeds: list[int] = []

    def reset(self, episode_seeds: Sequence[int] | None = None) -> list[WorldReport]:
        """Start a fresh episode in every world (episode `episode_seeds[e]` in world e, or the next seeds of this
        env's stream). Returns the reports of epoch 1."""
        if episode_seeds is None:
            episode_seeds = [int(s) for s in self._seeds.integers(0, 2**62, size=self.num_envs)]
        if len(episode_seeds) != self.num_envs:
            raise ValueError(f"reset: {len(episode_seeds)} episode seeds for {self.num_envs} envs")
        self.episode_seeds = [int(s) for s in episode_seeds]
        return self.engine.reset(self.episode_seeds)

    def reports(self) -> list[WorldReport]:
        """What every world looks like now."""
        return [world.report() for world in self.worlds]

    def masks(self) -> dict[str, torch.Tensor]:
        """Legal-action masks of every world: `{head: bool [E, k]}` in `HEAD_NAMES` order, and the op-conditioned
        slot masks `OP_SLOT_KEY: [E, NUM_OPS, S]`."""
        return stack_masks([world.action_masks() for world in self.worlds])

    def step(
        self, actions: torch.Tensor
    ) -> tuple[list[WorldReport], torch.Tensor, torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
        """`actions [E, 8] int64` (heads in `HEAD_NAMES` order) -> `(reports, rewards float32 [E],
        terminated bool [E] (always False), truncated bool [E], infos)`."""
        actions = torch.as_tensor(actions)
        if actions.shape != (self.num_envs, NUM_HEADS):
            raise ValueError(f"step: actions must be [{self.num_envs}, {NUM_HEADS}], got {list(actions.shape)}")
        rows = actions.to(torch.int64).tolist()
        results = self.engine.step(rows)
        rewards = torch.tensor([r for r, _, _ in results], dtype=torch.float32)  # [E]
        truncated = torch.tensor([t for _, t, _ in results], dtype=torch.bool)  # [E]
        terminated = torch.zeros(self.num_envs, dtype=torch.bool)  # [E]
        infos = [info for _, _, info in results]
        return self.reports(), rewards, terminated, truncated, infos

    def get_states(self) -> list[bytes]:
        """A snapshot of every world (`World.get_state`), in env order; needs `cfg.engine == 'sequential'` and a
        reset first."""
        if not self.episode_seeds:
            raise RuntimeError("VectorEnv.get_states called before reset()")
        return snapshot_engine(self.engine, self.cfg).get_states()

    def set_states(self, states: Sequence[bytes]) -> list[WorldReport]:
        """Replace every world by its snapshot (`states[e]`, from `get_states` of an env with this config) and
        return the worlds' reports; `episode_seeds` become the snapshots' seeds. Raises ValueError, changing nothing,
        for a wrong number of states or a snapshot of another config."""
        if len(states) != self.num_envs:
            raise ValueError(f"set_states: {len(states)} states for {self.num_envs} envs")
        reports = snapshot_engine(self.engine, self.cfg).set_states(states)
        self.episode_seeds = [world.seed for world in self.worlds]
        return reports
