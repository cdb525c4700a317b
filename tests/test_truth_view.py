"""esper_lab/plots/truth.py, the critic beside its Monte Carlo ground truth, on records built by hand (verdicts,
rankings, pooled calibration numbers) and on the fixture's (app.data.truth, agreement with rl/truth.py's counts)."""

from __future__ import annotations

import pytest

from app import data
from esper_lab.plots import truth
from esper_lab.plots.common import trace_names
from esper_lab.runs import TRUTH_FILE, dumps
from fixtures.make_run import make_run


def record(critic, means, half=0.1, *, update=5, probe=0, ops=None, rollouts=8, **extra) -> dict:
    """A truth.jsonl record: truth intervals mean ± `half` (None: no interval); calibration fields as rl/truth.py
    would count them are not needed by the figures except mae / pair_agreement (given in `extra`)."""
    ops = ops or ["WAIT", "GERMINATE", "SET_ALPHA_TARGET", "PRUNE"][: len(critic)]
    low = [None if half is None else m - half for m in means]
    high = [None if half is None else m + half for m in means]
    return {"update": update, "probe": probe, "name": f"state {probe}", "ops": ops, "rollouts": rollouts,
            "critic": list(critic), "target": {"mean": list(means), "low": low, "high": high, "std": [0.1] * len(ops)},
            "raw": {"mean": [3 * m for m in means], "low": low, "high": high, "std": [0.3] * len(ops)}, **extra}


# --- one record ----------------------------------------------------------------------------------------------------


def test_verdict_names_the_pair_the_critic_orders_wrongly():
    # truth: GERMINATE (2.0) clearly above WAIT (1.0) and SET_ALPHA_TARGET (1.05), which overlap; the critic puts
    # GERMINATE last.
    r = record([1.5, 1.2, 1.3], [1.0, 2.0, 1.05])
    assert truth.wrong_pairs(r) == [("GERMINATE", "WAIT"), ("GERMINATE", "SET_ALPHA_TARGET")]
    text = truth.verdict(r)
    assert text.startswith("The critic orders 2 of the 2 op pairs the truth tells apart the wrong way round")
    assert "WAIT above GERMINATE; SET_ALPHA_TARGET above GERMINATE" in text


def test_verdict_says_a_tie_in_q_on_a_separated_pair():
    assert "WAIT level with GERMINATE" in truth.verdict(record([1.0, 1.0], [0.0, 2.0]))


def test_verdict_when_the_critic_ranks_right():
    r = record([3.0, 2.0, 1.0], [3.1, 1.9, 1.0])
    assert truth.wrong_pairs(r) == []
    assert truth.verdict(r) == ("The critic ranks the ops as the truth does (all 3 separated pairs in order, and the "
                                "same best op, WAIT).")


def test_verdict_when_the_truth_cannot_tell_the_ops_apart():
    text = truth.verdict(record([2.0, 1.0], [1.0, 1.05], half=0.5, rollouts=4))
    assert text.startswith("The ops are within each other's 95 % intervals") and "K=4" in text
    assert "cannot tell" in truth.verdict(record([2.0, 1.0], [1.0, 1.5], half=None))  # no interval: nothing apart


def test_verdict_when_only_the_best_op_differs_inside_the_intervals():
    # WAIT and GERMINATE overlap (truth prefers GERMINATE), both clearly above SET_ALPHA_TARGET.
    text = truth.verdict(record([2.0, 1.9, 0.0], [1.9, 2.0, 0.0], half=0.2))
    assert text.startswith("The critic orders all 2 separated pairs right, but its best op WAIT is not the truth's "
                           "GERMINATE")


def test_verdict_with_one_legal_op():
    assert truth.verdict(record([1.0], [2.0])) == "Only WAIT is legal here: there is nothing to rank."


def test_ranking_and_table():
    r = record([1.5, 1.2, 0.95], [1.0, 2.0, 1.05])
    assert truth.truth_ranking(r) == (["WAIT", "GERMINATE", "SET_ALPHA_TARGET"],
                                      ["GERMINATE", "SET_ALPHA_TARGET", "WAIT"])
    rows = truth.ranking_table(r)
    assert [row["op"] for row in rows] == ["GERMINATE", "SET_ALPHA_TARGET", "WAIT"]  # best by the truth first
    assert [(row["rank by critic"], row["rank by truth"]) for row in rows] == [(2, 1), (3, 2), (1, 3)]
    assert rows[0]["critic Q"] == 1.2 and rows[0]["truth mean"] == 2.0 and rows[0]["raw return"] == 6.0
    assert rows[0]["truth 95 % interval"] == "[1.900, 2.100]"
    assert truth.ranking_table(record([1.0, 2.0], [1.0, 2.0], half=None))[0]["truth 95 % interval"] == "no interval"


def test_truth_beside_critic_traces_and_error_bars():
    fig = truth.truth_beside_critic(record([1.5, 1.2], [1.0, 2.0], half=0.25, update=30, probe=2, rollouts=16))
    assert trace_names(fig) == ["critic Q(s, op)", "Monte Carlo truth"]
    assert fig.layout.title.text == "Critic vs Monte Carlo truth on 'state 2' at update 30 (K = 16 rollouts per op)"
    critic, mc = fig.data
    assert list(critic.x) == list(mc.x) == ["WAIT", "GERMINATE"] and list(critic.y) == [1.5, 1.2]
    assert list(mc.y) == [1.0, 2.0]
    assert list(mc.error_y.array) == pytest.approx([0.25, 0.25])
    assert list(mc.error_y.arrayminus) == pytest.approx([0.25, 0.25])


