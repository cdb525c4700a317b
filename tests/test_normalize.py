"""Running observation and reward normalisers: statistics, clipping and state_dict round trips."""

import pytest
import torch

from esper_lab.policy.normalize import RewardNormalizer, RunningMeanStd


def test_running_mean_std_matches_the_full_sample_statistics():
    torch.manual_seed(0)
    data = torch.randn(300, 5, dtype=torch.float64) * torch.tensor([1.0, 2, 3, 4, 5]) + 7
    rms = RunningMeanStd(5)
    for chunk in data.split([1, 50, 100, 149]):  # uneven batches, one of size 1
        rms.update(chunk)
    assert rms.count == 300
    torch.testing.assert_close(rms.mean, data.mean(0))
    torch.testing.assert_close(rms.var, data.var(0, correction=0))


def test_normalize_centres_scales_and_clips():
    rms = RunningMeanStd(2)
    rms.update(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))  # mean [1, 20], std [1, 10]
    out = rms.normalize(torch.tensor([[3.0, 0.0], [1000.0, -1000.0]]))
    torch.testing.assert_close(out[0], torch.tensor([2.0, -2.0]), atol=1e-4, rtol=0)
    assert out[1].tolist() == [10.0, -10.0]
    assert out.dtype == torch.float32


def test_identity_before_any_update_and_batched_leading_dims():
    rms = RunningMeanStd(3)
    x = torch.randn(4, 6, 3)
    torch.testing.assert_close(rms.normalize(x), x.clamp(-10, 10))
    rms.update(x)  # [E, T, D] leading dims are all samples
    assert rms.count == 24
    with pytest.raises(ValueError, match="expected"):
        rms.normalize(torch.zeros(4, 2))


def test_running_mean_std_round_trip():
    rms = RunningMeanStd(4)
    rms.update(torch.randn(50, 4) * 3 + 1)
    other = RunningMeanStd(4)
    other.load_state_dict(rms.state_dict())
    x = torch.randn(7, 4)
    torch.testing.assert_close(other.normalize(x), rms.normalize(x))
    assert other.count == rms.count
    rms.update(torch.randn(5, 4))  # the copy is independent
    assert other.count == 50
    with pytest.raises(ValueError, match="shape"):
        RunningMeanStd(3).load_state_dict(other.state_dict())


def test_reward_normalizer_divides_by_discounted_return_std():
    norm = RewardNormalizer(gamma=0.5)
    rewards = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
    dones = torch.tensor([[False, True, False], [False, False, True]])
    norm.update(rewards, dones)
    # forward returns: row 0: 1, 1.5, (reset) 1; row 1: 2, 1, 0.5
    returns = torch.tensor([1.0, 1.5, 1.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    assert norm.std == pytest.approx(float(returns.var(correction=0).sqrt()), rel=1e-6)
    r = torch.tensor([-1.0, 0.0, 3.0])
    torch.testing.assert_close(norm.normalize(r), r / norm.std)  # no mean subtracted: signs kept


def test_reward_normalizer_clips_and_round_trips():
    norm = RewardNormalizer(gamma=0.99)
    assert norm.normalize(torch.tensor([0.5, 50.0])).tolist() == [0.5, 10.0]  # identity (clipped) before updates
    norm.update(torch.randn(3, 20))
    copy = RewardNormalizer(gamma=0.99)
    copy.load_state_dict(norm.state_dict())
    r = torch.randn(10)
    torch.testing.assert_close(copy.normalize(r), norm.normalize(r))
    with pytest.raises(ValueError, match="gamma"):
        RewardNormalizer(gamma=0.9).load_state_dict(norm.state_dict())


def test_state_dicts_survive_torch_save_weights_only(tmp_path):
    rms, rew = RunningMeanStd(2), RewardNormalizer(0.9)
    rms.update(torch.randn(10, 2))
    rew.update(torch.randn(2, 5))
    torch.save({"obs": rms.state_dict(), "reward": rew.state_dict()}, tmp_path / "n.pt")
    state = torch.load(tmp_path / "n.pt", weights_only=True)
    rms2, rew2 = RunningMeanStd(2), RewardNormalizer(0.9)
    rms2.load_state_dict(state["obs"])
    rew2.load_state_dict(state["reward"])
    torch.testing.assert_close(rms2.mean, rms.mean)
    assert rew2.std == rew.std
