"""Scaffolding of the guided notebooks: what they need that is not part of the lab itself.

The notebooks run with `notebooks/` as their working directory, so a cell imports it as `from nb_helpers import ...`
(`tests/test_notebook_helpers.py` puts `notebooks/` on sys.path to test it). What it holds:

- the notebook size switch (`ESPER_LAB_NB_SIZE`: `ci` for the test suite, `full` for the committed outputs) and a
  reproducible setup (threads, seeds); `expect_error` and `spy_on` for the cells that show a failure or a call;
- markdown tables and checklists, parameter counts, head / tail means of a run's metrics;
- the logic behind the notebooks' widgets and demonstrations (per-op values for a choice of blueprints, the
  original's double-sampled op/value mismatch);
- teaching figures that are not about a run (the lifecycle graph, head relevance, masks, the Obs V3 layout, plain
  bar / heatmap / series / box charts). Figures of a run's rows (curves, embeddings, probe values, swimlanes) come
  from `esper_lab.plots`, the dashboard's own. Figures are returned, never shown.

Nothing here trains or steps a world differently from the package: every number comes from `esper_lab` itself.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from esper_lab.actions import (
    HEAD_NAMES,
    HEAD_RELEVANCE_TABLE,
    NUM_OPS,
    OP_NAMES,
    VALID_TRANSITIONS,
    BlueprintAction,
    SeedStage,
)
from esper_lab.plots.common import col
from esper_lab.plots.ops import op_value_bars

SIZES = ("ci", "full")
SIZE_ENV = "ESPER_LAB_NB_SIZE"


# --- size switch and setup ----------------------------------------------------------------------------------------


def nb_size(environ: Mapping[str, str] | None = None) -> str:
    """`ci` or `full` from `$ESPER_LAB_NB_SIZE` (default `full`); anything else raises ValueError."""
    environ = os.environ if environ is None else environ
    size = environ.get(SIZE_ENV, "full").strip().lower() or "full"
    if size not in SIZES:
        raise ValueError(f"{SIZE_ENV} must be one of {SIZES}, got {size!r}")
    return size


def setup(seed: int = 0, threads: int = 2) -> str:
    """Pin torch threads and seed torch, numpy and random; return the notebook size (`ci` or `full`).

    With `ESPER_LAB_NB_PNG=1` (what `scripts/build_notebooks.py` sets for the notebooks it saves) it also makes
    every plotly figure a cell shows carry a static PNG beside its plotly JSON (`store_figures_as_png`).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if png_figures_wanted():
        store_figures_as_png()
    return nb_size()


def by_size(size: str, *, ci: Any, full: Any) -> Any:
    """Pick the value for this notebook size."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return ci if size == "ci" else full


def expect_error(fn: Callable[[], Any], exc_type: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException:
    """Call `fn`, which must raise `exc_type`; return the exception (so a cell can print its message).

    Raises AssertionError if `fn` returns normally or raises something else.
    """
    try:
        fn()
    except exc_type as exc:
        return exc
    except BaseException as exc:  # noqa: BLE001 - reported as a failed expectation
        raise AssertionError(f"expected {exc_type}, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"expected {exc_type} to be raised, but the call returned normally")


@dataclass
class Call:
    """One recorded call: its positional and keyword arguments, what it returned, and the callee's signature."""

    args: tuple
    kwargs: dict
    result: Any
    signature: Any = None

    def arg(self, name: str) -> Any:
        """The value passed for parameter `name`, whether given by position or keyword (its default if omitted)."""
        bound = self.signature.bind(*self.args, **self.kwargs)
        bound.apply_defaults()
        return bound.arguments[name]


class spy_on:
    """Context manager that records every call of `getattr(owner, name)` (a function or method) while active.

    `owner` may be a module, a class or an instance; the original attribute is put back on exit, even on error.

        with spy_on(trainer.agent, "get_action") as calls:
            trainer.collect()
        calls[-1].arg("deterministic")
    """

    def __init__(self, owner: Any, name: str):
        self.owner, self.name = owner, name
        self.calls: list[Call] = []

    def __enter__(self) -> list[Call]:
        import inspect

        self._had_own = self.name in getattr(self.owner, "__dict__", {})
        self._original = getattr(self.owner, self.name)
        original = self._original
        signature = inspect.signature(original)  # of the bound method when owner is an instance: no `self`

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            self.calls.append(Call(args, kwargs, result, signature))
            return result

        setattr(self.owner, self.name, wrapper)
        return self.calls

    def __exit__(self, *exc: Any) -> None:
        if self._had_own:
            setattr(self.owner, self.name, self._original)
        else:
            delattr(self.owner, self.name)


