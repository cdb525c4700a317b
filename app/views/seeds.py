"""Seeds: each env's slots over the epochs of one update's episode, with the blend alpha of every seed."""

from __future__ import annotations

import functools

import streamlit as st

from app import data
from app.data import RunRef
from esper_lab.plots import seeds as fig

from .common import chart, live, pick_update

transition_updates = functools.partial(fig.updates_with, kind="transition")
tick_updates = functools.partial(fig.updates_with, kind="tick")


def _seeds(run: RunRef, is_live: bool) -> None:
    updates = data.from_events(run.dir, transition_updates)
    if not updates:
        st.info("No lifecycle events yet: they are written at the end of each update.")
        return
    ticked = data.from_events(run.dir, tick_updates)
    update = pick_update("Update", "seeds_update", updates, default=ticked[-1] if ticked else None)
    events = data.events(run.dir)
    episode_end = int((data.config(run.dir).get("world") or {}).get("max_epochs") or 0)
    segs = fig.segments(events, update, episode_end)
    chart(fig.swimlane(segs, update, fig.lanes_of(events, update)), key="seeds_swimlane")
    if update in ticked:
        chart(fig.alpha_curves(events, update), key="seeds_alpha")
    else:
        shown = ", ".join(map(str, ticked[-8:])) or "none yet"
        st.caption(f"Alpha curves come from per-epoch records written on snapshot updates ({shown}).")


def render(run: RunRef, is_live: bool, runs: list[RunRef]) -> None:
    live(_seeds, is_live)(run, is_live)
