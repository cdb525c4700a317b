"""Compare: two or more runs overlaid, e.g. the three critic modes on the same preset and seed; and what each run's
reward paid for (issue 17: a `contribution` run beside one of another reward mode, term by term)."""

from __future__ import annotations

import streamlit as st

from app import data, process
from app.data import RunRef
from esper_lab.plots import compare as fig
from esper_lab.plots import rewards
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
    _rewards(series, {name: data.config(by_name[name].dir) for name in chosen}, smoothing)


def _rewards(series: list[tuple[str, tuple[dict, ...]]], configs: dict[str, dict], smoothing: float) -> None:
    """The outcome table (what users look at) and the per-term reward breakdown, with the term each run farms."""
    st.subheader("What each reward paid for")
    st.dataframe([rewards.outcome(name, configs[name], rows) for name, rows in series], hide_index=True,
                 width="stretch")
    st.caption(f"Means over each run's last {rewards.LAST_N} updates: return, final validation accuracy, fossilized "
               "seeds and live seed parameters per episode.")
    old = [name for name, rows in series if not rewards.term_keys(rows)]
    if old:
        st.info(f"No per-term reward breakdown for {', '.join(old)}: recorded before the trainer logged reward terms "
                "(`reward_term_*` in metrics.jsonl). Train it again to see which term its policy farms.")
    terms = [(name, rows) for name, rows in series if name not in old]
    if terms:
        modes = {name: rewards.reward_mode(configs[name]) for name, _ in terms}
        chart(rewards.term_breakdown(terms, modes=modes, smoothing=smoothing), key="cmp_reward_terms")
        notes = [rewards.farming_note(name, rows) for name, rows in terms]
        st.caption(" ".join(n for n in notes if n))


def render(run: RunRef, is_live: bool, runs: list[RunRef]) -> None:
    live(_compare, is_live)(runs)