# --- tables and checklists ----------------------------------------------------------------------------------------


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-markdown table of `rows` (dicts); floats are shown with 4 significant digits."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.4g}"
        return str(v).replace("|", "\\|")  # a literal | would split the cell

    lines = ["| " + " | ".join(fmt(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Check:
    """One box of a checklist: what is claimed, whether the code found it true, and the evidence."""

    criterion: str
    passed: bool
    evidence: str = ""


def checklist_markdown(checks: Iterable[Check]) -> str:
    """`- [x] criterion: evidence` lines (GitHub task-list syntax), one per check."""
    return "\n".join(f"- [{'x' if c.passed else ' '}] **{c.criterion}**: {c.evidence}" for c in checks)


# --- parameter counts ---------------------------------------------------------------------------------------------


def parameter_breakdown(module: torch.nn.Module, depth: int = 1) -> dict[str, int]:
    """Parameter count per child module, grouped by the first `depth` components of the parameter name.

    Example: depth 1 on the policy network gives feature_net, lstm, lstm_ln, heads, value_head, ...; depth 2 splits
    `heads` into `heads.op`, `heads.blueprint`, ... The values add up to the module's total.
    """
    counts: dict[str, int] = {}
    for name, param in module.named_parameters():
        key = ".".join(name.split(".")[:depth])
        counts[key] = counts.get(key, 0) + param.numel()
    return counts


def lstm_parameter_count(input_size: int, hidden_size: int, layers: int = 1) -> int:
    """Parameters of a `torch.nn.LSTM`: per layer 4H x (in + H) weights plus two 4H bias vectors."""
    total, size_in = 0, input_size
    for _ in range(layers):
        total += 4 * hidden_size * (size_in + hidden_size) + 2 * 4 * hidden_size
        size_in = hidden_size
    return total


# --- the op / value mismatch of the first Phase 4 commit ----------------------------------------------------------


@dataclass
class MismatchReport:
    """How often the op the stored value was computed for differs from the op acted on, and what that costs."""

    steps: int
    mismatch_rate: float
    """Fraction of steps where the value's op differs from the acted op."""
    mean_abs_value_error: float
    """Mean of |stored value - Q(s, acted op)| (0 for a correct implementation)."""
    mean_value_error: float
    """Mean of (stored value - Q(s, acted op)): the bias GAE and the bootstrap inherit."""
    expected_mismatch_rate: float
    """What the mismatch rate should be if the bug is there: for two independent samples of the op head
    1 - sum_op pi(op)^2, for a sample against the argmax 1 - pi(argmax); averaged over steps."""


@torch.no_grad()
def op_value_mismatch(
    network: Any,
    state: torch.Tensor,
    blueprint_indices: torch.Tensor,
    masks: Mapping[str, torch.Tensor] | None = None,
    *,
    double_sample: bool,
    deterministic: bool = False,
) -> MismatchReport:
    """Measure the stored-value error of one rollout-style pass over `state [B, T, D]`.

    `double_sample=True` reproduces Esper's first Phase 4 commit (97d9ba3f): forward() samples op #1 and returns
    Q(s, op #1) as the value, while get_action() picks the action's op #2 on its own: an independent sample
    (stochastic) or the argmax (`deterministic=True`, the bootstrap). `double_sample=False` is the fixed path
    (0872525b and this lab): the acted op is forward's sample, or the argmax with Q recomputed for it. Either way the
    reference is Q(s, acted op), the value `evaluate_actions()` later conditions on.
    """
    out = network(state, blueprint_indices, masks=masks)  # ForwardOutput, [B, T, ...]
    op_probs = torch.softmax(out.op_logits.float(), dim=-1)  # [B, T, 6]; masked logits give exactly 0
    argmax = out.op_logits.argmax(-1)  # [B, T]
    if deterministic:
        acted = argmax
        expected = 1.0 - op_probs.gather(-1, argmax.unsqueeze(-1)).squeeze(-1)  # [B, T]
    elif double_sample:
        acted = torch.multinomial(op_probs.reshape(-1, NUM_OPS), 1).reshape(op_probs.shape[:-1])  # [B, T]
        expected = 1.0 - op_probs.pow(2).sum(-1)  # [B, T]
    else:
        acted = out.sampled_op
        expected = torch.zeros_like(op_probs[..., 0])
    value_op = out.sampled_op if double_sample else acted  # the buggy path always stores forward's sample
    q_of = lambda op: out.op_values.gather(-1, op.unsqueeze(-1)).squeeze(-1)  # noqa: E731, [B, T]
    error = q_of(value_op) - q_of(acted)  # [B, T]
    return MismatchReport(
        steps=int(acted.numel()),
        mismatch_rate=(acted != value_op).float().mean().item(),
        mean_abs_value_error=error.abs().mean().item(),
        mean_value_error=error.mean().item(),
        expected_mismatch_rate=expected.mean().item() if double_sample else 0.0,
    )


def teach_op_values(network: Any, state: torch.Tensor, blueprint_indices: torch.Tensor,
                    targets: Sequence[float], steps: int = 200, lr: float = 1e-3) -> float:
    """Fit the critic's Q(s, op) to fixed per-op `targets` (6 numbers) for a few Adam steps; return the final MSE.

    Only the value head moves (the trunk is run under no_grad), so the policy heads are untouched. Used to give a
    fresh network op-dependent values, as a trained critic has, before measuring the op / value mismatch.
    """
    target = torch.tensor(list(targets), dtype=torch.float32)  # [6]
    if target.shape != (NUM_OPS,):
        raise ValueError(f"targets must have {NUM_OPS} values, got {tuple(target.shape)}")
    with torch.no_grad():
        lstm_out, _ = network.encode(state, blueprint_indices)  # [B, T, H]
    opt = torch.optim.Adam(network.value_head.parameters(), lr=lr)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        q = network.q_values(lstm_out)  # [B, T, 6]
        loss = (q - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


# --- the blueprint-per-slot panel (notebook 01) -------------------------------------------------------------------

SLOT_CHOICES: tuple[tuple[str, int], ...] = (("(empty)", -1),) + tuple((bp.name, int(bp)) for bp in BlueprintAction)


@torch.no_grad()
def show_live(fig: go.Figure) -> None:
    """Show `fig` as plotly JSON only, for a figure redrawn inside a widget's `Output`: a widget's outputs are not
    stored where GitHub or nbconvert look, so a PNG there is never seen; and a kaleido export from inside an
    `Output` stalled the notebook build in 2 of 8 builds of notebook 04 (0 of 8 without PNGs)."""
    fig.show(renderer="plotly_mimetype")


MASK_COLORS = [[0, "#f5f5f5"], [1, "#9ecae1"]]  # illegal, legal: mask_timeline_figure and masks_figure


def live_panel(controls: Sequence[Any], above: Sequence[Any], draw: Callable[[], tuple[go.Figure, Any]]) -> Any:
    """An ipywidgets `VBox` of the widgets `above` and an `Output` showing the figure of `draw() -> (figure, value)`,
    redrawn whenever one of `controls` changes. Its `.refresh()` redraws and returns `draw()`'s value."""
    import ipywidgets as widgets

    out = widgets.Output()

    def refresh(*_: Any) -> Any:
        fig, value = draw()
        out.clear_output(wait=True)
        with out:
            show_live(fig)
        return value

    for control in controls:
        control.observe(refresh, names="value")
    panel = widgets.VBox([*above, out])
    panel.refresh = refresh  # type: ignore[attr-defined]
    refresh()
    return panel


def op_values_for_blueprints(network: Any, state: torch.Tensor, blueprints: Sequence[int]) -> torch.Tensor:
    """Q(s, op) for all six ops when the slots hold `blueprints` (one index per slot, -1 = empty): `[6]`.

    `state` is one observation `[D]`; the step runs from a zero hidden state.
    """
    if state.dim() != 1:
        raise ValueError(f"state must be one observation [D], got shape {tuple(state.shape)}")
    idx = torch.tensor([list(blueprints)], dtype=torch.int64)  # [1, S]
    result = network.get_action(state.unsqueeze(0), idx, deterministic=True)
    return result.op_values[0]  # [6]


def blueprint_value_panel(network: Any, state: torch.Tensor, num_slots: int = 3,
                          initial: Sequence[int] | None = None) -> Any:
    """An ipywidgets panel: one dropdown per slot (a blueprint or empty) and the bar chart of Q(s, op) per op.

    Returns the `VBox`; its `.refresh()` attribute redraws (called on every dropdown change). The numbers come from
    `op_values_for_blueprints`, which the tests check.
    """
    import ipywidgets as widgets

    initial = list(initial) if initial is not None else [-1] * num_slots
    dropdowns = [
        widgets.Dropdown(options=list(SLOT_CHOICES), value=initial[i], description=f"slot r0c{i}",
                         layout=widgets.Layout(width="260px"))
        for i in range(num_slots)
    ]

    def draw() -> tuple[go.Figure, torch.Tensor]:
        values = op_values_for_blueprints(network, state, [d.value for d in dropdowns])
        names = ", ".join(dict((v, k) for k, v in SLOT_CHOICES)[d.value] for d in dropdowns)
        return op_value_bars(values, title=f"Q(s, op) with slots = {names}"), values

    panel = live_panel(dropdowns, [widgets.HBox(dropdowns)], draw)
    panel.dropdowns = dropdowns  # type: ignore[attr-defined]
    return panel


# --- figures: the world -------------------------------------------------------------------------------------------

# Where each stage sits in the lifecycle picture (x, y).
STAGE_POSITIONS: dict[SeedStage, tuple[float, float]] = {
    SeedStage.UNKNOWN: (-1.0, 1.0),
    SeedStage.DORMANT: (0.0, 1.0),
    SeedStage.GERMINATED: (1.0, 1.0),
    SeedStage.TRAINING: (2.0, 1.0),
    SeedStage.BLENDING: (3.0, 1.0),
    SeedStage.HOLDING: (4.0, 1.0),
    SeedStage.FOSSILIZED: (5.0, 1.0),
    SeedStage.PRUNED: (2.5, 0.0),
    SeedStage.EMBARGOED: (1.5, -0.5),
    SeedStage.RESETTING: (0.5, 0.0),
}


def lifecycle_figure(transitions: Mapping[SeedStage, Iterable[SeedStage]] = VALID_TRANSITIONS) -> go.Figure:
    """The seed lifecycle as a graph: one node per stage, one arrow per legal transition."""
    fig = go.Figure()
    for src, dsts in transitions.items():
        for dst in dsts:
            (x0, y0), (x1, y1) = STAGE_POSITIONS[src], STAGE_POSITIONS[dst]
            bend = 0.35 if (src, dst) == (SeedStage.HOLDING, SeedStage.BLENDING) else 0.0
            fig.add_annotation(x=x1, y=y1 - bend, ax=x0, ay=y0 - bend, xref="x", yref="y", axref="x", ayref="y",
                               showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=1.5, arrowcolor="#888",
                               standoff=22, startstandoff=22)
    failure = {SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING}
    for group, color in (("success path", "#2ca02c"), ("failure path", "#d62728")):
        stages = [s for s in STAGE_POSITIONS if (s in failure) == (group == "failure path")]
        fig.add_trace(go.Scatter(
            x=[STAGE_POSITIONS[s][0] for s in stages], y=[STAGE_POSITIONS[s][1] for s in stages],
            mode="markers+text", text=[s.name for s in stages], textposition="top center", name=group,
            marker=dict(size=26, color=color, line=dict(width=1, color="#333")),
        ))
    fig.update_layout(title="Seed lifecycle: stages and legal transitions", height=380,
                      xaxis=dict(visible=False, range=[-1.6, 5.6]), yaxis=dict(visible=False, range=[-1.0, 1.5]),
                      margin=dict(t=50, b=10, l=10, r=10), legend=dict(orientation="h", y=-0.05))
    return fig


def head_relevance_figure(table: torch.Tensor = HEAD_RELEVANCE_TABLE) -> go.Figure:
    """The causal-mask table as a heatmap: rows = ops, columns = heads, filled = the head matters for the op."""
    z = table.to(torch.int64).tolist()
    fig = go.Figure(go.Heatmap(z=z, x=list(HEAD_NAMES), y=list(OP_NAMES), colorscale=[[0, "#f0f0f0"], [1, "#1f77b4"]],
                               showscale=False, xgap=2, ygap=2,
                               text=[["yes" if v else "" for v in row] for row in z], texttemplate="%{text}"))
    fig.update_layout(title="Head relevance per op (actions.HEAD_RELEVANCE): which heads an op's outcome depends on",
                      height=330, yaxis=dict(autorange="reversed"), margin=dict(t=50, b=40, l=130, r=20))
    return fig


def mask_timeline_figure(op_masks: torch.Tensor, chosen_ops: Sequence[int] | None = None,
                         title: str = "Legal ops over one episode") -> go.Figure:
    """`op_masks [T, 6]` bool as a heatmap over epochs; `chosen_ops [T]` (optional) marked with crosses."""
    z = op_masks.to(torch.int64).T.tolist()  # [6, T]
    T = op_masks.shape[0]
    fig = go.Figure(go.Heatmap(z=z, x=list(range(T)), y=list(OP_NAMES), colorscale=MASK_COLORS,
                               showscale=False, xgap=1, ygap=1, name="legal"))
    if chosen_ops is not None:
        fig.add_trace(go.Scatter(x=list(range(T)), y=[OP_NAMES[int(o)] for o in chosen_ops], mode="markers",
                                 marker=dict(symbol="x", size=9, color="#d62728"), name="chosen op"))
    fig.update_layout(title=title, xaxis_title="epoch (env step)", height=320,
                      yaxis=dict(autorange="reversed"), margin=dict(t=50, b=40, l=130, r=20))
    return fig


def obs_layout_figure(segments: Sequence[tuple[str, int, int]], values: Sequence[float] | None = None,
                      title: str = "Obs V3 layout") -> go.Figure:
    """One bar per observation index, coloured by segment. `segments` = [(name, start, stop)] covering 0..D."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    fig = go.Figure()
    for i, (name, start, stop) in enumerate(segments):
        xs = list(range(start, stop))
        ys = [float(values[j]) for j in xs] if values is not None else [1.0] * len(xs)
        fig.add_trace(go.Bar(x=xs, y=ys, name=f"{name} [{start}:{stop}] ({stop - start})",
                             marker_color=palette[i % len(palette)]))
    fig.update_layout(title=title, xaxis_title="feature index", yaxis_title="value" if values is not None else "",
                      bargap=0.05, height=340, margin=dict(t=50, b=40, l=50, r=20), legend=dict(orientation="h", y=-0.25))
    return fig


def blueprint_timeline_figure(indices: torch.Tensor, slot_ids: Sequence[str] = ("r0c0", "r0c1", "r0c2"),
                              title: str = "blueprint_indices over an episode") -> go.Figure:
    """`indices [T, E, S]` int (-1 = empty slot) as a heatmap: one row per (world, slot), one column per step."""
    T, E, S = indices.shape
    rows, text, labels = [], [], []
    for e in range(E):
        for s in range(S):
            col = indices[:, e, s].tolist()
            rows.append([None if i < 0 else i for i in col])
            text.append(["" if i < 0 else BlueprintAction(i).name.lower() for i in col])
            labels.append(f"world {e} · {slot_ids[s]}")
    fig = go.Figure(go.Heatmap(z=rows, x=list(range(T)), y=labels, text=text, texttemplate="%{text}",
                               textfont=dict(size=8), colorscale="Viridis", zmin=0, zmax=len(BlueprintAction) - 1,
                               showscale=False, xgap=1, ygap=1,
                               hovertemplate="step %{x}<br>%{y}<br>index %{z} (%{text})<extra></extra>"))
    fig.update_layout(title=f"{title} (blank = empty slot, index -1)", xaxis_title="step (epoch)",
                      height=120 + 22 * len(labels), yaxis=dict(autorange="reversed"),
                      margin=dict(t=50, b=40, l=130, r=20))
    return fig


def bar_figure(labels: Sequence[str], values: Sequence[float], title: str, yaxis_title: str = "",
               log_y: bool = False, text: Sequence[str] | None = None) -> go.Figure:
    """A plain bar chart."""
    fig = go.Figure(go.Bar(x=list(labels), y=[float(v) for v in values],
                           text=list(text) if text is not None else None, textposition="outside"))
    fig.update_layout(title=title, yaxis_title=yaxis_title, height=340, margin=dict(t=50, b=40, l=60, r=20))
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def heatmap_figure(z: Sequence[Sequence[float]], x: Sequence[str], y: Sequence[str], title: str,
                   zmid: float | None = None, fmt: str = ".2f") -> go.Figure:
    """A labelled heatmap with the numbers written in the cells (None cells are left blank)."""
    text = [["" if v is None else format(v, fmt) for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=[[None if v is None else float(v) for v in row] for row in z], x=list(x), y=list(y),
                               colorscale="RdBu", zmid=zmid, reversescale=True, text=text, texttemplate="%{text}"))
    fig.update_layout(title=title, height=120 + 34 * len(y), yaxis=dict(autorange="reversed"),
                      margin=dict(t=50, b=40, l=220, r=20))
    return fig


def series_figure(series: Mapping[str, Sequence[float]], title: str, xaxis_title: str = "step",
                  yaxis_title: str = "", x: Sequence[float] | None = None) -> go.Figure:
    """One line per named series."""
    fig = go.Figure()
    for name, ys in series.items():
        xs = list(x) if x is not None else list(range(len(ys)))
        fig.add_trace(go.Scatter(x=xs, y=[float(v) for v in ys], mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title, height=340,
                      margin=dict(t=50, b=40, l=60, r=20))
    return fig


def box_figure(groups: Mapping[str, Sequence[float]], title: str, yaxis_title: str = "",
               hlines: Sequence[float] = ()) -> go.Figure:
    """One box per named group of values, with optional dotted horizontal reference lines."""
    fig = go.Figure([go.Box(y=[float(v) for v in vals], name=name, boxpoints="outliers") for name, vals in groups.items()])
    for y in hlines:
        fig.add_hline(y=float(y), line_dash="dot", line_color="#888")
    fig.update_layout(title=title, yaxis_title=yaxis_title, height=360, showlegend=False,
                      margin=dict(t=50, b=40, l=60, r=20))
    return fig


# --- a run's metrics, summarised (notebook 07) -------------------------------------------------------------------


def edge_mean(records: Sequence[Mapping[str, Any]], key: str, fraction: float, tail: bool) -> float:
    """Mean of the finite values of `key` over the first (`tail=False`) or last `fraction` of the records (at least
    one record); NaN when there is none."""
    values = col(records, key)
    n = max(1, int(round(len(values) * fraction)))
    kept = [v for v in (values[-n:] if tail else values[:n]) if v is not None and v == v]
    return float(np.mean(kept)) if kept else float("nan")


def tail_mean(records: Sequence[Mapping[str, Any]], key: str, fraction: float = 0.25) -> float:
    """Mean of the finite values of `key` over the last `fraction` of the records (at least one record)."""
    return edge_mean(records, key, fraction, tail=True)


def head_mean(records: Sequence[Mapping[str, Any]], key: str, fraction: float = 0.25) -> float:
    """Mean of the finite values of `key` over the first `fraction` of the records (at least one record)."""
    return edge_mean(records, key, fraction, tail=False)


# --- pictures that render anywhere: a static PNG beside each plotly figure ----------------------------------------

PNG_ENV = "ESPER_LAB_NB_PNG"
PNG_WIDTH = 900  # layout pixels of the PNG of a figure that sets no width of its own
FIGURE_RENDERERS = "plotly_mimetype+png"


def png_figures_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether `$ESPER_LAB_NB_PNG` asks for PNG figures: `1` yes, `0` or unset no; anything else raises ValueError."""
    environ = os.environ if environ is None else environ
    value = environ.get(PNG_ENV, "0").strip() or "0"
    if value not in ("0", "1"):
        raise ValueError(f"{PNG_ENV} must be 0 or 1, got {value!r}")
    return value == "1"


def store_figures_as_png(width: int = PNG_WIDTH, scale: float = 1.0, timeout: float = 120.0) -> None:
    """From now on, every plotly figure a cell shows is stored twice in its output: as plotly JSON (interactive in
    JupyterLab) and as an `image/png` (what GitHub, nbviewer and `jupyter nbconvert --to html` show).

    The PNG comes from kaleido, which drives a Chromium already on the machine (Debian's `chromium`, found on PATH,
    or the one `$BROWSER_PATH` names) and downloads nothing: plotly.js comes from the plotly package and MathJax is
    off. One kaleido browser is started here and kept for the kernel's life, so each figure costs one render, not
    one browser start. Raises RuntimeError, before any cell shows a figure, when there is no Chromium or a first
    export fails or takes longer than `timeout` seconds.
    """
    import kaleido
    import plotly.io as pio
    from choreographer.browsers.chromium import Chromium  # the lookup kaleido's browser makes

    browser = Chromium.find_browser(skip_local=False)
    if not browser or not os.path.isfile(browser):
        raise RuntimeError(f"{PNG_ENV}=1 but no Chromium was found (BROWSER_PATH={os.environ.get('BROWSER_PATH')!r}); "
                           "install Debian's: apt-get install chromium")
    pio.defaults.headers = None  # extra HTTP headers only matter to map tiles; a per-call option a server ignores
    kaleido.start_sync_server(mathjax=False, silence_warnings=True)
    failure = _first_export(pio, timeout)
    if failure:
        raise RuntimeError(f"{PNG_ENV}=1 but kaleido could not export a figure with {browser}: {failure}")
    pio.defaults.default_width, pio.defaults.default_scale = width, scale  # a figure's own width / height win
    pio.renderers.default = FIGURE_RENDERERS


def _first_export(pio: Any, timeout: float) -> str:
    """Export an empty figure (which starts the browser) within `timeout` seconds: '' or what went wrong. A browser
    that dies while starting stops kaleido's server thread and would leave the export waiting for ever."""
    import threading

    outcome: list[str] = []

    def export() -> None:
        try:
            pio.to_image(go.Figure(), format="png", width=10, height=10)
            outcome.append("")
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            outcome.append(f"{type(exc).__name__}: {exc}")

    worker = threading.Thread(target=export, daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no image after {timeout:.0f} s"


# --- the mask explorer (notebook 00) ------------------------------------------------------------------------------

from dataclasses import replace as _replace  # noqa: E402

from esper_lab.actions import (  # noqa: E402
    DEFAULT_SLOT_IDS,
    OP_SLOT_KEY,
    AlphaCurveAction,
    AlphaMode,
    AlphaSpeedAction,
    AlphaTargetAction,
    GerminationStyle,
    LifecycleOp,
    TempoAction,
)
from esper_lab.rl.advantages import compute_gae  # noqa: E402

REPORTED_STAGES: tuple[SeedStage, ...] = tuple(s for s in SeedStage if s not in (SeedStage.UNKNOWN, SeedStage.DORMANT))
"""The stages an occupied slot can report (an empty slot, DORMANT, has no report at all; UNKNOWN is never used)."""
EMPTY_STAGE = -1  # the explorer's dropdown value for an empty slot
STAGE_CHOICES: tuple[tuple[str, int], ...] = (("empty", EMPTY_STAGE),) + tuple((s.name, int(s)) for s in REPORTED_STAGES)
ALPHA_MODE_CHOICES: tuple[tuple[str, int], ...] = tuple((m.name, int(m)) for m in AlphaMode)


def head_choice_names(slot_ids: Sequence[str] = DEFAULT_SLOT_IDS) -> dict[str, tuple[str, ...]]:
    """The name of every choice of every head, `{head: names}` in `HEAD_NAMES` order (the slot head's choices are
    `slot_ids`, the others the members of the head's enum in `esper_lab.actions`)."""
    enums = {"blueprint": BlueprintAction, "style": GerminationStyle, "tempo": TempoAction,
             "alpha_target": AlphaTargetAction, "alpha_speed": AlphaSpeedAction, "alpha_curve": AlphaCurveAction,
             "op": LifecycleOp}
    names = {"slot": tuple(slot_ids), **{head: tuple(m.name for m in enum) for head, enum in enums.items()}}
    return {head: names[head] for head in HEAD_NAMES}


def report_with_slots(report: Any, slots: Sequence[tuple[SeedStage | None, AlphaMode]], template: Any,
                      slot_ids: Sequence[str] = DEFAULT_SLOT_IDS) -> Any:
    """A copy of the world report `report` (an `env.morpho_env.WorldReport`) whose slots hold seeds in the given
    `(stage, alpha mode)` states, `stage=None` for an empty slot.

    Each occupied slot is a copy of the real `SlotReport` `template` with its slot id, stage and alpha mode replaced;
    everything else (seed age, alpha, blueprint, ...) stays the template's. The copy's `action_masks()` is then the
    package's own computation, the one `VectorEnv.masks()` runs for a world in that state.
    """
    if len(slots) != len(report.slots):
        raise ValueError(f"the report has {len(report.slots)} slots, got {len(slots)} slot states")
    reports = tuple(None if stage is None else
                    _replace(template, slot_id=slot_ids[i], stage=SeedStage(stage), alpha_mode=AlphaMode(mode))
                    for i, (stage, mode) in enumerate(slots))
    return _replace(report, slots=reports)




def masks_figure(masks: Mapping[str, torch.Tensor], slot_ids: Sequence[str] = DEFAULT_SLOT_IDS,
                 title: str = "Legal-action masks") -> go.Figure:
    """The masks of one world (`compute_action_masks` / `WorldReport.action_masks()`: `{head: [k]}` and
    `masks["op_slot"] [6, S]`) side by side.

    Left: the op -> slot table, one row per op, with the op mask (the row's OR over slots) as a last column. Right:
    every head's mask, one column per head in `HEAD_NAMES` order, one row per choice index, each cell named after its
    choice (cells past a head's size are blank). The figure sets its own width so the choice names fit.
    """
    from plotly.subplots import make_subplots

    op_slot = masks[OP_SLOT_KEY].to(torch.int64)  # [6, S]
    left = torch.cat([op_slot, masks["op"].to(torch.int64).unsqueeze(-1)], dim=-1).tolist()  # [6, S + 1]
    names = head_choice_names(slot_ids)
    rows = max(len(v) for v in names.values())  # 13, the blueprint head
    right = [[int(masks[h][i]) if i < len(names[h]) else None for h in HEAD_NAMES] for i in range(rows)]  # [13, 8]
    text = [[names[h][i] if i < len(names[h]) else "" for h in HEAD_NAMES] for i in range(rows)]

    titles = ("op → slot (masks['op_slot']) and the op mask", "head masks, by choice index")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.2, 0.8], horizontal_spacing=0.045, subplot_titles=titles)
    fig.add_trace(go.Heatmap(z=left, x=[*slot_ids, "op mask"], y=list(OP_NAMES), colorscale=MASK_COLORS, zmin=0, zmax=1,
                             showscale=False, xgap=2, ygap=2, text=[["yes" if v else "" for v in row] for row in left],
                             texttemplate="%{text}", hovertemplate="%{y} on %{x}: %{z}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=right, x=list(HEAD_NAMES), y=list(range(rows)), colorscale=MASK_COLORS, zmin=0, zmax=1,
                             showscale=False, xgap=2, ygap=2, text=text, texttemplate="%{text}", textfont=dict(size=8),
                             hovertemplate="%{x} choice %{y} (%{text}): %{z}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(dtick=1, row=1, col=2)  # the choice index (the subplot title says so)
    fig.update_layout(title=f"{title} (blue = legal)", width=1040, height=460, plot_bgcolor="white",
                      margin=dict(t=80, b=40, l=125, r=10))
    return fig


def mask_explorer(report: Any, template: Any, initial: Sequence[tuple[SeedStage | None, AlphaMode]] | None = None,
                  slot_ids: Sequence[str] = DEFAULT_SLOT_IDS) -> Any:
    """An ipywidgets panel: per slot, a stage dropdown (or empty) and an alpha-mode dropdown, and the `masks_figure`
    of `report_with_slots(report, chosen states, template)`.

    Returns the `VBox`; `.stages` and `.modes` are the dropdowns, `.refresh()` recomputes the masks (the package's
    own `action_masks()`), redraws, and returns them; it runs on every dropdown change.
    """
    import ipywidgets as widgets

    num_slots = len(report.slots)
    initial = list(initial) if initial is not None else [(None, AlphaMode.HOLD)] * num_slots
    stages = [widgets.Dropdown(options=list(STAGE_CHOICES), value=EMPTY_STAGE if st is None else int(st),
                               description=slot_ids[i], layout=widgets.Layout(width="220px"))
              for i, (st, _) in enumerate(initial)]
    modes = [widgets.Dropdown(options=list(ALPHA_MODE_CHOICES), value=int(mode), description="alpha",
                              layout=widgets.Layout(width="220px")) for _, mode in initial]

    def chosen() -> list[tuple[SeedStage | None, AlphaMode]]:
        return [(None if s.value == EMPTY_STAGE else SeedStage(s.value), AlphaMode(m.value))
                for s, m in zip(stages, modes)]

    def draw() -> tuple[go.Figure, dict[str, torch.Tensor]]:
        slots = chosen()
        masks = report_with_slots(report, slots, template, slot_ids).action_masks()
        label = ", ".join(f"{slot_ids[i]} " + ("empty" if st is None else f"{st.name} (alpha {mode.name})")
                          for i, (st, mode) in enumerate(slots))
        return masks_figure(masks, slot_ids, label), masks

    panel = live_panel([*stages, *modes], [widgets.HBox([widgets.VBox([s, m]) for s, m in zip(stages, modes)])], draw)
    panel.stages, panel.modes = stages, modes  # type: ignore[attr-defined]
    return panel


# --- GAE: the worked example's panel and a rollout's advantages (notebook 04) -------------------------------------


def gae_figure(advantages: torch.Tensor, returns: torch.Tensor, values: torch.Tensor,
               title: str = "GAE advantages and returns") -> go.Figure:
    """One episode's `advantages [T]` as bars, its `returns [T]` (advantages + values) and `values [T]` as lines."""
    steps = list(range(len(advantages)))
    fig = go.Figure([
        go.Bar(x=steps, y=advantages.tolist(), name="advantage A_t", marker_color="#9ecae1"),
        go.Scatter(x=steps, y=returns.tolist(), mode="lines+markers", name="return A_t + V_t",
                   line=dict(color="#ff7f0e")),
        go.Scatter(x=steps, y=values.tolist(), mode="lines+markers", name="value V_t",
                   line=dict(color="#7f7f7f", dash="dot")),
    ])
    fig.update_layout(title=title, xaxis=dict(title="step t", dtick=1), height=360,
                      margin=dict(t=50, b=40, l=60, r=20))
    return fig


def gae_panel(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, truncated: torch.Tensor,
              bootstrap_values: torch.Tensor, gamma: float, lam: float) -> Any:
    """An ipywidgets panel: γ and λ sliders and the `gae_figure` of `compute_gae` on one episode (`[T]` tensors).

    Returns the `VBox` (children: the γ slider, the λ slider, the figure); `.gamma` and `.lam` are the sliders,
    `.refresh()` recomputes `(advantages [T], returns [T])` with the package's `compute_gae`, redraws, and returns
    them; it runs on every slider change.
    """
    import ipywidgets as widgets

    gamma_slider = widgets.FloatSlider(value=gamma, min=0.0, max=1.0, step=0.005, description="γ",
                                       readout_format=".3f", continuous_update=False)
    lam_slider = widgets.FloatSlider(value=lam, min=0.0, max=1.0, step=0.01, description="λ",
                                     readout_format=".2f", continuous_update=False)

    def draw() -> tuple[go.Figure, tuple[torch.Tensor, torch.Tensor]]:
        g, lam_ = float(gamma_slider.value), float(lam_slider.value)
        adv, ret = compute_gae(rewards, values, dones, truncated, bootstrap_values, g, lam_)  # [T] each
        return gae_figure(adv, ret, values, f"compute_gae at γ = {g:g}, λ = {lam_:g}"), (adv, ret)

    sliders = [gamma_slider, lam_slider]
    panel = live_panel(sliders, sliders, draw)
    panel.gamma, panel.lam = gamma_slider, lam_slider  # type: ignore[attr-defined]
    return panel


OP_LETTERS: tuple[str, ...] = ("W", "G", "S", "P", "F", "A")
"""One letter per op, in `LifecycleOp` order (WAIT, GERMINATE, SET_ALPHA_TARGET, PRUNE, FOSSILIZE, ADVANCE)."""


def advantage_heatmap(advantages: torch.Tensor, ops: torch.Tensor,
                      title: str = "GAE advantages per world and step") -> go.Figure:
    """`advantages [E, T]` as a heatmap (one row per world, one column per step, red < 0 < blue), each cell marked
    with the letter of the op executed at that step (`ops [E, T]`, `OP_LETTERS`; WAIT, the common case, is left
    blank); hovering a cell names its op."""
    if advantages.dim() != 2 or advantages.shape != ops.shape:
        raise ValueError(f"advantages and ops must both be [E, T] of one shape, got {tuple(advantages.shape)} "
                         f"and {tuple(ops.shape)}")
    E, T = advantages.shape
    op_rows = ops.tolist()  # [E, T]
    text = [["" if op == LifecycleOp.WAIT else OP_LETTERS[op] for op in row] for row in op_rows]
    legend = ", ".join(f"{OP_LETTERS[op]} = {op.name}" for op in LifecycleOp if op != LifecycleOp.WAIT)
    hover = "%{y}, step %{x}<br>op %{customdata}<br>advantage %{z:.4f}<extra></extra>"
    fig = go.Figure(go.Heatmap(z=advantages.tolist(), x=list(range(T)), y=[f"world {e}" for e in range(E)],
                               colorscale="RdBu", zmid=0.0, text=text, texttemplate="%{text}", textfont=dict(size=10),
                               customdata=[[OP_NAMES[op] for op in row] for row in op_rows], colorbar=dict(title="A_t"),
                               hovertemplate=hover))
    fig.update_layout(title=f"{title}<br><sup>{legend}; blank = WAIT</sup>", xaxis_title="step t", height=140 + 26 * E,
                      yaxis=dict(autorange="reversed"), margin=dict(t=70, b=40, l=80, r=20))
    return fig


# --- a data-flow diagram of boxes and arrows (notebook 03) --------------------------------------------------------


@dataclass
class FlowNode:
    """One box of `flow_figure`: its centre `(x, y)` in data units, its text (plotly HTML: `<b>`, `<br>`) and fill."""

    x: float
    y: float
    text: str
    color: str = "#deebf7"


def _box_border(x0: float, y0: float, x1: float, y1: float, width: float, height: float) -> tuple[float, float]:
    """Where the ray from `(x0, y0)`, the centre of a `width` x `height` box, towards `(x1, y1)` leaves the box."""
    dx, dy = x1 - x0, y1 - y0
    if dx == 0 and dy == 0:
        raise ValueError(f"the ray from ({x0}, {y0}) has no direction: the target is the box's own centre")
    t = min(width / 2 / abs(dx) if dx else float("inf"), height / 2 / abs(dy) if dy else float("inf"))
    return x0 + t * dx, y0 + t * dy


def flow_figure(nodes: Mapping[str, FlowNode], edges: Sequence[tuple[str, str, str]], title: str,
                box_size: tuple[float, float] = (3.0, 0.7), height: int = 480) -> go.Figure:
    """A diagram of boxes (`nodes`, `{name: FlowNode}`, each `box_size` = (width, height) data units) and arrows
    (`edges`, `(from, to, label)`; an empty label draws none), drawn with plotly shapes and annotations.

    Each arrow runs from the border of its source box to the border of its target box, along the line joining
    their centres; its label sits at the arrow's middle.
    """
    w, h = box_size
    for src, dst, _ in edges:
        if src not in nodes or dst not in nodes:
            raise ValueError(f"edge {src!r} -> {dst!r}: both ends must be nodes, have {sorted(nodes)}")
        if (nodes[src].x, nodes[src].y) == (nodes[dst].x, nodes[dst].y):
            raise ValueError(f"edge {src!r} -> {dst!r}: the two boxes have the same centre")
    fig = go.Figure()
    for node in nodes.values():
        fig.add_shape(type="rect", x0=node.x - w / 2, x1=node.x + w / 2, y0=node.y - h / 2, y1=node.y + h / 2,
                      fillcolor=node.color, line=dict(color="#555", width=1), layer="below")
    arrows, labels = [], []
    for src, dst, label in edges:
        a, b = nodes[src], nodes[dst]
        tail = _box_border(a.x, a.y, b.x, b.y, w, h)
        head = _box_border(b.x, b.y, a.x, a.y, w, h)
        arrows.append(dict(x=head[0], y=head[1], ax=tail[0], ay=tail[1], xref="x", yref="y", axref="x", ayref="y",
                           text="", showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=1.5, arrowcolor="#555"))
        if label:
            labels.append(dict(x=(tail[0] + head[0]) / 2, y=(tail[1] + head[1]) / 2, text=label, showarrow=False,
                               font=dict(size=10, color="#333", style="italic"), bgcolor="white"))
    texts = [dict(x=n.x, y=n.y, text=n.text, showarrow=False, font=dict(size=11)) for n in nodes.values()]
    xs, ys = [n.x for n in nodes.values()], [n.y for n in nodes.values()]
    fig.update_layout(title=title, height=height, annotations=arrows + texts + labels, showlegend=False,
                      xaxis=dict(visible=False, range=[min(xs) - w / 2 - 0.1, max(xs) + w / 2 + 0.1]),
                      yaxis=dict(visible=False, range=[min(ys) - h / 2 - 0.1, max(ys) + h / 2 + 0.1]),
                      plot_bgcolor="white", margin=dict(t=50, b=10, l=10, r=10))
    return fig
