"""Is the critic right? Its Q(s, op) beside the Monte Carlo ground truth Q^pi(s, op) on the probe states.

Rows are the records of snapshots/truth.jsonl (`esper_lab.runs.RunReader.truth`, written by esper_lab/rl/truth.py
during training and by `esper-lab probe`): one probe state measured at one update. Per measured op, in the same
order as `ops`: `critic` (the critic's Q(s, op)) and `target` / `raw` columns {mean, low, high, std} (the truth in
the critic's units, what it is trained toward, and the raw discounted return in reward units; low/high are the
95 % t interval, null without one). Plus the record's calibration: `mae`, `pair_agreement`, `separated_pairs`,
`separated_agreement`, `best_agrees`.

- `usable`, `latest`, `for_probe`: well-formed records, one per (update, probe), one probe's by update;
- `truth_beside_critic`: per op the critic's Q next to the truth with its interval (one record);
- `truth_ranking`, `ranking_table`, `wrong_pairs`, `verdict`: does the critic order the ops as the truth does;
- `pooled`, `calibration_over_updates`: mean |Q - truth| and pair agreement per update, over the states measured.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import plotly.graph_objects as go

from .common import Rows, color, layout, make, update_ticks

CRITIC, TRUTH = "critic Q(s, op)", "Monte Carlo truth"
MAE, AGREEMENT = "mean |Q − truth|", "pair agreement"


# --- records -----------------------------------------------------------------------------------------------------


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _well_formed(r: dict) -> bool:
    """The keys the figures read, of the right types and lengths (a foreign or damaged line is skipped)."""
    try:
        n = len(r["ops"])
        cols = r["target"]
        return (isinstance(r["update"], int) and isinstance(r["probe"], int) and n > 0
                and all(isinstance(op, str) for op in r["ops"])
                and len(r["critic"]) == n and all(_number(q) for q in r["critic"])
                and all(len(cols[k]) == n for k in ("mean", "low", "high"))
                and all(_number(m) for m in cols["mean"])
                and all(b is None or _number(b) for k in ("low", "high") for b in cols[k]))
    except (KeyError, TypeError):
        return False


def usable(records: Rows) -> list[dict]:
    """The well-formed records, in file order."""
    return [r for r in records if isinstance(r, dict) and _well_formed(r)]


def latest(records: Rows) -> list[dict]:
    """One record per (update, probe): the last one written (e.g. an `esper-lab probe` run on the checkpoint of an
    update the trainer had measured too), ordered by update then probe."""
    kept = {(r["update"], r["probe"]): r for r in usable(records)}
    return [kept[key] for key in sorted(kept)]


def for_probe(records: Rows, probe: int) -> dict[int, dict]:
    """{update: record} of probe state `probe`, oldest update first (`latest` per update)."""
    return {r["update"]: r for r in latest(records) if r["probe"] == probe}


# --- one record ----------------------------------------------------------------------------------------------------


def _errors(cols: dict) -> dict:
    """Plotly error bars from the interval columns: + (high - mean), - (mean - low); 0 where there is no interval."""
    plus = [0.0 if h is None else h - m for m, h in zip(cols["mean"], cols["high"])]
    minus = [0.0 if lo is None else m - lo for m, lo in zip(cols["mean"], cols["low"])]
    return {"type": "data", "array": plus, "arrayminus": minus, "visible": True, "thickness": 1.5, "width": 6}


def _interval_text(cols: dict, i: int) -> str:
    low, high = cols["low"][i], cols["high"][i]
    return "no interval" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def truth_beside_critic(record: dict) -> go.Figure:
    """Per op (x), the critic's Q(s, op) (diamond) beside the Monte Carlo truth's mean with its 95 % interval
    (circle and error bar), both in the critic's units."""
    ops, target = list(record["ops"]), record["target"]
    critic = {"type": "scatter", "mode": "markers", "x": ops, "y": list(record["critic"]), "name": CRITIC,
              "marker": {"symbol": "diamond", "size": 12, "color": color(0)},
              "hovertemplate": "%{x}: Q = %{y:.3f}<extra>critic</extra>"}
    truth = {"type": "scatter", "mode": "markers", "x": ops, "y": list(target["mean"]), "name": TRUTH,
             "marker": {"symbol": "circle", "size": 10, "color": color(1)}, "error_y": _errors(target),
             "customdata": [_interval_text(target, i) for i in range(len(ops))],
             "hovertemplate": "%{x}: truth = %{y:.3f} %{customdata}<extra>95 % interval</extra>"}
    title = (f"Critic vs Monte Carlo truth on '{record.get('name', record['probe'])}' at update {record['update']} "
             f"(K = {record.get('rollouts', '?')} rollouts per op)")
    return make([critic, truth], layout(title, height=340, xaxis=None, yaxis="Q(s, op), critic units",
                                        hovermode="closest", scattermode="group", scattergap=0.6,
                                        xopts={"type": "category"}, yopts={"range": _span(record)}))


