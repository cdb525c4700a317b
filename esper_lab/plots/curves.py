"""Training curves from metrics.jsonl rows: pure functions `rows -> plotly Figure`."""

from __future__ import annotations

import math
from typing import Sequence

import plotly.graph_objects as go

from esper_lab.actions import HEAD_NAMES

from .common import Rows, col, color, layout, make, update_ticks, updates

Q_COLLAPSED = 0.01  # below: the critic ignores the op (Esper's Q-variance check)
Q_HEALTHY = 0.1  # at or above: Q(s, op) clearly separates the ops
Q_COLORS = {"collapsed": "#E45756", "weak": "#EECA3B", "healthy": "#54A24B"}


def reference_line(rows: Rows, value: float, name: str, dash: str, line_color: str) -> dict:
    """A horizontal line across the plotted updates, as a named trace (so it shows in the legend)."""
    xs = [u for u in updates(rows) if u is not None] or [0]
    lo, hi = min(xs), max(xs)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return {"type": "scatter", "x": [lo, hi], "y": [value, value], "mode": "lines", "name": name,
            "hoverinfo": "skip", "line": {"dash": dash, "color": line_color, "width": 1.5}}


def with_baselines(title: str, rows: Rows, key: str, baselines: dict, *, yaxis: str) -> go.Figure:
    """`key` over updates (with its `<key>_std` band when present) and the heuristic and random baselines."""
    x, y, std = updates(rows), col(rows, key), col(rows, f"{key}_std")
    traces = []
    if any(s is not None for s in std):
        upper = [v + s if v is not None and s is not None else None for v, s in zip(y, std)]
        lower = [v - s if v is not None and s is not None else None for v, s in zip(y, std)]
        band = {"type": "scatter", "x": x, "mode": "lines", "line": {"width": 0}, "showlegend": False,
                "hoverinfo": "skip"}
        traces += [{**band, "y": upper, "name": f"{key} + std"},
                   {**band, "y": lower, "name": f"{key} - std", "fill": "tonexty",
                    "fillcolor": "rgba(76,120,168,0.15)"}]
    traces.append({"type": "scatter", "x": x, "y": y, "mode": "lines+markers", "name": key,
                   "line": {"color": color(0), "width": 2}, "marker": {"size": 5}})
    for name, dash, line_color in (("heuristic", "dash", "#54A24B"), ("random", "dot", "#E45756")):
        value = (baselines.get(name) or {}).get(key)
        if value is not None:
            traces.append(reference_line(rows, value, name, dash, line_color))
    return make(traces, layout(title, yaxis=yaxis, xopts=update_ticks(x)))


def episode_return(rows: Rows, baselines: dict) -> go.Figure:
    """Episode return over updates, with its std band and the baselines."""
    return with_baselines("Episode return", rows, "episode_return", baselines, yaxis="return")


def val_acc(rows: Rows, baselines: dict) -> go.Figure:
    """Final validation accuracy over updates, with its std band and the baselines."""
    return with_baselines("Validation accuracy", rows, "val_acc", baselines, yaxis="accuracy (%)")


def lines(title: str, rows: Rows, keys: Sequence[str], *, right: Sequence[str] = (), yaxis: str | None = None,
          names: dict[str, str] | None = None, yopts: dict | None = None) -> go.Figure:
    """One line per metric key; keys in `right` go on a second y axis (for metrics of another scale)."""
    traces = [{"type": "scatter", "x": updates(rows), "y": col(rows, key), "mode": "lines",
               "name": (names or {}).get(key, key), "line": {"color": color(i), "width": 2},
               "yaxis": "y2" if key in right else "y"} for i, key in enumerate(keys)]
    return make(traces, layout(title, yaxis=yaxis, right=" / ".join(right) if right else None,
                               xopts=update_ticks(updates(rows)), yopts=yopts))


def losses(rows: Rows) -> go.Figure:
    """Policy loss, and value loss on the right axis."""
    return lines("Policy and value loss", rows, ("policy_loss", "value_loss"), right=("value_loss",),
                 yaxis="policy_loss")


def entropy(rows: Rows) -> go.Figure:
    """The normalised entropy of each head, one line per head."""
    keys = tuple(f"entropy_{h}" for h in HEAD_NAMES)
    return lines("Entropy per head (normalised)", rows, keys, names={f"entropy_{h}": h for h in HEAD_NAMES})


def kl_clip(rows: Rows) -> go.Figure:
    """Approximate KL, and the clip fraction on the right axis."""
    return lines("Approx KL and clip fraction", rows, ("approx_kl", "clip_fraction"), right=("clip_fraction",),
                 yaxis="approx_kl")


