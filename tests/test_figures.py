"""The dashboard's pure figure functions on fixture run data: traces, values, and the derived tables."""

from __future__ import annotations

import numpy as np
import pytest

from app import data
from app.figures import compare, curves, embeddings, ops, seeds
from app.figures.common import trace_names
from esper_lab.actions import HEAD_NAMES
from esper_lab.runs import METRIC_KEYS, OP_NAMES
from fixtures.make_run import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("runs"), "figs", updates=9, snapshot_every=3)
    return {"metrics": data.metrics(run_dir), "events": data.events(run_dir), "baselines": data.baselines(run_dir),
            "snaps": data.snapshots(run_dir), "dir": run_dir}


def test_fixture_rows_hold_every_metric_key(run):
    assert len(run["metrics"]) == 9
    assert all(set(row) == set(METRIC_KEYS) for row in run["metrics"])


def test_return_figure_has_series_and_both_baselines(run):
    fig = curves.episode_return(run["metrics"], run["baselines"])
    by_name = {t.name: t for t in fig.data}
    assert {"episode_return", "heuristic", "random"} <= set(by_name)
    assert list(by_name["episode_return"].y) == [r["episode_return"] for r in run["metrics"]]
    assert list(by_name["heuristic"].y) == [1.2, 1.2] and list(by_name["random"].y) == [-1.5, -1.5]
    assert list(by_name["heuristic"].x) == [1, 9]


def test_baseline_line_spans_a_single_update():
    fig = curves.episode_return([{"update": 1, "episode_return": 0.5}], {"heuristic": {"episode_return": 1.0}})
    assert list(fig.data[-1].x) == [0.5, 1.5]


def test_curve_set_and_their_traces(run):
    figs = curves.all_curves(run["metrics"], run["baselines"])
    assert list(figs) == ["return", "val_acc", "losses", "entropy", "kl_clip", "explained_variance", "speed",
                          "q_health"]
    assert trace_names(figs["entropy"]) == list(HEAD_NAMES)
    assert trace_names(figs["losses"]) == ["policy_loss", "value_loss"]
    assert trace_names(figs["kl_clip"]) == ["approx_kl", "clip_fraction"]
    assert trace_names(figs["speed"]) == ["env", "policy", "update", "SPS"]
    assert trace_names(figs["q_health"]) == ["q_spread", "q_variance"]
    ev = figs["explained_variance"].data[0].y
    assert ev[0] is None and ev[1] == pytest.approx(run["metrics"][1]["explained_variance"])  # null stays a gap


@pytest.mark.parametrize("value, band", [(None, ""), (0.0, "collapsed"), (0.0099, "collapsed"), (0.01, "weak"),
                                         (0.0999, "weak"), (0.1, "healthy"), (3.0, "healthy")])
def test_q_health_thresholds(value, band):
    assert curves.q_health(value) == band


def test_q_points_are_coloured_by_threshold():
    rows = [{"update": 1, "q_spread": 0.005, "q_variance": 0.05}, {"update": 2, "q_spread": 0.5, "q_variance": None}]
    fig = curves.q_spread_variance(rows)
    assert list(fig.data[0].marker.color) == [curves.Q_COLORS["collapsed"], curves.Q_COLORS["healthy"]]
    assert list(fig.data[1].marker.color)[0] == curves.Q_COLORS["weak"]


def test_pca_recovers_a_planar_table():
    rng = np.random.default_rng(0)
    plane = rng.standard_normal((14, 2)) @ np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    proj = embeddings.pca_2d(plane)
    assert proj.explained.sum() == pytest.approx(1.0)
    xy = proj.project(plane)
    # distances are preserved when the table lies in a plane
    d_in = np.linalg.norm(plane[:, None] - plane[None], axis=-1)
    d_out = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.testing.assert_allclose(d_out, d_in, atol=1e-9)
    assert all(row[np.argmax(np.abs(row))] > 0 for row in proj.components)  # deterministic signs


def test_embedding_map_has_14_labelled_points(run):
    fig = embeddings.embedding_map(run["snaps"][-1])
    labels = [label for trace in fig.data for label in trace.text]
    assert sorted(labels) == sorted(run["snaps"][-1]["blueprint_names"]) and len(labels) == 14
    assert trace_names(fig) == ["CNN blueprint", "transformer blueprint (masked here)", "null (empty slot)"]
    assert fig.data[2].text == ("NULL",)


