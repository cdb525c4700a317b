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
    monkeypatch.delenv("ESPER_LAB_NB_PNG", raising=False)  # no browser here (tests/test_notebook_outputs.py has one)
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


def test_png_figures_wanted_reads_its_switch():
    assert nh.png_figures_wanted({}) is False
    assert nh.png_figures_wanted({"ESPER_LAB_NB_PNG": "0"}) is False
    assert nh.png_figures_wanted({"ESPER_LAB_NB_PNG": " 1 "}) is True
    with pytest.raises(ValueError, match="ESPER_LAB_NB_PNG"):
        nh.png_figures_wanted({"ESPER_LAB_NB_PNG": "yes"})



# --- the mask explorer, the GAE panel, the advantage heatmap, the flow diagram ------------------------------------

from esper_lab.actions import OP_SLOT_KEY, AlphaMode, BlendOp, SlotView, compute_action_masks, head_sizes  # noqa: E402
from esper_lab.actions import HEAD_NAMES  # noqa: E402
from esper_lab.env.morpho_env import WorldReport  # noqa: E402
from esper_lab.env.slot import SlotReport  # noqa: E402
from esper_lab.rl.advantages import compute_gae  # noqa: E402

_SEED = SlotReport(
    slot_id="r0c0", stage=SeedStage.TRAINING, blueprint=BlueprintAction.CONV_LIGHT, alpha=0.0, alpha_target=1.0,
    alpha_mode=AlphaMode.HOLD, alpha_steps_total=0, alpha_steps_done=0, alpha_velocity=0.0, blend_op=BlendOp.ADD,
    tempo_epochs=5, contribution=None, contribution_velocity=0.0, interaction_sum=0.0, gradient_norm=1.0,
    gradient_health=1.0, gradient_health_prev=1.0, has_vanishing=False, has_exploding=False, epochs_in_stage=1,
    seed_age=2, epochs_since_counterfactual=None, acc_at_germination=50.0, seed_params=100, prune_pending=False,
)
_WORLD = WorldReport(
    epoch=3, max_epochs=30, val_loss=1.5, val_acc=62.0, prev_val_loss=1.8, prev_val_acc=59.0, train_loss=1.4,
    loss_history=(2.3, 2.0), acc_history=(20.0, 59.0), best_acc=62.0, best_loss=1.5, plateau_epochs=0,
    host_stabilized=False, host_params=386, seed_params=0, slots=(None, None, None), last_action_success=True,
    last_op=LifecycleOp.WAIT, seeds_germinated=0, max_seeds=None,
)
_T, _F = True, False


def test_head_choice_names_match_the_head_sizes():
    names = nh.head_choice_names()
    assert tuple(names) == HEAD_NAMES and {h: len(v) for h, v in names.items()} == head_sizes(3)
    assert names["slot"] == ("r0c0", "r0c1", "r0c2") and names["op"][LifecycleOp.FOSSILIZE] == "FOSSILIZE"
    assert names["blueprint"][BlueprintAction.CONV_HEAVY] == "CONV_HEAVY"


def test_report_with_slots_gives_the_package_masks():
    states = [(SeedStage.HOLDING, AlphaMode.HOLD), (SeedStage.BLENDING, AlphaMode.UP), (None, AlphaMode.HOLD)]
    report = nh.report_with_slots(_WORLD, states, _SEED)
    assert report.slots[2] is None and [s.slot_id for s in report.slots[:2]] == ["r0c0", "r0c1"]
    assert (report.slots[1].stage, report.slots[1].alpha_mode, report.slots[1].seed_age) == (
        SeedStage.BLENDING, AlphaMode.UP, _SEED.seed_age)
    assert _WORLD.slots == (None, None, None) and report.epoch == _WORLD.epoch  # a copy; the original is untouched
    masks = report.action_masks()
    expected = compute_action_masks([SlotView(SeedStage.HOLDING, AlphaMode.HOLD, 2),
                                     SlotView(SeedStage.BLENDING, AlphaMode.UP, 2), SlotView(None)])
    assert masks.keys() == expected.keys() and all(torch.equal(masks[k], expected[k]) for k in expected)
    # WAIT anywhere; GERMINATE the empty slot; SET_ALPHA_TARGET, PRUNE, FOSSILIZE the holding seed (the blending one
    # is ramping); ADVANCE the blending seed
    assert masks[OP_SLOT_KEY].tolist() == [[_T, _T, _T], [_F, _F, _T], [_T, _F, _F], [_T, _F, _F], [_T, _F, _F],
                                           [_F, _T, _F]]
    with pytest.raises(ValueError, match="3 slots"):
        nh.report_with_slots(_WORLD, states[:2], _SEED)


