"""The Streamlit dashboard under AppTest: every view on fixture runs, the bad states, and a real trainer child."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import process
from conftest import DASHBOARD
from esper_lab.actions import HEAD_NAMES
from esper_lab.runs import TRUTH_FILE, RunReader
from fixtures.make_run import make_run

VIEWS = ("Curves", "Blueprint embeddings", "Per-op values", "Seeds", "Compare")


def app() -> AppTest:
    return AppTest.from_file(str(DASHBOARD), default_timeout=30)


def charts(at: AppTest) -> dict[str, list[dict]]:
    """Every plotly chart on the page: figure title -> its traces (from the figure JSON of the chart proto)."""
    out = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        out[spec["layout"]["title"]["text"]] = spec["data"]
    return out


def names(traces: list[dict]) -> list[str]:
    return [t.get("name") for t in traces]


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def has_button(at: AppTest, key: str) -> bool:
    return any(b.key == key for b in at.button)


def show(at: AppTest, view: str) -> AppTest:
    at.session_state["view"] = view
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)


def test_no_runs_yet(runs_dir):
    at = app().run()
    assert not at.exception
    assert "No runs yet" in texts(at.info)
    assert at.button(key="start")  # the Train panel is there to start the first one


def test_default_view_is_the_most_recent_runs_curves(runs_dir):
    make_run(runs_dir, "older", updates=4)
    time.sleep(0.02)
    newest = make_run(runs_dir, "newest", updates=6)
    at = app().run()
    assert_clean(at)
    assert at.selectbox(key="run").value == "newest"
    figs = charts(at)
    assert names(figs["Episode return"]) == ["episode_return + std", "episode_return - std", "episode_return",
                                             "heuristic", "random"]
    ret = next(t for t in figs["Episode return"] if t["name"] == "episode_return")
    assert ret["y"] == [r["episode_return"] for r in RunReader(newest).metrics()]
    assert names(figs["Entropy per head (normalised)"]) == list(HEAD_NAMES)
    assert set(figs) >= {"Validation accuracy", "Policy and value loss", "Approx KL and clip fraction",
                         "Explained variance", "Speed: SPS and time per update",
                         "Op sensitivity of the critic: q_spread and q_variance"}
    assert "finished" in texts(at.markdown)


@pytest.mark.parametrize("view, expected", [
    ("Blueprint embeddings", {"Blueprint embeddings at update 12 (PCA of 14 x 4)":
                              ["CNN blueprint", "transformer blueprint (masked here)", "null (empty slot)"],
                              "Cosine similarity at update 12": ["cosine similarity"],
                              "Per-blueprint outcomes": ["germinated", "fossilized", "pruned", "mean contribution"]}),
    ("Per-op values", {"Q(s, op) over updates, probe state 'empty slots'": ["Q(s, op)"],
                       "Decision on 'empty slots' at update 12": ["Q(s, op)", "Q(s, op), masked", "π(op)",
                                                                  "π(op), masked"],
                       "Critic vs Monte Carlo truth on 'empty slots' at update 12 (K = 8 rollouts per op)":
                       ["critic Q(s, op)", "Monte Carlo truth"],
                       "Critic vs Monte Carlo truth over updates": ["mean |Q − truth|", "pair agreement"],
                       "Op sensitivity of the critic: q_spread and q_variance": ["q_spread", "q_variance"]}),
])
def test_snapshot_views(fixture_run, view, expected):
    at = show(app().run(), view)
    assert_clean(at)
    figs = charts(at)
    for title, traces in expected.items():
        assert names(figs[title]) == traces
    if view == "Blueprint embeddings":
        points = [label for t in figs["Blueprint embeddings at update 12 (PCA of 14 x 4)"] for label in t["text"]]
        assert len(points) == 14
        at.select_slider(key="emb_update").set_value(3).run()
        assert "Blueprint embeddings at update 3 (PCA of 14 x 4)" in charts(at)
    else:
        assert "collapsed" in texts(at.markdown)  # the fixture's last q_spread is below 0.01


def test_per_op_values_ground_truth_follows_the_probe_state(fixture_run):
    """The fixture measured states 0 and 1 at update 6, states 2 and 0 at update 12 (fixtures/make_run.py)."""
    at = show(app().run(), "Per-op values")
    assert_clean(at)
    assert "Is the critic right? Monte Carlo ground truth" in texts(at.markdown)
    assert "Verdict:" in texts(at.markdown) and "trained toward" in texts(at.caption)
    assert "At update 12 it orders" in texts(at.markdown)  # the Q health section says whether it ranks the ops
    table = at.dataframe[0].value
    assert list(table.columns) == ["op", "critic Q", "truth mean", "truth 95 % interval", "raw return",
                                   "raw 95 % interval", "rank by critic", "rank by truth"]
    assert sorted(table["op"]) == ["GERMINATE", "WAIT"]  # the legal ops of 'empty slots'
    at.select_slider(key="truth_update").set_value(6).run()
    assert "Critic vs Monte Carlo truth on 'empty slots' at update 6 (K = 8 rollouts per op)" in charts(at)
    at.selectbox(key="ops_probe").set_value(1).run()  # 'seed training': measured at update 6 only
    assert_clean(at)
    assert "Critic vs Monte Carlo truth on 'seed training' at update 6 (K = 8 rollouts per op)" in charts(at)
    assert "Ground truth at update: 6 (the only one so far)" in texts(at.caption)


@pytest.mark.parametrize("updates, truth_every, says", [
    (12, 0, "Ground truth is off in this run (`truth.every` = 0)."),
    (4, 6, "No ground truth yet: this run measures it every 6 updates, within 10% of its time."),
])
def test_per_op_values_without_ground_truth_says_how_to_get_it(runs_dir, updates, truth_every, says):
    run = make_run(runs_dir, "no-truth", updates=updates, truth_every=truth_every)
    assert not (run / TRUTH_FILE).exists()
    at = show(app().run(), "Per-op values")
    assert_clean(at)
    info = texts(at.info)
    assert says in info and f"esper-lab probe --checkpoint {run}/checkpoint.pt" in info
    assert not any(title.startswith("Critic vs Monte Carlo truth") for title in charts(at))
    assert "Q(s, op) over updates, probe state 'empty slots'" in charts(at)


def test_seeds_view(fixture_run):
    at = show(app().run(), "Seeds")
    assert_clean(at)
    figs = charts(at)
    lanes = figs["Seed lifecycles in update 12"]
    assert lanes and all(t["orientation"] == "h" for t in lanes)
    assert {y for t in lanes for y in t["y"]} <= {f"env {e} · {s}" for e in (0, 1) for s in ("r0c0", "r0c1", "r0c2")}
    assert all(name.startswith("env ") for name in names(figs["Blend alpha per seed in update 12"]))
    at.select_slider(key="seeds_update").set_value(11).run()  # not a snapshot update: lanes, no alpha ticks
    assert "Seed lifecycles in update 11" in charts(at) and "Alpha curves come from" in texts(at.caption)


def test_compare_overlays_runs(runs_dir):
    for critic in ("q_op", "v", "q_marginal"):
        make_run(runs_dir, f"tiny-{critic}", critic=critic, updates=5)
    at = show(app().run(), "Compare")
    assert_clean(at)
    figs = charts(at)
    assert set(figs) == {"episode_return", "val_acc", "explained_variance", "q_spread"}
    assert sorted(names(figs["val_acc"])) == ["tiny-q_marginal", "tiny-q_op", "tiny-v"]
    at.multiselect(key="cmp_runs").set_value(["tiny-v"]).run()
    assert "Pick two or more runs" in texts(at.info)


def test_compare_with_one_run_explains(fixture_run):
    at = show(app().run(), "Compare")
    assert_clean(at)
    assert "two or more runs" in texts(at.info)


def test_half_written_last_line(runs_dir):
    make_run(runs_dir, "torn", updates=5, half_line=True)
    at = app().run()
    assert_clean(at)
    ret = next(t for t in charts(at)["Episode return"] if t["name"] == "episode_return")
    assert ret["x"] == [1, 2, 3, 4, 5]
    assert "half-written line" in texts(at.caption)


def test_failed_trainer_shows_its_error(runs_dir):
    run = make_run(runs_dir, "broken", updates=2, state="failed", error="RuntimeError: host diverged (loss is nan)")
    log = "Traceback (most recent call last):\nRuntimeError: host diverged (loss is nan)\n"
    (run / process.LOG_NAME).write_text(log)
    at = app().run()
    assert not at.exception
    assert "Training failed: RuntimeError: host diverged (loss is nan)" in texts(at.error)
    assert "host diverged" in texts(at.code)


def test_vanished_trainer_reads_as_failed(runs_dir):
    gone = subprocess.Popen(["true"])
    gone.wait()
    make_run(runs_dir, "orphan", updates=3, state="running", pid=gone.pid)
    at = app().run()
    assert not at.exception
    assert "is gone without writing a final status" in texts(at.error)
    assert not has_button(at, "stop")


def test_deleted_run_between_reruns(runs_dir):
    make_run(runs_dir, "keeper", updates=3)
    time.sleep(0.02)
    doomed = make_run(runs_dir, "doomed", updates=3)
    at = app().run()
    assert at.selectbox(key="run").value == "doomed"
    shutil.rmtree(doomed)
    at.run()
    assert not at.exception
    assert "Run **doomed** is gone" in texts(at.warning)
    assert at.selectbox(key="run").value == "keeper"
    shutil.rmtree(runs_dir / "keeper")
    at.run()
    assert not at.exception and "No runs yet" in texts(at.info)


# --- a real trainer child process ----------------------------------------------------------------------------------


def start_tiny(at: AppTest, updates: int, masks: str = "conditional") -> Path:
    at.selectbox(key="train_preset").set_value("tiny").run()
    assert at.selectbox(key="train_masks").options == ["conditional", "independent"]
    at.selectbox(key="train_masks").set_value(masks)
    at.number_input(key="train_updates").set_value(updates)
    at.button(key="start").click().run()
    assert not at.exception and not at.error, texts(at.error)
    return Path(os.environ["ESPER_LAB_RUNS"]) / at.selectbox(key="run").value


def wait_for(at: AppTest, predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        at.run()
        if predicate(at):
            return True
        time.sleep(0.5)
    return False


def return_points(at: AppTest) -> int:
    traces = charts(at).get("Episode return", [])
    return sum(len(t["x"]) for t in traces if t["name"] == "episode_return")


@pytest.mark.trainer
def test_start_watch_and_stop_real_trainers(runs_dir):
    """Two `tiny` children side by side (to keep the test short): one runs to the end, one is stopped."""
    at = app().run()
    short = start_tiny(at, updates=2, masks="independent")
    long = start_tiny(at, updates=200)
    assert RunReader(short).config()["policy"]["masks"] == "independent"  # the Masks choice reaches the trainer
    assert RunReader(long).config()["policy"]["masks"] == "conditional"
    assert at.selectbox(key="run").value == long.name
    pid = RunReader(long).status()["pid"]
    assert pid != os.getpid() and process.trainer_alive(pid, long)
    assert (long / "config.json").is_file() and has_button(at, "stop")

    assert wait_for(at, lambda a: return_points(a) >= 1, 90), process.log_tail(long)
    assert not at.exception
    at.button(key="stop").click().run()
    assert not process.trainer_alive(pid, long)
    assert RunReader(long).status()["state"] == "stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "stopped" in texts(at.markdown) and not has_button(at, "stop")

    at.selectbox(key="run").set_value(short.name).run()
    finished = wait_for(at, lambda a: RunReader(short).status().get("state") == "finished", 120)
    assert finished, process.log_tail(short)
    at.run()
    assert_clean(at)
    assert return_points(at) == 2 and "finished" in texts(at.markdown)
    assert "Blueprint embeddings at update 2 (PCA of 14 x 4)" in charts(show(at, "Blueprint embeddings"))
