"""LSTMPolicyBundle: the trainer's view (argument order, state_dict round trip) and the bench_policy smoke test."""

import pytest
import torch

from esper_lab.actions import HEAD_NAMES, NUM_OPS, head_sizes
from esper_lab.policy.bundle import LSTMPolicyBundle
from esper_lab.policy.network import EvaluateOutput, FactoredRecurrentActorCritic, ForwardOutput, GetActionResult
from esper_lab.policy.timing import bench_policy

D, S, W = 121, 3, 64


def make_bundle(critic: str = "q_op", seed: int = 0) -> LSTMPolicyBundle:
    torch.manual_seed(seed)
    return LSTMPolicyBundle(D, S, feature_dim=W, lstm_hidden_dim=W, critic=critic)


def step_inputs(B: int = 4):
    g = torch.Generator().manual_seed(0)
    masks = {name: torch.ones(B, k, dtype=torch.bool) for name, k in head_sizes(S).items()}
    masks["op"][:, 3:] = False  # WAIT, GERMINATE, SET_ALPHA_TARGET legal
    return torch.randn(B, D, generator=g), torch.randint(-1, 13, (B, S), generator=g), masks


def test_bundle_basics():
    bundle = make_bundle()
    assert bundle.is_recurrent is True
    assert isinstance(bundle.network, FactoredRecurrentActorCritic)
    assert bundle.critic == "q_op"
    h, c = bundle.initial_hidden(4)
    assert h.shape == c.shape == (1, 4, W) and not h.is_inference()
    assert sum(p.numel() for p in bundle.parameters()) == sum(p.numel() for p in bundle.network.parameters())
    assert bundle.spec == dict(state_dim=D, num_slots=S, feature_dim=W, lstm_hidden_dim=W, critic="q_op")


def test_get_action_takes_blueprint_indices_then_masks_then_hidden():
    bundle = make_bundle()
    obs, bp_idx, masks = step_inputs()
    hidden = bundle.initial_hidden(4)
    result = bundle.get_action(obs, bp_idx, masks, hidden)
    assert isinstance(result, GetActionResult)
    assert result.value.shape == (4,) and result.op_values.shape == (4, NUM_OPS)
    assert torch.equal(result.sampled_op, result.actions["op"])
    assert (result.actions["op"] < 3).all()  # the op mask was honoured, so masks really went to the masks slot
    boot = bundle.get_action(obs, bp_idx, masks=masks, hidden=result.hidden, deterministic=True)
    again = bundle.get_action(obs, bp_idx, masks=masks, hidden=result.hidden, deterministic=True)
    assert torch.equal(boot.value, again.value)


def test_forward_and_evaluate_actions_through_the_bundle():
    bundle = make_bundle("v")
    B, T = 2, 4
    obs = torch.randn(B, T, D)
    bp_idx = torch.randint(-1, 13, (B, T, S))
    fwd = bundle.forward(obs, bp_idx)
    assert isinstance(fwd, ForwardOutput) and fwd.value.shape == (B, T)
    actions = {n: torch.zeros(B, T, dtype=torch.int64) for n in HEAD_NAMES}
    actions["op"] = fwd.sampled_op
    out = bundle.evaluate_actions(obs, bp_idx, actions, None, bundle.initial_hidden(B))
    assert isinstance(out, EvaluateOutput)
    assert torch.allclose(out.value, fwd.value, atol=1e-5)
    assert out.q_value.shape == (B, T)


def test_get_value_builds_no_graph_and_matches_the_deterministic_bootstrap():
    bundle = make_bundle()
    obs, bp_idx, masks = step_inputs()
    boot = bundle.get_action(obs, bp_idx, masks, deterministic=True)
    value = bundle.get_value(obs, bp_idx, None, boot.actions["op"])
    assert value.shape == (4,) and not value.requires_grad
    assert torch.equal(value, boot.value)


@pytest.mark.parametrize("critic", ["q_op", "v", "q_marginal"])
def test_state_dict_round_trip(critic):
    a, b = make_bundle(critic, seed=0), make_bundle(critic, seed=1)
    obs, bp_idx, masks = step_inputs()
    before = b.get_action(obs, bp_idx, masks, deterministic=True)
    state = a.state_dict()
    assert "blueprint_embedding._null_idx" in state
    b.load_state_dict(state)
    ra = a.get_action(obs, bp_idx, masks, deterministic=True)
    rb = b.get_action(obs, bp_idx, masks, deterministic=True)
    assert not torch.equal(before.op_values, rb.op_values)
    assert torch.equal(ra.value, rb.value) and torch.equal(ra.op_values, rb.op_values)
    assert all(torch.equal(ra.actions[n], rb.actions[n]) for n in HEAD_NAMES)


def test_from_config():
    from esper_lab.config import PolicyConfig

    bundle = LSTMPolicyBundle.from_config(D, PolicyConfig(feature_dim=32, lstm_hidden_dim=48, critic="q_marginal"))
    assert bundle.critic == "q_marginal"
    assert bundle.network.lstm.hidden_size == 48 and bundle.network.feature_net[0].out_features == 32
    assert bundle.initial_hidden(2)[0].shape == (1, 2, 48)


def test_bench_policy_smoke():
    result = bench_policy(1, feature_dim=32, lstm_hidden_dim=32, env_counts=(2, 3), steps=3, num_seqs=2, seq_len=4,
                          train_repeats=1)
    assert set(result["get_action_ms"]) == {2, 3}
    assert all(ms > 0 for ms in result["get_action_ms"].values())
    assert result["update_fwd_bwd_ms"] > 0 and result["update_shape"] == [2, 4]
    assert result["threads"] == 1 and result["params"] > 0
