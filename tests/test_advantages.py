"""GAE on hand-worked vectors and per-head advantages from the causal-mask table."""

import pytest
import torch

from esper_lab.actions import HEAD_NAMES, HEAD_RELEVANCE, LifecycleOp
from esper_lab.rl.advantages import compute_gae, per_head_advantages

F, T = False, True


def _gae(rewards, values, dones, truncated, bootstrap, gamma, lam):
    return compute_gae(
        torch.tensor(rewards, dtype=torch.float64),
        torch.tensor(values, dtype=torch.float64),
        torch.tensor(dones),
        torch.tensor(truncated),
        torch.tensor(bootstrap, dtype=torch.float64),
        gamma,
        lam,
    )


def test_esper_test_vector():
    """Esper's GAE test vector (gamma 0.9, lambda 0.5): a terminal at step 1, a truncation (bootstrap 4) at step 3."""
    adv, ret = _gae([1, 1, 10, 2], [0.5, 0.25, 1, 0.75], [F, T, F, T], [F, F, F, T], [0, 0, 0, 4], 0.9, 0.5)
    torch.testing.assert_close(adv, torch.tensor([1.0625, 0.75, 11.8575, 4.85], dtype=torch.float64))
    torch.testing.assert_close(ret, adv + torch.tensor([0.5, 0.25, 1, 0.75], dtype=torch.float64))


def test_terminal_ignores_bootstrap_and_truncation_uses_it():
    # A true terminal: next value 0 even if a bootstrap value is (wrongly) present.
    adv, _ = _gae([1.0], [0.5], [T], [F], [100.0], 0.9, 0.5)
    assert adv.item() == pytest.approx(0.5)
    # A truncation: 2 + 0.9 * 4 - 0.75.
    adv, _ = _gae([2.0], [0.75], [T], [T], [4.0], 0.9, 0.5)
    assert adv.item() == pytest.approx(4.85)


def test_hand_worked_chain_without_episode_end():
    """Three steps, truncated at the end: delta_t and the lambda chain by hand (gamma 0.5, lambda 0.5)."""
    adv, _ = _gae([1, 0, 2], [1, 2, 1], [F, F, T], [F, F, T], [0, 0, 2], 0.5, 0.5)
    d2 = 2 + 0.5 * 2 - 1  # 2
    d1 = 0 + 0.5 * 1 - 2  # -1.5
    d0 = 1 + 0.5 * 2 - 1  # 1
    a2 = d2
    a1 = d1 + 0.25 * a2
    a0 = d0 + 0.25 * a1
    torch.testing.assert_close(adv, torch.tensor([a0, a1, a2], dtype=torch.float64))


def test_envs_are_kept_apart():
    """Row 1's huge rewards and bootstrap never leak into row 0; rows match their single-row results."""
    rewards = torch.tensor([[1.0, 1, 10, 2], [100.0, 100, 100, 100]])
    values = torch.tensor([[0.5, 0.25, 1, 0.75], [3.0, 2, 1, 0]])
    dones = torch.tensor([[F, T, F, T], [F, F, F, T]])
    truncated = torch.tensor([[F, F, F, T], [F, F, F, T]])
    bootstrap = torch.tensor([[0.0, 0, 0, 4], [0.0, 0, 0, 1000]])
    adv, ret = compute_gae(rewards, values, dones, truncated, bootstrap, 0.9, 0.5)
    assert adv.shape == (2, 4) and ret.shape == (2, 4)
    torch.testing.assert_close(adv[0], torch.tensor([1.0625, 0.75, 11.8575, 4.85]))
    for e in range(2):
        alone, _ = compute_gae(rewards[e], values[e], dones[e], truncated[e], bootstrap[e], 0.9, 0.5)
        torch.testing.assert_close(adv[e], alone)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="values"):
        compute_gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3, dtype=torch.bool),
                    torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 3), 0.9, 0.9)


@pytest.mark.parametrize("op", list(LifecycleOp))
def test_per_head_advantages_follow_the_table(op):
    adv = torch.tensor([2.0, -3.0])
    ops = torch.full((2,), int(op))
    per_head = per_head_advantages(adv, ops)
    assert tuple(per_head) == HEAD_NAMES
    for head in HEAD_NAMES:
        expected = adv if head in HEAD_RELEVANCE[op] else torch.zeros(2)
        torch.testing.assert_close(per_head[head], expected)
    torch.testing.assert_close(per_head["op"], adv)  # the op head always gets the full advantage


def test_per_head_advantages_mixed_ops_and_dtype():
    adv = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.bfloat16)
    ops = torch.tensor([[LifecycleOp.WAIT, LifecycleOp.GERMINATE, LifecycleOp.PRUNE]])
    per_head = per_head_advantages(adv, ops)
    assert all(v.dtype == torch.bfloat16 for v in per_head.values())
    assert per_head["slot"].tolist() == [[0.0, 2.0, 3.0]]
    assert per_head["blueprint"].tolist() == [[0.0, 2.0, 0.0]]
    assert per_head["alpha_speed"].tolist() == [[0.0, 0.0, 3.0]]
