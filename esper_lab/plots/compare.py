"""Two or more runs overlaid on one metric, or on a grid of metrics; the comparison table's rows."""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import Rows, axis, col, color, layout, make, update_ticks, updates

Runs = Sequence[tuple[str, Rows]]  # (label, metrics rows) per run


def smooth(values: Sequence[float | None], weight: float) -> list[float | None]:
    """Exponential moving average (TensorBoard-style, debiased); None stays a gap and does not reset the average.

    `weight` 0 returns the values unchanged; closer to 1 smooths more.
    """
    out, avg, n = [], 0.0, 0
    for v in values:
        if v is None:
            out.append(None)
            continue
        avg, n = weight * avg + (1 - weight) * v, n + 1
        out.append(avg / (1 - weight**n) if weight > 0 else v)
    return out


def overlay_traces(metric: str, runs: Runs, smoothing: float = 0.0, *, legend: bool = True) -> list[dict]:
    """Trace dicts of `metric`, one solid line per run (smoothed by `smoothing`), under it the raw values faint
    when smoothing is on."""
    traces = []
    for i, (label, rows) in enumerate(runs):
        x, y = updates(rows), col(rows, metric)
        line = {"type": "scatter", "x": x, "mode": "lines", "name": label, "legendgroup": label}
        if smoothing > 0:
            traces.append({**line, "y": y, "line": {"color": color(i), "width": 1}, "opacity": 0.3,
                           "showlegend": False, "hoverinfo": "skip"})
        traces.append({**line, "y": smooth(y, smoothing), "line": {"color": color(i), "width": 2},
                       "showlegend": legend})
    return traces


def overlay(metric: str, runs: Runs, *, smoothing: float = 0.0) -> go.Figure:
    """`metric` over updates, one line per (label, rows) run."""
    return make(overlay_traces(metric, runs, smoothing),
                layout(metric, xopts=update_ticks([u for _, rows in runs for u in updates(rows)])))


def overlay_grid(panels: Mapping[str, str], runs: Runs, *, smoothing: float = 0.0, cols: int = 2) -> go.Figure:
    """One subplot per `metric: title` of `panels`, each overlaying the runs as `overlay` does (one legend)."""
    rows = (len(panels) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(panels.values()), vertical_spacing=0.12)
    for i, metric in enumerate(panels):
        traces = overlay_traces(metric, runs, smoothing, legend=i == 0)
        fig.add_traces(traces, rows=i // cols + 1, cols=i % cols + 1)
    look = layout("", height=280 * rows, xaxis=None)
    fig.update_layout({k: v for k, v in look.items() if k not in ("title", "xaxis", "yaxis")})
    fig.update_layout(margin={"t": 40, "b": 40})
    fig.update_xaxes(axis("update"))
    fig.update_yaxes(axis())
    return fig


def summary(label: str, config: dict, status: dict, rows: Rows) -> dict:
    """One row of the comparison table: the run's settings, its state and its last update's headline numbers."""
    last = rows[-1] if rows else {}
    return {
        "run": label,
        "preset": config.get("preset"),
        "critic": (config.get("policy") or {}).get("critic"),
        "envs": config.get("num_envs"),
        "seed": config.get("seed"),
        "state": status.get("state", "?"),
        "updates": f"{last.get('update', 0)}/{config.get('updates', '?')}",
        "return (last)": last.get("episode_return"),
        "val acc (last)": last.get("val_acc"),
        "EV (last)": last.get("explained_variance"),
    }
