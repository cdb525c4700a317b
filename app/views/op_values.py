"""Per-op values: Q(s, op) on the fixed probe states over updates, one decision up close, whether the critic is
right (its Q beside the Monte Carlo ground truth of snapshots/truth.jsonl), and the Q health."""

from __future__ import annotations

import streamlit as st

from app import data
from app.data import RunRef
from esper_lab.plots import curves, ops, truth

from .common import chart, live, pick_update

HEALTH_TEXT = {"collapsed": ":red[collapsed < 0.01: the critic ignores the op]",
               "weak": ":orange[weak: between 0.01 and 0.1]", "healthy": ":green[healthy ≥ 0.1]", "": "—"}
TRUTH_HEADING = "Is the critic right? Monte Carlo ground truth"
PROBE_COMMAND = "esper-lab probe --checkpoint {run}/checkpoint.pt"
TRAINED_TOWARD = ("The critic is trained toward the truth column: PPO's returns in its own units, with the run's "
                  "reward normaliser and truncation bootstrap (the mean of K rollouts per op that take the op, then "
                  "follow the current policy to the end of the episode; 95 % t interval). The raw return is the "
                  "same discounted return in reward units, without normaliser or bootstrap.")


def q_health(rows: tuple[dict, ...], calibration: list[dict]) -> None:
    """q_spread / q_variance (does Q vary with the op?), and the latest ground truth (does it rank them right?)."""
    last = rows[-1] if rows else {}
    cols = st.columns(2)
    for col, key in zip(cols, ("q_spread", "q_variance")):
        value = last.get(key)
        col.metric(key, "—" if value is None else f"{value:.4f}")
        col.markdown(HEALTH_TEXT[curves.q_health(value)])
    st.markdown(_ranks_text(calibration[-1] if calibration else None))
    if rows:
        chart(curves.q_spread_variance(rows), key="ops_q_health")


def _ranks_text(latest: dict | None) -> str:
    """Whether the critic ranks the ops right, from the newest update with ground truth."""
    lead = "A spread says Q varies with the op, not that it orders the ops right."
    if latest is None:
        return f"{lead} Whether it ranks them right needs the ground truth above, which this run does not have yet."
    if latest["pair_agreement"] is None:
        return f"{lead} At update {latest['update']} the states measured have one legal op each: nothing to rank."
    return (f"{lead} At update {latest['update']} it orders {latest['pair_agreement']:.0%} of {latest['pairs']} op "
            f"pairs as the Monte Carlo truth does, over {latest['states']} probe state(s) (50 % is a coin flip; "
            "pairs the truth cannot tell apart count too).")


def _probe_names(snaps: list[dict], records: list[dict]) -> list[str]:
    """The probe states' names: the newest snapshot's, else (ground truth but no snapshot) the records'."""
    if snaps:
        return list(snaps[-1]["probe_names"])
    named = {r["probe"]: r.get("name") for r in records}
    return [str(named.get(i) or f"probe {i}") for i in range(max(named) + 1)] if named else []


def _no_truth_text(run: RunRef) -> str:
    """Why the run has no ground truth, and how to get it."""
    cfg = data.config(run.dir).get("truth")
    cfg = cfg if isinstance(cfg, dict) else {}
    every, budget = cfg.get("every"), cfg.get("budget")
    how = ("The trainer measures it every `truth.every` updates within `truth.budget` of the wall time (default every "
           "25 updates, 10 %; off in the `tiny` preset)")
    if every == 0:
        state = "Ground truth is off in this run (`truth.every` = 0)."
    elif isinstance(every, int) and isinstance(budget, (int, float)):
        state = f"No ground truth yet: this run measures it every {every} updates, within {budget:.0%} of its time."
    else:
        state = "No ground truth in this run."
    return (f"{state} {how}. Or measure a checkpoint now: `{PROBE_COMMAND.format(run=run.dir)}` appends the records "
            "to snapshots/truth.jsonl.")


def _ground_truth(run: RunRef, records: list[dict], probe: int | None, names: list[str]) -> None:
    """The critic's Q beside the Monte Carlo truth on the selected probe state, the ranking, calibration over time."""
    st.markdown(f"##### {TRUTH_HEADING}")
    if not records:
        st.info(_no_truth_text(run))
        return
    by_update = truth.for_probe(records, probe) if probe is not None else {}
    if not by_update:
        name = names[probe] if probe is not None and probe < len(names) else "this state"
        st.info(f"No ground truth on '{name}' yet: the trainer measures the probe states in turn, as many as its time "
                f"budget allows. Pick another state, or measure them all: `{PROBE_COMMAND.format(run=run.dir)}`.")
    else:
        _one_record(_pick_record(by_update))
    chart(truth.calibration_over_updates(records), key="truth_calibration")
    st.caption("Per update, over the probe states measured then: the mean of their |Q − truth| (critic units), and "
               "the share of all their op pairs the critic orders as the truth means do (pooled over pairs).")


def _pick_record(by_update: dict[int, dict]) -> dict:
    """The record at the update the slider picks (following the newest while training)."""
    return by_update[pick_update("Ground truth at update", "truth_update", sorted(by_update))]


def _one_record(record: dict) -> None:
    """One probe state at one update: the figure, the verdict, the ranking table and what the truth is."""
    chart(truth.truth_beside_critic(record), key="truth_beside")
    st.markdown(f"**Verdict:** {truth.verdict(record)}")
    st.dataframe(truth.ranking_table(record), hide_index=True, width="stretch")
    source = f" Measured by `{record['source']}`." if record.get("source") else ""
    st.caption(f"{TRAINED_TOWARD}{source}")


def _op_values(run: RunRef, is_live: bool) -> None:
    snaps = data.snapshots(run.dir)
    records = truth.usable(data.truth(run.dir))
    names = _probe_names(snaps, records)
    probe = None
    if names:
        probe = st.selectbox("Probe state", range(len(names)), format_func=lambda i: names[i], key="ops_probe")
        probe = probe if probe is not None and probe < len(names) else 0
    if not snaps:
        st.info("No snapshot yet: per-op values are measured on fixed probe states at every snapshot.")
    else:
        chart(ops.op_values_over_updates(snaps, probe), key="ops_heatmap")
        by_update = {s["update"]: s for s in snaps}
        update = pick_update("Decision at update", "ops_update", sorted(by_update))
        chart(ops.decision(by_update[update], probe), key="ops_decision")
    _ground_truth(run, records, probe, names)
    st.markdown("##### Does the critic's value depend on the op?")
    q_health(data.metrics(run.dir), truth.pooled(records))


def render(run: RunRef, is_live: bool, runs: list[RunRef]) -> None:
    live(_op_values, is_live)(run, is_live)
