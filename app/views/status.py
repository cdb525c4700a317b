"""The selected run's header: state, progress bar, Stop, and the error text of a failed trainer."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from app import data, process
from app.data import RunRef

from .common import live

BADGES = {"running": ":blue-badge[running]", "finished": ":green-badge[finished]", "failed": ":red-badge[failed]",
          "stopped": ":gray-badge[stopped]"}


def describe(config: dict) -> str:
    """'tiny · critic q_op · 2 envs x 8 epochs · 3 updates · seed 0' from config.json."""
    if not config:
        return "config.json unreadable"
    world, policy = config.get("world") or {}, config.get("policy") or {}
    return (f"{config.get('preset', '?')} · critic {policy.get('critic', '?')} · "
            f"{config.get('num_envs', '?')} envs x {world.get('max_epochs', '?')} epochs · "
            f"{config.get('updates', '?')} updates · seed {config.get('seed', '?')}")


def owner(holder: dict | None) -> str:
    """' · written by pid 123 on host' for the trainer holding the run's lock, '' when nobody holds it."""
    if not holder:
        return ""
    return f" · written by pid {holder.get('pid', '?')} on {holder.get('host', '?')}"


def _stop(run_dir: Path) -> None:
    st.session_state["flash"] = process.stop_run(run_dir)


def _header(run: RunRef, was_live: bool) -> None:
    if not run.exists():
        if was_live:
            st.rerun(scope="app")  # the sidebar then reports the vanished run and picks another
        st.warning(f"Run **{run.name}** is gone: its directory was deleted or moved. Pick another run on the left.")
        return
    status = process.run_status(run.dir)
    state = status.get("state")
    if was_live and state != "running":
        st.rerun(scope="app")  # the run just ended: a full rerun stops the live timers
    left, right = st.columns([5, 1], vertical_alignment="center")
    with left:
        badge = BADGES.get(state, ":orange-badge[waiting for the trainer's first status]")
        st.markdown(f"### {run.name} {badge}")
        st.caption(describe(data.config(run.dir)) + owner(data.lock_holder(run.dir)))
    with right:
        if state == "running":
            st.button("Stop", key="stop", type="primary", on_click=_stop, args=(run.dir,), width="stretch")
    done, total = int(status.get("update") or 0), int(status.get("updates_total") or 0)
    if total:
        started, last = status.get("started_at") or 0.0, status.get("updated_at") or 0.0
        end = time.time() if state == "running" else last
        took = f" · {end - started:.0f} s" if started > 0 and end >= started else ""
        st.progress(min(done / total, 1.0), text=f"update {done} / {total}{took}")
    flash = st.session_state.pop("flash", None)
    if flash:
        st.success(flash)
    if state == "failed":
        st.error(f"Training failed: {status.get('error') or 'no error text was recorded'}")
        tail = process.log_tail(run.dir)
        if tail:
            with st.expander(f"last lines of {process.LOG_NAME}"):
                st.code(tail, language=None)
    elif state == "stopped" and status.get("error"):
        st.info(status["error"])


def header(run: RunRef, is_live: bool) -> None:
    live(_header, is_live)(run, is_live)
