"""Seed lifecycles: a swimlane per (env, slot) over epochs, from events.jsonl or from stages seen step by step;
and the blend-alpha curves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import plotly.graph_objects as go

from .common import STAGE_COLORS, color, layout, make


@dataclass(frozen=True)
class Segment:
    """One stage of one seed: epochs [start, end)."""

    lane: str
    stage: str
    start: int
    end: int
    blueprint: str | None


def lane(env: int, slot: str) -> str:
    """The swimlane label of one env's slot: 'env 0 · r0c1'."""
    return f"env {env} · {slot}"


def updates_with(events: Sequence[dict], kind: str) -> list[int]:
    """Updates that hold at least one event of `kind` ('transition' or 'tick'), ascending."""
    return sorted({e["update"] for e in events if e.get("kind") == kind and "update" in e})


def segments(events: Sequence[dict], update: int, episode_end: int) -> list[Segment]:
    """Stage segments of one update's episodes, from its transitions (a stage lasts until the next one)."""
    by_lane: dict[str, list[dict]] = {}
    for e in events:
        if e.get("kind") == "transition" and e.get("update") == update:
            by_lane.setdefault(lane(e["env"], e["slot"]), []).append(e)
    out = []
    for name, rows in sorted(by_lane.items()):
        rows.sort(key=lambda e: e["epoch"])
        ends = [r["epoch"] for r in rows[1:]] + [max(episode_end + 1, rows[-1]["epoch"] + 1)]
        out += [Segment(name, r["to"], r["epoch"], end, r.get("blueprint"))
                for r, end in zip(rows, ends) if end > r["epoch"]]
    return out


def stage_segments(stages: Sequence[Sequence[str | None]], lanes: Sequence[str]) -> list[Segment]:
    """Stage segments from per-step stage names: `stages[t][s]` is lane s's stage at step t (None: empty slot).

    A segment covers the steps [start, end) over which a lane keeps one stage; empty stretches give none.
    """
    out = []
    for s, name in enumerate(lanes):
        start = 0
        for t in range(1, len(stages) + 1):
            if t == len(stages) or stages[t][s] != stages[start][s]:
                if stages[start][s] is not None:
                    out.append(Segment(name, stages[start][s], start, t, None))
                start = t
    return out


def lanes_of(events: Sequence[dict], update: int) -> list[str]:
    """Every (env, slot) lane seen in this update's events, sorted."""
    return sorted({lane(e["env"], e["slot"]) for e in events if e.get("update") == update and "slot" in e})


def swimlane(segs: Sequence[Segment], update: int | None = None, lanes: Sequence[str] = (), *,
             title: str | None = None) -> go.Figure:
    """Horizontal bars per lane coloured by stage; one trace per stage so the legend reads as the lifecycle.

    `lanes` adds lanes without segments (empty all along); the title defaults to 'Seed lifecycles in update N'.
    """
    all_lanes = sorted(set(lanes) | {s.lane for s in segs})
    traces = []
    for stage, stage_color in STAGE_COLORS.items():
        mine = [s for s in segs if s.stage == stage]
        if mine:
            traces.append({
                "type": "bar", "orientation": "h", "y": [s.lane for s in mine], "x": [s.end - s.start for s in mine],
                "base": [s.start for s in mine], "name": stage,
                "marker": {"color": stage_color, "line": {"width": 0.5, "color": "white"}},
                "customdata": [[s.blueprint or "", s.start, s.end - 1] for s in mine],
                "hovertemplate": "%{y}<br>" + stage + " %{customdata[0]}<br>epochs %{customdata[1]}–%{customdata[2]}"
                                 "<extra></extra>"})
    title = title or f"Seed lifecycles in update {update}"
    return make(traces, layout(title, height=max(220, 80 + 28 * len(all_lanes)), xaxis="epoch",
                               yopts={"categoryorder": "array", "categoryarray": all_lanes[::-1]},
                               barmode="overlay", hovermode="closest", bargap=0.25))


def alpha_curves(events: Sequence[dict], update: int) -> go.Figure:
    """Alpha per epoch for each lane, from the update's tick records (written on snapshot updates)."""
    by_lane: dict[str, list[dict]] = {}
    for e in events:
        if e.get("kind") == "tick" and e.get("update") == update:
            by_lane.setdefault(lane(e["env"], e["slot"]), []).append(e)
    traces = []
    for i, (name, rows) in enumerate(sorted(by_lane.items())):
        rows.sort(key=lambda e: e["epoch"])
        traces.append({
            "type": "scatter", "x": [r["epoch"] for r in rows], "y": [r.get("alpha") for r in rows],
            "mode": "lines+markers", "name": name, "line": {"color": color(i), "shape": "hv"}, "marker": {"size": 4},
            "customdata": [[r.get("stage"), r.get("blueprint") or ""] for r in rows],
            "hovertemplate": name + "<br>epoch %{x}: alpha %{y:.2f}<br>%{customdata[0]} %{customdata[1]}"
                                    "<extra></extra>"})
    return make(traces, layout(f"Blend alpha per seed in update {update}", height=320, xaxis="epoch", yaxis="alpha",
                               yopts={"range": [-0.05, 1.05]}, hovermode="closest"))
