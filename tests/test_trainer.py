"""The trainer end to end: rollout -> bootstrap -> update, run directories, checkpoints, resume, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from esper_lab.actions import HEAD_INDEX, HEAD_NAMES
from esper_lab.config import preset
from esper_lab.env.reward import REWARD_TERMS
from esper_lab.features import OBS_DIM, batch_obs_to_features
from esper_lab.rl.trainer import Trainer, episode_seeds
from esper_lab.runs import METRIC_KEYS, REWARD_TERM_PREFIX, CheckpointError, RunDirError, RunReader, load_checkpoint

TIMING_KEYS = {"time_s", "sps", "rollout_seconds", "env_seconds", "policy_seconds", "update_seconds"}


def tiny(**overrides):
    return preset("tiny", **{"world.max_epochs": 5, **overrides})


def _missing(value) -> bool:
    """NaN in memory is null in metrics.jsonl."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def same_numbers(a: dict, b: dict) -> bool:
    keys = [k for k in METRIC_KEYS if k not in TIMING_KEYS]
    return all(a[k] == b[k] or (_missing(a[k]) and _missing(b[k])) for k in keys)


def test_rollout_replay_reproduces_stored_log_probs_and_values():
    """Re-evaluating the stored rollout (normalised obs, stored indices, stored ops, initial hidden) gives ratio 1."""
    trainer = Trainer(tiny())
    trainer.agent.obs_norm.update(torch.randn(64, OBS_DIM))  # non-trivial normaliser, frozen during the rollout
    trainer.collect()
    batch = trainer.buffer.batched()
    out = trainer.agent.evaluate_actions(batch.obs, batch.blueprint_indices, batch.actions, batch.masks,
                                         batch.initial_hidden)
    for head in HEAD_NAMES:
        torch.testing.assert_close(out.log_probs[head], batch.log_probs[..., HEAD_INDEX[head]], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.value, batch.values, atol=1e-5, rtol=0)
    metrics = trainer.updater.update(trainer.buffer)
    assert metrics["ratio_first"] < 1e-5


def test_buffer_holds_the_normalised_obs_the_policy_saw():
    trainer = Trainer(tiny())
    trainer.agent.obs_norm.update(torch.randn(64, OBS_DIM) * 3 + 1)
    trainer.collect()
    first = trainer.buffer.batched().obs[:, 0]  # [E, D]
    reports = trainer.envs.reset(episode_seeds(trainer.cfg.seed, 0, trainer.cfg.num_envs))  # the same worlds
    raw, _ = batch_obs_to_features(reports)
    torch.testing.assert_close(first, trainer.agent.obs_norm.normalize(raw))
    assert not torch.allclose(first, raw)


def test_bootstrap_uses_post_action_indices_and_carried_hidden(monkeypatch):
    trainer = Trainer(tiny())
    calls = []
    original = trainer.agent.get_action

    def spy(obs, bp_idx, masks=None, hidden=None, deterministic=False):
        result = original(obs, bp_idx, masks, hidden, deterministic=deterministic)
        calls.append({"bp": bp_idx.clone(), "hidden": tuple(h.clone() for h in hidden),
                      "deterministic": deterministic, "out_hidden": tuple(h.clone() for h in result.hidden),
                      "value": result.value.clone()})
        return result

    monkeypatch.setattr(trainer.agent, "get_action", spy)
    trainer.collect()
    T = trainer.cfg.world.max_epochs
    assert len(calls) == T + 1 and calls[-1]["deterministic"] and not any(c["deterministic"] for c in calls[:-1])
    boot, last = calls[-1], calls[-2]
    for h_boot, h_carried in zip(boot["hidden"], last["out_hidden"]):
        torch.testing.assert_close(h_boot, h_carried)  # carried, not reset before the bootstrap
    assert boot["hidden"][0].abs().sum() > 0
    _, post_bp = batch_obs_to_features(trainer.envs.reports())
    assert torch.equal(boot["bp"], post_bp)  # the POST-action blueprint indices
    assert not torch.equal(boot["bp"], last["bp"]) or trainer.buffer.batched().actions[:, -1, HEAD_INDEX["op"]].eq(0).all()
    batch = trainer.buffer.batched()
    torch.testing.assert_close(batch.bootstrap_values[:, -1], boot["value"])


def test_same_seed_same_numbers_and_different_seed_differs():
    a = Trainer(tiny()).train_step()
    b = Trainer(tiny()).train_step()
    c = Trainer(tiny(seed=1)).train_step()
    assert same_numbers(a, b)
    assert not same_numbers(a, c)


