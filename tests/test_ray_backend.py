"""The 'ray' backend: same numbers as 'local', clear failures, no hangs (issue 8).

Ray tests share one local Ray instance with 2 CPUs (module fixture, stopped at the end); every env they build is
closed so the next test's actors find free CPUs.
"""

from __future__ import annotations

import math
import pickle
import re
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from esper_lab.config import ConfigError, preset
from esper_lab.env.backends import close_vector_env, make_vector_env
from esper_lab.env.morpho_env import SUMMARY_KEY
from esper_lab.env.ray_vector import (
    BackendUnavailable,
    RayVectorEnv,
    WorldActorDied,
    WorldActorError,
    WorldActorTimeout,
    connect,
    default_workers,
    split_envs,
)
from esper_lab.env.vector import VectorEnv
from esper_lab.features import batch_obs_to_features
from esper_lab.policy.baselines import RandomLegalPolicy
from esper_lab.rl.trainer import Trainer
from esper_lab.runs import METRIC_KEYS, RunReader, load_checkpoint

TIMING_KEYS = {"time_s", "sps", "rollout_seconds", "env_seconds", "policy_seconds", "update_seconds"}


def _same(a, b) -> bool:
    return a == b or all(isinstance(v, float) and math.isnan(v) for v in (a, b))


# --- without Ray ------------------------------------------------------------------------------------------------


def test_ray_backend_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install -e '\.\[ray\]'") as info:
        make_vector_env(preset("tiny", backend="ray"))
    assert isinstance(info.value, ConfigError)  # the CLI prints ConfigErrors as a one-line error, exit 2


def test_env_groups_and_default_workers():
    assert split_envs(5, 2) == [[0, 1, 2], [3, 4]]
    assert split_envs(4, 4) == [[0], [1], [2], [3]]
    assert default_workers(num_envs=4, cpus_per_actor=1.0, cluster_cpus=2) == 2  # demo on this machine
    assert default_workers(num_envs=4, cpus_per_actor=0.5, cluster_cpus=2) == 4
    assert default_workers(num_envs=2, cpus_per_actor=1.0, cluster_cpus=64) == 2
    assert default_workers(num_envs=3, cpus_per_actor=4.0, cluster_cpus=2) == 1
    assert default_workers(num_envs=3, cpus_per_actor=0.0, cluster_cpus=2) == 3


# --- on a local Ray instance ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    assert connect(None, num_cpus=2)  # a local instance with 2 CPUs (retried if the machine is too busy to start it)
    yield ray
    ray.shutdown()


# Starting an actor costs a fresh process importing torch (several seconds on 2 busy cores), so the module builds
# actors twice: one shared RayVectorEnv, and one trainer run. Half a CPU per actor lets both live at once.


@pytest.fixture(scope="module")
def ray_envs(ray_local):
    """3 tiny worlds over 2 actors ([0, 1] and [2]), seed 7."""
    envs = RayVectorEnv(preset("tiny").world, 3, seed=7, workers=2, cpus_per_actor=0.5)
    yield envs
    envs.close()


@pytest.fixture(scope="module")
def killed_run(ray_local, tmp_path_factory):
    """A `tiny` run on the ray backend whose actor 1 is killed (ray.kill) at the second step of update 3."""
    run_dir = tmp_path_factory.mktemp("ray") / "run"
    trainer = Trainer(preset("tiny", backend="ray", updates=4, ray_cpus_per_actor=0.5), run_dir)
    (run_dir / "baselines.json").write_text("{}")  # skip the baseline evaluation (not under test here)
    step, calls, records = trainer.envs.step, [], []

    def step_then_kill(actions):
        calls.append(1)
        if len(calls) == 2 * trainer.cfg.world.max_epochs + 2:  # update 3, second step: after checkpoint 2
            ray_local.kill(trainer.envs.actors[1], no_restart=True)
        return step(actions)

    trainer.envs.step = step_then_kill
    start, error = time.monotonic(), None
    try:
        trainer.run(progress=records.append)
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        error = exc
    finally:
        close_vector_env(trainer.envs)
    return SimpleNamespace(records=records, error=error, seconds=time.monotonic() - start, run_dir=run_dir)


