"""ParamStack: one kind of module (a host, a blueprint's seed in one slot, a slot's gate) stacked over worlds, and
RowAdam, the Adam step over rows of stacks.

Row r of every stacked tensor belongs to world r. `load(r, module)` copies a world's freshly built module into its
row and makes the module's own parameters views of that row, so `world.host`, `slot.seed` and `slot.gate` keep
showing the live weights while the engine trains the stack. Gradients accumulate into one persistent buffer per leaf
(zeroed in place before each backward), so every row's tensors can be listed once as views.

Adam runs on each world's rows as separate tensors, one fused kernel call for all of them. Not on a whole stacked
tensor: torch's CPU kernel computes a tensor's leading multiple of 16 floats with vector instructions (fused
multiply-add) and the rest with scalar code, which round differently, so a world's 4 biases (scalar code on their
own) would come out otherwise at offset 4 of a stack (tests/test_batched_parts.py pins RowAdam to WorldAdam). Each
row keeps its own step count: a seed germinated later has taken fewer steps.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from esper_lab.env.batched.layers import twin_of


class ParamStack:
    """The parameters of `rows` worlds' copies of `template`'s kind (`[rows, *shape]` each, in
    `template.named_parameters()` order), their gradients, their Adam state, and `twin`, the module computing with
    them."""

    def __init__(self, template: nn.Module, rows: int):
        self.twin, self.rows = twin_of(template), rows
        shapes = [p.shape for p in template.parameters()]
        self.leaves = [torch.zeros(rows, *shape, requires_grad=True) for shape in shapes]
        for leaf in self.leaves:
            leaf.grad = torch.zeros_like(leaf)  # persistent: autograd accumulates into it
        self.exp_avg = [torch.zeros(rows, *shape) for shape in shapes]
        self.exp_avg_sq = [torch.zeros(rows, *shape) for shape in shapes]
        self.steps = [torch.zeros(()) for _ in range(rows)]  # Adam step count of each row
        self.row_views = [  # row r's (param, grad, exp_avg, exp_avg_sq) of every leaf
            [(leaf.detach()[r], leaf.grad[r], avg[r], sq[r])
             for leaf, avg, sq in zip(self.leaves, self.exp_avg, self.exp_avg_sq)]
            for r in range(rows)
        ]
        self._targets = []  # (twin layer, attribute) of each leaf
        for name, _ in template.named_parameters():
            owner, _, attr = name.rpartition(".")
            self._targets.append((self.twin.get_submodule(owner), attr))

    def load(self, row: int, module: nn.Module) -> None:
        """Copy `module`'s parameters into `row`, zero the row's Adam state, and rebind the module's parameters to
        views of the row (so the module shows the weights this stack trains)."""
        with torch.no_grad():
            for leaf, avg, sq, p in zip(self.leaves, self.exp_avg, self.exp_avg_sq, module.parameters()):
                leaf[row].copy_(p)
                avg[row].zero_()
                sq[row].zero_()
                p.data = leaf.detach()[row]
        self.steps[row].zero_()

    def select(self, rows: torch.Tensor | None) -> nn.Module:
        """Point the twin's layers at the parameters of `rows` (int64 [G]; None = every row, without a copy) and
        return the twin."""
        for (layer, attr), leaf in zip(self._targets, self.leaves):
            setattr(layer, attr, leaf if rows is None else leaf.index_select(0, rows))
        return self.twin

    def grads(self) -> list[torch.Tensor]:
        return [leaf.grad for leaf in self.leaves]

    def grad_norms(self, rows: Sequence[int]) -> list[float]:
        """Each row's gradient norm as `World._record_gradients` takes it: the norm of the per-tensor norms."""
        index = torch.tensor(list(rows), dtype=torch.int64)
        per_leaf = [torch.linalg.vector_norm(leaf.grad.index_select(0, index).flatten(1), dim=1)  # [G]
                    for leaf in self.leaves]
        return torch.linalg.vector_norm(torch.stack(per_leaf, dim=1), dim=1).tolist()  # [G, leaves] -> [G]


class RowAdam:
    """Adam (torch's defaults, no weight decay: `WorldAdam`'s numbers) over the given rows of some stacks, one fused
    kernel call per `step`. Built once per epoch: the rows a world trains do not change within it."""

    def __init__(self, updates: Sequence[tuple[ParamStack, Sequence[int]]], lr: float, betas=(0.9, 0.999),
                 eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.counters: list[torch.Tensor] = []
        self.params, self.grads, self.exp_avg, self.exp_avg_sq, self.steps = [], [], [], [], []
        for stack, rows in updates:
            for r in rows:
                self.counters.append(stack.steps[r])
                for p, g, avg, sq in stack.row_views[r]:
                    self.params.append(p)
                    self.grads.append(g)
                    self.exp_avg.append(avg)
                    self.exp_avg_sq.append(sq)
                    self.steps.append(stack.steps[r])
        self.zero = [g for stack, _ in updates for g in stack.grads()]

    def zero_grad(self) -> None:
        torch._foreach_zero_(self.zero)

    @torch.no_grad()
    def step(self) -> None:
        torch._foreach_add_(self.counters, 1.0)
        torch._fused_adam_(
            self.params, self.grads, self.exp_avg, self.exp_avg_sq, [], self.steps, lr=self.lr, beta1=self.betas[0],
            beta2=self.betas[1], weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False,
        )
