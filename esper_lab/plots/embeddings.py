"""Blueprint embeddings (snapshot `embedding` [14, 4]) and per-blueprint outcomes from events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from esper_lab.actions import CNN_BLUEPRINTS, BlueprintAction

from .common import color, layout, make

CNN_NAMES = frozenset(b.name for b in CNN_BLUEPRINTS)
NULL_NAME = "NULL"


@dataclass(frozen=True)
class Projection:
    """A 2-D PCA basis: `project(x) = (x - mean) @ components.T`."""

    mean: np.ndarray  # [D]
    components: np.ndarray  # [2, D]
    explained: np.ndarray  # [2] fraction of variance per component

    def project(self, matrix: np.ndarray) -> np.ndarray:
        """`[N, D]` rows -> their `[N, 2]` coordinates on the two components."""
        return (np.asarray(matrix, dtype=float) - self.mean) @ self.components.T


def pca_2d(matrix: np.ndarray) -> Projection:
    """The 2-D PCA `Projection` of the rows of `matrix` [N, D] (by SVD).

    Each component's sign makes its largest entry positive, so the picture is stable from run to run. For one frame
    shared by several tables (snapshots over training), pass them stacked: `pca_2d(np.concatenate(tables))`.
    """
    matrix = np.asarray(matrix, dtype=float)
    mean = matrix.mean(axis=0)
    _, s, vt = np.linalg.svd(matrix - mean, full_matrices=False)  # vt [min(N, D), D]
    comps = vt[:2].copy()
    if comps.shape[0] < 2:
        comps = np.vstack([comps, np.zeros((2 - comps.shape[0], matrix.shape[1]))])
    for row in comps:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    var = s**2
    explained = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    return Projection(mean, comps, np.pad(explained, (0, 2 - len(explained))))


def blueprint_group(name: str) -> str:
    """The `GROUP_STYLE` group of a blueprint name: null, a CNN blueprint, or a transformer one (never legal here)."""
    if name == NULL_NAME:
        return "null (empty slot)"
    return "CNN blueprint" if name in CNN_NAMES else "transformer blueprint (masked here)"


GROUP_STYLE = {
    "CNN blueprint": {"color": "#4C78A8", "symbol": "circle"},
    "transformer blueprint (masked here)": {"color": "#BAB0AC", "symbol": "circle-open"},
    "null (empty slot)": {"color": "#E45756", "symbol": "x"},
}


def group_markers(xy: np.ndarray, names: Sequence[str]) -> list[dict]:
    """One labelled marker trace per blueprint group (`GROUP_STYLE`) at the points `xy [N, 2]` of `names`."""
    traces = []
    for group, marker in GROUP_STYLE.items():
        idx = [i for i, n in enumerate(names) if blueprint_group(n) == group]
        if idx:
            traces.append({"type": "scatter", "x": xy[idx, 0].tolist(), "y": xy[idx, 1].tolist(),
                           "mode": "markers+text", "name": group, "text": [names[i] for i in idx],
                           "textposition": "top center", "legendgroup": group,
                           "marker": {**marker, "size": 12, "line": {"width": 1.5, "color": marker["color"]}},
                           "hovertemplate": "%{text}<br>(%{x:.2f}, %{y:.2f})<extra></extra>"})
    return traces


def pca_layout(title: str, basis: Projection, xy: np.ndarray) -> dict:
    """A layout with PC axes titled by their explained variance, framing the points `xy [N, 2]` with room for labels."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pad = 0.15 * np.maximum(hi - lo, 1e-3 * max(float(np.abs(xy).max()), 1e-6))
    return layout(title, height=420, xaxis=f"PC1 ({basis.explained[0]:.0%})", yaxis=f"PC2 ({basis.explained[1]:.0%})",
                  xopts={"range": [lo[0] - pad[0], hi[0] + pad[0]]}, yopts={"range": [lo[1] - pad[1], hi[1] + pad[1]]})


def embedding_map(snap: dict, basis: Projection | None = None) -> go.Figure:
    """The 14 blueprint embeddings projected to 2-D (by `basis`, default the PCA of this snapshot)."""
    matrix = np.asarray(snap["embedding"], dtype=float)  # [14, 4]
    basis = basis or pca_2d(matrix)
    xy = basis.project(matrix)  # [14, 2]
    return make(group_markers(xy, list(snap["blueprint_names"])), pca_layout(
        f"Blueprint embeddings at update {snap.get('update')} (PCA of 14 x {matrix.shape[1]})", basis, xy))


