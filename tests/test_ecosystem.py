"""MorphoEnv works with the ecosystem's tools as they are, with no adapter: gymnasium's and SB3's env checkers,
`gymnasium.vector.SyncVectorEnv`, and sb3-contrib's MaskablePPO and RecurrentPPO (issue 14, point 6).

`info["episode"]` is the episode statistics `{"r", "l", "t"}` (gymnasium's `RecordEpisodeStatistics`, SB3's
logger), `info[SUMMARY_KEY]` the world's own summary, and `action_masks()` one flat bool array of `sum(nvec)`.
"""

from __future__ import annotations

import dataclasses
import warnings
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from esper_lab.actions import HEAD_NAMES
from esper_lab.config import preset
from esper_lab.env.morpho_env import SUMMARY_KEY, MorphoEnv

WORLD = dataclasses.replace(preset("tiny").world, max_epochs=8)
TINY_PPO = dict(n_steps=64, batch_size=64, n_epochs=1, device="cpu", seed=0, verbose=0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_gymnasium_and_sb3_env_checkers_pass_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(MorphoEnv(WORLD, seed=0), skip_render_check=True)
        pytest.importorskip("stable_baselines3")
        from stable_baselines3.common.env_checker import check_env as sb3_check_env

        sb3_check_env(MorphoEnv(WORLD, seed=0))


def test_action_masks_is_the_flat_per_head_mask_in_head_order():
    env = MorphoEnv(WORLD, seed=0)
    env.reset()
    flat, by_head = env.action_masks(), env.action_masks_by_head()
    assert flat.dtype == np.bool_ and flat.shape == (int(env.action_space.nvec.sum()),)
    assert np.array_equal(flat, np.concatenate([by_head[h].numpy() for h in HEAD_NAMES]))


def test_sync_vector_env_plays_one_episode_with_episode_statistics():
    envs = gym.vector.SyncVectorEnv([partial(MorphoEnv, WORLD) for _ in range(2)])
    envs.action_space.seed(0)
    envs.reset(seed=[1, 2])
    returns = np.zeros(2)
    for _ in range(WORLD.max_epochs):
        obs, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())
        returns += rewards
    assert truncated.all() and not terminated.any() and infos["_episode"].all()
    assert np.array_equal(infos["episode"]["r"], returns)  # exactly the sum of the step rewards
    assert infos["episode"]["l"].tolist() == [WORLD.max_epochs] * 2 and (infos["episode"]["t"] > 0).all()
    assert infos[SUMMARY_KEY]["epochs"].tolist() == [WORLD.max_epochs] * 2
    envs.close()


def episode_recorder():
    """An SB3 callback that records `(info["episode"], summed rewards, steps)` at every episode end and checks that
    each action it sees is allowed by the flat mask the algorithm read (when it read one)."""
    from stable_baselines3.common.callbacks import BaseCallback

    offsets = np.concatenate([[0], np.cumsum(MorphoEnv(WORLD).action_space.nvec)[:-1]])

    class Recorder(BaseCallback):
        def _on_training_start(self) -> None:
            n = self.training_env.num_envs
            self.returns, self.lengths, self.episodes = np.zeros(n), np.zeros(n, dtype=int), []

        def _on_step(self) -> bool:
            masks = self.locals.get("action_masks")
            if masks is not None:  # [E, sum(nvec)]
                assert np.take_along_axis(masks, offsets + self.locals["actions"], axis=1).all()
            self.returns += self.locals["rewards"]
            self.lengths += 1
            for e in np.flatnonzero(self.locals["dones"]):
                self.episodes.append((self.locals["infos"][e]["episode"], self.returns[e], self.lengths[e]))
                self.returns[e] = self.lengths[e] = 0
            return True

    return Recorder()


@pytest.mark.parametrize("algorithm, policy", [("MaskablePPO", "MultiInputPolicy"),
                                               ("RecurrentPPO", "MultiInputLstmPolicy")])
def test_sb3_contrib_trains_on_morpho_env_with_no_adapter(algorithm, policy):
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from stable_baselines3.common.vec_env import DummyVecEnv

    envs = DummyVecEnv([partial(MorphoEnv, WORLD, seed=i) for i in range(2)])
    kwargs = dict(policy_kwargs=dict(lstm_hidden_size=16)) if algorithm == "RecurrentPPO" else {}
    model = getattr(sb3_contrib, algorithm)(policy, envs, **TINY_PPO, **kwargs)
    recorder = episode_recorder()
    model.learn(total_timesteps=256, callback=recorder)
    assert model.num_timesteps == 256 and len(recorder.episodes) == 256 // WORLD.max_epochs
    for stats, summed, steps in recorder.episodes:
        assert isinstance(stats["r"], float) and isinstance(stats["l"], int) and isinstance(stats["t"], float)
        assert stats["r"] == pytest.approx(summed, abs=1e-5)  # SB3 hands the callback float32 rewards
        assert stats["l"] == steps == WORLD.max_epochs
    assert len(model.ep_info_buffer) == len(recorder.episodes)  # what SB3's logger averages
