"""FactoredRecurrentActorCritic: the seed tests, the addendum's three tests and Esper's network test invariants.

Most tests run at width 64; the ones about the real sizes (parameter counts, the seed validation snippets) use 512.
"""

import math

import pytest
import torch

from esper_lab.actions import HEAD_NAMES, NUM_OPS, LifecycleOp, causal_masks, head_sizes
from esper_lab.policy.network import (
    BlueprintEmbedding,
    EvaluateOutput,
    FactoredRecurrentActorCritic,
    ForwardOutput,
    GetActionResult,
)

W = 64  # feature and LSTM width of the small test nets
CRITICS = ("q_op", "v", "q_marginal")
SIZES = head_sizes(3)


def make_net(critic: str = "q_op", state_dim: int = 114, seed: int = 0) -> FactoredRecurrentActorCritic:
    torch.manual_seed(seed)
    return FactoredRecurrentActorCritic(state_dim, 3, feature_dim=W, lstm_hidden_dim=W, critic=critic)


def random_masks(batch_shape: tuple, seed: int = 0, p: float = 0.5) -> dict[str, torch.Tensor]:
    """Random legal-action masks with at least one legal action per row (WAIT always legal)."""
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for name, k in SIZES.items():
        m = torch.rand(*batch_shape, k, generator=g) < p
        first = torch.randint(0, k, batch_shape, generator=g)
        masks[name] = m | torch.nn.functional.one_hot(first, k).bool()
    masks["op"][..., LifecycleOp.WAIT] = True
    return masks


