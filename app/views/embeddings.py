"""Blueprint embeddings: the 14 x 4 table in 2-D, its cosine similarities, and what each blueprint's seeds did."""

from __future__ import annotations

import streamlit as st

from app import data
from app.data import RunRef
from esper_lab.plots import embeddings as fig

from .common import chart, live, pick_update


def _embeddings(run: RunRef, is_live: bool) -> None:
    updates = data.snapshot_updates(run.dir)
    latest = data.snapshot(run.dir, updates[-1]) if updates else None
    if latest is None:
        every = data.config(run.dir).get("snapshot_every", "N")
        st.info(f"No snapshot yet: the trainer writes the embedding table every {every} updates.")
    else:
        update = pick_update("Update", "emb_update", updates)
        snap = data.snapshot(run.dir, update) or latest
        stable = st.toggle("Axes from the newest snapshot", value=True, key="emb_stable",
                           help="On: every update is projected on the newest snapshot's principal axes, so "
                                "moving the slider shows the embeddings moving. Off: each update's own PCA.")
        basis = fig.pca_2d(latest["embedding"]) if stable else None
        left, right = st.columns(2)
        with left:
            chart(fig.embedding_map(snap, basis), key="emb_map")
        with right:
            chart(fig.cosine_heatmap(snap), key="emb_cosine")
    outcomes = data.from_events(run.dir, fig.blueprint_outcomes)
    if not outcomes:
        st.info("No seed has been germinated yet, so there are no per-blueprint outcomes.")
        return
    chart(fig.outcomes_chart(outcomes), key="emb_outcomes")
    if all(o["mean_contribution"] is None for o in outcomes):
        st.caption("No contribution values in events.jsonl yet, so the mean contribution is empty.")
    st.dataframe(outcomes, hide_index=True, width="stretch",
                 column_config={"mean_contribution": st.column_config.NumberColumn("mean contribution", format="%.3f")})


def render(run: RunRef, is_live: bool, runs: list[RunRef]) -> None:
    live(_embeddings, is_live)(run, is_live)
