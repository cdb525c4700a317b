"""Seed modules: one factory per CNN blueprint (Esper's Kasmina blueprint registry, scaled to 8x8 digits).

Every seed maps `[B, C, 4, 4] -> [B, C, 4, 4]` (all injection points are 4x4) and is residual inside:
`seed(x) = x + residual(x)`. The last layer of each residual branch starts small (x0.1), so a fresh seed is close to
the identity but every layer already gets gradient. The slot uses `residual` directly (see `slot.py`), so the
identity path always carries the live host activation while the seed's own function only sees the detached one.

Blueprints, smallest to largest at the default impaired width C=4 (see `blueprint_param_table`):
norm 8 < attention 80 < depthwise 116 < conv_small 148 < conv_light 588 < bottleneck 660 < conv_heavy 1,172
(the impaired host itself has 386).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from esper_lab.actions import CNN_BLUEPRINTS, BlueprintAction
from esper_lab.env.host import FEATURE_SIZE, Conv1x1, Conv3x3, param_count

LAST_LAYER_INIT_SCALE = 0.1  # a fresh seed is near the identity


class SeedModule(nn.Module):
    """Base class: `forward(x) = x + residual(x)`, both `[B, C, H, W]`."""

    blueprint: BlueprintAction

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


def _shrink_(layer: nn.Module, scale: float = LAST_LAYER_INIT_SCALE) -> None:
    """Scale a layer's initial weight down and zero its bias."""
    with torch.no_grad():
        layer.weight.mul_(scale)
        if getattr(layer, "bias", None) is not None:
            layer.bias.zero_()


class NormSeed(SeedModule):
    """Per-sample channel normalisation with a learned per-channel scale and shift (GroupNorm with one group)."""

    blueprint = BlueprintAction.NORM

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        _shrink_(self.norm)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class AttentionSeed(SeedModule):
    """Single-head self-attention over the H*W positions."""

    blueprint = BlueprintAction.ATTENTION

    def __init__(self, channels: int):
        super().__init__()
        self.dim = max(channels, 4)
        self.qkv = Conv1x1(channels, 3 * self.dim)
        self.out = Conv1x1(self.dim, channels)
        _shrink_(self.out)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)  # 3 x [B, d, HW]
        att = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(self.dim), dim=-1)  # [B, HW, HW]
        y = (v @ att.transpose(1, 2)).view(B, self.dim, H, W)  # [B, d, H, W]
        return self.out(y)


class DepthwiseSeed(SeedModule):
    """Depthwise 3x3 (two filters per channel), ReLU, pointwise 1x1 back to C."""

    blueprint = BlueprintAction.DEPTHWISE

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = Conv3x3(channels, 2 * channels, FEATURE_SIZE, groups=channels)
        self.pointwise = Conv1x1(2 * channels, channels)
        _shrink_(self.pointwise)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(F.relu(self.depthwise(x)))


class ConvSmallSeed(SeedModule):
    """One 3x3 convolution at the host's width on the rectified input."""

    blueprint = BlueprintAction.CONV_SMALL

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv3x3(channels, channels, FEATURE_SIZE)
        _shrink_(self.conv)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(x))


class BottleneckSeed(SeedModule):
    """1x1 expand to 2C, 3x3 at 2C, 1x1 back to C (a widening bottleneck: the host is narrower than the seed)."""

    blueprint = BlueprintAction.BOTTLENECK

    def __init__(self, channels: int):
        super().__init__()
        hidden = 2 * channels
        self.expand = Conv1x1(channels, hidden)
        self.conv = Conv3x3(hidden, hidden, FEATURE_SIZE)
        self.project = Conv1x1(hidden, channels)
        _shrink_(self.project)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(F.relu(self.conv(F.relu(self.expand(x)))))


class ConvSeed(SeedModule):
    """3x3 conv to `expansion * C`, ReLU, 3x3 conv back to C (conv_light: x2, conv_heavy: x4)."""

    def __init__(self, channels: int, expansion: int, blueprint: BlueprintAction):
        super().__init__()
        self.blueprint = blueprint
        self.conv1 = Conv3x3(channels, expansion * channels, FEATURE_SIZE)
        self.conv2 = Conv3x3(expansion * channels, channels, FEATURE_SIZE)
        _shrink_(self.conv2)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


BLUEPRINT_FACTORIES: dict[BlueprintAction, Callable[[int], SeedModule]] = {
    BlueprintAction.NORM: NormSeed,
    BlueprintAction.ATTENTION: AttentionSeed,
    BlueprintAction.DEPTHWISE: DepthwiseSeed,
    BlueprintAction.CONV_SMALL: ConvSmallSeed,
    BlueprintAction.BOTTLENECK: BottleneckSeed,
    BlueprintAction.CONV_LIGHT: lambda c: ConvSeed(c, 2, BlueprintAction.CONV_LIGHT),
    BlueprintAction.CONV_HEAVY: lambda c: ConvSeed(c, 4, BlueprintAction.CONV_HEAVY),
}
assert set(BLUEPRINT_FACTORIES) == set(CNN_BLUEPRINTS)


def make_seed(blueprint: BlueprintAction | int, channels: int) -> SeedModule:
    """A fresh seed module for `blueprint` at `channels` width. Uses the global torch RNG for its initial weights
    (the env wraps the call in `torch.random.fork_rng` with its own seed)."""
    bp = BlueprintAction(blueprint)
    if bp not in BLUEPRINT_FACTORIES:
        legal = ", ".join(b.name for b in CNN_BLUEPRINTS)
        raise ValueError(f"blueprint {bp.name} is not a CNN blueprint; legal here: {legal}")
    return BLUEPRINT_FACTORIES[bp](channels)


def blueprint_param_count(blueprint: BlueprintAction | int, channels: int) -> int:
    """Parameters of one seed of `blueprint` at `channels` width."""
    with torch.random.fork_rng(devices=[]):
        return param_count(make_seed(blueprint, channels))


def blueprint_param_table(channels: int) -> dict[str, int]:
    """`{blueprint name: parameters}` at `channels` width, smallest first."""
    table = {bp.name.lower(): blueprint_param_count(bp, channels) for bp in CNN_BLUEPRINTS}
    return dict(sorted(table.items(), key=lambda kv: kv[1]))
