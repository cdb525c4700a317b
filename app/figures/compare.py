"""Two or more runs overlaid on one metric."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from .common import color, layout, make, update_ticks


def smooth(values: Sequence[float | None], weight: float) -> list[float | None]:
    """Exponential moving average (TensorBoard-style, debiased); None stays a gap and does not reset the average."""
    out, avg, n = [], 0.0, 0
    for v in values:
        if v is None:
            out.append(None)
            continue
        avg, n = weight * avg + (1 - weight) * v, n + 1
        out.append(avg / (1 - weight**n) if weight > 0 else v)
    return out


def overlay(metric: str, runs: Sequence[tuple[str, Sequence[dict]]], *, smoothing: float = 0.0) -> go.Figure:
    """`metric` over updates, one line per (label, rows) run."""
    traces = [{"type": "scatter", "x": [r.get("update") for r in rows],
               "y": smooth([r.get(metric) for r in rows], smoothing), "mode": "lines", "name": label,
               "line": {"color": color(i), "width": 2}} for i, (label, rows) in enumerate(runs)]
    return make(traces, layout(metric, xopts=update_ticks([r.get("update") for _, rows in runs for r in rows])))


def summary(label: str, config: dict, status: dict, rows: Sequence[dict]) -> dict:
    """One row of the comparison table."""
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
