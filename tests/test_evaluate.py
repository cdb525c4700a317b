"""What `esper-lab evaluate` adds for users: gain over wait on the same episode, seed params per point of gain, and
the paired comparison of a trained policy with each baseline (esper_lab.evaluate.add_comparisons, format_table)."""

from __future__ import annotations

import json

import pytest

from esper_lab import cli
from esper_lab.config import preset
from esper_lab.evaluate import GAIN, PAIRED, add_comparisons, evaluate_policies, format_table, summarize
from esper_lab.policy.baselines import HeuristicPolicy
from esper_lab.stats import NO_INTERVAL

pytestmark = pytest.mark.usefixtures("one_thread")


def episodes(acc: list[float], ret: list[float], params: list[int], seeds: list[int]) -> dict:
    """`summarize` of hand-made episode summaries (the keys `run_episodes` returns)."""
    return summarize([{"return": r, "final_val_acc": a, "fossilized": 0, "seed_params": p, "germinated": 0,
                       "pruned": 0, "illegal_actions": 0, "episode_seed": s, "steps": 8}
                      for a, r, p, s in zip(acc, ret, params, seeds)])


def hand_results() -> dict:
    seeds = [10, 11, 12]
    return {
        "trained": episodes([70.0, 66.0, 68.0], [9.0, 7.0, 8.0], [300, 300, 300], seeds),
        "heuristic": episodes([68.0, 64.0, 66.0], [5.0, 5.0, 5.0], [200, 100, 0], seeds),
        "wait": episodes([60.0, 60.0, 63.0], [3.0, 3.0, 3.0], [0, 0, 0], seeds),
    }


def test_gain_over_wait_is_per_episode():
    results = hand_results()
    add_comparisons(results)
    assert results["trained"][f"{GAIN}_list"] == [10.0, 6.0, 5.0]
    assert results["trained"][f"{GAIN}_mean"] == 7.0
    assert results["trained"][f"{GAIN}_std"] == pytest.approx((14 / 3) ** 0.5)  # population, as the other _std
    assert results["wait"][f"{GAIN}_list"] == [0.0, 0.0, 0.0] and results["wait"][f"{GAIN}_mean"] == 0.0


def test_seed_params_per_point_and_its_undefined_cases():
    results = hand_results()
    results["random"] = episodes([59.0, 60.0, 62.0], [4.0, 4.0, 4.0], [50, 50, 50], [10, 11, 12])
    add_comparisons(results)
    assert results["trained"]["seed_params_per_point"] == 300 / 7
    assert results["heuristic"]["seed_params_per_point"] == 100 / 5  # gain [8, 4, 3]
    assert results["wait"]["seed_params_per_point"] is None  # zero gain: undefined, not inf
    assert results["random"]["seed_params_per_point"] is None  # negative gain: nothing bought
    table = format_table(results)
    assert "inf" not in table and "n/a" in table
    assert [line.split()[-1] for line in table.splitlines()[2:6]] == ["43", "20", "n/a", "n/a"]


def test_paired_comparison_of_the_trained_policy_with_each_baseline():
    results = hand_results()
    add_comparisons(results)
    pairs = results["trained"]["paired"]
    assert set(pairs) == {"heuristic", "wait"}  # baselines only; the baselines are not paired among themselves
    assert all("paired" not in results[name] for name in ("heuristic", "wait"))
    acc = pairs["heuristic"]["final_val_acc"]  # trained - heuristic = [2, 2, 2]: zero spread
    assert pairs["heuristic"]["episodes"] == 3 and (acc["mean"], acc["std"], acc["low"], acc["high"]) == (2, 0, 2, 2)
    ret = pairs["heuristic"]["return"]  # [4, 2, 3]: mean 3, sd 1, half width t(0.975, 2) / sqrt(3)
    assert ret["mean"] == 3.0 and ret["std"] == 1.0
    assert (ret["low"], ret["high"]) == pytest.approx((3 - 4.3026527297 / 3 ** 0.5, 3 + 4.3026527297 / 3 ** 0.5))
    assert pairs["wait"]["final_val_acc"]["mean"] == results["trained"][f"{GAIN}_mean"]
    table = format_table(results)
    assert "trained minus each baseline, paired by episode seed: mean [95 % t interval]" in table
    assert "+2.00 [+2.00, +2.00] *" in table and "* marks an interval that excludes 0" in table


def test_pairs_are_matched_by_episode_seed_not_by_position():
    results = hand_results()
    results["wait"] = episodes([63.0, 60.0], [3.0, 3.0], [0, 0], [12, 10])  # other order, seed 11 missing
    add_comparisons(results)
    assert results["trained"][f"{GAIN}_list"] == [10.0, 5.0]
    assert results["trained"]["paired"]["wait"]["episodes"] == 2
    assert results["trained"]["paired"]["heuristic"]["episodes"] == 3


