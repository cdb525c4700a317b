"""The critic's ground truth (rl/truth.py): Monte Carlo Q^pi(s, op) from world snapshots, in the trainer and the CLI."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from esper_lab.cli import main
from esper_lab.config import TruthConfig
from esper_lab.policy.normalize import RewardNormalizer
from esper_lab.rl.trainer import Trainer
from esper_lab.rl.truth import GroundTruth, TruthSchedule, calibration, hidden_at, rollout_returns
from esper_lab.runs import METRIC_KEYS, TRUTH_FILE, RunReader
from esper_lab.stats import t_interval
from test_trainer import TIMING_KEYS as TRAINER_TIMING_KEYS, tiny

TIMING_KEYS = TRAINER_TIMING_KEYS | {"truth_seconds"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained for 2 updates (its checkpoint, probe and reward normaliser are the fixed inputs)."""
    run_dir = tmp_path_factory.mktemp("truth") / "run"
    trainer = Trainer(tiny(updates=2), run_dir)
    trainer.run()
    yield trainer, run_dir
    trainer.close()


def measure(trainer, index: int, rollouts: int, seed: int, backend: str = "local") -> dict:
    truth = GroundTruth(trainer.cfg.world, trainer.probe, backend, workers=2 if backend == "process" else None)
    try:
        return truth.measure(trainer.agent, index, rollouts, trainer.reward_norm, trainer.cfg.gamma, seed)
    finally:
        truth.close()


def test_estimate_is_reproducible_with_a_seed_and_varies_without(trained):
    trainer, _ = trained
    a, b, c = (measure(trainer, 0, 4, seed) for seed in (7, 7, 8))
    assert a["target"] == b["target"] and a["raw"] == b["raw"]
    assert a["target"]["mean"] != c["target"]["mean"]
    assert a["ops"] == c["ops"] and len(a["ops"]) >= 2  # the empty world: at least WAIT and GERMINATE


def test_process_workers_give_the_local_numbers(trained):
    trainer, _ = trained
    assert measure(trainer, 1, 3, seed=5, backend="process")["target"] == measure(trainer, 1, 3, seed=5)["target"]


def test_interval_shrinks_as_one_over_sqrt_k(trained):
    """The standard error of the per-op mean at K=16 is about half that at K=4 (the sample std does not trend with
    K); pooled over the ops of two probe states so one lucky std does not decide."""
    trainer, _ = trained
    ratios = []
    for index in (0, 1):
        small, large = measure(trainer, index, 4, seed=11), measure(trainer, index, 16, seed=11)
        for s4, s16 in zip(small["target"]["std"], large["target"]["std"]):
            if s4 and s16:
                ratios.append((s4 / math.sqrt(4)) / (s16 / math.sqrt(16)))
    assert ratios, "every op's returns were constant: nothing to measure"
    assert 1.3 < statistics.median(ratios) < 3.0  # 1/sqrt(K): 2


def test_returns_follow_their_definitions(trained):
    """raw = sum gamma^j r_j; target = sum gamma^j norm(r_j) + gamma^n V_boot. With an identity normaliser (std 1)
    the two differ by gamma^n V_boot alone; with the run's (std s, no clip reached) the reward part is raw / s."""
    trainer, _ = trained
    truth = GroundTruth(trainer.cfg.world, trainer.probe)
    index = 2
    step, ops = trainer.probe.steps[index], truth.legal_ops(index)[:1]
    hidden = hidden_at(trainer.agent, trainer.probe, step)

    def returns(norm):
        return rollout_returns(trainer.agent, truth._env(3), trainer.probe.states[index], hidden, ops, 3, norm,
                               trainer.cfg.gamma, seed=3)

    identity = RewardNormalizer(gamma=trainer.cfg.gamma)
    run, plain = returns(trainer.reward_norm), returns(identity)
    truth.close()
    assert run.raw.shape == (1, 3) and torch.equal(run.raw, plain.raw)  # the normaliser never changes the actions
    boot = plain.target - plain.raw  # gamma^n * V_boot
    s = trainer.reward_norm.std
    assert s != 1.0 and float((run.raw / s).abs().max()) < trainer.reward_norm.clip
    torch.testing.assert_close(run.target - boot, run.raw / s, rtol=1e-5, atol=1e-6)


