"""Shared look of every figure, and the column helpers every module reads run rows with.

Figures are written as plain dicts and turned into a `go.Figure` once (`make`): building them through
`add_trace` / `update_layout` validates every property on every call and costs ~40 ms a figure, too slow for a
view that redraws eight of them every refresh.
"""

from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go

HEIGHT = 300
PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D", "#BAB0AC")
STAGE_COLORS = {
    "DORMANT": "#D9D9D9",
    "GERMINATED": "#9ECAE9",
    "TRAINING": "#4C78A8",
    "BLENDING": "#F58518",
    "HOLDING": "#EECA3B",
    "FOSSILIZED": "#54A24B",
    "PRUNED": "#E45756",
    "EMBARGOED": "#B279A2",
    "RESETTING": "#9D755D",
    "UNKNOWN": "#BAB0AC",
}
GRID = "#E5EAF2"
Rows = Sequence[dict]


def col(rows: Rows, key: str) -> list:
    """The values of `key` across rows (None where a row lacks it or holds null)."""
    return [r.get(key) for r in rows]


def updates(rows: Rows) -> list:
    """The rows' update numbers (the x axis of every curve)."""
    return col(rows, "update")


def axis(title: str | None = None, **extra: Any) -> dict:
    """An axis dict in the shared look, titled `title`, with `extra` settings on top."""
    return {"title": {"text": title}, "gridcolor": GRID, "zerolinecolor": GRID, "linecolor": GRID, "automargin": True,
            **extra}


def layout(title: str, *, height: int = HEIGHT, xaxis: str | None = "update", yaxis: str | None = None,
           right: str | None = None, xopts: dict | None = None, yopts: dict | None = None, **extra: Any) -> dict:
    """Title, size, margins, a legend under the plot, a white background.

    `xaxis` / `yaxis` are the axis titles and `xopts` / `yopts` more axis settings; `right` adds a second y axis
    ('y2'); other keywords are layout keys, merged one level deep into what is there.
    """
    out = {
        "title": {"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 15}},
        "height": height,
        "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
        "legend": {"orientation": "h", "yref": "container", "y": 0.0, "yanchor": "bottom", "xanchor": "left", "x": 0.0},
        "hovermode": "x unified" if xaxis == "update" else "closest",
        "plot_bgcolor": "white",
        "paper_bgcolor": "white",
        "font": {"color": "#2A3F5F"},
        "xaxis": axis(xaxis, **(xopts or {})),
        "yaxis": axis(yaxis, **(yopts or {})),
    }
    if right is not None:
        out["yaxis2"] = axis(right, overlaying="y", side="right", showgrid=False, tickmode="auto")
    for key, value in extra.items():
        out[key] = {**out[key], **value} if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def update_ticks(xs: list) -> dict:
    """x-axis settings for updates: whole-number ticks when only a few updates are shown (else plotly's own)."""
    found = [x for x in xs if x is not None]
    return {"dtick": 1} if found and max(found) - min(found) <= 10 else {}


def make(traces: list[dict], fig_layout: dict) -> go.Figure:
    """One validated `go.Figure` from trace dicts (each with its "type") and a layout dict."""
    return go.Figure({"data": traces, "layout": fig_layout})


def color(i: int) -> str:
    """The i-th palette colour (cycling)."""
    return PALETTE[i % len(PALETTE)]


def trace_names(fig: go.Figure) -> list[str]:
    """Names of a figure's traces (what the tests and the legend show)."""
    return [t.name for t in fig.data]