def test_one_episode_has_no_interval_and_the_table_says_so():
    results = {name: episodes([r["final_val_acc_list"][0]], [r["return_list"][0]], [r["seed_params_list"][0]], [10])
               for name, r in hand_results().items()}
    add_comparisons(results)
    pair = results["trained"]["paired"]["heuristic"]["final_val_acc"]
    assert pair["low"] is None and pair["high"] is None and pair["note"] == NO_INTERVAL
    assert NO_INTERVAL in format_table(results)


def test_no_trained_policy_and_no_wait_are_said():
    results = hand_results()
    del results["trained"]
    add_comparisons(results)
    assert "no trained policy among the results: no paired comparison" in format_table(results)
    del results["wait"]
    with pytest.raises(ValueError, match="the gain needs 'wait'"):
        add_comparisons(results)


def test_the_table_without_comparisons_is_unchanged():
    table = format_table(hand_results())
    assert "gain vs wait" not in table and "paired" not in table and len(table.splitlines()) == 5


class Trained(HeuristicPolicy):
    """The heuristic under a trained policy's name: pairs with the heuristic are exactly 0 on every episode."""

    name = "trained"


def test_evaluate_on_tiny_adds_consistent_fields():
    results = evaluate_policies([Trained(), "heuristic", "random"], preset("tiny").world, episodes=3, seed=7,
                                workers=1, compare=True)
    assert list(results) == ["trained", "heuristic", "random", "wait"]
    assert results["wait"]["run_for_gain"] is True and "run_for_gain" not in results["heuristic"]
    assert results["wait"][f"{GAIN}_list"] == [0.0, 0.0, 0.0] and results["wait"]["seed_params_per_point"] is None
    trained = results["trained"]
    assert set(trained["paired"]) == {"heuristic", "random", "wait"}
    for baseline, pair in trained["paired"].items():
        assert pair["episodes"] == 3
        for metric in PAIRED:
            difference = trained[f"{metric}_mean"] - results[baseline][f"{metric}_mean"]
            assert pair[metric]["mean"] == pytest.approx(difference, abs=1e-9)
            assert pair[metric]["low"] <= pair[metric]["mean"] <= pair[metric]["high"]
    for metric in PAIRED:  # the same decisions on the same worlds: exactly the heuristic's numbers
        d = trained["paired"]["heuristic"][metric]
        assert (d["mean"], d["std"], d["low"], d["high"]) == (0.0, 0.0, 0.0, 0.0)
    assert trained["paired"]["wait"]["final_val_acc"]["mean"] == pytest.approx(trained[f"{GAIN}_mean"])
    gains = [a - w for a, w in zip(trained["final_val_acc_list"], results["wait"]["final_val_acc_list"])]
    assert trained[f"{GAIN}_list"] == gains


def test_cli_evaluate_prints_and_writes_the_new_fields(tmp_path, monkeypatch, capsys):
    import esper_lab.agent

    world = preset("tiny").world
    monkeypatch.setattr(esper_lab.agent, "load_trained_policy", lambda path, deterministic: (Trained(), world))
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--checkpoint", str(tmp_path / "any.pt"), "--policy", "none", "--episodes", "1",
            "--json", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "gain vs wait" in printed and "params/pt" in printed and "n/a" in printed
    assert "wait was not asked for" in printed and NO_INTERVAL in printed
    written = json.loads(out.read_text())
    assert list(written) == ["trained", "wait"]
    assert {"return_mean", "final_val_acc_mean", "seed_params_mean", "episode_seed"} <= written["trained"].keys()
    assert written["wait"]["seed_params_per_point"] is None and written["wait"][f"{GAIN}_list"] == [0.0]
    assert written["trained"]["paired"]["wait"]["final_val_acc"]["low"] is None


def test_cli_evaluate_set_scores_the_baselines_under_another_reward(tmp_path, capsys):
    """--set world.reward.mode changes the returns, never the actions: same accuracies, other returns."""
    outs = {}
    for mode in ("contribution", "basic"):
        outs[mode] = tmp_path / f"{mode}.json"
        argv = ["evaluate", "--preset", "tiny", "--policy", "heuristic", "--episodes", "2", "--set",
                f"world.reward.mode={mode}", "--json", str(outs[mode])]
        assert cli.main(argv) == 0
    a, b = (json.loads(outs[m].read_text())["heuristic"] for m in ("contribution", "basic"))
    assert a["final_val_acc_list"] == b["final_val_acc_list"] and a["return_list"] != b["return_list"]
    assert cli.main(["evaluate", "--preset", "tiny", "--set", "ppo.epochs=1"]) == 2
    assert "world fields only" in capsys.readouterr().err
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "x.pt"), "--set", "world.reward.mode=basic"]) == 2
    assert "with --checkpoint" in capsys.readouterr().err