def test_cosine_similarity_is_symmetric_with_unit_diagonal():
    m = np.random.default_rng(1).standard_normal((14, 4))
    sim = embeddings.cosine_similarity(m)
    np.testing.assert_allclose(np.diag(sim), 1.0)
    np.testing.assert_allclose(sim, sim.T)
    assert embeddings.cosine_similarity(np.zeros((2, 4))).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_blueprint_outcomes_counts_and_mean_contribution():
    t = lambda bp, to, c=None: {"kind": "transition", "blueprint": bp, "to": to, "contribution": c}  # noqa: E731
    events = [t("NORM", "GERMINATED"), t("NORM", "BLENDING", 1.0), t("NORM", "FOSSILIZED", 2.0),
              t("CONV_LIGHT", "GERMINATED"), t("CONV_LIGHT", "PRUNED", -1.0), {"kind": "tick", "blueprint": "NORM"}]
    rows = embeddings.blueprint_outcomes(events)
    assert rows == [
        {"blueprint": "CONV_LIGHT", "germinated": 1, "fossilized": 0, "pruned": 1, "mean_contribution": -1.0},
        {"blueprint": "NORM", "germinated": 1, "fossilized": 1, "pruned": 0, "mean_contribution": 1.5},
    ]
    assert trace_names(embeddings.outcomes_chart(rows)) == ["germinated", "fossilized", "pruned", "mean contribution"]


def test_op_value_heatmap_is_ops_by_updates_with_masks_marked(run):
    fig = ops.op_values_over_updates(run["snaps"], probe=0)
    heat = fig.data[0]
    assert list(heat.y) == list(OP_NAMES) and list(heat.x) == [3, 6, 9]
    assert np.asarray(heat.z).shape == (len(OP_NAMES), 3)
    assert heat.z[1][2] == pytest.approx(run["snaps"][2]["probe_op_values"][0][1], abs=1e-4)
    masked = [not m for m in run["snaps"][0]["probe_op_masks"][0]]
    assert [cell == "×" for cell in np.asarray(heat.text)[:, 0]] == masked


def test_decision_separates_masked_ops(run):
    snap = run["snaps"][-1]
    fig = ops.decision(snap, probe=1)
    assert trace_names(fig) == ["Q(s, op)", "Q(s, op), masked", "π(op)", "π(op), masked"]
    legal = [op for op, ok in zip(snap["op_names"], snap["probe_op_masks"][1]) if ok]
    assert list(fig.data[0].x) == legal and list(fig.data[2].x) == legal
    assert sum(fig.data[2].y) == pytest.approx(1.0, abs=1e-6)  # masked ops carry no probability


def test_segments_cover_each_stage_until_the_next_transition():
    ev = [{"kind": "transition", "update": 2, "env": 0, "slot": "r0c0", "epoch": e, "to": to, "blueprint": "NORM"}
          for e, to in ((2, "GERMINATED"), (3, "TRAINING"), (6, "PRUNED"))]
    segs = seeds.segments(ev + [{"kind": "transition", "update": 1, "env": 0, "slot": "r0c0", "epoch": 1,
                                 "to": "GERMINATED"}], update=2, episode_end=8)
    assert [(s.stage, s.start, s.end) for s in segs] == [("GERMINATED", 2, 3), ("TRAINING", 3, 6), ("PRUNED", 6, 9)]


def test_swimlane_and_alpha_from_fixture_events(run):
    ticked = seeds.updates_with(run["events"], "tick")
    assert ticked == [3, 6, 9]
    segs = seeds.segments(run["events"], 9, episode_end=8)
    fig = seeds.swimlane(segs, 9, seeds.lanes_of(run["events"], 9))
    assert set(trace_names(fig)) == {s.stage for s in segs}
    assert all(t.orientation == "h" for t in fig.data)
    alpha = seeds.alpha_curves(run["events"], 9)
    assert alpha.data and all(name.startswith("env ") for name in trace_names(alpha))
    assert all(0.0 <= a <= 1.0 for t in alpha.data for a in t.y)


def test_compare_overlays_runs_and_smooths():
    rows_a = [{"update": i, "val_acc": float(i)} for i in (1, 2, 3)]
    rows_b = [{"update": i, "val_acc": None if i == 2 else 1.0} for i in (1, 2, 3)]
    fig = compare.overlay("val_acc", [("a", rows_a), ("b", rows_b)])
    assert trace_names(fig) == ["a", "b"] and list(fig.data[0].y) == [1.0, 2.0, 3.0]
    assert compare.smooth([1.0, None, 1.0], 0.9) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert compare.smooth([0.0, 10.0], 0.5)[1] == pytest.approx(10.0 * 0.5 / 0.75)