# --- records over updates ------------------------------------------------------------------------------------------


def test_pooled_numbers_by_hand():
    records = [
        record([1, 2], [1, 2], update=5, probe=0, mae=0.2, pair_agreement=1.0),  # 1 pair
        record([1, 2, 3, 4], [4, 3, 2, 1], update=5, probe=1, mae=0.6, pair_agreement=0.5),  # 6 pairs
        record([1], [1], update=5, probe=2, mae=0.4, pair_agreement=None),  # one op: no pair
        record([1, 2], [2, 1], update=10, probe=0, mae=1.0, pair_agreement=0.0),
    ]
    update5, update10 = truth.pooled(records)
    no_split = {"separated": 0, "separated_agreement": None, "best_agrees": 0}  # these records carry neither
    assert update5 == {"update": 5, "states": 3, "mae": pytest.approx((0.2 + 0.6 + 0.4) / 3), "pairs": 7,
                       "pair_agreement": pytest.approx((1.0 * 1 + 0.5 * 6) / 7), **no_split}
    assert update10 == {"update": 10, "states": 1, "mae": 1.0, "pairs": 1, "pair_agreement": 0.0, **no_split}
    split = truth.pooled([  # means 1 apart with intervals +-0.1: every pair separated
        record([1, 2], [1, 2], mae=0.1, pair_agreement=1.0, separated_agreement=1.0, best_agrees=True),
        record([3, 2, 1], [1, 2, 3], probe=1, mae=0.1, pair_agreement=0.0, separated_agreement=0.0,
               best_agrees=False)])[0]
    assert split["separated"] == 1 + 3 and split["separated_agreement"] == pytest.approx(1 / 4)
    assert split["best_agrees"] == 1
    only_one_op = truth.pooled([record([1], [1], mae=0.3, pair_agreement=None)])
    assert only_one_op[0]["pair_agreement"] is None and only_one_op[0]["pairs"] == 0

    fig = truth.calibration_over_updates(records)
    assert trace_names(fig) == ["mean |Q − truth|", "pair agreement"]
    mae, agreement = fig.data
    assert list(mae.x) == [5, 10] and list(mae.y) == pytest.approx([0.4, 1.0])
    assert list(mae.customdata) == [3, 1]  # probe states measured, in the hover
    assert list(agreement.y) == pytest.approx([4 / 7, 0.0]) and agreement.yaxis == "y2"
    assert [list(c) for c in agreement.customdata] == [[7, 3], [1, 1]]
    assert tuple(fig.layout.yaxis2.range) == (-0.02, 1.02)


def test_a_remeasured_state_counts_once_and_the_newest_wins():
    old = record([1, 2], [1, 2], update=5, probe=0, mae=0.9, pair_agreement=0.0)
    cli = record([1, 2], [1, 2], update=5, probe=0, mae=0.1, pair_agreement=1.0, source="esper-lab probe")
    other = record([1, 2], [1, 2], update=5, probe=1, mae=0.3, pair_agreement=1.0)
    assert truth.latest([cli, other, old]) == [old, other]  # file order decides, output by (update, probe)
    assert truth.pooled([old, other, cli])[0] == {"update": 5, "states": 2, "mae": pytest.approx(0.2), "pairs": 2,
                                                  "pair_agreement": 1.0, "separated": 0,
                                                  "separated_agreement": None, "best_agrees": 0}
    assert truth.for_probe([old, other, cli], 0) == {5: cli}


def test_malformed_records_are_skipped():
    good = record([1, 2], [1, 2])
    bad = [{"update": 5}, {**good, "critic": [1.0]}, {**good, "update": "5"}, {**good, "target": None},
           {**good, "ops": []}, {**good, "critic": [1.0, None]},
           {**good, "target": {**good["target"], "low": ["?", 0.0]}}, "not a dict"]
    assert truth.usable([*bad, good]) == [good]
    assert truth.pooled(bad) == [] and truth.for_probe(bad, 0) == {}


# --- the fixture's records, as the dashboard reads them --------------------------------------------------------------


def test_fixture_records_read_through_the_cache_and_match_rl_truth_counts(tmp_path):
    run = make_run(tmp_path, "truthy", updates=12)
    records = data.truth(run)
    assert [(r["update"], r["probe"]) for r in records] == [(6, 0), (6, 1), (12, 2), (12, 0)]
    for r in records:  # the figures' separation agrees with the trainer's (rl/truth.py calibration)
        assert truth.separated(r) == r["separated_pairs"]
        wrong = len(truth.wrong_pairs(r))
        if r["separated_agreement"] is not None:
            assert wrong == round(r["separated_pairs"] * (1 - r["separated_agreement"]))
    with open(run / TRUTH_FILE, "a", encoding="utf-8") as f:  # what RunWriter.truth appends
        f.write(dumps({**records[0], "update": 13}) + "\n")
    assert len(data.truth(run)) == 5  # the cache follows the appended file
    assert data.truth(tmp_path / "missing") == ()
    assert not (make_run(tmp_path, "off", updates=3, truth_every=0) / TRUTH_FILE).exists()
