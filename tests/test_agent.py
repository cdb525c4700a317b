"""Agent: the one wrapper (Esper's LSTMPolicyBundle) every caller uses: argument order, observe/act/bootstrap,
the joint action, checkpoints and the reset/act policy protocol."""

import pytest
import torch

from esper_lab.actions import HEAD_INDEX, HEAD_NAMES, NUM_HEADS, NUM_OPS, head_sizes
from esper_lab.agent import Agent, AgentPolicy, load_agent, load_trained_policy
from esper_lab.config import PolicyConfig, preset
from esper_lab.env.vector import VectorEnv
from esper_lab.features import batch_obs_to_features
from esper_lab.policy.network import EvaluateOutput, FactoredRecurrentActorCritic, ForwardOutput, GetActionResult

D, S, W = 121, 3, 64


def make_agent(critic: str = "q_op", seed: int = 0) -> Agent:
    torch.manual_seed(seed)
    return Agent.from_config(PolicyConfig(feature_dim=W, lstm_hidden_dim=W, critic=critic), S, D)


def step_inputs(B: int = 4):
    g = torch.Generator().manual_seed(0)
    masks = {name: torch.ones(B, k, dtype=torch.bool) for name, k in head_sizes(S).items()}
    masks["op"][:, 3:] = False  # WAIT, GERMINATE, SET_ALPHA_TARGET legal
    return torch.randn(B, D, generator=g), torch.randint(-1, 13, (B, S), generator=g), masks


def test_agent_basics():
    agent = make_agent()
    assert agent.is_recurrent is True
    assert isinstance(agent.network, FactoredRecurrentActorCritic)
    assert agent.critic == "q_op"
    h, c = agent.initial_hidden(4)
    assert h.shape == c.shape == (1, 4, W) and not h.is_inference()
    assert sum(p.numel() for p in agent.parameters()) == sum(p.numel() for p in agent.network.parameters())
    assert agent.spec == dict(state_dim=D, num_slots=S, feature_dim=W, lstm_hidden_dim=W, critic="q_op")


def test_get_action_takes_blueprint_indices_then_masks_then_hidden():
    agent = make_agent()
    obs, bp_idx, masks = step_inputs()
    hidden = agent.initial_hidden(4)
    result = agent.get_action(obs, bp_idx, masks, hidden)
    assert isinstance(result, GetActionResult)
    assert result.value.shape == (4,) and result.op_values.shape == (4, NUM_OPS)
    assert torch.equal(result.sampled_op, result.actions["op"])
    assert (result.actions["op"] < 3).all()  # the op mask was honoured, so masks really went to the masks slot
    boot = agent.get_action(obs, bp_idx, masks=masks, hidden=result.hidden, deterministic=True)
    again = agent.get_action(obs, bp_idx, masks=masks, hidden=result.hidden, deterministic=True)
    assert torch.equal(boot.value, again.value)


def test_forward_and_evaluate_actions_through_the_agent():
    agent = make_agent("v")
    B, T = 2, 4
    obs = torch.randn(B, T, D)
    bp_idx = torch.randint(-1, 13, (B, T, S))
    fwd = agent.forward(obs, bp_idx)
    assert isinstance(fwd, ForwardOutput) and fwd.value.shape == (B, T)
    actions = {n: torch.zeros(B, T, dtype=torch.int64) for n in HEAD_NAMES}
    actions["op"] = fwd.sampled_op
    out = agent.evaluate_actions(obs, bp_idx, actions, None, agent.initial_hidden(B))
    assert isinstance(out, EvaluateOutput)
    assert torch.allclose(out.value, fwd.value, atol=1e-5)
    assert out.q_value.shape == (B, T)


def test_get_value_builds_no_graph_and_matches_the_deterministic_bootstrap():
    agent = make_agent()
    obs, bp_idx, masks = step_inputs()
    boot = agent.get_action(obs, bp_idx, masks, deterministic=True)
    value = agent.get_value(obs, bp_idx, None, boot.actions["op"])
    assert value.shape == (4,) and not value.requires_grad
    assert torch.equal(value, boot.value)


