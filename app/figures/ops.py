"""Per-op values Q(s, op) on the snapshots' fixed probe states."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from .common import axis, layout, make

LEGAL_Q, LEGAL_P, MASKED = "#4C78A8", "#F58518", "#D0D0D0"


def op_values_over_updates(snaps: Sequence[dict], probe: int) -> go.Figure:
    """Heatmap of Q(probe, op): rows are ops, columns snapshot updates; masked ops are marked with x."""
    ops = list(snaps[-1]["op_names"])
    z = np.array([s["probe_op_values"][probe] for s in snaps], dtype=float).T  # [ops, U]
    legal = np.array([s["probe_op_masks"][probe] for s in snaps], dtype=bool).T  # [ops, U]
    trace = {"type": "heatmap", "z": z.round(4).tolist(), "x": [s["update"] for s in snaps], "y": ops,
             "colorscale": "Viridis", "name": "Q(s, op)", "text": np.where(legal, "", "×").tolist(),
             "texttemplate": "%{text}", "hovertemplate": "update %{x}<br>%{y}: Q = %{z:.3f}<extra></extra>",
             "colorbar": {"title": {"text": "Q"}}}
    return make([trace], layout(f"Q(s, op) over updates, probe state '{snaps[-1]['probe_names'][probe]}'", height=340,
                                xopts={"type": "category"}, yopts={"autorange": "reversed"}, hovermode="closest"))


def decision(snap: dict, probe: int) -> go.Figure:
    """One probe state's decision: Q(s, op) per op next to the op probabilities; masked ops grey and hatched."""
    ops = list(snap["op_names"])
    legal = [bool(m) for m in snap["probe_op_masks"][probe]]
    traces = []
    for axes, values, name, tint in (("", snap["probe_op_values"][probe], "Q(s, op)", LEGAL_Q),
                                     ("2", snap["probe_op_probs"][probe], "π(op)", LEGAL_P)):
        for is_legal in (True, False):
            idx = [i for i, ok in enumerate(legal) if ok == is_legal]
            traces.append({
                "type": "bar", "x": [ops[i] for i in idx], "y": [values[i] for i in idx], "xaxis": f"x{axes}",
                "yaxis": f"y{axes}", "name": name if is_legal else f"{name}, masked",
                "marker": {"color": tint if is_legal else MASKED, "pattern": {"shape": "" if is_legal else "/"}},
                "text": [f"{values[i]:.2f}" if is_legal else "masked" for i in idx], "textposition": "outside"})
    ordered = {"categoryorder": "array", "categoryarray": ops}
    fig_layout = layout(f"Decision on '{snap['probe_names'][probe]}' at update {snap.get('update')}", height=340,
                        xaxis=None, yaxis="Q(s, op)", xopts={**ordered, "domain": [0.0, 0.44]},
                        hovermode="closest", barmode="overlay")
    fig_layout["xaxis2"] = axis(None, **ordered, domain=[0.56, 1.0], anchor="y2")
    fig_layout["yaxis2"] = axis("π(op | s)", range=[0, 1.15], anchor="x2")
    return make(traces, fig_layout)
