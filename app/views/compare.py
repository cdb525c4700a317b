"""Compare: two or more runs overlaid, e.g. the three critic modes on the same preset and seed."""

from __future__ import annotations

import streamlit as st

from app import data, process
from app.data import RunRef
from esper_lab.plots import compare as fig
from esper_lab.runs import METRIC_KEYS

from .common import chart, live

DEFAULT_METRICS = ["episode_return", "val_acc", "explained_variance", "q_spread"]
PLOTTABLE = [k for k in METRIC_KEYS if k != "update"]


def _compare(runs: list[RunRef]) -> None:
    names = [r.name for r in runs]
    if len(names) < 2:
        st.info("Comparing needs two or more runs. Start another one from the Train panel (for example the same "
                "preset and seed with another critic).")
        return
    kept = [n for n in st.session_state.get("cmp_runs", names[:3]) if n in names]
    st.session_state["cmp_runs"] = kept
    chosen = st.multiselect("Runs", names, key="cmp_runs")
    metrics = st.multiselect("Metrics", PLOTTABLE, default=DEFAULT_METRICS, key="cmp_metrics")
    smoothing = st.slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key="cmp_smoothing")
    if len(chosen) < 2:
        st.info("Pick two or more runs to overlay them.")
        return
    by_name = {r.name: r for r in runs}
    series = [(name, data.metrics(by_name[name].dir)) for name in chosen]
    st.dataframe([fig.summary(name, data.config(by_name[name].dir), process.run_status(by_name[name].dir), rows)
                  for name, rows in series], hide_index=True, width="stretch")
    cols = st.columns(2)
    for i, metric in enumerate(metrics):
        with cols[i % 2]:
            chart(fig.overlay(metric, series, smoothing=smoothing), key=f"cmp_{metric}")


def render(run: RunRef, is_live: bool, runs: list[RunRef]) -> None:
    live(_compare, is_live)(runs)