def _span(record: dict) -> list[float]:
    """A y range around the critic's values and the truth's intervals (the differences between ops are tenths of
    a unit on a level of tens: an axis from 0 would flatten them)."""
    target = record["target"]
    values = [v for v in (*record["critic"], *target["mean"], *target["low"], *target["high"]) if _number(v)]
    low, high = min(values), max(values)
    pad = max(0.1 * (high - low), 0.05)
    return [low - pad, high + pad]


def _order(ops: Sequence[str], values: Sequence[float]) -> list[str]:
    """`ops` by `values`, highest first (ties keep the ops' order)."""
    return [ops[i] for i in sorted(range(len(ops)), key=lambda i: -values[i])]


def truth_ranking(record: dict) -> tuple[list[str], list[str]]:
    """(ops ordered by the critic's Q, ops ordered by the truth's mean), best first."""
    return _order(record["ops"], record["critic"]), _order(record["ops"], record["target"]["mean"])


def ranking_table(record: dict) -> list[dict]:
    """One row per op, best by the truth first: Q, the truth (critic units) and raw return with their intervals,
    and the op's rank by each (1 = best)."""
    ops, target, raw = record["ops"], record["target"], record.get("raw")
    by_critic, by_truth = truth_ranking(record)
    rows = []
    for op in by_truth:
        i = ops.index(op)
        row = {"op": op, "critic Q": record["critic"][i], "truth mean": target["mean"][i],
               "truth 95 % interval": _interval_text(target, i)}
        if _columns_ok(raw, len(ops)):
            row.update({"raw return": raw["mean"][i], "raw 95 % interval": _interval_text(raw, i)})
        rows.append({**row, "rank by critic": by_critic.index(op) + 1, "rank by truth": by_truth.index(op) + 1})
    return rows


def _columns_ok(cols: Any, n: int) -> bool:
    return isinstance(cols, dict) and all(isinstance(cols.get(k), list) and len(cols[k]) == n
                                          for k in ("mean", "low", "high"))


def _apart(cols: dict, a: int, b: int) -> bool:
    """The truth intervals of ops a and b do not overlap (as rl/truth.py counts a separated pair)."""
    bounds = (cols["low"][a], cols["high"][a], cols["low"][b], cols["high"][b])
    return None not in bounds and (bounds[1] < bounds[2] or bounds[3] < bounds[0])


def wrong_pairs(record: dict) -> list[tuple[str, str]]:
    """The separated pairs (truth intervals apart) the critic orders wrongly or ties, each as (truth's better op,
    truth's worse op)."""
    ops, q, target = record["ops"], record["critic"], record["target"]
    means, found = target["mean"], []
    for a in range(len(ops)):
        for b in range(a + 1, len(ops)):
            if _apart(target, a, b) and (q[a] - q[b]) * (means[a] - means[b]) <= 0:
                found.append((ops[a], ops[b]) if means[a] > means[b] else (ops[b], ops[a]))
    return found


def _misorder(record: dict, better: str, worse: str) -> str:
    """'WAIT above GERMINATE' (or 'level with' for a tie in Q) for a pair the truth orders better > worse."""
    q = dict(zip(record["ops"], record["critic"]))
    return f"{worse} {'level with' if q[worse] == q[better] else 'above'} {better}"


def separated(record: dict) -> int:
    """How many op pairs the truth can tell apart (intervals do not overlap)."""
    n = len(record["ops"])
    return sum(_apart(record["target"], a, b) for a in range(n) for b in range(a + 1, n))


