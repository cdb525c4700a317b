"""Per-op values Q(s, op): on the snapshots' fixed probe states, and as a bar per op for any state."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from esper_lab.actions import OP_NAMES

from .common import axis, layout, make

LEGAL_Q, LEGAL_P, MASKED = "#4C78A8", "#F58518", "#D0D0D0"
Q_HEATMAP = {"type": "heatmap", "colorscale": "Viridis", "name": "Q(s, op)", "texttemplate": "%{text}",
             "colorbar": {"title": {"text": "Q"}}}


def op_values_over_updates(snaps: Sequence[dict], probe: int) -> go.Figure:
    """Heatmap of Q(probe, op): rows are ops, columns snapshot updates; masked ops are marked with x."""
    ops = list(snaps[-1]["op_names"])
    z = np.array([s["probe_op_values"][probe] for s in snaps], dtype=float).T  # [ops, U]
    legal = np.array([s["probe_op_masks"][probe] for s in snaps], dtype=bool).T  # [ops, U]
    trace = {**Q_HEATMAP, "z": z.round(4).tolist(), "x": [s["update"] for s in snaps], "y": ops,
             "text": np.where(legal, "", "×").tolist(),
             "hovertemplate": "update %{x}<br>%{y}: Q = %{z:.3f}<extra></extra>"}
    return make([trace], layout(f"Q(s, op) over updates, probe state '{snaps[-1]['probe_names'][probe]}'", height=340,
                                xopts={"type": "category"}, yopts={"autorange": "reversed"}, hovermode="closest"))


def probe_values(snap: dict, title: str = "Q(s, op) on the probe states") -> go.Figure:
    """Heatmap of one snapshot's Q(s, op): rows are probe states, columns ops; masked ops are left blank."""
    values, masks = snap["probe_op_values"], snap["probe_op_masks"]
    z = [[round(v, 4) if ok else None for v, ok in zip(row, legal)] for row, legal in zip(values, masks)]
    trace = {**Q_HEATMAP, "z": z, "x": list(snap["op_names"]), "y": list(snap["probe_names"]),
             "text": [["" if v is None else f"{v:+.2f}" for v in row] for row in z],
             "hovertemplate": "%{y}<br>%{x}: Q = %{z:.3f}<extra></extra>"}
    return make([trace], layout(f"{title} (update {snap.get('update')}; blank = masked op)", xaxis=None,
                                height=120 + 40 * len(z), yopts={"autorange": "reversed"}))


def op_bars(ops: Sequence[str], values: Sequence[float], legal: Sequence[bool], name: str, tint: str,
            axes: str = "") -> list[dict]:
    """Two bar traces on axes `x{axes}`/`y{axes}`: the legal ops in `tint`, the masked ones grey and hatched."""
    traces = []
    for is_legal in (True, False):
        idx = [i for i, ok in enumerate(legal) if ok == is_legal]
        traces.append({
            "type": "bar", "x": [ops[i] for i in idx], "y": [values[i] for i in idx], "xaxis": f"x{axes}",
            "yaxis": f"y{axes}", "name": name if is_legal else f"{name}, masked",
            "marker": {"color": tint if is_legal else MASKED, "pattern": {"shape": "" if is_legal else "/"}},
            "text": [f"{values[i]:.2f}" if is_legal else "masked" for i in idx], "textposition": "outside"})
    return traces


def decision(snap: dict, probe: int) -> go.Figure:
    """One probe state's decision: Q(s, op) per op next to the op probabilities; masked ops grey and hatched."""
    ops = list(snap["op_names"])
    legal = [bool(m) for m in snap["probe_op_masks"][probe]]
    traces = (op_bars(ops, snap["probe_op_values"][probe], legal, "Q(s, op)", LEGAL_Q)
              + op_bars(ops, snap["probe_op_probs"][probe], legal, "π(op)", LEGAL_P, axes="2"))
    ordered = {"categoryorder": "array", "categoryarray": ops}
    fig_layout = layout(f"Decision on '{snap['probe_names'][probe]}' at update {snap.get('update')}", height=340,
                        xaxis=None, yaxis="Q(s, op)", xopts={**ordered, "domain": [0.0, 0.44]},
                        hovermode="closest", barmode="overlay")
    fig_layout["xaxis2"] = axis(None, **ordered, domain=[0.56, 1.0], anchor="y2")
    fig_layout["yaxis2"] = axis("π(op | s)", range=[0, 1.15], anchor="x2")
    return make(traces, fig_layout)


def op_value_bars(values: Sequence[float], legal: Sequence[bool] | None = None,
                  title: str = "Q(s, op)") -> go.Figure:
    """A bar per op (LifecycleOp order) of `values`; ops not `legal` (when given) grey and hatched."""
    values = [float(v) for v in values]
    legal = [True] * len(values) if legal is None else [bool(ok) for ok in legal]
    traces = [t for t in op_bars(OP_NAMES, values, legal, "Q(s, op)", LEGAL_Q) if t["x"]]
    return make(traces, layout(title, height=320, xaxis=None, yaxis="Q(s, op)", hovermode="closest",
                               barmode="overlay", xopts={"categoryorder": "array", "categoryarray": list(OP_NAMES)}))
