"""`esper-lab bench compare`: what each part measures and counts, the SB3 adapters, the verdicts and the CLI.

Timings are not asserted (they depend on the machine); the deterministic facts are: LSTM call counts, buffer layouts,
exact stored log-probs, the matched hyperparameters, the budget rule, and the PASS / MISS logic.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from esper_lab.actions import HEAD_NAMES, head_sizes
from esper_lab.cli import build_parser
from esper_lab.bench.compare import report
from esper_lab.bench.timing import summarize
from esper_lab.config import ConfigError, preset

SMALL_H = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def sb3():
    return pytest.importorskip("sb3_contrib")


# --- part B: LSTM calls and our buffer layout -----------------------------------------------------------------------


def test_our_update_makes_one_lstm_call_per_minibatch_at_every_length_while_sb3_loops_on_short_episodes():
    sb3()
    from esper_lab.bench.compare.update import UpdateBenchConfig, bench_ours, bench_sb3

    cfg = UpdateBenchConfig(lstm_hidden_dim=SMALL_H, repeats=1)
    for L in cfg.episode_lengths:
        ours = bench_ours(L, cfg)
        assert ours["lstm_calls"] == cfg.epochs * cfg.minibatches == 16, L
        assert ours["padded_samples"] == cfg.epochs * cfg.samples, L  # no padding: 4 x 1,024
        assert ours["rows"] * ours["steps"] == cfg.samples
    short = bench_sb3(8, cfg)
    assert short["starts_in_buffer"] > 0
    assert short["lstm_calls"] > 16  # episode starts in every minibatch: SB3's per-step loop
    assert short["padded_samples"] >= cfg.epochs * cfg.samples
    for timing in (ours["ms_per_1k_epoch"], short["ms_per_1k_epoch"]):
        assert timing["median"] > 0 and len(timing["samples"]) == 1


@pytest.mark.parametrize("L, rows, steps, chunked", [(1024, 8, 128, True), (32, 32, 32, False), (8, 128, 8, False)])
def test_our_buffer_has_1024_samples_and_dones_only_where_episodes_end(L, rows, steps, chunked):
    from esper_lab.bench.compare.update import UpdateBenchConfig, our_layout, our_update
    from esper_lab.agent import Agent
    from esper_lab.config import PolicyConfig

    assert our_layout(L) == (rows, steps, chunked)
    torch.manual_seed(0)
    agent = Agent.from_config(PolicyConfig(feature_dim=32, lstm_hidden_dim=SMALL_H))
    batch, update = our_update(agent, L, UpdateBenchConfig(lstm_hidden_dim=SMALL_H, epochs=1))
    assert (batch.num_envs, batch.num_steps) == (rows, steps)
    assert int(batch.valid.sum()) == 1024
    assert not batch.dones[:, :-1].any() and batch.dones[:, -1].all()  # one episode end per row, at its last step
    assert bool(batch.truncated[:, -1].all()) is chunked and not batch.truncated[:, :-1].any()
    assert bool((batch.bootstrap_values[:, -1] != 0).all()) is chunked and not batch.bootstrap_values[:, :-1].any()
    assert bool(batch.initial_hidden[0].abs().sum() > 0) is chunked  # a chunk starts mid-episode
    # The stored log-probs are exact: re-running each row from its stored initial hidden state gives ratio 1.
    metrics = update()  # PPOConfig(epochs=1, minibatches=4, target_kl=None)
    assert metrics["ratio_first"] < 1e-4 and metrics["optimizer_steps"] == 4


def test_our_layout_rejects_lengths_that_do_not_tile_the_rollout():
    from esper_lab.bench.compare.update import our_layout

    with pytest.raises(ConfigError, match="must divide"):
        our_layout(24)


def test_lstm_counter_sums_time_times_batch_and_unhooks():
    from esper_lab.bench.compare.update import count_lstm_calls

    net = torch.nn.Sequential(torch.nn.LSTM(4, 8, batch_first=True))
    lstm = net[0]
    with count_lstm_calls(net, lstm) as counts:  # the same LSTM reached twice is hooked once
        lstm(torch.zeros(3, 5, 4))  # [N=3, T=5, F]
        lstm(torch.zeros(2, 1, 4))
    lstm(torch.zeros(3, 5, 4))  # after the block: not counted
    assert counts == {"calls": 2, "padded_samples": 17}


# --- part A ----------------------------------------------------------------------------------------------------------


def test_part_a_measures_every_cell_of_a_side_and_the_floor_with_both_kernels():
    sb3()
    from esper_lab.bench.compare.inference import InferenceBenchConfig, measure_side

    cfg = InferenceBenchConfig(hidden_sizes=(16,), batches=(2, 1), steps=3, repeats=2)
    ours, theirs = measure_side("ours", cfg), measure_side("sb3", cfg)
    assert [(r["lstm_hidden"], r["batch"]) for r in ours] == [(16, 2), (16, 1)] == [
        (r["lstm_hidden"], r["batch"]) for r in theirs]
    for row in ours:
        assert set(row) == {"lstm_hidden", "batch", "ours", "floor_native", "floor_onednn", "params"}
    for row in theirs:
        assert set(row) == {"lstm_hidden", "batch", "sb3_forward", "sb3_predict", "params"}
    for row in ours + theirs:
        for stat_ in (v for v in row.values() if isinstance(v, dict)):
            assert len(stat_["samples"]) == 2 and all(math.isfinite(x) and x > 0 for x in stat_["samples"])
            assert stat_["q1"] <= stat_["median"] <= stat_["q3"]
    assert ours[0]["params"] > theirs[0]["params"] > 0  # our feature net stays 512 wide


def _measured(values: dict[str, dict[str, dict[str, list[float]]]], rows_of) -> dict:
    """`measured[side][setting]` with one fake process each, from `{side: {setting: {measure: samples}}}`."""
    return {side: {setting: [{"process": {"pid": 1, "malloc": setting}, "rows": rows_of(measures)}]
                   for setting, measures in by_setting.items()}
            for side, by_setting in values.items()}


def test_part_a_compares_each_side_at_its_own_best_setting_and_the_floor_from_ours_processes():
    from esper_lab.bench.compare.inference import InferenceBenchConfig, combine

    cfg = InferenceBenchConfig(hidden_sizes=(512,), batches=(8,))
    rows = lambda m: [dict(lstm_hidden=512, batch=8, params=10, **{k: summarize(v) for k, v in m.items()})]  # noqa: E731
    measured = _measured({
        "ours": {"tuned": dict(ours=[100.0, 102.0], floor_native=[80.0], floor_onednn=[90.0]),
                 "default": dict(ours=[120.0], floor_native=[70.0], floor_onednn=[95.0])},
        "sb3": {"tuned": dict(sb3_forward=[150.0], sb3_predict=[130.0]),
                "default": dict(sb3_forward=[140.0], sb3_predict=[125.0])},
    }, rows)
    row = combine(cfg, measured)["rows"][0]
    assert row["best"] == dict(ours="tuned", floor_native="default", floor_onednn="tuned", sb3_forward="default",
                               sb3_predict="default")
    assert row["ours"]["tuned"]["median"] == 101.0  # samples of a setting are pooled
    assert row["ratio_predict"] == pytest.approx(125.0 / 101.0)  # each side at its best
    assert row["ratio_forward"] == pytest.approx(140.0 / 101.0)
    assert row["ratio_predict_default"] == pytest.approx(125.0 / 120.0)
    assert (row["floor_kernel"], row["floor_ratio"]) == ("native", pytest.approx(101.0 / 80.0))  # ours' setting


def test_part_b_ratios_use_each_sides_best_and_the_bare_trunk_of_ours_setting():
    from esper_lab.bench.compare.update import UpdateBenchConfig, combine

    cfg = UpdateBenchConfig(episode_lengths=(32,))
    counts = dict(lstm_calls=16, padded_samples=4096, params=10)

    def rows(m):
        return [dict(episode_length=32, **{k: dict(ms_per_1k_epoch=summarize(v), **counts) if k != "bare"
                                           else summarize(v) for k, v in m.items()})]

    measured = _measured({"ours": {"tuned": dict(ours=[150.0], bare=[100.0]), "default": dict(ours=[180.0], bare=[90.0])},
                          "sb3": {"tuned": dict(sb3=[400.0]), "default": dict(sb3=[700.0])}}, rows)
    row = combine(cfg, measured)["rows"][0]
    assert row["best"] == dict(ours="tuned", bare="default", sb3="tuned")
    assert row["ratio"] == pytest.approx(400.0 / 150.0) and row["ratio_default"] == pytest.approx(700.0 / 180.0)
    assert row["bare_ratio"] == pytest.approx(1.5)  # bare from the same (tuned) processes as ours
    assert row["ours_counts"] == counts


def test_a_side_runs_in_a_fresh_process_under_the_malloc_setting_asked_for(monkeypatch):
    """The real thing, small: the cell module in a new process per setting, each reporting what it ran under."""
    sb3()
    from esper_lab.bench.processes import available_settings, run_fresh

    monkeypatch.delenv("ESPER_LAB_MALLOC", raising=False)
    spec = {"part": "A", "side": "ours", "threads": 1,
            "config": dict(hidden_sizes=[16], batches=[1], steps=2, repeats=1, warmup=0, seed=0)}
    seen = {}
    for setting in available_settings():
        result = run_fresh(report.CELL_MODULE, spec, setting)
        seen[setting] = result["process"]
        assert result["rows"][0]["ours"]["median"] > 0
    assert all(p["malloc"] == s and p["torch_num_threads"] == 1 for s, p in seen.items())
    assert len({p["pid"] for p in seen.values()}) == len(seen)  # one process each


def test_a_failing_measuring_process_is_a_clear_error():
    from esper_lab.bench.processes import BenchProcessError, run_fresh

    with pytest.raises(BenchProcessError, match="exited with code"):
        run_fresh(report.CELL_MODULE, {"part": "Z", "side": "ours", "threads": 1, "config": {}}, "default")


# --- part C: matched hyperparameters, the adapter, the budget rule --------------------------------------------------


def test_sb3_world_hyperparameters_match_ours_where_sb3_has_the_knob():
    from esper_lab.bench.compare.sb3_side import world_hyperparameters

    cfg = preset("demo")
    hp = world_hyperparameters(cfg)
    assert hp["n_envs"] == cfg.num_envs and hp["n_steps"] == cfg.world.max_epochs  # one rollout = one episode
    assert hp["batch_size"] * cfg.ppo.minibatches == cfg.num_envs * cfg.world.max_epochs
    assert (hp["n_epochs"], hp["learning_rate"], hp["gamma"], hp["gae_lambda"]) == (
        cfg.ppo.epochs, cfg.ppo.lr, cfg.gamma, cfg.ppo.gae_lambda)
    assert (hp["clip_range"], hp["max_grad_norm"], hp["target_kl"], hp["vf_coef"]) == (
        0.2, cfg.ppo.max_grad_norm, cfg.ppo.target_kl, cfg.ppo.value_coef)
    assert hp["ent_coef"] == 0.01 and hp["policy_kwargs"] == {"lstm_hidden_size": 512}


def test_sb3_adapter_builds_morpho_env_observations_and_returns_actions_within_head_sizes():
    sb3()
    from esper_lab.bench.compare.sb3_side import SB3Policy, make_world_model
    from esper_lab.env.morpho_env import MorphoEnv
    from esper_lab.env.vector import VectorEnv
    from esper_lab.evaluate import run_episodes

    cfg = preset("tiny", **{"world.max_epochs": 3, "policy.lstm_hidden_dim": 16})
    model = make_world_model(cfg, seed=0)
    seen = []
    predict = model.predict

    def recording_predict(obs, state=None, episode_start=None, deterministic=False):
        seen.append((obs, state, episode_start.copy()))
        return predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)

    model.predict = recording_predict
    policy = SB3Policy(model, name="sb3")
    env = VectorEnv(cfg.world, num_envs=3, seed=0)
    reports = env.reset([5, 6, 7])
    policy.reset(3)
    for _ in range(2):
        actions = policy.act(reports, env.masks())
        assert actions.shape == (3, len(HEAD_NAMES)) and actions.dtype == torch.int64
        sizes = torch.tensor([head_sizes()[h] for h in HEAD_NAMES])
        assert ((actions >= 0) & (actions < sizes)).all()
        reports = env.step(actions)[0]
    # The observation is exactly what MorphoEnv gives for the same episode; the LSTM state is carried.
    first_obs, first_state, first_start = seen[0]
    gym_obs, _ = MorphoEnv(cfg.world).reset(seed=5)
    assert set(first_obs) == set(gym_obs)
    for key in gym_obs:
        np.testing.assert_array_equal(first_obs[key][0], gym_obs[key])
        assert first_obs[key].dtype == gym_obs[key].dtype
    assert first_state is None and first_start.all()
    assert seen[1][1] is not None and not seen[1][2].any()
    # And it plays whole episodes in the evaluator.
    summaries = run_episodes(policy, cfg.world, seeds=[1, 2])
    assert [s["epochs"] for s in summaries] == [3, 3]


def test_same_world_stops_both_sides_after_the_first_update_past_the_budget():
    sb3()
    from esper_lab.bench.compare.same_world import SameWorldConfig, run_same_world

    cfg = SameWorldConfig(preset="tiny", budget_minutes=1e-4, seeds=(0,), episodes=1, threads=1,
                          overrides={"world.max_epochs": 3, "policy.lstm_hidden_dim": 16, "policy.feature_dim": 16})
    result = run_same_world(cfg)
    run = result["runs"][0]
    assert run["order"] == ["ours", "sb3"]
    for side in ("ours", "sb3"):
        assert run[side]["updates"] == 1  # the budget is checked after each update on both sides
        assert run[side]["env_steps"] >= 2 * 3 and run[side]["sps"] > 0
        assert run[side]["eval"]["episodes"] == 1 and run[side]["eval"]["episode_seed"] == [1000]
    pools = result["pooled"]
    assert result["return_diff"] == pytest.approx(pools["ours"]["return_mean"] - pools["sb3"]["return_mean"])
    assert result["hyperparameters"]["sb3"]["n_steps"] == 3


def test_missing_sb3_raises_an_error_naming_the_install(monkeypatch):
    from esper_lab.bench.compare.sb3_side import BenchDependencyError, require_sb3

    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # `import sb3_contrib` now raises ImportError
    with pytest.raises(BenchDependencyError, match=r"pip install -e '\.\[bench\]'"):
        require_sb3()


# --- report: verdicts, table, JSON, input --------------------------------------------------------------------------


def stat(x: float) -> dict:
    return summarize([x])


def fake_parts(ratio_a: float, ratio_b: float, return_diff: float, hidden_b: int = 512, floor_a: float = 1.2,
               bare_b: float = 1.4) -> dict:
    both = lambda x: {"tuned": stat(x), "default": stat(x * 1.1)}  # noqa: E731
    best = lambda *names: {n: "tuned" for n in names}  # noqa: E731
    a_rows = [dict(lstm_hidden=H, batch=n, ours=both(100.0), floor_native=both(100.0 / floor_a),
                   floor_onednn=both(120.0), sb3_forward=both(100.0), sb3_predict=both(100.0 * ratio_a),
                   best=best("ours", "floor_native", "floor_onednn", "sb3_forward", "sb3_predict"),
                   ratio_predict=ratio_a, ratio_forward=1.0, ratio_predict_default=ratio_a, ratio_forward_default=1.0,
                   floor_kernel="native", floor_ratio=floor_a, ours_params=10, sb3_params=5)
              for H in (512, 128) for n in (8, 1)]
    b_row = lambda L: dict(episode_length=L, ours=both(50.0), bare=both(50.0 / bare_b), sb3=both(50.0 * ratio_b),  # noqa: E731
                           best=best("ours", "bare", "sb3"), ratio=ratio_b, ratio_default=ratio_b, bare_ratio=bare_b,
                           ours_counts=dict(lstm_calls=16, padded_samples=4096, params=10),
                           sb3_counts=dict(lstm_calls=512, padded_samples=4608, params=5))
    side = lambda r: dict(seconds=10.0, env_steps=100, sps=10.0, updates=2,  # noqa: E731
                          eval=dict(return_mean=r, return_std=1.0, final_val_acc_mean=60.0))
    pool = lambda r: dict(return_mean=r, return_std=1.0, final_val_acc_mean=60.0, sps=10.0)  # noqa: E731
    procs = [dict(side=s, setting=t, pid=7, malloc=t, seconds=3.0) for s in ("ours", "sb3") for t in ("tuned", "default")]
    return {
        "A": {"rows": a_rows, "processes": procs},
        "B": {"config": {"lstm_hidden_dim": hidden_b}, "rows": [b_row(1024), b_row(32), b_row(8)], "processes": procs},
        "C": {"runs": [dict(seed=0, ours=side(1.0 + return_diff), sb3=side(1.0))], "return_diff": return_diff,
              "sps_ratio": 1.0, "pooled": {"ours": pool(1.0 + return_diff), "sb3": pool(1.0)}, "processes": []},
    }


def statuses(parts: dict) -> list[str]:
    return [v["status"] for v in report.judge(parts)]


# TARGETS order: A predict ratio >= 1, A floor ratio <= 1.3, B bare ratio L=32 <= 1.5, B bare ratio L=1024 <= 1.5,
# B sb3 ratio L=32 >= 2, C return difference > 0.


def test_verdicts_pass_at_the_threshold_and_miss_beyond_it():
    assert statuses(fake_parts(1.0, 2.0, 0.01, floor_a=1.3, bare_b=1.5)) == ["PASS"] * 6
    assert statuses(fake_parts(0.99, 1.99, 0.0, floor_a=1.31, bare_b=1.51)) == ["MISS"] * 6  # C: strictly higher
    assert statuses(fake_parts(3.0, 0.5, -2.0, floor_a=1.0, bare_b=2.0)) == ["PASS", "PASS", "MISS", "MISS", "MISS",
                                                                            "MISS"]
    values = [v["value"] for v in report.judge(fake_parts(1.5, 2.5, -0.5))]
    assert values == [1.5, 1.2, 1.4, 1.4, 2.5, -0.5]


def test_verdicts_are_not_applicable_when_the_target_row_was_not_measured():
    parts = fake_parts(2.0, 3.0, 1.0, hidden_b=32)
    parts["A"]["rows"] = [r for r in parts["A"]["rows"] if r["lstm_hidden"] == 128]
    assert statuses(parts) == ["n/a"] * 5 + ["PASS"]
    assert statuses({}) == ["n/a"] * 6


def fake_results(parts: dict, repeats: int = 7) -> dict:
    env = dict(torch="2.13.0", sb3_contrib="2.9.2", stable_baselines3="2.9.2", python="3.11.7", torch_num_threads=2,
               malloc="tuned", tuned_means="glibc.malloc.mmap_threshold=33554432")
    cfg = dict(threads=2, repeats=repeats, rounds=1)
    return {"environment": env, "config": cfg, "parts": parts, "targets": report.judge(parts)}


def test_table_shows_versions_processes_floors_ratios_and_verdicts():
    table = report.format_table(fake_results(fake_parts(0.5, 2.5, 1.0, bare_b=1.8), repeats=1))
    assert "sb3-contrib 2.9.2" in table and "threads 2 on both sides" in table and "fewer than 5 repeats" in table
    lines = table.splitlines()
    a_line = next(line for line in lines if line.startswith("A") and "H=512 b8" in line and "predict, best" in line)
    assert a_line.rstrip().endswith("MISS") and "0.50x" in a_line and "tuned" in a_line and "83" in a_line  # floor
    assert any("H=512 b8" in line and "both default" in line for line in lines)
    b_line = next(line for line in lines if "L=32 ms/1k" in line)
    assert b_line.rstrip().endswith("PASS") and "2.50x" in b_line
    bare_line = next(line for line in lines if "L=32 ours / bare" in line)
    assert bare_line.rstrip().endswith("MISS") and "1.80x" in bare_line
    assert "part A: 4 fresh processes: ours/tuned pid 7" in table
    assert lines[-1].endswith("PASS")  # target C
    widths = {len(line) for line in lines if line[:2] in ("A ", "B ", "C ")}
    assert len(widths) == 1  # fixed width


def test_a_process_that_saw_another_malloc_setting_is_flagged():
    parts = fake_parts(1.0, 2.0, 1.0)
    parts["A"]["processes"][0]["malloc"] = "default"
    assert "ours/tuned (saw default!)" in report.format_table(fake_results(parts))


def test_main_writes_json_after_each_part(monkeypatch, tmp_path, capsys):
    sb3()
    parts = fake_parts(1.2, 2.5, 1.0)
    written = []
    monkeypatch.setattr(report, "run_part", lambda part, cfg, log, done: parts[part])
    monkeypatch.setattr(report, "write_json", lambda path, results: written.append(json.loads(json.dumps(results))))
    cfg = report.CompareConfig(parts=("A", "B"), threads=1, json_path=tmp_path / "out.json")
    assert report.main(cfg, log=lambda message: None) == 0
    assert [list(w["parts"]) for w in written] == [["A"], ["A", "B"]]
    final = written[-1]
    assert final["environment"]["torch_num_threads"] == 1
    for key in ("torch", "sb3_contrib", "stable_baselines3", "python", "settings"):
        assert final["environment"][key]
    assert [t["status"] for t in final["targets"]] == ["PASS", "PASS", "PASS", "PASS", "PASS", "n/a"]
    assert "update >= 2x faster than RecurrentPPO" in capsys.readouterr().out


def test_part_c_uses_the_setting_part_b_found_best_for_each_side():
    parts = fake_parts(1.0, 2.0, 1.0)
    parts["B"]["rows"][1]["best"] = dict(ours="tuned", bare="tuned", sb3="default")  # the L = 32 row
    assert report.side_settings(parts["B"]) == {"ours": "tuned", "sb3": "default"}
    assert set(report.side_settings(None).values()) == {"tuned" if malloc_glibc() else "default"}


def malloc_glibc() -> bool:
    from esper_lab.malloc import is_glibc

    return is_glibc()


def test_write_json_is_indented_and_turns_nan_into_null(tmp_path):
    path = tmp_path / "r" / "out.json"
    report.write_json(path, {"x": float("nan"), "y": [1.5]})
    assert json.loads(path.read_text()) == {"x": None, "y": [1.5]} and "\n  " in path.read_text()


@pytest.mark.parametrize("argv, message", [
    (["--parts", "X"], "unknown part 'X'; choose from A, B, C"),
    (["--parts", "A,Q"], "unknown part 'Q'"),
    (["--parts", ","], "no part given"),
    (["--budget-minutes", "0"], "must be greater than 0"),
    (["--seeds", ""], "no seed given"),
    (["--seeds", "1,x"], "seeds must be integers"),
    (["--repeats", "0"], "must be at least 1"),
    (["--rounds", "0"], "must be at least 1"),
])
def test_cli_rejects_bad_compare_options_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", "compare", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_parses_compare_options():
    argv = ["bench", "compare", "--parts", "b,a", "--seeds", "3,4", "--budget-minutes", "0.5"]
    args = build_parser().parse_args(argv)
    assert (args.what, args.parts, args.seeds, args.budget_minutes) == ("compare", ("B", "A"), (3, 4), 0.5)
    assert (args.repeats, args.rounds, args.threads, args.episodes, args.json) == (7, 2, 2, 20, None)


def test_config_validation_names_the_bad_setting():
    with pytest.raises(ConfigError, match="unknown part 'Z'"):
        report.validate(report.CompareConfig(parts=("Z",)))
    with pytest.raises(ConfigError, match="budget_minutes"):
        report.validate(report.CompareConfig(budget_minutes=0))
    with pytest.raises(ConfigError, match="seed"):
        report.validate(report.CompareConfig(seeds=()))


def test_sb3_gets_parallel_worlds_exactly_when_ours_runs_them_in_parallel():
    from esper_lab.bench.compare.sb3_side import world_vec_env

    assert world_vec_env(preset("tiny", backend="local")) == "DummyVecEnv"
    assert world_vec_env(preset("tiny", backend="process")) == "SubprocVecEnv"
    assert world_vec_env(preset("demo")) == ("DummyVecEnv" if preset("demo").backend == "local" else "SubprocVecEnv")


def test_sb3_learns_on_worlds_in_worker_processes():
    sb3()
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from esper_lab.bench.compare.sb3_side import make_world_model

    cfg = preset("tiny", **{"backend": "process", "world.max_epochs": 2, "policy.lstm_hidden_dim": 8})
    model = make_world_model(cfg, seed=0)
    try:
        assert isinstance(model.env, SubprocVecEnv) and model.env.num_envs == cfg.num_envs
        model.learn(cfg.num_envs * cfg.world.max_epochs)
        assert model.num_timesteps == cfg.num_envs * cfg.world.max_epochs
    finally:
        model.env.close()