def explained_variance(rows: Rows) -> go.Figure:
    """The critic's explained variance (0: no better than a constant)."""
    return lines("Explained variance", rows, ("explained_variance",), yaxis="EV",
                 yopts={"zerolinecolor": "#888"})  # EV 0: no better than a constant


def advantages(rows: Rows) -> go.Figure:
    """The raw advantages' mean and std before normalisation, and the optimizer steps taken (right axis: fewer than
    epochs x minibatches means the KL early stop fired)."""
    return lines("Advantages and optimizer steps", rows, ("advantage_mean", "advantage_std", "optimizer_steps"),
                 right=("optimizer_steps",), yaxis="advantage (normalised reward units)")


def illegal(rows: Rows) -> go.Figure:
    """The fraction of sampled actions that could not execute as requested (they ran as WAIT): 0 by construction
    with conditional masks."""
    return lines("Illegal actions (fraction of env steps)", rows, ("illegal_fraction",), yaxis="fraction",
                 yopts={"rangemode": "tozero"})


def speed(rows: Rows) -> go.Figure:
    """Stacked seconds per update (env, policy, PPO update) and SPS on the right axis."""
    parts = ("env_seconds", "policy_seconds", "update_seconds")
    traces = [{"type": "bar", "x": updates(rows), "y": col(rows, key), "name": key.removesuffix("_seconds"),
               "marker": {"color": color(i + 4)}} for i, key in enumerate(parts)]
    traces.append({"type": "scatter", "x": updates(rows), "y": col(rows, "sps"), "mode": "lines+markers", "name": "SPS",
                   "line": {"color": color(0), "width": 2}, "yaxis": "y2"})
    return make(traces, layout("Speed: SPS and time per update", yaxis="seconds", right="env steps / s",
                               xopts=update_ticks(updates(rows)), barmode="stack", yaxis2={"rangemode": "tozero"}))


def q_health(value: float | None) -> str:
    """'collapsed' (< 0.01: the critic ignores the op), 'weak' (< 0.1) or 'healthy'; '' when unknown."""
    if value is None:
        return ""
    return "collapsed" if value < Q_COLLAPSED else "weak" if value < Q_HEALTHY else "healthy"


def q_spread_variance(rows: Rows) -> go.Figure:
    """q_spread and q_variance on a log axis, each point coloured by the 0.01 / 0.1 thresholds, with bands."""
    traces = []
    for key, symbol, dash in (("q_spread", "circle", "solid"), ("q_variance", "diamond", "dot")):
        y = [v if v is not None and v > 0 else None for v in col(rows, key)]
        traces.append({"type": "scatter", "x": updates(rows), "y": y, "mode": "lines+markers", "name": key,
                       "line": {"color": "#888", "width": 1, "dash": dash},
                       "marker": {"color": [Q_COLORS.get(q_health(v), "#888") for v in y], "symbol": symbol,
                                  "size": 8}})
    limits = ((1e-9, Q_COLLAPSED, "collapsed"), (Q_COLLAPSED, Q_HEALTHY, "weak"), (Q_HEALTHY, 1e9, "healthy"))
    bands = [{"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": lo, "y1": hi, "line": {"width": 0},
              "fillcolor": Q_COLORS[band], "opacity": 0.08, "layer": "below"} for lo, hi, band in limits]
    found = [v for k in ("q_spread", "q_variance") for v in col(rows, k) if v is not None and v > 0]
    lo, hi = min(found + [Q_COLLAPSED]), max(found + [Q_HEALTHY])
    log_axis = {"type": "log", "range": [math.log10(lo) - 0.3, math.log10(hi) + 0.3]}
    return make(traces, layout("Op sensitivity of the critic: q_spread and q_variance", yaxis="value (log)",
                               xopts=update_ticks(updates(rows)), yopts=log_axis, shapes=bands))


def all_curves(rows: Rows, baselines: dict) -> dict[str, go.Figure]:
    """Every Curves-tab figure by a stable key, in display order."""
    return {
        "return": episode_return(rows, baselines),
        "val_acc": val_acc(rows, baselines),
        "losses": losses(rows),
        "entropy": entropy(rows),
        "kl_clip": kl_clip(rows),
        "explained_variance": explained_variance(rows),
        "speed": speed(rows),
        "q_health": q_spread_variance(rows),
        "advantages": advantages(rows),
        "illegal": illegal(rows),
    }
