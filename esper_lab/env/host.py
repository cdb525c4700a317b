"""The host: a small CNN for 8x8 digits with three named injection points (Esper's Kasmina CNNHost).

    x [B, 1, 8, 8]
    stem   conv3x3(1 -> W), 2x2 average pool, ReLU   [B, W, 4, 4]  -> slot "r0c0"
    block1 conv3x3(W -> W) + ReLU                    [B, W, 4, 4]  -> slot "r0c1"
    block2 conv3x3(W -> W) + ReLU                    [B, W, 4, 4]  -> slot "r0c2"
    head   global average pool + Linear(W -> 10)     [B, 10]

At each injection point the slot's blend is applied to the activation: `h = slot(h)`; an empty slot is the identity.
The 'impaired' host is 4 channels wide: it learns (it has 3x3 kernels) but stays well short of what the task allows,
so good seeds raise validation accuracy by several points within an episode. The 'strong' host is 16 channels wide.

Speed: on 4x4 maps with a handful of channels, `F.conv2d` is dominated by per-call overhead on CPU. `Conv3x3` keeps
the conv's parameters (`weight [O, C/groups, 3, 3]`, `bias [O]`) but computes the layer as one dense matmul with the
Toeplitz matrix built from the kernel, which is exact (tests compare it with `F.conv2d`) and several times faster.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Collection, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from esper_lab.actions import DEFAULT_SLOT_IDS
from esper_lab.config import HOSTS
from esper_lab.env.data import IMAGE_SHAPE, NUM_CLASSES

HOST_WIDTHS = dict(zip(HOSTS, (4, 16)))  # channels of each host kind, in the order config.HOSTS names them
FEATURE_SIZE = 4  # spatial size of the host's feature maps at every injection point (4x4)


def param_count(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@lru_cache(maxsize=None)
def toeplitz3x3(size: int, pool: bool = False) -> torch.Tensor:
    """`T [9, P_out * P_in]` with `conv3x3(x)[o, p] = sum_k,c w[o, c, k] * (T[k] @ x[c])[p]` on `size x size` maps
    (zero padding 1, stride 1). With `pool`, the 2x2 average pooling after the conv is folded in (P_out = P_in / 4).
    Cached; never modify the returned tensor."""
    P = size * size
    t = torch.zeros(9, P, P)
    for k in range(9):
        dy, dx = k // 3 - 1, k % 3 - 1
        for y in range(size):
            for x in range(size):
                yy, xx = y + dy, x + dx
                if 0 <= yy < size and 0 <= xx < size:
                    t[k, y * size + x, yy * size + xx] = 1.0
    if pool:
        half = size // 2
        pool_mat = torch.zeros(half * half, P)  # [P_out, P_in]: 2x2 average
        for y in range(size):
            for x in range(size):
                pool_mat[(y // 2) * half + x // 2, y * size + x] = 0.25
        t = pool_mat @ t  # [9, P_out, P_in]
    return t.reshape(9, -1)


class Conv3x3(nn.Module):
    """3x3 convolution (zero padding 1) on `[B, C, S, S]` maps, computed as one dense matmul.

    `groups` works as in `nn.Conv2d` (out channels must be a multiple of in channels per group). With `pool`, a 2x2
    average pooling is folded in: `[B, C, S, S] -> [B, O, S/2, S/2]`.
    """

    def __init__(self, in_ch: int, out_ch: int, size: int, groups: int = 1, pool: bool = False):
        super().__init__()
        if in_ch % groups or out_ch % groups:
            raise ValueError(f"Conv3x3: channels {in_ch}->{out_ch} not divisible by groups={groups}")
        self.in_ch, self.out_ch, self.size, self.groups, self.pool = in_ch, out_ch, size, groups, pool
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch // groups, 3, 3))
        self.bias = nn.Parameter(torch.empty(out_ch))
        self.register_buffer("toeplitz", toeplitz3x3(size, pool), persistent=False)
        if groups > 1:
            out_group = torch.arange(out_ch) // (out_ch // groups)
            in_group = torch.arange(in_ch) // (in_ch // groups)
            self.register_buffer("group_mask", (out_group[:, None] == in_group[None, :]).float(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.weight[0].numel())  # nn.Conv2d's default init
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def full_weight(self) -> torch.Tensor:
        """`[O, C, 9]`: the kernel with the group structure expanded (zeros across groups)."""
        w = self.weight.reshape(self.out_ch, -1, 9)  # [O, C/groups, 9]
        if self.groups == 1:
            return w
        return w.repeat(1, self.groups, 1) * self.group_mask[:, :, None]  # [O, C, 9]

    def dense(self) -> torch.Tensor:
        """`[O * P_out, C * P_in]`: the layer as one matrix on channel-major flattened maps."""
        O, C = self.out_ch, self.in_ch
        p_in = self.size * self.size
        p_out = p_in // 4 if self.pool else p_in
        d = self.full_weight().reshape(O * C, 9) @ self.toeplitz  # [O*C, P_out*P_in]
        return d.view(O, C, p_out, p_in).permute(0, 2, 1, 3).reshape(O * p_out, C * p_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        out_size = self.size // 2 if self.pool else self.size
        bias = self.bias.repeat_interleave(out_size * out_size)  # [O * P_out]
        y = torch.addmm(bias, x.reshape(B, -1), self.dense().t())  # [B, O * P_out]
        return y.view(B, self.out_ch, out_size, out_size)


class Conv1x1(nn.Module):
    """Pointwise convolution `[B, C, H, W] -> [B, O, H, W]` as a batched matmul."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch))
        self.bias = nn.Parameter(torch.empty(out_ch))
        bound = 1.0 / math.sqrt(in_ch)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        y = torch.matmul(self.weight, x.reshape(B, -1, H * W)) + self.bias[:, None]  # [B, O, HW]
        return y.view(B, -1, H, W)


