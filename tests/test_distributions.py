"""MaskedCategorical: masking, fp32 log-probs, normalised entropy, and the validation that catches bugs."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper_lab.actions import MASKED_LOGIT_VALUE
from esper_lab.policy.distributions import MaskedCategorical


def test_masked_logits_are_finite_and_far_below_legal_ones():
    logits = torch.tensor([[0.5, 2.0, -1.0, 3.0]])
    mask = torch.tensor([[True, False, True, False]])
    dist = MaskedCategorical(logits, mask)
    assert torch.isfinite(dist.masked_logits).all()
    assert (dist.masked_logits[~mask] < -1000).all()
    assert (dist.masked_logits[~mask] == MASKED_LOGIT_VALUE).all()
    assert torch.equal(dist.masked_logits[mask], logits[mask])
    assert (dist.probs[~mask] == 0).all()


def test_log_prob_matches_a_categorical_over_the_legal_subset():
    logits = torch.tensor([[0.5, 2.0, -1.0, 3.0, 0.0]])
    mask = torch.tensor([[True, False, True, True, False]])
    dist = MaskedCategorical(logits, mask)
    legal = torch.tensor([0, 2, 3])
    reference = torch.distributions.Categorical(logits=logits[0, legal])
    for j, a in enumerate(legal.tolist()):
        got = dist.log_prob(torch.tensor([a]))
        assert torch.allclose(got, reference.log_prob(torch.tensor(j)), atol=1e-6)
    expected_entropy = reference.entropy() / math.log(3)
    assert torch.allclose(dist.entropy(), expected_entropy, atol=1e-6)


def test_sample_and_mode_never_pick_a_masked_action():
    torch.manual_seed(0)
    logits = torch.tensor([[10.0, 0.0, 0.0, 9.0]]).expand(2000, 4)  # the masked action has the largest logit
    mask = torch.tensor([[False, True, True, True]]).expand(2000, 4)
    dist = MaskedCategorical(logits, mask)
    samples = dist.sample()
    assert samples.shape == (2000,) and samples.dtype == torch.int64
    assert (samples != 0).all()
    assert (dist.mode() == 3).all()
    assert set(samples.unique().tolist()) <= {1, 2, 3}


def test_sampling_frequencies_follow_the_probabilities():
    torch.manual_seed(1)
    logits = torch.log(torch.tensor([0.2, 0.5, 0.3]))
    dist = MaskedCategorical(logits.expand(20000, 3), None)
    freq = torch.bincount(dist.sample(), minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.02)


def test_entropy_is_one_when_uniform_over_legal_and_zero_with_one_legal_action():
    logits = torch.zeros(3, 5)
    mask = torch.tensor(
        [[True, True, True, False, False], [False, False, True, False, False], [True] * 5], dtype=torch.bool
    )
    ent = MaskedCategorical(logits, mask).entropy()
    assert torch.allclose(ent[0], torch.tensor(1.0)) and torch.allclose(ent[2], torch.tensor(1.0))
    assert ent[1].item() == 0.0
    assert torch.isfinite(ent).all()


def test_single_legal_action_has_log_prob_zero_and_zero_entropy_gradient():
    logits = torch.randn(1, 4, requires_grad=True)
    mask = torch.tensor([[False, False, True, False]])
    dist = MaskedCategorical(logits, mask)
    assert dist.log_prob(torch.tensor([2])).item() == 0.0
    dist.entropy().sum().backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_empty_mask_row_raises_naming_the_row():
    mask = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match="no legal action"):
        MaskedCategorical(torch.zeros(2, 2), mask)
    with pytest.raises(ValueError, match="op"):
        MaskedCategorical(torch.zeros(1, 2, 2), mask.unsqueeze(0), row_names=["slot", "op"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_logits_raise(bad):
    logits = torch.zeros(2, 3)
    logits[1, 2] = bad
    with pytest.raises(ValueError, match="non-finite"):
        MaskedCategorical(logits, None)


def test_non_finite_logit_raises_even_where_masked():
    logits = torch.tensor([[0.0, float("nan")]])
    with pytest.raises(ValueError, match="non-finite"):
        MaskedCategorical(logits, torch.tensor([[True, False]]))


def test_mask_shape_and_dtype_are_checked():
    with pytest.raises(ValueError, match="shape"):
        MaskedCategorical(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        MaskedCategorical(torch.zeros(2, 3), torch.ones(2, 3))


def test_log_prob_rejects_illegal_and_out_of_range_actions():
    dist = MaskedCategorical(torch.zeros(2, 3), torch.tensor([[True, True, False], [True, True, True]]))
    with pytest.raises(ValueError, match="illegal"):
        dist.log_prob(torch.tensor([2, 0]))
    with pytest.raises(ValueError, match="out of range"):
        dist.log_prob(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        dist.log_prob(torch.tensor([0]))


def test_half_precision_logits_are_evaluated_in_fp32_and_get_gradient():
    logits = torch.randn(4, 6).half().requires_grad_()
    dist = MaskedCategorical(logits, None)
    assert dist.log_probs.dtype == torch.float32
    (dist.log_prob(torch.tensor([0, 1, 2, 3])).sum() + dist.entropy().sum()).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(min_value=1, max_value=13),
    rows=st.integers(min_value=1, max_value=6),
    scale=st.floats(min_value=0.0, max_value=50.0),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_property_probabilities_and_entropy(k, rows, scale, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, k, generator=g) * scale
    mask = torch.rand(rows, k, generator=g) < 0.5
    mask[torch.arange(rows), torch.randint(0, k, (rows,), generator=g)] = True  # at least one legal per row
    dist = MaskedCategorical(logits, mask)
    probs = dist.probs
    assert torch.allclose(probs.sum(-1), torch.ones(rows), atol=1e-5)
    assert (probs[~mask] == 0).all()
    ent = dist.entropy()
    assert ((ent >= 0) & (ent <= 1)).all()
    assert (ent[mask.sum(-1) == 1] == 0).all()
    assert mask.gather(-1, dist.sample().unsqueeze(-1)).all()
    assert mask.gather(-1, dist.mode().unsqueeze(-1)).all()
