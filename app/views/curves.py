"""Curves: the training metrics of one run, refreshed live while it trains."""

from __future__ import annotations

import streamlit as st

from app import data
from app.data import RunRef
from esper_lab.plots import curves as fig

from .common import chart, live

GRID = (("return", "val_acc"), ("losses", "entropy"), ("kl_clip", "explained_variance"), ("speed", "q_health"),
        ("advantages", "illegal"))


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def headline(rows: tuple[dict, ...]) -> None:
    last = rows[-1]
    cols = st.columns(5)
    cols[0].metric("update", last.get("update"))
    cols[1].metric("episode return", _fmt(last.get("episode_return"), "+.3f"))
    cols[2].metric("val acc (%)", _fmt(last.get("val_acc"), ".1f"))
    cols[3].metric("SPS", _fmt(last.get("sps"), ".1f"))
    cols[4].metric("explained variance", _fmt(last.get("explained_variance"), ".3f"))


def _curves(run: RunRef, is_live: bool) -> None:
    rows = data.metrics(run.dir)
    if not rows:
        if is_live:
            st.info("Training has started: the first point appears when update 1 finishes.")
        elif run.exists():
            st.info("This run has no metrics: it ended before its first PPO update finished.")
        return
    if not is_live and data.partial_tail(run.dir / "metrics.jsonl"):
        st.caption("metrics.jsonl ends in a half-written line (the trainer stopped while writing it); it is skipped.")
    headline(rows)
    figures = fig.all_curves(rows, data.baselines(run.dir))
    for pair in GRID:
        for col, key in zip(st.columns(2), pair):
            with col:
                chart(figures[key], key=f"curve_{key}")


def render(run: RunRef, is_live: bool, runs: list[RunRef]) -> None:
    live(_curves, is_live)(run, is_live)
