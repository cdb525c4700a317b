"""notebooks/nb_helpers.py: the size switch, the widget logic, the mismatch demonstration and the teaching figures.

The notebooks import it from their working directory (`from nb_helpers import ...`); here `notebooks/` goes on
sys.path for the same import.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from esper_lab.actions import HEAD_RELEVANCE_TABLE, NUM_OPS, BlueprintAction, LifecycleOp, SeedStage
from esper_lab.policy.network import FactoredRecurrentActorCritic

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
if str(NOTEBOOKS) not in sys.path:
    sys.path.insert(0, str(NOTEBOOKS))

import nb_helpers as nh  # noqa: E402

D = 121


@pytest.fixture(scope="module")
def net() -> FactoredRecurrentActorCritic:
    torch.manual_seed(0)
    return FactoredRecurrentActorCritic(D, feature_dim=32, lstm_hidden_dim=32)


# --- size switch ----------------------------------------------------------------------------------------------------


def test_nb_size_defaults_to_full_and_validates():
    assert nh.nb_size({}) == "full"
    assert nh.nb_size({"ESPER_LAB_NB_SIZE": "ci"}) == "ci"
    assert nh.nb_size({"ESPER_LAB_NB_SIZE": " FULL "}) == "full"
    with pytest.raises(ValueError, match="ESPER_LAB_NB_SIZE"):
        nh.nb_size({"ESPER_LAB_NB_SIZE": "huge"})


def test_setup_pins_threads_and_seeds(monkeypatch):
    monkeypatch.setenv("ESPER_LAB_NB_SIZE", "ci")
    before = torch.get_num_threads()
    try:
        assert nh.setup(seed=3, threads=1) == "ci"
        assert torch.get_num_threads() == 1
        a = torch.rand(3)
        nh.setup(seed=3, threads=1)
        assert torch.equal(a, torch.rand(3))
    finally:
        torch.set_num_threads(before)


def test_by_size():
    assert nh.by_size("ci", ci=1, full=2) == 1 and nh.by_size("full", ci=1, full=2) == 2
    with pytest.raises(ValueError):
        nh.by_size("big", ci=1, full=2)


def test_expect_error():
    err = nh.expect_error(lambda: int("x"), ValueError)
    assert isinstance(err, ValueError)
    with pytest.raises(AssertionError, match="returned normally"):
        nh.expect_error(lambda: 1, ValueError)
    with pytest.raises(AssertionError, match="KeyError"):
        nh.expect_error(lambda: {}["a"], ValueError)


# --- tables ---------------------------------------------------------------------------------------------------------


def test_markdown_table_and_checklist():
    table = nh.markdown_table([{"a": 1, "b": 0.123456}, {"a": 2, "b": float("nan")}])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.1235 |", "| 2 | nan |"]
    assert nh.markdown_table([]) == "(no rows)"
    assert nh.markdown_table([{"|x|": "a|b"}]).splitlines()[::2] == ["| \\|x\\| |", "| a\\|b |"]
    text = nh.checklist_markdown([nh.Check("one", True, "ok"), nh.Check("two", False, "no")])
    assert text.splitlines() == ["- [x] **one**: ok", "- [ ] **two**: no"]


def test_parameter_breakdown_adds_up_and_lstm_formula(net):
    parts = nh.parameter_breakdown(net)
    assert sum(parts.values()) == sum(p.numel() for p in net.parameters())
    assert parts["lstm"] == nh.lstm_parameter_count(32, 32) == sum(p.numel() for p in net.lstm.parameters())
    assert nh.lstm_parameter_count(512, 512) == 2_101_248
    assert nh.lstm_parameter_count(4, 3, layers=2) == sum(p.numel() for p in torch.nn.LSTM(4, 3, 2).parameters())
    deeper = nh.parameter_breakdown(net, depth=2)
    assert sum(v for k, v in deeper.items() if k.startswith("heads.")) == parts["heads"]


# --- widget logic ---------------------------------------------------------------------------------------------------


def test_op_values_for_blueprints_matches_get_action_and_depends_on_the_slots(net):
    torch.manual_seed(1)
    obs = torch.randn(D)
    values = nh.op_values_for_blueprints(net, obs, [int(BlueprintAction.CONV_LIGHT), -1, -1])
    assert values.shape == (NUM_OPS,)
    direct = net.get_action(obs.unsqueeze(0), torch.tensor([[1, -1, -1]]), deterministic=True).op_values[0]
    assert torch.allclose(values, direct)
    other = nh.op_values_for_blueprints(net, obs, [-1, -1, -1])
    assert not torch.allclose(values, other)
    with pytest.raises(ValueError, match="one observation"):
        nh.op_values_for_blueprints(net, obs.unsqueeze(0), [-1, -1, -1])


def test_blueprint_value_panel_refreshes_on_change(net):
    torch.manual_seed(2)
    obs = torch.randn(D)
    panel = nh.blueprint_value_panel(net, obs, initial=[-1, -1, -1])
    assert len(panel.dropdowns) == 3
    assert [v for _, v in nh.SLOT_CHOICES] == [-1] + list(range(13))
    panel.dropdowns[0].value = int(BlueprintAction.CONV_HEAVY)  # fires the observer
    values = panel.refresh()
    assert torch.allclose(values, nh.op_values_for_blueprints(net, obs, [int(BlueprintAction.CONV_HEAVY), -1, -1]))


# --- the op / value mismatch ----------------------------------------------------------------------------------------


def _taught(net):
    torch.manual_seed(3)
    state, idx = torch.randn(4, 12, D), torch.randint(-1, 13, (4, 12, 3))
    taught = copy.deepcopy(net)
    mse = nh.teach_op_values(taught, state, idx, [0.0, 1.0, -0.5, -1.0, 0.8, 0.3], steps=200, lr=1e-3)
    return taught, state, idx, mse


def test_teach_op_values_moves_only_the_value_head(net):
    taught, state, idx, mse = _taught(net)
    assert mse < 0.05
    for (name, p0), (_, p1) in zip(net.named_parameters(), taught.named_parameters()):
        assert torch.equal(p0, p1) == (not name.startswith("value_head")), name
    q = taught.q_values(taught.encode(state, idx)[0]).mean(dim=(0, 1))
    assert q.argmax().item() == LifecycleOp.GERMINATE and q.argmin().item() == LifecycleOp.PRUNE
    with pytest.raises(ValueError, match="6 values"):
        nh.teach_op_values(taught, state, idx, [0.0, 1.0])


def test_op_value_mismatch_single_sample_is_exact_and_double_sample_is_not(net):
    taught, state, idx, _ = _taught(net)
    torch.manual_seed(4)
    fixed = nh.op_value_mismatch(taught, state, idx, double_sample=False)
    assert fixed.steps == 48 and fixed.mismatch_rate == 0.0 and fixed.mean_abs_value_error == 0.0
    fixed_det = nh.op_value_mismatch(taught, state, idx, double_sample=False, deterministic=True)
    assert fixed_det.mismatch_rate == 0.0 and fixed_det.mean_abs_value_error == 0.0
    torch.manual_seed(4)
    buggy = nh.op_value_mismatch(taught, state, idx, double_sample=True)
    assert 0.6 < buggy.mismatch_rate <= 1.0  # six legal ops, a near-uniform op head: about 5/6
    assert abs(buggy.expected_mismatch_rate - 5 / 6) < 0.02
    assert buggy.mean_abs_value_error > 0.2
    one_legal = torch.zeros(4, 12, NUM_OPS, dtype=torch.bool)
    one_legal[..., 0] = True
    single = nh.op_value_mismatch(taught, state, idx, {"op": one_legal}, double_sample=True)
    assert single.mismatch_rate == 0.0 and single.expected_mismatch_rate < 1e-6


# --- figures --------------------------------------------------------------------------------------------------------


def test_world_figures_are_plotly_figures():
    fig = nh.lifecycle_figure()
    names = set(fig.data[0].text) | set(fig.data[1].text)
    assert names == {s.name for s in SeedStage}
    assert len(fig.layout.annotations) == sum(len(v) for v in nh.VALID_TRANSITIONS.values())
    heat = nh.head_relevance_figure()
    assert np.array(heat.data[0].z).tolist() == HEAD_RELEVANCE_TABLE.to(torch.int64).tolist()
    timeline = nh.mask_timeline_figure(torch.ones(5, 6, dtype=torch.bool), chosen_ops=[0, 1, 0, 0, 5])
    assert len(timeline.data) == 2 and list(timeline.data[1].y) == ["WAIT", "GERMINATE", "WAIT", "WAIT", "ADVANCE"]
    layout = nh.obs_layout_figure([("base", 0, 3), ("slot", 3, 5)], values=[1, 2, 3, 4, 5])
    assert [len(t.x) for t in layout.data] == [3, 2]
    for fig in (nh.bar_figure(["a"], [1.0], "t", log_y=True), nh.series_figure({"a": [1, 2]}, "t"),
                nh.heatmap_figure([[1.0, None]], ["x", "y"], ["r"], "t")):
        assert isinstance(fig, go.Figure)


def test_tail_and_head_means_skip_missing_values():
    records = [{"update": i + 1, "x": float(i)} for i in range(8)] + [{"update": 9, "x": None}]
    assert nh.tail_mean(records, "x", 0.25) == pytest.approx(7.0)  # last 2 of 9 records: 7.0 and a skipped NaN
    assert nh.head_mean(records, "x", 0.25) == pytest.approx(0.5)
    assert np.isnan(nh.tail_mean([{"update": 1}], "x"))
    assert nh.head_mean([{"x": float("nan")}, {"x": 2.0}], "x", 1.0) == 2.0  # NaN skipped like null


def test_box_figure():
    fig = nh.box_figure({"op": [1.0, 1.1], "slot": [0.9]}, "ratios", hlines=(0.8, 1.2))
    assert [t.name for t in fig.data] == ["op", "slot"] and len(fig.layout.shapes) == 2


class _Thing:
    def double(self, x, scale=2):
        return x * scale


def test_spy_on_records_calls_and_restores():
    thing = _Thing()
    with nh.spy_on(thing, "double") as calls:
        assert thing.double(3) == 6 and thing.double(1, scale=5) == 5
    assert [c.result for c in calls] == [6, 5]
    assert "double" not in thing.__dict__  # the instance attribute is gone again: the class method shows through
    assert calls[1].arg("scale") == 5 and calls[0].arg("scale") == 2 and calls[0].arg("x") == 3
    with pytest.raises(RuntimeError):
        with nh.spy_on(nh, "by_size"):
            raise RuntimeError("boom")
    assert nh.by_size("ci", ci=1, full=2) == 1  # module function restored after an error


def test_blueprint_timeline_figure():
    idx = torch.tensor([[[-1, -1, -1]], [[3, -1, -1]], [[3, -1, 7]]])  # [T=3, E=1, S=3]
    fig = nh.blueprint_timeline_figure(idx)
    z = fig.data[0].z
    assert [list(row) for row in z] == [[None, 3, 3], [None, None, None], [None, None, 7]]
    assert fig.data[0].text[0][1] == "norm" and list(fig.data[0].y)[2] == "world 0 · r0c2"