def test_calibration_counts_pairs_and_separated_pairs():
    truth = [t_interval(v) for v in ([1.0, 1.1, 0.9], [5.0, 5.2, 4.8], [5.1, 4.9, 5.3])]  # means 1, 5, 5.1
    good = calibration([0.0, 4.0, 6.0], truth)
    assert good["pair_agreement"] == 1.0 and good["best_agrees"]
    assert good["separated_pairs"] == 2 and good["separated_agreement"] == 1.0  # ops 1 and 2 overlap
    assert good["mae"] == pytest.approx((1.0 + 1.0 + 0.9) / 3)
    bad = calibration([3.0, 2.0, 1.0], truth)  # every pair reversed
    assert bad["pair_agreement"] == 0.0 and bad["separated_agreement"] == 0.0 and not bad["best_agrees"]


class FakeTruth:
    """Stands in for GroundTruth: each measurement 'costs' `seconds`, 300 world steps."""

    def __init__(self, seconds: float):
        self.seconds, self.measured = seconds, []
        self.probe = type("P", (), {"steps": list(range(6))})()

    def world_steps(self, index: int, rollouts: int) -> int:
        return 300

    def measure(self, agent, index, rollouts, reward_norm, gamma, seed):
        self.measured.append(index)
        return {"probe": index, "seconds": self.seconds}


def test_schedule_keeps_within_its_budget_and_takes_states_in_turn():
    import time

    fake = FakeTruth(seconds=3.0)
    schedule = TruthSchedule(TruthConfig(every=5, budget=0.1, rollouts=2), fake, started=time.perf_counter() - 100)
    schedule.seconds_per_step = 0.01  # 3 s per state: 10 s of credit buys 3 of them
    assert not schedule.due(4) and schedule.due(5)
    records = schedule.run(None, 5, None, 0.99)
    assert [r["probe"] for r in records] == [0, 1, 2] and schedule.spent == 9.0
    assert schedule.run(None, 10, None, 0.99) == []  # 1 s left: the next state does not fit
    schedule.started -= 30  # 3 more seconds of credit
    assert [r["probe"] for r in schedule.run(None, 15, None, 0.99)] == [3]


def test_trainer_writes_truth_without_changing_training(tmp_path):
    """The truth samples on its own RNG stream and worlds: the training numbers are those of a run without it."""
    results = []
    for name, truth in (("on", {"truth.every": 1, "truth.budget": 1.0, "truth.rollouts": 2}), ("off", {})):
        trainer = Trainer(tiny(updates=2, **truth), tmp_path / name)  # one after the other: the global RNG
        trainer.started -= 1000  # as if it had trained for 1000 s: the budget (tested above) lets every state in
        try:
            results.append(trainer.run())
        finally:
            trainer.close()
    a, b = results
    keys = [k for k in METRIC_KEYS if k not in TIMING_KEYS]
    assert all(x[k] == y[k] or (x[k] != x[k] and y[k] != y[k]) for x, y in zip(a, b) for k in keys)
    records = RunReader(tmp_path / "on").truth()
    assert records and {r["update"] for r in records} <= {1, 2}
    assert a[-1]["truth_seconds"] > 0 or a[0]["truth_seconds"] > 0
    assert all(len(r["critic"]) == len(r["ops"]) == len(r["target"]["mean"]) for r in records)
    assert not (tmp_path / "off" / TRUTH_FILE).exists() or RunReader(tmp_path / "off").truth() == []


def test_cli_probe_appends_to_the_run_and_refuses_a_bad_state(trained, capsys):
    _, run_dir = trained
    ckpt = str(run_dir / "checkpoint.pt")
    before = len(RunReader(run_dir).truth())
    assert main(["probe", "--checkpoint", ckpt, "--states", "0", "--rollouts", "2", "--backend", "local"]) == 0
    out = capsys.readouterr().out
    assert "Monte Carlo" not in out and "critic Q" in out and "best op agrees" in out
    records = RunReader(run_dir).truth()
    assert len(records) == before + 1 and records[-1]["source"] == "esper-lab probe"
    assert main(["probe", "--checkpoint", ckpt, "--states", "9", "--rollouts", "2", "--backend", "local"]) == 2
    assert "probe states [9] do not exist" in capsys.readouterr().err
    assert main(["probe", "--checkpoint", ckpt, "--states", "0", "--rollouts", "2", "--backend", "local",
                 "--no-write"]) == 0
    assert len(RunReader(run_dir).truth()) == before + 1
