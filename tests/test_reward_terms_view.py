"""Issue 17, "the lesson, shown": the trainer's per-term reward bookkeeping (`reward_term_*` in metrics.jsonl), the
figure and table helpers of esper_lab/plots/rewards.py, and the Compare view showing them (AppTest)."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from conftest import DASHBOARD
from test_dashboard import charts  # every plotly chart on the page: title -> traces
from esper_lab.config import preset
from esper_lab.env.reward import REWARD_TERMS
from esper_lab.plots import rewards
from esper_lab.rl.trainer import Trainer
from esper_lab.runs import METRIC_KEYS, REWARD_TERM_PREFIX, RunReader, atomic_write, dumps
from fixtures.make_run import make_run

TERM_KEYS = [f"{REWARD_TERM_PREFIX}{name}" for name in REWARD_TERMS]
OUTCOME_COLUMNS = ["run", "reward mode", "updates", "return", "final val acc %", "fossils / episode", "seed params"]
# The fixture runs' terms: each a share of the row's return, plus fixed offsets that cancel (the rows still add up).
SHARES = {"contribution": {"attribution": (1.0, 1.0), "pbrs": (0.0, -0.4), "rent": (0.0, -0.6)},
          "basic": {"pbrs": (0.0, 0.2), "rent": (0.0, -0.5), "fossilize": (0.0, 0.3), "terminal": (1.0, 0.0)}}


# --- the trainer's bookkeeping ----------------------------------------------------------------------------------


def assert_terms_add_up(row: dict) -> None:
    """Every term present, and (raw terms, raw return) their sum is the return within 1e-4 relative."""
    assert list(row)[-len(TERM_KEYS):] == TERM_KEYS
    total = sum(row[k] for k in TERM_KEYS)
    assert total == pytest.approx(row["episode_return"], rel=1e-4, abs=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_trainer_records_every_reward_term_and_they_sum_to_the_return(tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(preset("tiny", updates=2, **{"world.max_epochs": 5, "world.reward.mode": "contribution"}), run)
    (run / "baselines.json").write_text("{}")  # skip the baseline evaluation (not under test here)
    records = trainer.run()
    rows = RunReader(run).metrics()
    assert len(rows) == 2 and [set(r) for r in rows] == [set(METRIC_KEYS) | set(TERM_KEYS)] * 2
    for row, record in zip(rows, records):
        assert {k: row[k] for k in TERM_KEYS} == {k: record[k] for k in TERM_KEYS}  # written as recorded
        assert_terms_add_up(row)
        assert row[f"{REWARD_TERM_PREFIX}fossilize"] == 0.0  # 'contribution' pays no fossilize bonus
        assert row[f"{REWARD_TERM_PREFIX}attribution"] != 0.0 and row[f"{REWARD_TERM_PREFIX}terminal"] != 0.0
    assert json.loads((run / "config.json").read_text())["world"]["reward"]["mode"] == "contribution"


@pytest.mark.usefixtures("one_thread")
def test_terms_follow_the_reward_mode():
    """'basic' pays no attribution; its terms still add up to the return (the raw one, as the env reports it)."""
    trainer = Trainer(preset("tiny", **{"world.max_epochs": 5, "world.reward.mode": "basic"}))
    record = trainer.train_step()
    assert_terms_add_up(record)
    assert record[f"{REWARD_TERM_PREFIX}attribution"] == 0.0 and record[f"{REWARD_TERM_PREFIX}terminal"] != 0.0


# --- fixture runs with terms ------------------------------------------------------------------------------------


def with_reward_terms(run_dir, mode: str):
    """Give a `make_run` run the reward mode `mode` in config.json and, in every metrics row, the `reward_term_*`
    fields of SHARES[mode] (the other terms 0), adding up to the row's return as the trainer's do."""
    config = json.loads((run_dir / "config.json").read_text())
    config["world"]["reward"]["mode"] = mode
    atomic_write(run_dir / "config.json", dumps(config))
    rows = []
    for row in RunReader(run_dir).metrics():
        terms = dict.fromkeys(REWARD_TERMS, 0.0)
        for name, (share, offset) in SHARES[mode].items():
            terms[name] = share * row["episode_return"] + offset
        rows.append({**row, **{f"{REWARD_TERM_PREFIX}{k}": v for k, v in terms.items()}})
    atomic_write(run_dir / "metrics.jsonl", "".join(dumps(r) + "\n" for r in rows))
    return run_dir


@pytest.fixture
def lesson_runs(runs_dir):
    """A 'contribution' run, a 'basic' run (both with terms) and a run from before the terms were logged."""
    with_reward_terms(make_run(runs_dir, "contrib", updates=12, seed=1), "contribution")
    with_reward_terms(make_run(runs_dir, "basic", updates=12, seed=2), "basic")
    make_run(runs_dir, "old", updates=6, seed=3)
    return runs_dir


def read_rows(run_dir) -> list[dict]:
    return RunReader(run_dir).metrics()


def test_figure_has_one_subplot_per_run_with_the_terms_it_paid(lesson_runs):
    runs = [(name, read_rows(lesson_runs / name)) for name in ("contrib", "basic", "old")]
    fig = rewards.term_breakdown(runs, modes={"contrib": "contribution", "basic": "basic"})
    assert fig.layout.title.text == rewards.TITLE
    assert [a.text for a in fig.layout.annotations] == ["contrib · contribution", "basic · basic"]  # old: left out
    assert [(t.name, t.yaxis) for t in fig.data] == [
        ("attribution", "y"), ("pbrs", "y"), ("rent", "y"), ("episode_return", "y"),
        ("pbrs", "y2"), ("rent", "y2"), ("fossilize", "y2"), ("terminal", "y2"), ("episode_return", "y2")]
    # one legend entry per term, one colour per term in every subplot; x is env steps
    assert [t.name for t in fig.data if t.showlegend] == ["attribution", "pbrs", "rent", "episode_return",
                                                          "fossilize", "terminal"]
    colours = {}
    assert all(colours.setdefault(t.name, t.line.color) == t.line.color for t in fig.data)
    assert list(fig.data[0].x) == [r["env_steps"] for r in runs[0][1]]
    assert list(fig.data[0].y) == [r[f"{REWARD_TERM_PREFIX}attribution"] for r in runs[0][1]]


def test_dominant_term_table_row_and_old_runs(lesson_runs):
    contrib, old = read_rows(lesson_runs / "contrib"), read_rows(lesson_runs / "old")
    name, value = rewards.dominant_term(contrib)
    last = contrib[-rewards.LAST_N:]
    assert name == "attribution"
    assert value == pytest.approx(sum(r["episode_return"] + 1.0 for r in last) / len(last))
    assert "farms `attribution`" in rewards.farming_note("contrib", contrib)
    assert rewards.dominant_term(old) is None and rewards.farming_note("old", old) is None
    assert rewards.term_keys(old) == [] and rewards.term_keys(contrib) == TERM_KEYS
    row = rewards.outcome("contrib", {"world": {"reward": {"mode": "contribution"}}}, contrib)
    assert list(row) == OUTCOME_COLUMNS
    assert row["final val acc %"] == pytest.approx(sum(r["val_acc"] for r in last) / len(last))
    assert rewards.reward_mode({"world": {"reward": {}}}) == "contribution"  # before reward modes existed
    costly = [{"env_steps": 1, "episode_return": -1.0, f"{REWARD_TERM_PREFIX}rent": -0.9,
               f"{REWARD_TERM_PREFIX}pbrs": -0.1}]
    assert "dominated by the cost `rent`" in rewards.farming_note("c", costly)


# --- the Compare view -------------------------------------------------------------------------------------------


def compare_view(chosen: list[str]) -> AppTest:
    at = AppTest.from_file(str(DASHBOARD), default_timeout=30).run()
    at.session_state["view"] = "Compare"
    at.run()
    at.multiselect(key="cmp_runs").set_value(chosen).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def outcome_table(at: AppTest):
    return next(t.value for t in at.dataframe if "reward mode" in t.value.columns)


def test_compare_view_shows_the_table_the_terms_and_what_each_policy_farms(lesson_runs):
    at = compare_view(["contrib", "basic"])
    traces = charts(at)[rewards.TITLE]
    assert [t["name"] for t in traces] == ["attribution", "pbrs", "rent", "episode_return",
                                           "pbrs", "rent", "fossilize", "terminal", "episode_return"]
    table = outcome_table(at)
    assert list(table.columns) == OUTCOME_COLUMNS
    assert list(table["reward mode"]) == ["contribution", "basic"] and list(table["run"]) == ["contrib", "basic"]
    captions = " ".join(c.value for c in at.caption)
    assert "**contrib**: the policy farms `attribution`" in captions
    assert "**basic**: the policy farms `terminal`" in captions
    assert not any("No per-term reward breakdown" in i.value for i in at.info)


def test_compare_view_notes_an_old_run_without_terms(lesson_runs):
    at = compare_view(["contrib", "old"])
    assert any("No per-term reward breakdown for old" in i.value for i in at.info)
    assert list(outcome_table(at)["run"]) == ["contrib", "old"]  # the old run is still in the table
    traces = charts(at)[rewards.TITLE]
    assert [t["name"] for t in traces] == ["attribution", "pbrs", "rent", "episode_return"]  # its subplot only


def test_compare_view_with_only_old_runs_has_no_breakdown(runs_dir):
    for name, seed in (("old-a", 0), ("old-b", 1)):
        run = make_run(runs_dir, name, updates=4, seed=seed)
        config = json.loads((run / "config.json").read_text())
        del config["world"]["reward"]["mode"]  # written before reward modes existed
        atomic_write(run / "config.json", dumps(config))
    at = compare_view(["old-a", "old-b"])
    assert any("No per-term reward breakdown for old-a, old-b" in i.value for i in at.info)
    assert rewards.TITLE not in charts(at)
    assert list(outcome_table(at)["reward mode"]) == ["contribution", "contribution"]