def random_actions(masks: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """One random legal action per head and step."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in masks.items():
        flat = m.reshape(-1, m.shape[-1]).float()
        out[name] = torch.multinomial(flat, 1, generator=g).reshape(m.shape[:-1])
    return out


def inputs(B: int = 2, T: int = 5, D: int = 114, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g), torch.randint(-1, 13, (B, T, 3), generator=g)


def ppo_loss(out: EvaluateOutput, actions: dict, critic: str, with_aux: bool = True) -> torch.Tensor:
    """A PPO-style loss: clipped surrogate per head (causally masked), value loss, entropy, Q auxiliary in 'v'."""
    adv = torch.linspace(-1.0, 1.0, out.value.numel()).reshape(out.value.shape)
    returns = torch.linspace(1.0, -1.0, out.value.numel()).reshape(out.value.shape)
    relevant = causal_masks(actions["op"])
    loss = 0.5 * (out.value - returns).pow(2).mean()
    for name in HEAD_NAMES:
        ratio = (out.log_probs[name] - out.log_probs[name].detach()).exp()
        surrogate = torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
        loss = loss - (surrogate * relevant[name]).mean() - 0.05 * out.entropy[name].mean()
    if critic == "v" and with_aux:
        loss = loss + 0.5 * (out.q_value - returns).pow(2).mean()
    return loss


# --- the seed tests (addendum Step 6) -------------------------------------------------------------------------


def test_forward_pass():
    net = make_net()
    state, bp_idx = inputs()
    out = net(state, bp_idx)
    assert isinstance(out, ForwardOutput)
    for name, k in SIZES.items():
        assert getattr(out, f"{name}_logits").shape == (2, 5, k)
    assert out.value.shape == (2, 5)
    assert out.sampled_op.shape == (2, 5) and out.sampled_op.dtype == torch.int64
    assert ((out.sampled_op >= 0) & (out.sampled_op < NUM_OPS)).all()
    assert out.op_values.shape == (2, 5, NUM_OPS)
    assert out.hidden[0].shape == (1, 2, W) and out.hidden[1].shape == (1, 2, W)


def test_hidden_state_propagation():
    net = make_net()
    state, bp_idx = inputs(T=1)
    first = net(state, bp_idx)
    second = net(state, bp_idx, hidden=first.hidden)
    assert not torch.allclose(first.hidden[0], second.hidden[0])
    assert not torch.allclose(first.op_logits, second.op_logits)
    # carrying the hidden state step by step equals one pass over the whole sequence
    seq_state, seq_bp = inputs(T=4)
    whole = net(seq_state, seq_bp)
    hidden = None
    for t in range(4):
        step = net(seq_state[:, t : t + 1], seq_bp[:, t : t + 1], hidden=hidden)
        hidden = step.hidden
        assert torch.allclose(step.op_logits[:, 0], whole.op_logits[:, t], atol=1e-5)
    assert torch.allclose(hidden[0], whole.hidden[0], atol=1e-5)


def test_action_masking():
    net = make_net()
    state, bp_idx = inputs()
    masks = random_masks((2, 5), seed=3)
    out = net(state, bp_idx, masks=masks)
    for name in HEAD_NAMES:
        logits = getattr(out, f"{name}_logits")
        assert torch.isfinite(logits).all()
        assert (logits[~masks[name]] < -1000).all()
        assert (logits[masks[name]] > -1000).all()
    for seed in range(20):
        torch.manual_seed(seed)
        assert masks["op"].gather(-1, net(state, bp_idx, masks=masks).sampled_op.unsqueeze(-1)).all()
        result = net.get_action(state[:, 0], bp_idx[:, 0], masks={k: m[:, 0] for k, m in masks.items()})
        for name in HEAD_NAMES:
            assert masks[name][:, 0].gather(-1, result.actions[name].unsqueeze(-1)).all()


def test_get_action():
    net = make_net()
    state, bp_idx = inputs(B=3, T=1)
    result = net.get_action(state[:, 0], bp_idx[:, 0])
    assert isinstance(result, GetActionResult)
    assert set(result.actions) == set(HEAD_NAMES) and list(result.log_probs) == list(HEAD_NAMES)
    for name in HEAD_NAMES:
        assert result.actions[name].shape == (3,) and result.actions[name].dtype == torch.int64
        assert result.log_probs[name].shape == (3,) and (result.log_probs[name] <= 0).all()
    assert result.value.shape == (3,) and result.sampled_op.shape == (3,)
    assert result.op_values.shape == (3, NUM_OPS)
    assert result.hidden[0].shape == (1, 3, W)
    assert not result.value.requires_grad and not result.log_probs["op"].requires_grad
    # [B, 1, D] input is accepted and gives the same deterministic answer as [B, D]
    a = net.get_action(state[:, 0], bp_idx[:, 0], deterministic=True)
    b = net.get_action(state, bp_idx, deterministic=True)
    for name in HEAD_NAMES:
        assert torch.equal(a.actions[name], b.actions[name])
    assert torch.equal(a.value, b.value)


def test_evaluate_actions():
    net = make_net()
    state, bp_idx = inputs()
    masks = random_masks((2, 5), seed=1)
    actions = random_actions(masks, seed=2)
    out = net.evaluate_actions(state, bp_idx, actions, masks=masks)
    assert isinstance(out, EvaluateOutput)
    assert list(out.log_probs) == list(HEAD_NAMES) and list(out.entropy) == list(HEAD_NAMES)
    for name in HEAD_NAMES:
        assert out.log_probs[name].shape == (2, 5) and (out.log_probs[name] <= 0).all()
        assert out.entropy[name].shape == (2, 5)
        assert ((out.entropy[name] >= 0) & (out.entropy[name] <= 1)).all()
    assert out.value.shape == (2, 5) and out.q_value.shape == (2, 5)
    assert out.hidden[0].shape == (1, 2, W)
    # the first four fields are Phase 4's 4-tuple (log_probs, value, entropy, hidden)
    log_probs, value, entropy, hidden = out[:4]
    assert log_probs is out.log_probs and value is out.value and entropy is out.entropy and hidden is out.hidden


# --- the addendum's three new tests ---------------------------------------------------------------------------


def test_op_conditioned_value_forward():
    net = make_net()
    state, bp_idx = inputs()
    out = net(state, bp_idx)
    assert hasattr(out, "sampled_op")
    assert out.value.shape == (2, 5)
    lstm_out, _ = net.encode(state, bp_idx)
    assert torch.allclose(out.value, net._compute_value(lstm_out, out.sampled_op), atol=1e-6)


def test_stored_op_value_consistency():
    net = make_net()
    state, bp_idx = inputs()
    fwd = net(state, bp_idx)
    actions = random_actions(random_masks((2, 5), p=1.0), seed=4)
    actions["op"] = fwd.sampled_op
    log_probs, value, entropy, _ = net.evaluate_actions(state, bp_idx, actions)[:4]
    assert torch.allclose(fwd.value, value, atol=1e-5)
    # and a different stored op gives a different value (the critic is op-conditioned)
    actions["op"] = (fwd.sampled_op + 1) % NUM_OPS
    assert not torch.allclose(fwd.value, net.evaluate_actions(state, bp_idx, actions).value)


def test_blueprint_embedding_shapes():
    net = make_net()
    bp_idx_active = torch.tensor([[0, 2, 5], [1, 3, 7]]).unsqueeze(1)  # [2, 1, 3]
    bp_idx_inactive = torch.tensor([[-1, -1, -1], [0, -1, 2]]).unsqueeze(1)
    state = torch.randn(2, 1, 114)
    torch.manual_seed(0)
    out1 = net(state, bp_idx_active)
    torch.manual_seed(0)
    out2 = net(state, bp_idx_inactive)
    assert out1.value.shape == (2, 1) and out2.value.shape == (2, 1)
    assert not torch.allclose(out1.value, out2.value)
    # with the op held fixed, only the indices differ
    op = torch.zeros(2, 1, dtype=torch.int64)
    v1 = net.get_value(state, bp_idx_active, None, op)
    v2 = net.get_value(state, bp_idx_inactive, None, op)
    assert not torch.allclose(v1, v2)


# --- Esper's op/value consistency invariants --------------------------------------------------------------------


@pytest.mark.parametrize("critic", CRITICS)
def test_sampled_op_is_the_acted_op_and_the_value_is_for_it(critic):
    net = make_net(critic)
    state, bp_idx = inputs(B=16, T=1)
    masks = {k: m[:, 0] for k, m in random_masks((16, 1), seed=5).items()}
    for seed in range(5):
        torch.manual_seed(seed)
        result = net.get_action(state, bp_idx, masks=masks)
        assert torch.equal(result.sampled_op, result.actions["op"])
        expected = net.get_value(state[:, 0], bp_idx[:, 0], None, result.actions["op"], masks=masks)
        assert torch.allclose(result.value, expected, atol=1e-6)


def test_deterministic_op_is_the_argmax_and_its_value_is_recomputed():
    net = make_net("q_op")
    state, bp_idx = inputs(B=8, T=1)
    masks = {k: m[:, 0] for k, m in random_masks((8, 1), seed=6).items()}
    result = net.get_action(state, bp_idx, masks=masks, deterministic=True)
    with torch.no_grad():
        fwd = net(state, bp_idx, masks={k: m.unsqueeze(1) for k, m in masks.items()})
        lstm_out, _ = net.encode(state, bp_idx)
        argmax = fwd.op_logits[:, 0].argmax(-1)
        assert torch.equal(result.actions["op"], argmax)
        assert torch.equal(result.sampled_op, argmax)
        assert torch.equal(result.value, net._compute_value(lstm_out, argmax.unsqueeze(1))[:, 0])
        for name in HEAD_NAMES:
            assert torch.equal(result.actions[name], getattr(fwd, f"{name}_logits")[:, 0].argmax(-1))
    again = net.get_action(state, bp_idx, masks=masks, deterministic=True)
    assert all(torch.equal(again.actions[n], result.actions[n]) for n in HEAD_NAMES)


@pytest.mark.parametrize("critic", CRITICS)
def test_a_single_legal_op_is_chosen_in_both_modes(critic):
    net = make_net(critic)
    state, bp_idx = inputs(B=4, T=1)
    for op in LifecycleOp:
        op_mask = torch.zeros(4, NUM_OPS, dtype=torch.bool)
        op_mask[:, op] = True
        stochastic = net.get_action(state, bp_idx, masks={"op": op_mask})
        deterministic = net.get_action(state, bp_idx, masks={"op": op_mask}, deterministic=True)
        assert (stochastic.actions["op"] == op).all() and (deterministic.actions["op"] == op).all()
        assert torch.allclose(stochastic.value, deterministic.value, atol=1e-6)
        assert (stochastic.log_probs["op"] == 0).all()


@pytest.mark.parametrize("critic", CRITICS)
def test_rollout_log_probs_and_values_are_reproduced_by_evaluate_actions(critic):
    """The PPO ratio is exactly 1 before any step: get_action step by step == evaluate_actions over the sequence."""
    net = make_net(critic)
    B, T = 3, 6
    state, bp_idx = inputs(B, T)
    masks = random_masks((B, T), seed=7)
    h0 = (torch.randn(1, B, W) * 0.5, torch.randn(1, B, W) * 0.5)
    hidden, steps = h0, []
    for t in range(T):
        step_masks = {k: m[:, t] for k, m in masks.items()}
        steps.append(net.get_action(state[:, t], bp_idx[:, t], hidden, step_masks))
        hidden = steps[-1].hidden
    actions = {n: torch.stack([s.actions[n] for s in steps], 1) for n in HEAD_NAMES}
    out = net.evaluate_actions(state, bp_idx, actions, hidden=h0, masks=masks)
    for n in HEAD_NAMES:
        assert torch.allclose(out.log_probs[n], torch.stack([s.log_probs[n] for s in steps], 1), atol=1e-5)
    assert torch.allclose(out.value, torch.stack([s.value for s in steps], 1), atol=1e-5)
    assert torch.allclose(out.hidden[0], hidden[0], atol=1e-5)


# --- critic modes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("critic", CRITICS)
def test_op_values_are_q_of_every_op(critic):
    net = make_net(critic)
    state, bp_idx = inputs()
    out = net(state, bp_idx)
    lstm_out, _ = net.encode(state, bp_idx)
    for op in range(NUM_OPS):
        q = net._compute_value(lstm_out, torch.full((2, 5), op))
        assert torch.allclose(out.op_values[..., op], q, atol=1e-5)


def test_v_critic_value_does_not_depend_on_the_op():
    net = make_net("v")
    state, bp_idx = inputs()
    actions = random_actions(random_masks((2, 5), p=1.0))
    values = []
    for op in range(NUM_OPS):
        actions["op"] = torch.full((2, 5), op)
        values.append(net.evaluate_actions(state, bp_idx, actions).value)
    assert all(torch.equal(values[0], v) for v in values[1:])
    lstm_out, _ = net.encode(state, bp_idx)
    assert torch.allclose(values[0], net.state_value_head(lstm_out).squeeze(-1))


def test_q_marginal_value_is_the_policy_weighted_q_over_legal_ops():
    net = make_net("q_marginal")
    state, bp_idx = inputs()
    masks = random_masks((2, 5), seed=8)
    torch.manual_seed(0)
    out = net(state, bp_idx, masks=masks)
    probs = torch.softmax(out.op_logits.masked_fill(~masks["op"], float("-inf")), dim=-1)
    assert torch.allclose(out.value, (probs * out.op_values).sum(-1), atol=1e-5)
    # the value ignores the stored op, and pi is detached: the value loss alone leaves the op head untouched
    actions = random_actions(masks, seed=9)
    ev = net.evaluate_actions(state, bp_idx, actions, masks=masks)
    assert torch.allclose(ev.value, out.value, atol=1e-5)
    ev.value.sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.heads["op"].parameters())
    assert net.value_head[0].weight.grad.abs().sum() > 0


def test_unknown_critic_raises():
    with pytest.raises(ValueError, match="critic"):
        FactoredRecurrentActorCritic(114, critic="a2c")


# --- gradients --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("critic", CRITICS)
def test_every_parameter_receives_gradient_from_a_ppo_loss(critic):
    net = make_net(critic)
    B, T = 2, 6
    state, bp_idx = inputs(B, T)
    actions = random_actions(random_masks((B, T), p=1.0), seed=3)
    actions["op"] = torch.arange(B * T).reshape(B, T) % NUM_OPS  # every op, so every head is relevant somewhere
    out = net.evaluate_actions(state, bp_idx, actions)
    ppo_loss(out, actions, critic).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def _grads(net: FactoredRecurrentActorCritic) -> dict[str, bool]:
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in net.named_parameters()}


def test_v_critic_q_head_trains_only_through_the_detached_auxiliary():
    net = make_net("v")
    state, bp_idx = inputs(2, 6)
    actions = random_actions(random_masks((2, 6), p=1.0), seed=3)
    actions["op"] = torch.arange(12).reshape(2, 6) % NUM_OPS
    # 1) the auxiliary loss alone reaches the Q head and nothing else
    out = net.evaluate_actions(state, bp_idx, actions)
    (out.q_value - 1.0).pow(2).mean().backward()
    got = _grads(net)
    assert all(got[n] for n in got if n.startswith("value_head."))
    assert not any(got[n] for n in got if not n.startswith("value_head."))
    # 2) the PPO loss without the auxiliary never reaches the Q head
    net.zero_grad(set_to_none=True)
    out = net.evaluate_actions(state, bp_idx, actions)
    ppo_loss(out, actions, "v", with_aux=False).backward()
    got = _grads(net)
    assert not any(got[n] for n in got if n.startswith("value_head."))
    assert all(got[n] for n in got if not n.startswith("value_head."))


def test_q_op_value_loss_trains_the_trunk_through_q():
    net = make_net("q_op")
    state, bp_idx = inputs()
    out = net.evaluate_actions(state, bp_idx, random_actions(random_masks((2, 5), p=1.0)))
    out.value.pow(2).mean().backward()
    assert net.lstm.weight_ih_l0.grad.abs().sum() > 0 and net.value_head[0].weight.grad.abs().sum() > 0
    assert torch.equal(out.q_value, out.value.detach()) or torch.allclose(out.q_value, out.value, atol=1e-6)


# --- hidden state and graph hygiene ----------------------------------------------------------------------------


def test_initial_hidden_is_an_ordinary_zero_tensor():
    net = make_net()
    h, c = net.initial_hidden(3)
    assert h.shape == c.shape == (1, 3, W)
    assert not h.is_inference() and not c.is_inference()
    assert not h.requires_grad and (h == 0).all() and (c == 0).all()
    assert h.data_ptr() != c.data_ptr()


def test_get_action_hidden_can_feed_a_later_graph():
    net = make_net()
    state, bp_idx = inputs(B=2, T=3)
    result = net.get_action(state[:, 0], bp_idx[:, 0])
    assert not result.hidden[0].is_inference() and not result.hidden[0].requires_grad
    out = net.evaluate_actions(state, bp_idx, random_actions(random_masks((2, 3), p=1.0)), hidden=result.hidden)
    out.value.sum().backward()
    assert net.lstm.weight_hh_l0.grad is not None


# --- the embedding ---------------------------------------------------------------------------------------------


def test_embedding_shapes_null_row_and_buffer():
    emb = BlueprintEmbedding()
    assert emb(torch.tensor([[0, 5, -1]])).shape == (1, 3, 4)
    assert emb(torch.randint(-1, 13, (4, 10, 3))).shape == (4, 10, 3, 4)
    null = emb(torch.tensor([-1]))[0]
    assert null.abs().sum() > 0
    assert torch.equal(null, emb.embedding.weight[13])
    assert sum(p.numel() for p in emb.parameters()) == 56
    assert "_null_idx" in emb.state_dict() and emb.state_dict()["_null_idx"].item() == 13
    assert 0.005 < emb.embedding.weight.std().item() < 0.05
    assert emb.table_weight().shape == (14, 4) and not emb.table_weight().requires_grad
    emb(torch.tensor([-1, 3])).sum().backward()
    assert emb.embedding.weight.grad[13].abs().sum() > 0 and emb.embedding.weight.grad[3].abs().sum() > 0


@pytest.mark.parametrize("bad", [-2, 13, 99])
def test_invalid_embedding_indices_raise_naming_the_values(bad):
    with pytest.raises(ValueError, match=rf"invalid indices \[{bad}\]"):
        BlueprintEmbedding()(torch.tensor([[0, bad, -1]]))


def test_embedding_requires_int64():
    with pytest.raises(ValueError, match="int64"):
        BlueprintEmbedding()(torch.tensor([[0, 1, 2]], dtype=torch.int32))


# --- input validation ------------------------------------------------------------------------------------------


def test_input_validation_errors_are_clear():
    net = make_net()
    state, bp_idx = inputs()
    with pytest.raises(ValueError, match=r"state must be \[B, T, 114\]"):
        net(torch.randn(2, 5, 121), bp_idx)
    with pytest.raises(ValueError, match=r"state must be \[B, T, 114\]"):
        net(torch.randn(2, 114), bp_idx)
    with pytest.raises(ValueError, match="float32"):
        net(state.long(), bp_idx)
    with pytest.raises(ValueError, match="float32"):
        net(state.double(), bp_idx)
    with pytest.raises(ValueError, match="blueprint_indices must be"):
        net(state, bp_idx[..., :2])
    with pytest.raises(ValueError, match="int64"):
        net(state, bp_idx.int())
    with pytest.raises(ValueError, match=r"invalid indices \[-5, 13\]"):
        net(state, bp_idx.clone().index_put_((torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 0])),
                                            torch.tensor([13, -5])))
    with pytest.raises(ValueError, match=r"masks\['op'\] has shape"):
        net(state, bp_idx, masks={"op": torch.ones(2, 5, 5, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool"):
        net(state, bp_idx, masks={"op": torch.ones(2, 5, 6)})
    with pytest.raises(ValueError, match="unknown heads"):
        net(state, bp_idx, masks={"op_mask": torch.ones(2, 5, 6, dtype=torch.bool)})
    with pytest.raises(ValueError, match="hidden must be"):
        net(state, bp_idx, hidden=net.initial_hidden(3))
    with pytest.raises(ValueError, match="one step|\\[B, 1, n\\]"):
        net.get_action(state, bp_idx)
    with pytest.raises(ValueError, match=r"masks\['slot'\] has shape"):
        net.get_action(state[:, 0], bp_idx[:, 0], masks={"slot": torch.ones(2, 4, dtype=torch.bool)})
    actions = random_actions(random_masks((2, 5), p=1.0))
    with pytest.raises(ValueError, match="missing heads"):
        net.evaluate_actions(state, bp_idx, {k: v for k, v in actions.items() if k != "tempo"})
    with pytest.raises(ValueError, match="int64"):
        net.evaluate_actions(state, bp_idx, {**actions, "op": actions["op"].int()})


def test_empty_mask_and_nan_state_raise_naming_the_problem():
    net = make_net()
    state, bp_idx = inputs()
    masks = {"blueprint": torch.ones(2, 5, 13, dtype=torch.bool)}
    masks["blueprint"][1, 3] = False
    with pytest.raises(ValueError, match="no legal action.*blueprint"):
        net(state, bp_idx, masks=masks)
    bad = state.clone()
    bad[0, 2, 7] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        net(bad, bp_idx)


def test_illegal_stored_action_raises():
    net = make_net()
    state, bp_idx = inputs()
    masks = random_masks((2, 5), seed=2)
    actions = random_actions(masks)
    actions["op"] = (~masks["op"]).float().argmax(-1)  # an illegal op where one exists
    assert not masks["op"].gather(-1, actions["op"].unsqueeze(-1)).all()
    with pytest.raises(ValueError, match="illegal"):
        net.evaluate_actions(state, bp_idx, actions, masks=masks)


# --- sizes and initialisation (the real Phase 4 sizes) ---------------------------------------------------------


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta_net(state_dim: int, critic: str = "q_op") -> FactoredRecurrentActorCritic:
    """Built on the meta device: real modules and shapes, no memory and no init cost (counting only)."""
    with torch.device("meta"):
        return FactoredRecurrentActorCritic(state_dim, 3, critic=critic)


def test_parameter_counts_match_esper_phase4():
    net = _meta_net(114)
    assert _count(net) == 3_625_314
    assert _count(net.lstm) == 2_101_248  # the plan's "~2.1M" is the LSTM alone
    assert _count(net.feature_net) == 66_048
    assert _count(net.lstm_ln) == 1_024
    assert sum(_count(net.heads[n]) for n in HEAD_NAMES if n != "blueprint") == 926_492
    assert _count(net.heads["blueprint"]) == 397_325
    assert _count(net.value_head) == 133_121
    assert _count(net.blueprint_embedding) == 56
    assert _count(_meta_net(121)) == 3_628_898
    assert _count(_meta_net(121, "q_marginal")) == 3_628_898
    assert _count(_meta_net(121, "v")) == 3_628_898 + 131_585  # + the V(s) head, 512 -> 256 -> 1


def _gain(weight: torch.Tensor) -> torch.Tensor:
    """Singular values of an orthogonally initialised matrix all equal its gain."""
    return torch.linalg.svdvals(weight.detach())


def test_initialisation():
    net = make_net("v")
    H = W
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert (module.bias == 0).all(), name
    for name, head in net.heads.items():
        for layer in head[:-1]:
            if isinstance(layer, torch.nn.Linear):
                assert torch.allclose(_gain(layer.weight), torch.tensor(math.sqrt(2)), atol=1e-4), name
        assert torch.allclose(_gain(head[-1].weight), torch.tensor(0.01), atol=1e-6), name
    for head in (net.value_head, net.state_value_head):
        assert torch.allclose(_gain(head[0].weight), torch.tensor(math.sqrt(2)), atol=1e-4)
        assert torch.allclose(_gain(head[-1].weight), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(_gain(net.feature_net[0].weight), torch.tensor(math.sqrt(2)), atol=1e-4)
    for w in (net.lstm.weight_ih_l0, net.lstm.weight_hh_l0):
        assert torch.allclose(_gain(w), torch.tensor(1.0), atol=1e-4)
    b_ih, b_hh = net.lstm.bias_ih_l0, net.lstm.bias_hh_l0
    assert (b_ih[H : 2 * H] == 1).all() and (b_ih[:H] == 0).all() and (b_ih[2 * H :] == 0).all()
    assert (b_hh == 0).all()  # effective forget-gate bias b_ih + b_hh = 1


# --- the seed documents' validation snippets, adapted to these names -------------------------------------------


@pytest.mark.parametrize("state_dim", [114, 121])
def test_seed_validation_snippets_run_clean(state_dim):
    from esper_lab.agent import Agent

    policy = Agent(FactoredRecurrentActorCritic(state_dim))  # one full-size net serves both snippets
    net = policy.network
    assert isinstance(net, FactoredRecurrentActorCritic) and net.state_dim == state_dim and net.num_slots == 3
    # after Step 1: the network
    state = torch.randn(2, 5, state_dim)
    bp_idx = torch.randint(0, 13, (2, 5, 3))
    out = net(state, bp_idx)
    assert isinstance(out, ForwardOutput)
    assert out.op_logits.shape == (2, 5, 6) and out.value.shape == (2, 5) and out.sampled_op.shape == (2, 5)
    actions = {n: torch.randint(0, k, (2, 5)) for n, k in SIZES.items()}
    eval_out = net.evaluate_actions(state, bp_idx, actions)
    assert isinstance(eval_out, EvaluateOutput) and eval_out.value.shape == (2, 5)
    assert _count(net) == {114: 3_625_314, 121: 3_628_898}[state_dim]
    # after Step 2: the wrapper, features [B, D] and bp_idx [B, S] with empty masks
    result = policy.get_action(torch.randn(2, state_dim), torch.randint(0, 13, (2, 3)), {})
    assert result.value.shape == (2,)
