"""Seeds grouped by slot and blueprint: what the batched host applies at each injection point.

In one pass over P worlds (folded into the batch, world-major), the wired-in seeds of one slot form groups: the
worlds whose seed there has the same blueprint run as one batch through the blueprint's stacked twin, then through
`slot.stage_blend` (the blend code of a single slot) once per kind of blend present among them (straight-through in
TRAINING or not, times ADD / MULTIPLY / GATE), with one alpha per world; each world keeps the output of its own kind.
Worlds without a wired seed there take the identity path. With 3 slots and 7 blueprints there are at most 21 groups:
the number of operator calls does not grow with the number of worlds.

At a slot with more than one group, the activation's worlds are permuted so that every group is one contiguous
piece (`split`, no copy), the pieces are computed and concatenated, and the permutation is undone:

    h [P*B, C, S, S] -> [P, B, C, S, S] -> permute -> split: group 1 | group 2 | ... | identity
                     -> each group's seeds -> cat -> inverse permutation -> [P*B, C, S, S]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import torch

from esper_lab.actions import BlendOp, BlueprintAction, SeedStage
from esper_lab.env.batched.stack import ParamStack
from esper_lab.env.batched.exact import world_sigmoid
from esper_lab.env.slot import FORWARD_STAGES, SeedSlot, gate_weight, stage_blend


@dataclass
class SeedGroup:
    """The worlds of one pass whose seed in one slot has one blueprint: they run as one batch."""

    slot: int
    """The slot's index."""
    stack: ParamStack
    """The (slot, blueprint) stack holding these seeds."""
    gate: ParamStack
    """The slot's gate stack (used by GATE blends)."""
    positions: list[int] = field(default_factory=list)
    """Where these worlds sit in the pass (0..P-1)."""
    rows: list[int] = field(default_factory=list)
    """Their rows in the stacks (their world indices)."""
    blends: list[tuple[bool, BlendOp]] = field(default_factory=list)
    """Each world's (in TRAINING, blend op): how its seed enters the host."""
    alphas: list[float] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False)

    def run(self, h: torch.Tensor) -> torch.Tensor:
        """`h [G*B, C, S, S]`, this group's worlds' activations, with their seeds applied: one residual pass, then
        each kind of blend present (`slot.stage_blend`), each world taking its own."""
        G = len(self.rows)
        B = h.shape[0] // G
        rows = None if self.rows == list(range(self.stack.rows)) else self._tensor("rows", lambda: _index(self.rows))
        seed = self.stack.select(rows)
        gate = None
        if any(op == BlendOp.GATE for _, op in self.blends):
            gate = partial(gate_weight, self.gate.select(rows), sigmoid=world_sigmoid(G))
        hd = h.detach()
        f = seed.residual(hd)
        blending = {a for a, (training, _) in zip(self.alphas, self.blends) if not training}  # TRAINING: alpha unused
        alpha = (self._tensor(("alpha", B), lambda: _per_sample(torch.tensor(self.alphas), B)) if len(blending) > 1
                 else (blending or {0.0}).pop())
        out = None
        for kind in dict.fromkeys(self.blends):  # each kind of blend present, in order of first appearance
            training, op = kind
            y = stage_blend(h, hd, f, SeedStage.TRAINING if training else SeedStage.BLENDING, alpha, op, gate)
            if out is None:
                out = y
            else:  # this kind's worlds take y (exactly: `where` copies values and routes the gradient to one side)
                mask = self._tensor((kind, B), lambda: _per_sample(torch.tensor([b == kind for b in self.blends]), B))
                out = torch.where(mask, y, out)
        return out

    def _tensor(self, key, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A tensor this group needs at every minibatch, made once."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


def _per_sample(values: torch.Tensor, B: int) -> torch.Tensor:
    """One value per world `[G]` -> one per sample `[G*B, 1, 1, 1]`."""
    return values.repeat_interleave(B)[:, None, None, None]


def take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x[index]` along dim 0, gathered as whole rows of a 2-D view: ATen's `index_select` copies each row with one
    contiguous copy there, where on the 5-D tensor it walks the trailing dims (3.5x slower at [64, 128, 4, 4, 4])."""
    return x.reshape(x.shape[0], -1).index_select(0, index).view(len(index), *x.shape[1:])


class _Permute(torch.autograd.Function):
    """`x[order]` along dim 0, whose gradient is `g[inverse]` (one gather, where index_select's own backward would
    zero a buffer and scatter into it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.inverse = inverse
        return take_rows(x, order)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return take_rows(g, ctx.inverse), None, None


class SlotInjector:
    """What `HostCNN.forward` calls at one injection point of a pass over `num_positions` worlds: every group of
    that slot, the other worlds unchanged."""

    def __init__(self, groups: list[SeedGroup], num_positions: int):
        self.groups, self.num_positions = groups, num_positions
        grouped = {p for g in groups for p in g.positions}
        self.rest = [p for p in range(num_positions) if p not in grouped]
        order = [p for g in groups for p in g.positions] + self.rest
        self.sizes = [len(g.positions) for g in groups] + ([len(self.rest)] if self.rest else [])
        self.order = None if order == list(range(num_positions)) else _index(order)
        self.inverse = None if self.order is None else torch.argsort(self.order)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if len(self.groups) == 1 and not self.rest:  # every world in one group
            return self.groups[0].run(h)
        worlds = h.view(self.num_positions, -1, *h.shape[1:])  # [P, B, C, S, S]
        if self.order is not None:
            worlds = _Permute.apply(worlds, self.order, self.inverse)
        pieces = list(worlds.split(self.sizes))
        for i, group in enumerate(self.groups):
            pieces[i] = group.run(pieces[i].flatten(0, 1)).view(pieces[i].shape)
        out = torch.cat(pieces)  # [P, B, C, S, S] in the permuted order
        if self.order is not None:
            out = _Permute.apply(out, self.inverse, self.order)
        return out.flatten(0, 1)


def plan_injectors(
    slots_of: Sequence[Sequence[SeedSlot]],
    rows: Sequence[int],
    stack_of: Callable[[int, BlueprintAction], ParamStack],
    gate_of: Callable[[int], ParamStack],
) -> dict[str, SlotInjector]:
    """`{slot_id: SlotInjector}` for a pass over the worlds `rows` (world r's slots are `slots_of[r]`), for every slot
    where at least one of them has a wired-in seed."""
    injectors = {}
    for s, first in enumerate(slots_of[rows[0]]):
        groups: dict[BlueprintAction, SeedGroup] = {}
        for position, row in enumerate(rows):
            slot = slots_of[row][s]
            if slot.seed is None or slot.stage not in FORWARD_STAGES:
                continue
            if slot.blueprint not in groups:
                groups[slot.blueprint] = SeedGroup(s, stack_of(s, slot.blueprint), gate_of(s))
            group = groups[slot.blueprint]
            group.positions.append(position)
            group.rows.append(row)
            group.blends.append((slot.stage == SeedStage.TRAINING, slot.blend_op))
            group.alphas.append(slot.alpha)
        if groups:
            injectors[first.slot_id] = SlotInjector(list(groups.values()), len(rows))
    return injectors


def trained_stacks(injectors: dict[str, SlotInjector]) -> list[tuple[ParamStack, list[int]]]:
    """Every stack a training pass uses and the rows it trains: the seed stacks, and the gate rows of GATE blends
    (a seed's gate gets a gradient only then: `WorldAdam` skips it otherwise)."""
    rows: dict[int, tuple[ParamStack, list[int]]] = {}
    for injector in injectors.values():
        for group in injector.groups:
            rows.setdefault(id(group.stack), (group.stack, []))[1].extend(group.rows)
            gated = [row for row, (_, op) in zip(group.rows, group.blends) if op == BlendOp.GATE]
            if gated:
                rows.setdefault(id(group.gate), (group.gate, []))[1].extend(gated)
    return [(stack, sorted(r)) for stack, r in rows.values()]


def _index(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)
