"""`esper-lab bench env | policy | train`: what each benchmark reports, the synthetic rollout, the one timing helper.

Timings are only checked to be finite and positive (they depend on the machine); `bench compare` is in
test_compare.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from esper_lab.bench import timing
from esper_lab.bench.env import bench_env
from esper_lab.bench.policy import bench_policy
from esper_lab.bench.synthetic import synthetic_update, world_masks
from esper_lab.config import PPOConfig, WorldConfig, preset


def positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


# --- bench env -------------------------------------------------------------------------------------------------------


def test_bench_env_reports_the_split():
    result = bench_env(WorldConfig(max_epochs=4), steps=3, seed=0)
    assert {"train_ms", "validate_ms", "features_ms", "total_ms"} <= set(result)
    assert result["total_ms"] >= result["train_ms"] > 0


# --- bench policy ----------------------------------------------------------------------------------------------------


def test_bench_policy_smoke():
    result = bench_policy("tiny", 1, env_counts=(2, 3), steps=3, repeats=1)
    assert set(result["get_action_ms"]) == {2, 3}
    assert all(ms > 0 for ms in result["get_action_ms"].values())
    assert result["update_ms"] > 0 and result["update_shape"] == [2, 8]
    assert result["threads"] == 1 and result["params"] > 0


def test_bench_policy_times_the_real_update_at_the_tiny_sizes():
    cfg = preset("tiny")
    result = bench_policy("tiny", 1, env_counts=(4,), steps=3, repeats=2)
    assert result["preset"] == "tiny"
    assert (result["num_envs"], result["episode_length"]) == (cfg.num_envs, cfg.world.max_epochs) == (2, 8)
    assert (result["feature_dim"], result["lstm_hidden_dim"], result["critic"]) == (
        cfg.policy.feature_dim, cfg.policy.lstm_hidden_dim, cfg.policy.critic)
    assert (result["ppo_epochs"], result["ppo_minibatches"]) == (cfg.ppo.epochs, cfg.ppo.minibatches)
    assert result["update_shape"] == [cfg.num_envs, cfg.world.max_epochs]
    assert all(positive(x) for x in (result["update_ms"], result["get_action_ms"][4]))
    assert math.isfinite(result["update_iqr_ms"]) and result["update_iqr_ms"] >= 0
    # The real PPOUpdater ran: every optimizer step of every epoch (no KL stop), from exact stored log-probs.
    assert result["optimizer_steps"] == cfg.ppo.epochs * cfg.ppo.minibatches
    assert result["ratio_first"] < 1e-4


def test_bench_policy_cli_defaults_to_phase4_and_takes_a_preset(monkeypatch, capsys):
    from esper_lab import cli

    calls, threads = [], torch.get_num_threads()
    monkeypatch.setattr("esper_lab.bench.policy.bench_policy", lambda name, threads: calls.append(name) or {})
    try:
        assert cli.main(["bench", "policy", "--threads", "1"]) == 0
        assert cli.main(["bench", "policy", "--preset", "tiny", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)  # cmd_bench sets it for the process
    assert calls == ["phase4", "tiny"]
    assert ["preset", "tiny"] in [line.split() for line in capsys.readouterr().out.splitlines()]


def test_synthetic_rollout_takes_legal_actions_and_stores_exact_log_probs():
    from esper_lab.actions import unpack_heads
    from esper_lab.agent import Agent
    from esper_lab.config import PolicyConfig
    from esper_lab.features import OBS_DIM

    torch.manual_seed(0)
    agent = Agent.from_config(PolicyConfig(feature_dim=16, lstm_hidden_dim=16))
    masks = world_masks(3)  # {head: [3, k]}
    assert not torch.equal(masks["op"][0], masks["op"][1])  # different worlds, different legal ops
    batch, update = synthetic_update(agent, PPOConfig(epochs=1, minibatches=1, target_kl=None), masks, 5,
                                     truncate=True)
    assert tuple(batch.obs.shape) == (3, 5, OBS_DIM)
    actions = unpack_heads(batch.actions)  # {head: [E, T]}
    for head, mask in batch.masks.items():  # [E, T, k]
        assert mask.gather(-1, actions[head][..., None]).all(), head
    assert batch.truncated[:, -1].all() and not batch.truncated[:, :-1].any()
    assert update()["ratio_first"] < 1e-4


def test_bench_train_measures_a_config_and_the_sequential_reference_each_in_a_fresh_process():
    from esper_lab.bench.train import REFERENCE, back_to_back
    from esper_lab.config import preset, with_overrides

    cfg = preset("tiny", **{"world.max_epochs": 2, "policy.lstm_hidden_dim": 16, "policy.feature_dim": 16,
                            "num_envs": 2, "torch_threads": 1})
    result = back_to_back(cfg, with_overrides(cfg, **REFERENCE), updates=1, rounds=1)
    assert (result["measured"]["num_envs"], result["reference"]["num_envs"]) == (2, 4)
    assert result["reference"]["engine"] == "sequential"
    assert result["reference"]["steps_per_update"] == 4 * 2
    assert result["sps_ratio"] == pytest.approx(result["measured"]["sps"] / result["reference"]["sps"])
    for side in ("measured", "reference"):
        fractions = sum(result[side][k] for k in ("env_fraction", "policy_fraction", "update_fraction",
                                                  "other_fraction"))
        assert fractions == pytest.approx(1.0)
    assert {p["side"] for p in result["processes"]} == {"measured", "reference"}
    assert len({p["pid"] for p in result["processes"]}) == 2  # one fresh process each


# --- one timing helper ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module, name", [
    ("esper_lab.bench.env", "summarize"),
    ("esper_lab.bench.train", "summarize"),
    ("esper_lab.bench.policy", "measure"),
    ("esper_lab.bench.compare.inference", "measure"),
    ("esper_lab.bench.compare.update", "measure"),
    ("esper_lab.bench.compare.same_world", "quiet"),
    ("esper_lab.bench.compare.report", "Progress"),
])
def test_every_benchmark_times_through_bench_timing(module, name):
    assert getattr(importlib.import_module(module), name) is getattr(timing, name)


def test_the_old_timing_modules_and_median_helpers_are_gone():
    for old in ("esper_lab.compare", "esper_lab.env.timing", "esper_lab.policy.timing", "esper_lab.rl.timing"):
        assert importlib.util.find_spec(old) is None, old
    bench_dir = Path(timing.__file__).parent
    for path in set(bench_dir.rglob("*.py")) - {Path(timing.__file__)}:  # bench/timing.py: the one median
        text = path.read_text()
        assert "statistics.median" not in text and "def _median" not in text, path
    samples = [3.0, 1.0, 2.0, 10.0]
    assert timing.summarize(samples)["median"] == 2.5 and timing.summarize([4.0])["iqr"] == 0.0
