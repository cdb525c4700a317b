"""What a run's reward paid for: the per-term reward breakdown over training, the outcome table row, and which term
the policy farms (issue 17, "the lesson, shown").

The trainer writes, per update, `reward_term_<name>` for every term of `env.reward.REWARD_TERMS`: that term's raw
sum over a world's episode, averaged over the worlds, so the terms of a row add up to its `episode_return`. This
layer cannot import env, so the terms are read off the rows by `runs.REWARD_TERM_PREFIX`; runs from before
issue 17 have none (`term_keys` is empty).
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from esper_lab.config import CHANGED_DEFAULTS
from esper_lab.runs import REWARD_TERM_PREFIX

from .common import PALETTE, Rows, axis, col, layout
from .compare import Runs, smooth

LAST_N = 10  # the table and the "farms" caption average each run's last LAST_N updates
TITLE = "Reward terms per episode over training"
TERM_COLORS = PALETTE + ("#FF9DA6", "#17BECF")  # one colour per term of REWARD_TERMS (11), in written order


def term_keys(rows: Rows) -> list[str]:
    """The rows' `reward_term_*` keys in the order the trainer writes them (`REWARD_TERMS`); [] for an older run."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update((k, None) for k in row if k.startswith(REWARD_TERM_PREFIX))
    return list(keys)


def term_name(key: str) -> str:
    """`reward_term_attribution` -> `attribution`."""
    return key[len(REWARD_TERM_PREFIX):]


def tail_mean(rows: Rows, key: str, last: int = LAST_N) -> float | None:
    """Mean of `key` over the last `last` rows (missing or null values skipped); None if there is none."""
    values = [v for v in col(rows[-last:], key) if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def reward_mode(config: dict) -> str:
    """The run's `world.reward.mode`; a config from before reward modes existed ran the mode it migrates to."""
    return ((config.get("world") or {}).get("reward") or {}).get("mode", CHANGED_DEFAULTS["world.reward.mode"][0])


def outcome(label: str, config: dict, rows: Rows, last: int = LAST_N) -> dict:
    """One row of the outcome table: the reward mode and the means over the run's last `last` updates of what
    users look at (return, final validation accuracy, fossils and live seed parameters per episode)."""
    return {
        "run": label,
        "reward mode": reward_mode(config),
        "updates": len(rows),
        "return": tail_mean(rows, "episode_return", last),
        "final val acc %": tail_mean(rows, "val_acc", last),
        "fossils / episode": tail_mean(rows, "fossilized", last),
        "seed params": tail_mean(rows, "seed_params", last),
    }


def dominant_term(rows: Rows, last: int = LAST_N) -> tuple[str, float] | None:
    """(term, its mean per episode) of the term largest in size over the last `last` updates; None for an older
    run (no terms) or one with no values yet."""
    means = {term_name(k): tail_mean(rows, k, last) for k in term_keys(rows)}
    means = {name: m for name, m in means.items() if m is not None}
    if not means:
        return None
    name = max(means, key=lambda n: abs(means[n]))
    return name, means[name]


def farming_note(label: str, rows: Rows, last: int = LAST_N) -> str | None:
    """One sentence on the term that dominates `label`'s return over its last `last` updates; None without terms."""
    found = dominant_term(rows, last)
    if found is None:
        return None
    name, value = found
    total = tail_mean(rows, "episode_return", last)
    of_return = f" of a return of {total:+.2f}" if total is not None else ""
    n = min(last, len(rows))
    if value > 0:
        return f"**{label}**: the policy farms `{name}` ({value:+.2f} per episode{of_return}, last {n} updates)."
    return (f"**{label}**: the return is dominated by the cost `{name}` ({value:+.2f} per episode{of_return}, "
            f"last {n} updates).")


def shown_terms(runs: Runs) -> list[str]:
    """The term keys of the runs that are not 0 throughout (a mode's unused terms are left out), in written order."""
    keys = term_keys([row for _, rows in runs for row in rows])
    return [k for k in keys if any(v not in (None, 0.0) for _, rows in runs for v in col(rows, k))]


def term_traces(rows: Rows, keys: list[str], shown: list[str], smoothing: float) -> list[dict]:
    """One line per term of `shown` (coloured by its place in `keys`), then the return they add up to, dashed."""
    x = col(rows, "env_steps")
    traces = []
    for key in shown:
        style = {"color": TERM_COLORS[keys.index(key) % len(TERM_COLORS)], "width": 2}
        traces.append({"type": "scatter", "x": x, "y": smooth(col(rows, key), smoothing), "mode": "lines",
                       "name": term_name(key), "legendgroup": key, "line": style})
    traces.append({"type": "scatter", "x": x, "y": smooth(col(rows, "episode_return"), smoothing), "mode": "lines",
                   "name": "episode_return", "legendgroup": "episode_return",
                   "line": {"color": "#2A3F5F", "width": 1.5, "dash": "dash"}})
    return traces


def term_breakdown(runs: Runs, *, modes: dict[str, str] | None = None, smoothing: float = 0.0) -> go.Figure:
    """One subplot per run that has per-term rewards (the others are left out): the mean per episode of each term
    that run's reward paid (not 0 throughout) over env steps, and the episode return they add up to. `modes`
    labels the subplots (run -> reward mode); one legend, each term in one colour in every subplot."""
    runs = [(label, rows) for label, rows in runs if term_keys(rows)]
    keys, n = term_keys([row for _, rows in runs for row in rows]), max(len(runs), 1)
    titles = [f"{label} · {(modes or {}).get(label, '?')}" for label, _ in runs]
    fig = make_subplots(rows=n, cols=1, subplot_titles=titles or None, shared_xaxes=True,
                        vertical_spacing=0.3 / n if n > 1 else 0.0)
    in_legend: set[str] = set()
    for i, (label, rows) in enumerate(runs):
        traces = term_traces(rows, keys, shown_terms([(label, rows)]), smoothing)
        for t in traces:
            t["showlegend"] = t["legendgroup"] not in in_legend
            in_legend.add(t["legendgroup"])
        fig.add_traces(traces, rows=i + 1, cols=1)
    look = layout(TITLE, height=80 + 240 * n, xaxis=None, hovermode="x unified")
    fig.update_layout({k: v for k, v in look.items() if k not in ("xaxis", "yaxis")})
    fig.update_layout(margin={"t": 60, "b": 70})
    fig.update_xaxes(axis())
    fig.update_xaxes(axis("env steps"), row=n, col=1)
    fig.update_yaxes(axis("per episode"))
    return fig