def test_env_steps_identical_to_local(ray_envs):
    """Reports, features, masks, rewards, flags and infos equal the in-process VectorEnv's for a whole episode from
    the seed stream; everything crossing the wire pickles."""
    world = preset("tiny").world
    local, remote = VectorEnv(world, 3, seed=7), ray_envs
    assert remote.groups == [[0, 1], [2]]
    assert [w["threads"] for w in remote.where] == [1, 1]
    reports_l, reports_r = local.reset(), remote.reset()  # no explicit seeds: the env's own seed stream
    assert remote.episode_seeds == local.episode_seeds
    policy = RandomLegalPolicy(seed=3)
    policy.reset(3)
    for _ in range(world.max_epochs):
        assert reports_r == reports_l == remote.reports()
        for a, b in zip(batch_obs_to_features(reports_l), batch_obs_to_features(reports_r)):
            assert torch.equal(a, b)
        masks = local.masks()
        assert all(torch.equal(masks[h], m) for h, m in remote.masks().items())
        actions = policy.act(reports_l, masks)  # [3, 8]
        reports_l, *rest_l = local.step(actions)
        reports_r, *rest_r = remote.step(actions)
        for a, b in zip(rest_l[:3], rest_r[:3]):  # rewards, terminated, truncated
            assert torch.equal(a, b)
        assert rest_l[3] == rest_r[3]  # infos
        wire = (reports_r, rest_r[3])
        assert pickle.loads(pickle.dumps(wire)) == wire
    assert rest_r[2].all()  # truncated at max_epochs
    assert SUMMARY_KEY in rest_r[3][2]


def test_a_worlds_own_error_is_named(ray_envs):
    ray_envs.reset([1, 2, 3])
    for _ in range(preset("tiny").world.max_epochs):
        ray_envs.step(torch.zeros(3, 8, dtype=torch.int64))  # WAIT
    named = r"envs \[0, 1\] \(Ray actor 0 of 2.*env 0: RuntimeError: World.step after"
    with pytest.raises(WorldActorError, match=named):
        ray_envs.step(torch.zeros(3, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="actions must be"):
        ray_envs.step(torch.zeros(2, 8, dtype=torch.int64))


def test_no_hang_a_late_answer_is_a_named_timeout(ray_envs):
    ray_envs.reset([4, 5, 6])
    ray_envs.timeout_s = 0.001  # far less than a host epoch
    try:
        with pytest.raises(WorldActorTimeout, match=r"envs \[0, 1\] \(Ray actor 0 of 2.*did not answer step within"):
            ray_envs.step(torch.zeros(3, 8, dtype=torch.int64))
    finally:
        ray_envs.timeout_s = 300.0


def test_trainer_records_identical_to_local(killed_run, tmp_path):
    """`Trainer(tiny)`: the ray run's first two metrics records equal a local run's (every non-timing key; the
    local run also has a run directory, as snapshots are part of the procedure)."""
    trainer = Trainer(preset("tiny"), tmp_path / "local")
    (tmp_path / "local" / "baselines.json").write_text("{}")
    local = []
    trainer.run(updates=2, progress=local.append)
    assert len(killed_run.records) == 2
    for a, b in zip(local, killed_run.records):
        diff = {k: (a[k], b[k]) for k in METRIC_KEYS if k not in TIMING_KEYS and not _same(a[k], b[k])}
        assert not diff


def test_killed_actor_fails_the_run_with_its_error_and_keeps_the_checkpoint(killed_run):
    assert isinstance(killed_run.error, WorldActorDied)
    assert killed_run.error.envs == [1] and killed_run.error.actor == 1
    assert killed_run.seconds < 120  # nothing hung (the whole 3-update run included)
    reader = RunReader(killed_run.run_dir)
    status = reader.status()
    assert status["state"] == "failed"
    assert re.match(r"WorldActorDied: env 1 \(Ray actor 1 of 2, pid \d+ on \S+\) died during step: ", status["error"])
    assert "ray.kill" in status["error"]  # Ray's own account of the death
    assert status["update"] == 2
    assert len(reader.metrics()) == 2
    ckpt = load_checkpoint(killed_run.run_dir / "checkpoint.pt")  # intact: the update-2 checkpoint
    assert ckpt["update"] == 2
    resumed = Trainer(preset("tiny"), killed_run.run_dir, resume=True)  # and it resumes (here on 'local')
    assert resumed.update_idx == 2
    resumed.run(updates=3)
    assert reader.status()["state"] == "finished"
    assert len(reader.metrics()) == 3


def test_actors_that_can_never_fit_fail_at_once(ray_local):
    start = time.monotonic()
    with pytest.raises(ConfigError, match="2 actors x 2 CPU = 4 CPUs requested, but the Ray cluster has 2"):
        RayVectorEnv(preset("tiny").world, 2, seed=0, workers=2, cpus_per_actor=2.0)
    with pytest.raises(ConfigError, match="workers must be between 1 and num_envs"):
        RayVectorEnv(preset("tiny").world, 2, seed=0, workers=3, cpus_per_actor=0.5)
    assert time.monotonic() - start < 5
