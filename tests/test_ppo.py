"""The PPO update: exact re-evaluation of the stored rollout, KL early stop before the step, losses by hand,
learning on a fixed batch, the three critic modes and the telemetry."""

import math

import pytest
import torch

from esper_lab.actions import HEAD_INDEX, HEAD_NAMES, NUM_HEADS, NUM_OPS, LifecycleOp, head_sizes, unpack_heads
from esper_lab.agent import Agent
from esper_lab.config import PPOConfig
from esper_lab.policy.network import FactoredRecurrentActorCritic
from esper_lab.policy.relevant import RelevantEvaluation
from esper_lab.policy.normalize import RunningMeanStd
from esper_lab.rl.advantages import compute_gae
from esper_lab.rl.buffer import RolloutBuffer
from esper_lab.rl.ppo import (
    ENTROPY_COEF_PER_HEAD,
    PPOUpdater,
    explained_variance,
    head_parameters,
    q_statistics,
)
from esper_lab.runs import PPO_METRIC_KEYS as METRIC_KEYS

E, T, D, S, WIDTH = 4, 6, 12, 3, 32


def _network(critic: str = "q_op", seed: int = 0) -> FactoredRecurrentActorCritic:
    torch.manual_seed(seed)
    return FactoredRecurrentActorCritic(D, S, feature_dim=WIDTH, lstm_hidden_dim=WIDTH, critic=critic)


def _updater(network, cfg: PPOConfig, gamma: float = 0.995) -> PPOUpdater:
    """PPO on `network` (the real one or a stand-in), through an Agent as the trainer does."""
    agent = Agent(network, RunningMeanStd(D))
    if isinstance(network, _FixedNetwork):
        agent.evaluate_relevant = network.evaluate_relevant
    return PPOUpdater(agent, cfg, gamma)


def _random_masks(generator: torch.Generator) -> dict[str, torch.Tensor]:
    masks = {h: torch.rand(E, k, generator=generator) < 0.6 for h, k in head_sizes(S).items()}
    for h, m in masks.items():  # every row keeps at least one legal action
        m[torch.arange(E), torch.randint(0, m.shape[1], (E,), generator=generator)] = True
    masks["op"][:, LifecycleOp.WAIT] = True  # WAIT is always legal
    return masks


