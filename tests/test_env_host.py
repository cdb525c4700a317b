"""The task data, the host CNN and its dense-matmul convolutions, the seed blueprints."""

import pytest
import torch
import torch.nn.functional as F

from esper_lab.actions import CNN_BLUEPRINTS, BlueprintAction
from esper_lab.env.blueprints import blueprint_param_count, blueprint_param_table, make_seed
from esper_lab.env.data import load_digits_data
from esper_lab.env.host import Conv1x1, Conv3x3, HostCNN, host_param_count, make_host


def test_digits_split_is_fixed_stratified_and_standardised():
    d = load_digits_data(0)
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_val.shape == (360, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert abs(d.x_train.mean().item()) < 1e-4 and abs(d.x_train.std().item() - 1) < 1e-3
    counts = torch.bincount(d.y_val, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each class
    assert load_digits_data(0) is d  # cached
    assert not torch.equal(load_digits_data(1).y_val, d.y_val)


@pytest.mark.parametrize("c_in, c_out, size, groups, pool", [
    (1, 4, 8, 1, True), (4, 4, 4, 1, False), (4, 16, 4, 1, False), (8, 8, 4, 4, False), (4, 8, 4, 4, False),
])
def test_dense_conv_equals_conv2d(c_in, c_out, size, groups, pool):
    torch.manual_seed(0)
    conv = Conv3x3(c_in, c_out, size, groups=groups, pool=pool)
    x = torch.randn(3, c_in, size, size)
    expected = F.conv2d(x, conv.weight, conv.bias, padding=1, groups=groups)
    if pool:
        expected = F.avg_pool2d(expected, 2)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)


def test_pointwise_conv_equals_conv2d():
    conv = Conv1x1(4, 6)
    x = torch.randn(2, 4, 4, 4)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight[:, :, None, None], conv.bias))


def test_host_shapes_params_and_injection_points():
    host = make_host("impaired")
    assert host.slot_ids == ("r0c0", "r0c1", "r0c2")
    assert host(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert all(host.injection_shape(s) == (4, 4, 4) for s in host.slot_ids)
    assert host_param_count("impaired") == 386 < host_param_count("strong")
    seen = []
    host(torch.randn(2, 1, 8, 8), {s: (lambda h, s=s: seen.append((s, tuple(h.shape))) or h) for s in host.slot_ids})
    assert seen == [(s, (2, 4, 4, 4)) for s in host.slot_ids]
    with pytest.raises(ValueError, match="unknown host"):
        make_host("huge")


def test_blueprints_have_distinct_reported_param_counts():
    table = blueprint_param_table(4)
    assert set(table) == {bp.name.lower() for bp in CNN_BLUEPRINTS}
    assert len(set(table.values())) == len(table)
    assert min(table, key=table.get) == "norm" and max(table, key=table.get) == "conv_heavy"
    assert blueprint_param_count(BlueprintAction.CONV_HEAVY, 4) == table["conv_heavy"]


@pytest.mark.parametrize("blueprint", CNN_BLUEPRINTS)
def test_fresh_seeds_are_near_identity(blueprint):
    torch.manual_seed(0)
    seed = make_seed(blueprint, 4)
    x = torch.randn(8, 4, 4, 4)
    out = seed(x)
    assert out.shape == x.shape
    assert (out - x).norm() < 0.5 * x.norm()
    torch.testing.assert_close(out, x + seed.residual(x))


def test_non_cnn_blueprint_is_rejected():
    with pytest.raises(ValueError, match="not a CNN blueprint"):
        make_seed(BlueprintAction.LORA, 4)


def test_host_forward_skip_is_alpha_zero():
    torch.manual_seed(0)
    host = HostCNN(4)
    seen = []
    x = torch.randn(2, 1, 8, 8)
    host(x, {"r0c1": lambda h: seen.append(1) or h}, skip={"r0c1"})
    assert seen == []