class HostCNN(nn.Module):
    """Three conv blocks at width `width`; `forward(x, slots)` applies `slots[slot_id]` at each injection point."""

    slot_ids = DEFAULT_SLOT_IDS

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.stem = Conv3x3(IMAGE_SHAPE[0], width, IMAGE_SHAPE[1], pool=True)
        self.block1 = Conv3x3(width, width, FEATURE_SIZE)
        self.block2 = Conv3x3(width, width, FEATURE_SIZE)
        self.head = nn.Linear(width, NUM_CLASSES)

    def injection_shape(self, slot_id: str) -> tuple[int, int, int]:
        """`(C, H, W)` of the activation at an injection point."""
        if slot_id not in self.slot_ids:
            raise KeyError(f"unknown slot {slot_id!r}; the host has {self.slot_ids}")
        return (self.width, FEATURE_SIZE, FEATURE_SIZE)

    def forward(
        self,
        x: torch.Tensor,
        slots: Mapping[str, nn.Module] | None = None,
        skip: Collection[str] = (),
        taps: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`x [B, 1, 8, 8] -> logits [B, 10]`. Slots named in `skip` are bypassed, which is exactly the slot's blend
        with alpha forced to 0 (every blend style is the identity at alpha 0). `taps`: see `forward_from`."""
        return self.forward_from(F.relu(self.stem(x)), 0, slots, skip, taps)  # [B, W, 4, 4] at "r0c0"

    def forward_from(
        self,
        h: torch.Tensor,
        point: int,
        slots: Mapping[str, nn.Module] | None = None,
        skip: Collection[str] = (),
        taps: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The rest of `forward` from injection point `point` (an index into `slot_ids`), given `h [B, W, 4, 4]`, the
        activation there before its slot. `taps`, when given, receives the activation before each slot from `point`
        on (a counterfactual pass resumes from them)."""
        slots = slots or {}
        blocks = (None, self.block1, self.block2)  # the block before each injection point after the first
        for i in range(point, len(self.slot_ids)):
            if i > point:
                h = F.relu(blocks[i](h))  # [B, W, 4, 4]
            if taps is not None:
                taps.append(h)
            slot_id = self.slot_ids[i]
            slot = slots.get(slot_id)
            h = h if slot is None or slot_id in skip else slot(h)
        return self.head(h.mean(dim=(2, 3)))  # [B, 10]


def make_host(kind: str) -> HostCNN:
    """A fresh host of the named kind ('impaired' or 'strong'); initialised from the global torch RNG."""
    if kind not in HOST_WIDTHS:
        raise ValueError(f"unknown host {kind!r}; choose one of {sorted(HOST_WIDTHS)}")
    return HostCNN(HOST_WIDTHS[kind])


def host_param_count(kind: str) -> int:
    """Trainable parameters of a host of the named kind."""
    with torch.random.fork_rng(devices=[]):
        return param_count(make_host(kind))