@pytest.mark.parametrize("critic", ["q_op", "v", "q_marginal"])
def test_state_dict_round_trip(critic):
    a, b = make_agent(critic, seed=0), make_agent(critic, seed=1)
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
    agent = Agent.from_config(PolicyConfig(feature_dim=32, lstm_hidden_dim=48, critic="q_marginal"), state_dim=D)
    assert agent.critic == "q_marginal"
    assert agent.network.lstm.hidden_size == 48 and agent.network.feature_net[0].out_features == 32
    assert agent.initial_hidden(2)[0].shape == (1, 2, 48)


def test_the_joint_action_is_the_per_head_actions_as_one_tensor():
    agent = make_agent()
    obs, bp_idx, masks = step_inputs()
    result = agent.get_action(obs, bp_idx, masks, agent.initial_hidden(4))
    assert result.joint_actions.shape == result.joint_log_probs.shape == (4, NUM_HEADS)
    for head in HEAD_NAMES:
        assert torch.equal(result.joint_actions[:, HEAD_INDEX[head]], result.actions[head])
        assert torch.equal(result.joint_log_probs[:, HEAD_INDEX[head]], result.log_probs[head])
    seq = agent.evaluate_actions(obs[:, None], bp_idx[:, None], result.joint_actions[:, None],
                                 {h: m[:, None] for h, m in masks.items()})
    for head in HEAD_NAMES:  # the joint [B, T, 8] form is accepted and reproduces the sampling log-probs
        torch.testing.assert_close(seq.log_probs[head][:, 0], result.log_probs[head], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="one column per head"):
        agent.evaluate_actions(obs[:, None], bp_idx[:, None], result.joint_actions[:, None, :7])


def _worlds(n: int = 2):
    env = VectorEnv(preset("tiny").world, n, seed=0)
    return env, env.reset([11, 12])


def test_act_normalises_the_features_and_bootstrap_is_the_deterministic_value():
    agent = make_agent()
    env, reports = _worlds()
    agent.obs_norm.update(torch.randn(64, D) * 2 + 1)  # a non-trivial, frozen normaliser
    seen, result = agent.act(reports, env.masks(), agent.initial_hidden(2))
    raw, bp_idx = batch_obs_to_features(reports)
    torch.testing.assert_close(seen.raw, raw)
    torch.testing.assert_close(seen.obs, agent.obs_norm.normalize(raw))
    assert torch.equal(seen.blueprint_indices, bp_idx)
    expected = agent.get_action(seen.obs, bp_idx, env.masks(), agent.initial_hidden(2), deterministic=True)
    torch.testing.assert_close(agent.bootstrap(reports, env.masks(), agent.initial_hidden(2)), expected.value)
    assert result.value.shape == (2,)


def test_agent_policy_carries_the_hidden_state_and_returns_joint_actions():
    agent = make_agent()
    env, reports = _worlds()
    policy = AgentPolicy(agent, deterministic=True)
    policy.reset(2)
    first = policy.act(reports, env.masks())
    assert first.shape == (2, NUM_HEADS) and first.dtype == torch.int64
    assert policy.hidden[0].abs().sum() > 0  # carried forward, not zero any more


def test_checkpoint_state_round_trips_network_and_normaliser(tmp_path):
    from esper_lab.rl.trainer import Trainer

    trainer = Trainer(preset("tiny", backend="local"), tmp_path / "run")
    trainer.agent.obs_norm.update(torch.randn(32, D))
    trainer.save()
    agent, cfg = load_agent(trainer.writer.checkpoint_path)
    assert cfg.preset == "tiny"
    torch.testing.assert_close(agent.obs_norm.mean, trainer.agent.obs_norm.mean)
    for (name, a), (_, b) in zip(agent.named_parameters(), trainer.agent.named_parameters()):
        assert torch.equal(a, b), name
    policy, world = load_trained_policy(trainer.writer.checkpoint_path)
    assert isinstance(policy, AgentPolicy) and world == cfg.world