def verdict(record: dict) -> str:
    """One sentence: does the critic rank this state's ops as the Monte Carlo truth does?"""
    k, n = record.get("rollouts", "?"), len(record["ops"])
    if n < 2:
        return f"Only {record['ops'][0]} is legal here: there is nothing to rank."
    (best_q, *_), (best_truth, *_) = truth_ranking(record)
    wrong, apart = wrong_pairs(record), separated(record)
    if wrong:
        pairs = "; ".join(_misorder(record, better, worse) for better, worse in wrong)
        return (f"The critic orders {len(wrong)} of the {_pairs_text(apart)} the truth tells apart the wrong way "
                f"round: it puts {pairs} (the truth's intervals clearly put the second op higher).")
    if apart == 0:
        return (f"The ops are within each other's 95 % intervals: the truth cannot tell them apart at K={k}, so "
                "this state does not test the critic's ranking.")
    every = "the one separated pair" if apart == 1 else f"all {apart} separated pairs"
    if best_q != best_truth:
        return (f"The critic orders {every} right, but its best op {best_q} is not the truth's {best_truth} (their "
                f"intervals overlap, so the truth cannot settle it at K={k}).")
    return f"The critic ranks the ops as the truth does ({every} in order, and the same best op, {best_q})."


def _pairs_text(n: int) -> str:
    return "1 op pair" if n == 1 else f"{n} op pairs"


# --- over updates --------------------------------------------------------------------------------------------------


def pairs_of(record: dict) -> int:
    """Op pairs of a record: m (m - 1) / 2 for m ops."""
    n = len(record["ops"])
    return n * (n - 1) // 2


def pooled(records: Rows) -> list[dict]:
    """Per update (oldest first), over the probe states measured then (`latest`): `states`, `mae` = the mean of the
    records' mae (each state counts once), `pairs` and `pair_agreement` = the fraction of ALL their op pairs the
    critic orders as the truth does (each record's agreement weighted by its pairs, so a state with 4 legal ops
    counts 6 pairs and one with 2 counts 1; None when no record has a pair), `separated` and
    `separated_agreement` = the same over the pairs the truth's intervals tell apart, and `best_agrees` = the
    number of states where the critic's best op is the truth's."""
    by_update: dict[int, list[dict]] = {}
    for r in latest(records):
        by_update.setdefault(r["update"], []).append(r)
    out = []
    for update, group in by_update.items():
        maes = [r["mae"] for r in group if _number(r.get("mae"))]
        ranked = [(r["pair_agreement"], pairs_of(r)) for r in group if _number(r.get("pair_agreement"))]
        apart = [(r["separated_agreement"], separated(r)) for r in group if _number(r.get("separated_agreement"))]
        pairs, split = sum(p for _, p in ranked), sum(p for _, p in apart)
        out.append({"update": update, "states": len(group), "mae": sum(maes) / len(maes) if maes else None,
                    "pairs": pairs, "pair_agreement": sum(a * p for a, p in ranked) / pairs if pairs else None,
                    "separated": split,
                    "separated_agreement": sum(a * p for a, p in apart) / split if split else None,
                    "best_agrees": sum(bool(r.get("best_agrees")) for r in group)})
    return out


def calibration_over_updates(records: Rows) -> go.Figure:
    """`pooled` over updates: mean |Q - truth| (left axis, critic units) and pair agreement (right axis, 0 to 1,
    dotted line at 0.5 = a coin flip); the hover gives the probe states and op pairs behind each point."""
    rows = pooled(records)
    x = [r["update"] for r in rows]
    mae = {"type": "scatter", "mode": "lines+markers", "x": x, "y": [r["mae"] for r in rows], "name": MAE,
           "line": {"color": color(3)}, "customdata": [r["states"] for r in rows],
           "hovertemplate": "%{y:.3f} over %{customdata} probe state(s)"}
    agree = {"type": "scatter", "mode": "lines+markers", "x": x, "y": [r["pair_agreement"] for r in rows],
             "name": AGREEMENT, "yaxis": "y2", "line": {"color": color(2), "dash": "dot"},
             "customdata": [[r["pairs"], r["states"]] for r in rows],
             "hovertemplate": "%{y:.2f} of %{customdata[0]} op pairs (%{customdata[1]} probe state(s))"}
    fig_layout = layout("Critic vs Monte Carlo truth over updates", yaxis="mean |Q − truth| (critic units)",
                        right="pair agreement", xopts=update_ticks(x), yopts={"rangemode": "tozero"})
    fig_layout["yaxis2"]["range"] = [-0.02, 1.02]
    fig_layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y2", "y0": 0.5, "y1": 0.5,
                             "line": {"color": "#BAB0AC", "dash": "dot", "width": 1}}]
    return make([mae, agree], fig_layout)