def test_masks_figure_draws_op_slot_and_every_head():
    masks = compute_action_masks([SlotView(None), SlotView(SeedStage.HOLDING), SlotView(SeedStage.TRAINING, seed_age=3)])
    fig = nh.masks_figure(masks)
    left, right = fig.data
    op_slot = masks[OP_SLOT_KEY].tolist()
    assert [list(row) for row in left.z] == [[int(v) for v in row] + [int(any(row))] for row in op_slot]
    assert list(left.x) == ["r0c0", "r0c1", "r0c2", "op mask"] and list(right.x) == list(HEAD_NAMES)
    blueprint = list(HEAD_NAMES).index("blueprint")
    assert [row[blueprint] for row in right.z] == masks["blueprint"].to(torch.int64).tolist()  # 13 choices
    op = list(HEAD_NAMES).index("op")
    assert [row[op] for row in right.z] == masks["op"].to(torch.int64).tolist() + [None] * 7  # blank below size 6
    assert right.text[0][op] == "WAIT" and right.text[12][op] == ""


def test_mask_explorer_refreshes_on_change():
    panel = nh.mask_explorer(_WORLD, _SEED)  # every slot empty
    assert len(panel.stages) == len(panel.modes) == 3
    assert panel.refresh()["op"].tolist() == [_T, _T, _F, _F, _F, _F]  # WAIT and GERMINATE
    panel.stages[1].value = int(SeedStage.HOLDING)  # fires the observer
    masks = panel.refresh()
    assert masks[OP_SLOT_KEY][LifecycleOp.FOSSILIZE].tolist() == [_F, _T, _F]
    assert masks[OP_SLOT_KEY][LifecycleOp.PRUNE].tolist() == [_F, _T, _F]
    panel.modes[1].value = int(AlphaMode.DOWN)  # alpha moving: no PRUNE, no SET_ALPHA_TARGET
    masks = panel.refresh()
    assert not masks["op"][LifecycleOp.PRUNE] and not masks["op"][LifecycleOp.SET_ALPHA_TARGET]
    assert nh.STAGE_CHOICES[0] == ("empty", -1)
    assert {v for _, v in nh.STAGE_CHOICES[1:]} == {int(s) for s in SeedStage} - {0, int(SeedStage.DORMANT)}


def test_gae_panel_recomputes_with_compute_gae():
    r, v = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 0.4, 0.3])
    end = torch.tensor([False, False, True])
    boot = torch.tensor([0.0, 0.0, 1.0])
    panel = nh.gae_panel(r, v, end, end, boot, 0.9, 0.5)
    adv, ret = panel.refresh()
    want_adv, want_ret = compute_gae(r, v, end, end, boot, 0.9, 0.5)
    assert torch.equal(adv, want_adv) and torch.equal(ret, want_ret)
    panel.lam.value = 1.0  # fires the observer
    adv, _ = panel.refresh()
    returns = torch.tensor([1 + 0.9 * (0.9 * (2 + 0.9 * 1.0)), 0.9 * (2 + 0.9 * 1.0), 2 + 0.9 * 1.0])  # discounted
    assert torch.allclose(adv, returns - v)  # lambda = 1: Monte Carlo returns minus values
    panel.gamma.value, panel.lam.value = 0.5, 0.0
    adv, _ = panel.refresh()
    assert torch.allclose(adv, torch.tensor([1 + 0.5 * 0.4 - 0.5, 0.5 * 0.3 - 0.4, 2 + 0.5 * 1.0 - 0.3]))  # TD errors
    assert len(panel.children) == 3


def test_advantage_heatmap_marks_the_ops():
    adv = torch.tensor([[0.5, -1.0, 0.0], [0.1, 0.2, 0.3]])
    ops = torch.tensor([[0, 1, 4], [5, 0, 3]])
    heat = nh.advantage_heatmap(adv, ops).data[0]
    assert [list(row) for row in heat.text] == [["", "G", "F"], ["A", "", "P"]]
    assert heat.customdata[1][2] == "PRUNE" and [list(row) for row in heat.z] == adv.tolist()
    assert len(set(nh.OP_LETTERS)) == NUM_OPS
    with pytest.raises(ValueError, match="must both be"):
        nh.advantage_heatmap(adv, ops[:, :2])


def test_flow_figure_draws_boxes_and_arrows_between_their_borders():
    nodes = {"a": nh.FlowNode(0, 0, "A"), "b": nh.FlowNode(4, 0, "B"), "c": nh.FlowNode(4, 2, "C")}
    fig = nh.flow_figure(nodes, [("a", "b", "x"), ("b", "c", "")], "t", box_size=(2.0, 0.8))
    assert len(fig.layout.shapes) == 3 and fig.layout.shapes[0].x0 == -1.0 and fig.layout.shapes[0].y1 == 0.4
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    assert [(a.ax, a.ay, a.x, a.y) for a in arrows] == [pytest.approx((1.0, 0.0, 3.0, 0.0)),
                                                        pytest.approx((4.0, 0.4, 4.0, 1.6))]
    assert [a.text for a in fig.layout.annotations if not a.showarrow] == ["A", "B", "C", "x"]
    assert nh._box_border(0.0, 0.0, 1.0, 1.0, 2.0, 0.8) == pytest.approx((0.4, 0.4))  # a diagonal leaves through the top
    with pytest.raises(ValueError, match="must be nodes"):
        nh.flow_figure(nodes, [("a", "z", "")], "t")
    with pytest.raises(ValueError, match="same centre"):
        nh.flow_figure({**nodes, "d": nh.FlowNode(0, 0, "D")}, [("a", "d", "")], "t")
