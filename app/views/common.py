"""Helpers every view uses: live fragments, the error boundary, charts, sliders that follow the newest update."""

from __future__ import annotations

import functools
import traceback
from typing import Any, Callable, Sequence

import plotly.graph_objects as go
import streamlit as st

REFRESH_SECONDS = 2.0
CHART_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run `fn`, turning any unexpected exception into a short message instead of a traceback on the page."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the page must never show a raw traceback
            st.error(f"This part of the dashboard could not be drawn from the run's files: {type(exc).__name__}: {exc}")
            with st.expander("details"):
                st.code(traceback.format_exc(limit=4))
            return None

    return run


def live(fn: Callable[..., Any], is_live: bool) -> Callable[..., Any]:
    """`fn` as a fragment that re-runs every REFRESH_SECONDS while the run is training, behind the error boundary."""
    return st.fragment(guarded(fn), run_every=REFRESH_SECONDS if is_live else None)


def chart(fig: go.Figure, key: str) -> None:
    st.plotly_chart(fig, key=key, config=CHART_CONFIG, theme=None)


def follow_latest(key: str, options: Sequence[Any], default: Any | None = None) -> None:
    """Keep a selection widget's value on the newest option unless the user picked an older one.

    Call before creating the widget with `key`. `default` is the option to follow (the last one if None).
    """
    target = default if default is not None else options[-1]
    followed = f"_{key}_followed"
    current = st.session_state.get(key)
    if current not in options or current == st.session_state.get(followed):
        st.session_state[key] = target
    st.session_state[followed] = target


def pick_update(label: str, key: str, updates: Sequence[int], default: int | None = None) -> int:
    """An update slider that follows the newest update while training; a single update needs no slider."""
    if len(updates) == 1:
        st.caption(f"{label}: {updates[0]} (the only one so far)")
        return updates[0]
    follow_latest(key, updates, default)
    return st.select_slider(label, options=list(updates), key=key)