def embedding_trails(snaps: Sequence[dict], basis: Projection | None = None, *, title: str | None = None) -> go.Figure:
    """Each blueprint's embedding across `snaps`: a faint trail from the first snapshot, a labelled marker at the last.

    `basis` defaults to the PCA of all snapshots stacked, so every snapshot is drawn in one shared frame.
    """
    if not snaps:
        raise ValueError("embedding_trails: no snapshots")
    matrices = [np.asarray(s["embedding"], dtype=float) for s in snaps]  # K x [14, D]
    basis = basis or pca_2d(np.concatenate(matrices))
    trail = np.stack([basis.project(m) for m in matrices])  # [K, 14, 2]
    names = list(snaps[-1]["blueprint_names"])
    traces = [{"type": "scatter", "x": trail[:, j, 0].tolist(), "y": trail[:, j, 1].tolist(), "mode": "lines",
               "name": name, "legendgroup": blueprint_group(name), "showlegend": False, "hoverinfo": "skip",
               "opacity": 0.5, "line": {"width": 1, "color": GROUP_STYLE[blueprint_group(name)]["color"]}}
              for j, name in enumerate(names)]
    title = title or "Blueprint embeddings over training (shared PCA)"
    first, last = snaps[0].get("update"), snaps[-1].get("update")
    return make(traces + group_markers(trail[-1], names),
                pca_layout(f"{title}, updates {first} to {last}", basis, trail.reshape(-1, 2)))


def cosine_similarity(matrix: np.ndarray) -> np.ndarray:
    """[N, D] -> [N, N] cosine similarity of the rows (a zero row is similar to nothing)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.where(norms > 0, norms, 1.0)
    return unit @ unit.T


def cosine_heatmap(snap: dict) -> go.Figure:
    """The cosine similarity of the snapshot's blueprint embeddings, as a [14, 14] heatmap."""
    names = list(snap["blueprint_names"])
    sim = cosine_similarity(np.asarray(snap["embedding"], dtype=float))
    trace = {"type": "heatmap", "z": sim.round(3).tolist(), "x": names, "y": names, "zmin": -1, "zmax": 1,
             "colorscale": "RdBu", "reversescale": True, "name": "cosine similarity",
             "hovertemplate": "%{y} · %{x}: %{z:.2f}<extra></extra>"}
    return make([trace], layout(f"Cosine similarity at update {snap.get('update')}", height=420, xaxis=None,
                                yopts={"autorange": "reversed"}))


OUTCOME_STAGES = {"germinated": "GERMINATED", "fossilized": "FOSSILIZED", "pruned": "PRUNED"}


def blueprint_outcomes(events: Sequence[dict]) -> list[dict]:
    """Per blueprint seen in transitions: germinated / fossilized / pruned counts and the mean contribution.

    The contribution is averaged over the transitions that carry one (the counterfactual contribution measured
    when the seed changed stage). Rows are in BlueprintAction order.
    """
    table: dict[str, dict] = {}
    for e in events:
        if e.get("kind") != "transition" or not e.get("blueprint"):
            continue
        row = table.setdefault(e["blueprint"], {"blueprint": e["blueprint"], "germinated": 0, "fossilized": 0,
                                                "pruned": 0, "_sum": 0.0, "_n": 0})
        for key, stage in OUTCOME_STAGES.items():
            row[key] += e.get("to") == stage
        if e.get("contribution") is not None:
            row["_sum"] += e["contribution"]
            row["_n"] += 1
    order = {b.name: b.value for b in BlueprintAction}
    out = []
    for name in sorted(table, key=lambda n: order.get(n, len(order))):
        row = table[name]
        n, total = row.pop("_n"), row.pop("_sum")
        out.append({**row, "mean_contribution": total / n if n else None})
    return out


def outcomes_chart(outcomes: Sequence[dict]) -> go.Figure:
    """Grouped counts per blueprint with the mean contribution on the right axis."""
    names = [o["blueprint"] for o in outcomes]
    traces = [{"type": "bar", "x": names, "y": [o[key] for o in outcomes], "name": key,
               "marker": {"color": color((0, 2, 3)[i])}} for i, key in enumerate(OUTCOME_STAGES)]
    traces.append({"type": "scatter", "x": names, "y": [o["mean_contribution"] for o in outcomes], "mode": "markers",
                   "name": "mean contribution", "marker": {"symbol": "diamond", "size": 12, "color": "#222"},
                   "yaxis": "y2"})
    return make(traces, layout("Per-blueprint outcomes", height=360, xaxis=None, yaxis="seeds",
                               right="mean contribution", barmode="group"))