def _rollout(network, seed: int = 1) -> RolloutBuffer:
    """Fill a buffer the way the trainer does: one batched get_action per step, carrying the hidden state.

    The rollout starts from a random (non-zero) hidden state, so re-running the rows from anything but the stored
    initial hidden state would show up as ratios != 1.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    buf = RolloutBuffer(E, T, D, S, WIDTH)
    hidden = (torch.randn(1, E, WIDTH, generator=g) * 0.5, torch.randn(1, E, WIDTH, generator=g) * 0.5)
    buf.reset(hidden)
    for t in range(T):
        obs = torch.randn(E, D, generator=g)
        bp = torch.randint(-1, 13, (E, S), generator=g)
        masks = _random_masks(g)
        result = network.get_action(obs, bp, hidden=hidden, masks=masks)
        last = torch.full((E,), t == T - 1)
        buf.add(obs=obs, blueprint_indices=bp, actions=result.joint_actions, log_probs=result.joint_log_probs,
                value=result.value, op_values=result.op_values, executed_op=result.sampled_op,
                reward=torch.randn(E, generator=g),
                done=last, truncated=last, masks=masks)
        hidden = result.hidden
    buf.set_bootstrap(torch.randn(E, generator=g))
    return buf


def _params(network) -> list[torch.Tensor]:
    return [p.detach().clone() for p in network.parameters()]


def _changed(before, network) -> bool:
    return any(not torch.equal(a, b.detach()) for a, b in zip(before, network.parameters()))


@pytest.mark.parametrize("critic", ["q_op", "v", "q_marginal"])
def test_first_evaluation_reproduces_the_stored_rollout(critic):
    """Re-running each env row as one sequence from its stored initial hidden state gives ratio 1 exactly."""
    network = _network(critic)
    batch = _rollout(network).batched()
    with torch.no_grad():
        out = network.evaluate_actions(batch.obs, batch.blueprint_indices, batch.actions,
                                       hidden=batch.initial_hidden, masks=batch.masks)
    for head in HEAD_NAMES:
        torch.testing.assert_close(out.log_probs[head], batch.log_probs[..., HEAD_INDEX[head]], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.value, batch.values, atol=1e-5, rtol=0)
    # The same through the updater, with minibatches of env rows taken in shuffled order.
    metrics = _updater(network, PPOConfig(epochs=1, minibatches=2)).update(batch)
    assert metrics["ratio_first"] < 1e-5


def test_kl_early_stop_happens_before_the_step():
    """Esper commit e3f72b3 (KL check before the step): a first minibatch above 1.5 x target_kl means no step at all."""
    network = _network()
    batch = _rollout(network).batched()
    batch.log_probs[..., HEAD_INDEX["op"]] -= 2.0  # stored log-probs corrupted: ratio e^2 on every step
    before = _params(network)
    updater = _updater(network, PPOConfig(epochs=4, minibatches=1, target_kl=0.015))
    metrics = updater.update(batch)
    assert metrics["early_stopped"] is True
    assert metrics["optimizer_steps"] == 0 and metrics["epochs_completed"] == 0
    assert metrics["approx_kl"] > 1.5 * 0.015
    assert not _changed(before, network)
    assert not updater.optimizer.state  # Adam never stepped
    assert math.isnan(metrics["grad_norm_total"])


def test_without_target_kl_the_same_batch_is_stepped():
    network = _network()
    batch = _rollout(network).batched()
    batch.log_probs[..., HEAD_INDEX["op"]] -= 2.0
    before = _params(network)
    metrics = _updater(network, PPOConfig(epochs=2, minibatches=2, target_kl=None)).update(batch)
    assert metrics["early_stopped"] is False
    assert metrics["optimizer_steps"] == 4 and metrics["epochs_completed"] == 2
    assert _changed(before, network)


def test_kl_stop_later_in_the_update_keeps_earlier_steps():
    """A tiny target: the first minibatch (ratio 1, KL 0) steps, a later one stops before its step."""
    network = _network()
    batch = _rollout(network).batched()
    cfg = PPOConfig(epochs=10, minibatches=2, target_kl=1e-7, lr=1e-2)
    metrics = _updater(network, cfg).update(batch)
    assert metrics["early_stopped"] is True
    assert 1 <= metrics["optimizer_steps"] < 20


@pytest.mark.parametrize("critic", ["q_op", "v", "q_marginal"])
def test_every_critic_mode_runs_an_update(critic):
    network = _network(critic)
    before = _params(network)
    metrics = _updater(network, PPOConfig(epochs=2, minibatches=2)).update(_rollout(network))
    assert tuple(metrics) == METRIC_KEYS
    assert _changed(before, network)
    for key in ("policy_loss", "value_loss", "entropy_loss", "approx_kl", "clip_fraction", "grad_norm_total",
                "grad_norm_op", "entropy_op", "q_spread", "q_variance", "explained_variance"):
        assert math.isfinite(metrics[key]), key
    assert metrics["epochs_completed"] == 2 and metrics["optimizer_steps"] == 4
    assert metrics["ratio_first"] < 1e-5
    assert (metrics["q_aux_loss"] > 0) == (critic == "v")


def test_the_agent_is_what_ppo_trains():
    torch.manual_seed(0)
    agent = Agent(FactoredRecurrentActorCritic(D, S, feature_dim=WIDTH, lstm_hidden_dim=WIDTH, critic="v"))
    updater = PPOUpdater(agent, PPOConfig(epochs=1, minibatches=1), gamma=0.9)
    assert updater.network is agent.network and updater.critic == "v" and updater.gamma == 0.9
    metrics = updater.update(_rollout(agent.network).batched())
    assert metrics["ratio_first"] < 1e-5 and metrics["optimizer_steps"] == 1


def test_q_aux_loss_trains_only_the_q_head():
    """Critic 'v': the auxiliary Q loss reaches the Q head (value_head) and nothing in the shared trunk."""
    network = _network("v")
    batch = _rollout(network).batched()
    out = network.evaluate_actions(batch.obs, batch.blueprint_indices, batch.actions,
                                   hidden=batch.initial_hidden, masks=batch.masks)
    (0.5 * (out.q_value - torch.randn(E, T)).pow(2).mean()).backward()
    for name, p in network.named_parameters():
        reached = p.grad is not None and p.grad.abs().sum() > 0
        assert reached == name.startswith("value_head."), name


def test_update_lowers_the_loss_on_a_fixed_batch():
    network = _network("q_op")
    batch = _rollout(network).batched()
    advantages, returns = compute_gae(batch.rewards, batch.values, batch.dones, batch.truncated,
                                      batch.bootstrap_values, 0.99, 0.95)
    updater = _updater(network, PPOConfig(epochs=4, minibatches=1, target_kl=None, lr=1e-3))
    norm_adv = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)

    def losses():
        with torch.no_grad():
            terms, _, _ = updater._minibatch_losses(batch, norm_adv, returns)
        return terms

    start = losses()
    for _ in range(3):
        updater.update(batch, advantages, returns)
    end = losses()
    assert end["value_loss"] < 0.8 * start["value_loss"]
    assert end["policy_loss"] < start["policy_loss"]  # the surrogate objective went up


# ------------------------------------------------------------------------------------------------------------
# losses by hand, on a stand-in network whose outputs are fixed


class _FixedNetwork(torch.nn.Module):
    """A stand-in whose pass over stored steps returns the stored log-probs + `shift` (op head only), value
    `value` and entropy `entropy` at every step where a head mattered (`evaluate_relevant`'s flat layout)."""

    def __init__(self, shift: float, value: float, entropy: float):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.shift, self.value, self.entropy = shift, value, entropy
        self.stored: dict[str, torch.Tensor] = {}

    def evaluate_relevant(self, state, blueprint_indices, actions, relevant, valid, value_op, masks=None,
                          hidden=None) -> RelevantEvaluation:
        zero = self.bias * 0  # a graph, so backward runs
        B = state.shape[0]
        rel = relevant[valid]  # [N, 8]
        stored = torch.stack([self.stored[h][:B] for h in HEAD_NAMES], -1)[valid]  # [N, 8]
        shift = torch.tensor([self.shift if h == "op" else 0.0 for h in HEAD_NAMES])
        log_probs = torch.where(rel, stored + shift + zero, 0.0)
        entropy = torch.where(rel, torch.full_like(stored, self.entropy) + zero, 0.0)
        value = torch.full((int(valid.sum()),), self.value) + self.bias
        return RelevantEvaluation(rel, log_probs, entropy, value, None)


def _wait_only_batch(num_envs: int = 1, steps: int = 2):
    """All-WAIT steps with stored value 0: only the op head is causally relevant."""
    buf = RolloutBuffer(num_envs, steps, D, S, WIDTH)
    buf.reset((torch.zeros(1, num_envs, WIDTH), torch.zeros(1, num_envs, WIDTH)))
    for t in range(steps):
        buf.add(obs=torch.zeros(num_envs, D), blueprint_indices=torch.full((num_envs, S), -1),
                actions=torch.zeros(num_envs, NUM_HEADS, dtype=torch.long),
                log_probs=torch.full((num_envs, NUM_HEADS), -1.0),
                value=torch.zeros(num_envs), op_values=torch.zeros(num_envs, NUM_OPS),
                executed_op=torch.zeros(num_envs, dtype=torch.long), reward=torch.zeros(num_envs),
                done=torch.zeros(num_envs, dtype=torch.bool), truncated=torch.zeros(num_envs, dtype=torch.bool),
                masks={h: torch.ones(num_envs, k, dtype=torch.bool) for h, k in head_sizes(S).items()})
    return buf.batched()


def test_losses_by_hand():
    batch = _wait_only_batch()
    net = _FixedNetwork(shift=math.log(1.5), value=3.0, entropy=0.5)
    net.stored = unpack_heads(batch.log_probs)
    cfg = PPOConfig(epochs=1, minibatches=1, target_kl=None, clip_ratio=0.2, value_clip=1.0, clip_value=True)
    updater = _updater(net, cfg)
    advantages = torch.tensor([[1.0, -1.0]])  # already normalised: mean 0, std 1
    returns = torch.tensor([[5.0, 5.0]])
    terms, stats, ratio_dev = updater._minibatch_losses(batch, advantages, returns)
    # op ratio 1.5: A=+1 -> min(1.5, 1.2) = 1.2; A=-1 -> min(-1.5, -1.2) = -1.5; mean -0.15; loss +0.15.
    # The other heads have ratio 1 but are irrelevant under WAIT: they add nothing.
    assert terms["policy_loss"].item() == pytest.approx(0.15)
    # V_old 0, V 3, R 5, clip 1: max((3-5)^2, (1-5)^2) = 16 -> 0.5 * 16.
    assert terms["value_loss"].item() == pytest.approx(8.0)
    # Entropy only for the op head (coef 1.0) under WAIT.
    assert terms["entropy_loss"].item() == pytest.approx(-ENTROPY_COEF_PER_HEAD["op"] * 0.5)
    # KL pooled over causal (head, step) pairs: only op's two steps, (1.5 - 1) - ln 1.5.
    assert terms["approx_kl"].item() == pytest.approx(0.5 - math.log(1.5), rel=1e-5)
    assert stats["clip_fraction"] == (2.0, 2.0)
    assert ratio_dev == pytest.approx(0.5, rel=1e-5)
    updater.cfg = PPOConfig(clip_value=False)
    terms, _, _ = updater._minibatch_losses(batch, advantages, returns)
    assert terms["value_loss"].item() == pytest.approx(2.0)  # 0.5 * (3 - 5)^2


def test_head_gradient_norms_are_nan_without_head_parameters():
    batch = _wait_only_batch()
    net = _FixedNetwork(shift=0.0, value=0.0, entropy=0.5)
    net.stored = unpack_heads(batch.log_probs)
    metrics = _updater(net, PPOConfig(epochs=1, minibatches=1)).update(batch)
    assert all(math.isnan(metrics[f"grad_norm_{h}"]) for h in HEAD_NAMES)
    assert math.isfinite(metrics["grad_norm_total"])


def test_head_parameters_of_the_real_network_are_disjoint_and_complete():
    network = _network()
    groups = head_parameters(network)
    assert tuple(groups) == HEAD_NAMES and all(groups[h] for h in HEAD_NAMES)
    ids = [id(p) for h in HEAD_NAMES for p in groups[h]]
    assert len(ids) == len(set(ids))
    assert sum(p.numel() for p in network.heads.parameters()) == sum(
        p.numel() for h in HEAD_NAMES for p in groups[h])


def test_too_many_minibatches_is_a_clear_error():
    network = _network()
    with pytest.raises(ValueError, match="minibatches"):
        _updater(network, PPOConfig(minibatches=E + 1)).update(_rollout(network))


# ------------------------------------------------------------------------------------------------------------
# telemetry helpers


def test_q_statistics_over_legal_ops():
    op_values = torch.tensor([[[1.0, 3.0, 10.0, 0.0, 0.0, 0.0], [2.0, 9.0, 9.0, 9.0, 9.0, 9.0]]])  # [1, 2, 6]
    op_mask = torch.tensor([[[True, True, False, False, False, False], [True, False, False, False, False, False]]])
    spread, variance = q_statistics(op_values, op_mask, torch.ones(1, 2, dtype=torch.bool))
    # step 0: legal {1, 3}: spread 2, variance 1; step 1: one legal op: 0 and 0 (finite).
    assert spread == pytest.approx(1.0) and variance == pytest.approx(0.5)


def test_explained_variance():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns.clone(), returns) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(4), returns) == pytest.approx(0.0)
    assert math.isnan(explained_variance(torch.zeros(3), torch.ones(3)))