def test_resume_continues_with_identical_numbers(tmp_path):
    straight = Trainer(tiny(updates=3), tmp_path / "straight").run()
    Trainer(tiny(updates=2), tmp_path / "resumed").run()
    cfg = tiny(updates=3)
    resumed = Trainer(cfg, tmp_path / "resumed", resume=True)
    assert resumed.update_idx == 2
    resumed.run(3)
    rows = RunReader(tmp_path / "resumed").metrics()
    assert [r["update"] for r in rows] == [1, 2, 3]
    for r, s in zip(rows, straight):
        assert same_numbers(r, s)


def test_run_directory_has_every_file_and_metric_key(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny(updates=2), run).run()
    reader = RunReader(run)
    assert reader.status()["state"] == "finished"
    rows = reader.metrics()
    keys = set(METRIC_KEYS) | {f"{REWARD_TERM_PREFIX}{name}" for name in REWARD_TERMS}  # and the reward terms
    assert len(rows) == 2 and all(set(r) == keys for r in rows)
    assert reader.snapshot_updates() == [1, 2]
    snap = reader.latest_snapshot()
    assert torch.tensor(snap["embedding"]).shape == (14, 4)
    assert torch.tensor(snap["probe_op_values"]).shape[1] == 6
    assert set(json.loads((run / "baselines.json").read_text())) == {"heuristic", "random", "wait"}
    assert any(e["kind"] == "transition" for e in reader.events())
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["update"] == 2


def test_refuses_to_overwrite_a_run_and_resume_needs_one(tmp_path):
    Trainer(tiny(updates=1), tmp_path / "run").run()
    with pytest.raises(RunDirError, match="already holds a run"):
        Trainer(tiny(updates=1), tmp_path / "run")
    with pytest.raises(RunDirError, match="not a run directory"):
        Trainer(tiny(), tmp_path / "missing", resume=True)


def test_corrupt_and_foreign_checkpoints_raise_clear_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or foreign"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="schema"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_cli_train_tiny_end_to_end(tmp_path):
    run = tmp_path / "cli-run"
    proc = subprocess.run(
        [sys.executable, "-m", "esper_lab.cli", "train", "--preset", "tiny", "--run-dir", str(run), "--updates", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2/2" in proc.stderr and "finished" in proc.stderr
    for name in ("config.json", "status.json", "metrics.jsonl", "events.jsonl", "checkpoint.pt", "baselines.json"):
        assert (run / name).is_file(), name
    assert RunReader(run).snapshot_updates()
    proc = subprocess.run(
        [sys.executable, "-m", "esper_lab.cli", "evaluate", "--checkpoint", str(run / "checkpoint.pt"),
         "--policy", "wait", "--episodes", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "trained" in proc.stdout and "wait" in proc.stdout


def test_cli_reports_bad_input_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "esper_lab.cli", "train", "--resume", "--run-dir",
                           str(tmp_path / "nothing")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no run directory" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.pt"
    bad.write_text("garbage")
    proc = subprocess.run([sys.executable, "-m", "esper_lab.cli", "evaluate", "--checkpoint", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "corrupt or foreign" in proc.stderr and "Traceback" not in proc.stderr


def test_writing_a_run_directory_does_not_change_the_numbers(tmp_path):
    """Snapshots sample on probe states; that draw must stay out of the training RNG stream."""
    with_dir = Trainer(tiny(updates=2), tmp_path / "run").run()
    without = Trainer(tiny(updates=2)).run()
    assert all(same_numbers(a, b) for a, b in zip(with_dir, without))


def test_a_stop_signal_whose_exception_was_swallowed_still_stops_the_loop(tmp_path, monkeypatch):
    """SIGTERM's exception raised where Python discards it (here: caught during the baselines) stops the run at the
    next update boundary, as stopped, with no update trained."""
    import signal

    from esper_lab.rl import trainer as trainer_module

    def baselines_during_which_the_signal_is_lost(self):
        try:
            trainer_module._raise_stop(signal.SIGTERM, None)
        except trainer_module.StopRequested:
            pass

    monkeypatch.setattr(Trainer, "_write_baselines", baselines_during_which_the_signal_is_lost)
    trainer = Trainer(tiny(updates=2), tmp_path / "run")
    try:
        assert trainer.run() == []
    finally:
        trainer.close()
    assert RunReader(tmp_path / "run").status()["state"] == "stopped"
    assert trainer.update_idx == 0
