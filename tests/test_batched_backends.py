"""Both out-of-process backends carry batched groups: each 'process' worker and each Ray actor steps its worlds as
one batched computation, with the numbers of the local batched engine (and so of the sequential one), bit for bit:
a world's numbers do not depend on which worlds share its batch (tests/test_batched_engine.py)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from esper_lab.config import preset
from esper_lab.env.batched.engine import BatchedWorlds
from esper_lab.env.process_vector import ProcessVectorEnv, WorkerError
from esper_lab.env.ray_vector import RayVectorEnv, WorldActorError, connect
from esper_lab.env.vector import VectorEnv
from esper_lab.policy.baselines import RandomLegalPolicy

WORLD = dataclasses.replace(preset("tiny").world, engine="batched")  # 8 epochs
SEQUENTIAL = dataclasses.replace(WORLD, engine="sequential")


def _identical_episodes(remote, num_envs: int, seed: int) -> None:
    """A whole random-legal episode from the seed stream: reports, masks, rewards, flags and infos of `remote`
    equal the local batched engine's and the local sequential engine's; what crosses the wire pickles."""
    local, sequential = VectorEnv(WORLD, num_envs, seed=seed), VectorEnv(SEQUENTIAL, num_envs, seed=seed)
    assert isinstance(local.engine, BatchedWorlds)
    reports = [env.reset() for env in (remote, local, sequential)]
    assert remote.episode_seeds == local.episode_seeds == sequential.episode_seeds
    policy = RandomLegalPolicy(seed=3)
    for _ in range(WORLD.max_epochs):
        assert reports[0] == reports[1]
        assert [dataclasses.replace(r, train_loss=0.0) for r in reports[1]] == \
               [dataclasses.replace(r, train_loss=0.0) for r in reports[2]]  # see test_batched_engine.py
        masks = local.masks()
        assert all(torch.equal(masks[h], m) for h, m in remote.masks().items())
        actions = policy.act(reports[1], masks)
        results = [env.step(actions) for env in (remote, local, sequential)]
        for a, b, c in zip(*(r[1:4] for r in results)):  # rewards, terminated, truncated
            assert torch.equal(a, b) and torch.equal(b, c)
        assert results[0][4] == results[1][4] == results[2][4]  # infos
        assert pickle.loads(pickle.dumps(results[0][0])) == results[0][0]
        reports = [r[0] for r in results]
    assert results[0][3].all()


def test_process_workers_step_batched_groups():
    envs = ProcessVectorEnv(WORLD, 5, seed=7, workers=2)
    try:
        assert envs.groups == [[0, 1, 2], [3, 4]]
        _identical_episodes(envs, 5, seed=7)
        with pytest.raises(WorkerError, match=r"envs \[0, 1, 2\] .*env 0: RuntimeError: World.step after the episode"):
            envs.step(torch.zeros(5, 8, dtype=torch.int64))
    finally:
        envs.close()


def test_ray_actors_step_batched_groups():
    ray = pytest.importorskip("ray")
    started = connect(None, num_cpus=2)
    try:
        envs = RayVectorEnv(WORLD, 3, seed=7, workers=2, cpus_per_actor=0.5)
        try:
            assert envs.groups == [[0, 1], [2]]
            _identical_episodes(envs, 3, seed=7)
            with pytest.raises(WorldActorError, match=r"env 0: RuntimeError: World.step after"):
                envs.step(torch.zeros(3, 8, dtype=torch.int64))
        finally:
            envs.close()
    finally:
        if started:
            ray.shutdown()
