"""The 'process' backend (issue 7): worker processes on this machine, the same numbers as 'local', named failures."""

from __future__ import annotations

import math
import os
import signal
import time

import pytest
import torch

from esper_lab.config import ConfigError, preset
from esper_lab.env.backends import close_vector_env, make_vector_env
from esper_lab.env.morpho_env import SUMMARY_KEY
from esper_lab.env.process_vector import ProcessVectorEnv, WorkerDied, WorkerError, default_workers
from esper_lab.env.vector import VectorEnv
from esper_lab.features import batch_obs_to_features
from esper_lab.policy.baselines import RandomLegalPolicy
from esper_lab.rl.trainer import Trainer
from esper_lab.runs import METRIC_KEYS

TIMING_KEYS = {"time_s", "sps", "rollout_seconds", "env_seconds", "policy_seconds", "update_seconds"}


@pytest.fixture
def envs():
    """3 tiny worlds over 2 worker processes ([0, 1] and [2]), seed 7."""
    envs = ProcessVectorEnv(preset("tiny").world, 3, seed=7, workers=2)
    yield envs
    envs.close()


def test_env_steps_identical_to_local(envs):
    world = preset("tiny").world
    local = VectorEnv(world, 3, seed=7)
    assert envs.groups == [[0, 1], [2]] and len(set(envs.pids)) == 2 and os.getpid() not in envs.pids
    reports_l, reports_p = local.reset(), envs.reset()
    assert envs.episode_seeds == local.episode_seeds
    policy = RandomLegalPolicy(seed=3)
    policy.reset(3)
    for _ in range(world.max_epochs):
        assert reports_p == reports_l == envs.reports()
        for a, b in zip(batch_obs_to_features(reports_l), batch_obs_to_features(reports_p)):
            assert torch.equal(a, b)
        masks = local.masks()
        assert all(torch.equal(masks[h], m) for h, m in envs.masks().items())
        actions = policy.act(reports_l, masks)  # [3, 8]
        reports_l, *rest_l = local.step(actions)
        reports_p, *rest_p = envs.step(actions)
        for a, b in zip(rest_l[:3], rest_p[:3]):  # rewards, terminated, truncated
            assert torch.equal(a, b)
        assert rest_l[3] == rest_p[3]  # infos
    assert rest_p[2].all() and SUMMARY_KEY in rest_p[3][2]


def test_a_worlds_own_error_is_named_and_bad_input_is_refused(envs):
    envs.reset([1, 2, 3])
    for _ in range(preset("tiny").world.max_epochs):
        envs.step(torch.zeros(3, 8, dtype=torch.int64))  # WAIT
    with pytest.raises(WorkerError, match=r"envs \[0, 1\] \(worker process 0 of 2.*env 0: RuntimeError: World.step"):
        envs.step(torch.zeros(3, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="actions must be"):
        envs.step(torch.zeros(2, 8, dtype=torch.int64))
    with pytest.raises(ConfigError, match="workers must be between 1 and num_envs"):
        ProcessVectorEnv(preset("tiny").world, 2, seed=0, workers=3)


def test_a_dead_worker_is_named_not_waited_for(envs):
    envs.reset([1, 2, 3])
    os.kill(envs.pids[1], signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(WorkerDied, match=r"env 2 \(worker process 1 of 2"):
        envs.step(torch.zeros(3, 8, dtype=torch.int64))
    assert time.monotonic() - start < 10
    envs.close()
    envs.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        envs.step(torch.zeros(3, 8, dtype=torch.int64))


def test_trainer_records_identical_to_local(tmp_path):
    """Two `tiny` updates on 'process' give the metrics of 'local' (every non-timing key); the workers stop on
    close."""
    records = {}
    for backend in ("local", "process"):
        trainer = Trainer(preset("tiny", backend=backend), tmp_path / backend)
        (tmp_path / backend / "baselines.json").write_text("{}")  # not under test
        records[backend] = []
        trainer.run(updates=2, progress=records[backend].append)
        procs = list(getattr(trainer.envs, "procs", []))
        close_vector_env(trainer.envs)
        assert not any(p.is_alive() for p in procs)
    for a, b in zip(records["local"], records["process"]):
        diff = {k: (a[k], b[k]) for k in METRIC_KEYS if k not in TIMING_KEYS
                and not (a[k] == b[k] or all(isinstance(v, float) and math.isnan(v) for v in (a[k], b[k])))}
        assert not diff


def test_demo_defaults_to_one_worker_per_core():
    assert preset("demo").backend == "process" and preset("tiny").backend == "local"
    assert default_workers(4) == min(4, os.cpu_count() or 1)
    assert default_workers(1) == 1
    envs = make_vector_env(preset("tiny", backend="process", num_envs=2))
    try:
        assert isinstance(envs, ProcessVectorEnv) and len(envs.groups) == min(2, os.cpu_count() or 1)
    finally:
        close_vector_env(envs)


def test_evaluation_does_not_depend_on_workers():
    from esper_lab.evaluate import evaluate_policies

    world = preset("tiny").world
    one = evaluate_policies(["random", "heuristic"], world, episodes=3, seed=11, workers=1)
    two = evaluate_policies(["random", "heuristic"], world, episodes=3, seed=11, workers=2)
    assert one == two and one["random"]["episodes"] == 3


def test_workers_exit_when_the_trainer_is_killed(tmp_path):
    """SIGKILL leaves no cleanup to the trainer: its workers notice they are orphans and exit on their own."""
    import subprocess
    import sys

    script = ("import os, signal\n"
              "from esper_lab.config import preset\n"
              "from esper_lab.env.process_vector import ProcessVectorEnv\n"
              "envs = ProcessVectorEnv(preset('tiny').world, 2, seed=0, workers=2)\n"
              "print(*envs.pids, flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2 and out.returncode == -signal.SIGKILL

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 15
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)
