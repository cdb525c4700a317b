"""Stacked twins of the host's and the seeds' layers: one layer's math for G worlds at once.

A twin computes on a batch holding G worlds folded into the batch dimension, world-major: `[G*B, ...]`, rows
`g*B .. g*B+B-1` belong to world g. Its parameters carry a leading world axis, `weight [G, *shape]`, and are set by
`ParamStack.select` before each call. Each twin runs its layer's own sequence of operations with that extra axis
(its matmul through `exact.stacked_affine`, `torch.matmul`'s fold done by hand), so on CPU every world's numbers are
the layer's own, bit for bit (tests/test_batched_parts.py checks every layer and blueprint, forward and backward).
What lies between the layers (ReLU, attention's softmax, the pooling, the blends) works per sample and runs unchanged
on the folded batch; so `twin_of(module)` is the module itself with its layers swapped for twins, and its own
`forward` / `residual` code does the rest (the gate's sigmoid is the one exception: `exact.world_sigmoid`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from esper_lab.env.batched.exact import stacked_affine
from esper_lab.env.host import Conv1x1, Conv3x3


class _StackedTwin(nn.Module):
    """A twin layer: `weight` and `bias` are the stacked rows `[G, ...]` a `ParamStack` sets before each call."""

    def __init__(self):
        super().__init__()
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None


class StackedConv3x3(_StackedTwin):
    """Twin of `Conv3x3`: `[G*B, C, S, S] -> [G*B, O, S', S']` with `weight [G, O, C/groups, 3, 3]`, `bias [G, O]`."""

    def __init__(self, conv: Conv3x3):
        super().__init__()
        self.in_ch, self.out_ch, self.size, self.groups, self.pool = (
            conv.in_ch, conv.out_ch, conv.size, conv.groups, conv.pool)
        self.toeplitz = conv.toeplitz  # [9, P_out * P_in]
        self.group_mask = getattr(conv, "group_mask", None)  # [O, C]

    def dense(self) -> torch.Tensor:
        """`[G, O * P_out, C * P_in]`: each world's layer as one matrix (`Conv3x3.dense`, stacked)."""
        G, O, C = self.weight.shape[0], self.out_ch, self.in_ch
        p_in = self.size * self.size
        p_out = p_in // 4 if self.pool else p_in
        w = self.weight.reshape(G, O, -1, 9)  # [G, O, C/groups, 9]
        if self.groups > 1:
            w = w.repeat(1, 1, self.groups, 1) * self.group_mask[:, :, None]  # [G, O, C, 9]
        d = w.reshape(G * O * C, 9) @ self.toeplitz  # [G*O*C, P_out*P_in]
        return d.view(G, O, C, p_out, p_in).permute(0, 1, 3, 2, 4).reshape(G, O * p_out, C * p_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        G = self.weight.shape[0]
        B = x.shape[0] // G
        out_size = self.size // 2 if self.pool else self.size
        bias = self.bias.repeat_interleave(out_size * out_size, dim=1)  # [G, O * P_out]
        y = stacked_affine(x.reshape(G, B, -1), self.dense(), bias)  # [G, B, O * P_out]
        return y.view(G * B, self.out_ch, out_size, out_size)


class StackedConv1x1(_StackedTwin):
    """Twin of `Conv1x1`: `[G*B, C, H, W] -> [G*B, O, H, W]` with `weight [G, O, C]`, `bias [G, O]`. `Conv1x1` calls
    `torch.matmul(weight, x [B, C, HW])`, which folds the batch into one `mm` of `[B*HW, C] @ [C, O]` and returns the
    result contiguous; this does that fold per world, as one `bmm`, and returns the same layout."""

    def __init__(self, conv: Conv1x1):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        G = self.weight.shape[0]
        GB, C, H, W = x.shape
        B = GB // G
        folded = x.reshape(G, B, C, H * W).transpose(2, 3).reshape(G, B * H * W, C)  # [G, B*HW, C]
        y = stacked_affine(folded, self.weight)  # [G, B*HW, O]
        y = y.view(G, B, H * W, -1).transpose(2, 3).contiguous() + self.bias[:, None, :, None]  # [G, B, O, HW]
        return y.view(GB, -1, H, W)


class StackedLinear(_StackedTwin):
    """Twin of `nn.Linear`: `[G*B, C] -> [G*B, O]` with `weight [G, O, C]`, `bias [G, O]`."""

    def __init__(self, linear: nn.Linear):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        G = self.weight.shape[0]
        y = stacked_affine(x.view(G, x.shape[0] // G, -1), self.weight, self.bias)  # [G, B, O]
        return y.view(x.shape[0], -1)  # [G*B, O]


class StackedGroupNorm(_StackedTwin):
    """Twin of `nn.GroupNorm` (affine): `[G*B, C, H, W]` with `weight [G, C]`, `bias [G, C]`. The G worlds' channels
    side by side, `[B, G*C, H, W]`, are one GroupNorm with G times the groups: each (sample, world, group) is
    normalised over the same contiguous values as in the world's own layer."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.num_groups, self.eps = norm.num_groups, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        G = self.weight.shape[0]
        GB, C, H, W = x.shape
        B = GB // G
        side = x.view(G, B, C, H, W).transpose(0, 1).reshape(B, G * C, H, W)
        y = F.group_norm(side, G * self.num_groups, self.weight.reshape(-1), self.bias.reshape(-1), self.eps)
        return y.view(B, G, C, H, W).transpose(0, 1).reshape(GB, C, H, W)


TWINS: dict[type, type] = {Conv3x3: StackedConv3x3, Conv1x1: StackedConv1x1, nn.Linear: StackedLinear,
                           nn.GroupNorm: StackedGroupNorm}
"""Layer type -> its stacked twin. Every parameter of a host or seed lives in one of these layers."""


def twin_of(module: nn.Module) -> nn.Module:
    """A parameter-free copy of `module` whose layers are stacked twins (the module itself if it is a layer);
    its `forward` (and a seed's `residual`) is the module's own code."""
    if type(module) in TWINS:
        return TWINS[type(module)](module)
    twin = copy.deepcopy(module)
    for name, child in list(twin.named_modules()):
        if type(child) in TWINS:
            parent_name, _, attr = name.rpartition(".")
            setattr(twin.get_submodule(parent_name), attr, TWINS[type(child)](child))
    left = [name for name, _ in twin.named_parameters()]
    if left:
        raise TypeError(f"{type(module).__name__}: no stacked twin for the layers holding {left}; add one to TWINS")
    return twin
