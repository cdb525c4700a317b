"""Per-op values: Q(s, op) on the fixed probe states over updates, one decision up close, and the Q health."""

from __future__ import annotations

import streamlit as st

from app import data
from app.data import RunRef
from esper_lab.plots import curves, ops

from .common import chart, live, pick_update

HEALTH_TEXT = {"collapsed": ":red[collapsed < 0.01: the critic ignores the op]",
               "weak": ":orange[weak: between 0.01 and 0.1]", "healthy": ":green[healthy ≥ 0.1]", "": "—"}


def q_health(rows: tuple[dict, ...]) -> None:
    last = rows[-1] if rows else {}
    cols = st.columns(2)
    for col, key in zip(cols, ("q_spread", "q_variance")):
        value = last.get(key)
        col.metric(key, "—" if value is None else f"{value:.4f}")
        col.markdown(HEALTH_TEXT[curves.q_health(value)])
    if rows:
        chart(curves.q_spread_variance(rows), key="ops_q_health")


def _op_values(run: RunRef, is_live: bool) -> None:
    snaps = data.snapshots(run.dir)
    if not snaps:
        st.info("No snapshot yet: per-op values are measured on fixed probe states at every snapshot.")
    else:
        names = list(snaps[-1]["probe_names"])
        probe = st.selectbox("Probe state", range(len(names)), format_func=lambda i: names[i], key="ops_probe")
        probe = probe if probe is not None and probe < len(names) else 0
        chart(ops.op_values_over_updates(snaps, probe), key="ops_heatmap")
        by_update = {s["update"]: s for s in snaps}
        update = pick_update("Decision at update", "ops_update", sorted(by_update))
        chart(ops.decision(by_update[update], probe), key="ops_decision")
    st.markdown("##### Does the critic's value depend on the op?")
    q_health(data.metrics(run.dir))


def render(run: RunRef, is_live: bool, runs: list[RunRef]) -> None:
    live(_op_values, is_live)(run, is_live)
