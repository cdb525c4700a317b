"""esper_lab.plots, the figures shared by the dashboard and the notebooks, on fixture run data: traces, values,
the derived tables, and what the package may import."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

from app import data
from esper_lab import plots
from esper_lab.actions import HEAD_NAMES, OP_NAMES, BlueprintAction, LifecycleOp
from esper_lab.plots import compare, curves, embeddings, ops, seeds
from esper_lab.plots.common import trace_names
from esper_lab.runs import METRIC_KEYS
from fixtures.make_run import make_run

ALLOWED_LAB_IMPORTS = {"esper_lab.actions", "esper_lab.config", "esper_lab.runs"}


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
                          "q_health", "advantages", "illegal"]
    assert trace_names(figs["illegal"]) == ["illegal_fraction"]
    assert trace_names(figs["advantages"]) == ["advantage_mean", "advantage_std", "optimizer_steps"]
    steps = figs["advantages"].data[2]
    assert steps.yaxis == "y2" and list(steps.y) == [r["optimizer_steps"] for r in run["metrics"]]
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


def test_compare_grid_has_one_panel_per_metric_and_faint_raw_lines():
    records = {"q_op": [{"update": i, "episode_return": float(i), "q_spread": 0.1} for i in range(1, 5)],
               "v": [{"update": i, "episode_return": -float(i), "q_spread": None} for i in range(1, 5)]}
    panels = {"episode_return": "return", "q_spread": "q_spread"}
    fig = compare.overlay_grid(panels, list(records.items()), smoothing=0.5)
    assert len(fig.data) == 8  # 2 metrics x 2 runs x (raw, smoothed)
    assert [a.text for a in fig.layout.annotations] == ["return", "q_spread"]
    assert [t.name for t in fig.data if t.showlegend is not False] == ["q_op", "v"]  # one legend for the grid
    raw, smoothed = fig.data[0], fig.data[1]
    assert raw.opacity == 0.3 and list(raw.y) == [1.0, 2.0, 3.0, 4.0]
    assert list(smoothed.y) == pytest.approx(compare.smooth([1.0, 2.0, 3.0, 4.0], 0.5))
    assert len(compare.overlay("q_spread", list(records.items())).data) == 2  # no raw lines without smoothing


def test_pca_2d_shared_axes_and_stable_signs():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(14, 4))
    b = a + 0.1 * rng.normal(size=(14, 4))
    basis = embeddings.pca_2d(np.concatenate([a, b]))  # one frame for both tables
    pa, pb = basis.project(a), basis.project(b)
    assert pa.shape == (14, 2) and pb.shape == (14, 2)
    assert 0 < basis.explained[1] <= basis.explained[0] <= 1
    mirrored = embeddings.pca_2d(np.concatenate([-a, -b]))  # the same picture up to the sign convention
    assert np.allclose(np.abs(mirrored.project(-a)), np.abs(pa))


def test_embedding_trails_share_one_frame_across_snapshots():
    names = [bp.name for bp in BlueprintAction] + ["NULL"]
    rng = np.random.default_rng(1)
    snaps = [{"update": u, "blueprint_names": names, "embedding": rng.normal(size=(14, 4)).tolist()} for u in (1, 2, 3)]
    fig = embeddings.embedding_trails(snaps)
    trails = [t for t in fig.data if t.mode == "lines"]
    assert len(trails) == 14 and all(len(t.x) == 3 for t in trails)
    markers = [t for t in fig.data if t.mode == "markers+text"]
    assert trace_names(fig)[14:] == list(embeddings.GROUP_STYLE)
    assert sorted(label for t in markers for label in t.text) == sorted(names)
    basis = embeddings.pca_2d(np.concatenate([np.asarray(s["embedding"]) for s in snaps]))
    assert list(trails[0].x) == pytest.approx([basis.project(s["embedding"])[0, 0] for s in snaps])
    assert "updates 1 to 3" in fig.layout.title.text
    with pytest.raises(ValueError):
        embeddings.embedding_trails([])


def test_probe_values_blank_masked_ops():
    snap = {"update": 3, "op_names": list(OP_NAMES), "probe_names": ["p0", "p1"],
            "probe_op_values": [[0.1] * 6, [0.2] * 6], "probe_op_masks": [[True] * 6, [True, False] + [True] * 4]}
    heat = ops.probe_values(snap).data[0]
    assert list(heat.y) == ["p0", "p1"] and list(heat.x) == list(OP_NAMES)
    assert heat.z[1][1] is None and heat.z[0][1] == pytest.approx(0.1) and heat.text[1][1] == ""


def test_op_value_bars_grey_the_masked_ops():
    fig = ops.op_value_bars(np.arange(6.0), legal=[True, False, True, True, True, True])
    assert trace_names(fig) == ["Q(s, op)", "Q(s, op), masked"]
    assert list(fig.data[0].x) == [op.name for op in LifecycleOp if op != LifecycleOp.GERMINATE]
    assert list(fig.data[1].x) == ["GERMINATE"] and fig.data[1].marker.color == ops.MASKED
    assert trace_names(ops.op_value_bars([0.0] * 6)) == ["Q(s, op)"]  # no legality given: every op drawn legal


def test_stage_segments_from_steps_and_their_swimlane():
    stages = [[None, None, None], ["GERMINATED", None, None], ["TRAINING", None, "FOSSILIZED"]]
    segs = seeds.stage_segments(stages, ("r0c0", "r0c1", "r0c2"))
    assert [(s.lane, s.stage, s.start, s.end) for s in segs] == [
        ("r0c0", "GERMINATED", 1, 2), ("r0c0", "TRAINING", 2, 3), ("r0c2", "FOSSILIZED", 2, 3)]
    fig = seeds.swimlane(segs, lanes=("r0c0", "r0c1", "r0c2"), title="stages")
    assert fig.layout.title.text == "stages" and list(fig.layout.yaxis.categoryarray) == ["r0c2", "r0c1", "r0c0"]
    assert trace_names(fig) == ["GERMINATED", "TRAINING", "FOSSILIZED"]  # lifecycle order, one trace per stage


def test_plots_import_only_numpy_plotly_and_the_lab_core():
    for path in Path(plots.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ok = (top in sys.stdlib_module_names or top in ("numpy", "plotly")
                      or any(name == m or name.startswith(m + ".") for m in ALLOWED_LAB_IMPORTS))
                assert ok, f"{path.name} imports {name}: only numpy, plotly and {ALLOWED_LAB_IMPORTS} are allowed"
