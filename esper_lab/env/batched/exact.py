"""What keeps each world's numbers its own inside a batched op, bit for bit: the matmul every twin layer uses, and
an elementwise op computed per world.

Batching G worlds must not change a single rounding. Two kinds of op can: a matmul, when the batched call takes
another road through MKL or torch than one world's `addmm` (another orientation of the gradient's product, a
matrix-vector kernel for one output column, torch's plain-C++ loop for tiny products), and a transcendental
elementwise function, whose vector and scalar codes round differently, when a world's values fall on the other side
of the vector/scalar split than in its own tensor. `stacked_affine` and `per_world` avoid both; tests/
test_batched_parts.py checks them on every shape the engine uses.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


class _StackedAffine(torch.autograd.Function):
    """`x [G, B, K] @ weight[G, N, K]^T (+ bias [G, N]) -> [G, B, N]`, with the gradients computed as autograd
    computes them for one world's `addmm(bias, x, weight.t())` (or `x.mm(weight.t())`): `grad_x = g @ weight`,
    `grad_weight = g^T @ x` (autograd's orientation for a column-major `weight.t()`), `grad_bias = g` summed over the
    batch. The orientation matters for the last bits: `(x^T @ g)^T` holds the same products, summed otherwise."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias[:, None, :], x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, weight = ctx.saved_tensors
        gx = torch.bmm(g, weight) if ctx.needs_input_grad[0] else None  # [G, B, K]
        gw = torch.bmm(g.transpose(1, 2), x) if ctx.needs_input_grad[1] else None  # [G, N, K]
        gb = g.sum(dim=1) if ctx.has_bias and ctx.needs_input_grad[2] else None  # [G, N]
        return gx, gw, gb


def stacked_affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per world `x @ weight^T + bias`: `[G, B, K]`, `[G, N, K]`, `[G, N]` -> `[G, B, N]`: one `bmm`, except for the
    shapes where one world's `addmm` takes another road than `bmm` (`one_world_at_a_time`)."""
    if one_world_at_a_time(*x.shape[1:], weight.shape[1]):
        if bias is None:
            return torch.stack([xi.mm(wi.t()) for xi, wi in zip(x, weight)])
        return torch.stack([torch.addmm(bi, xi, wi.t()) for xi, wi, bi in zip(x, weight, bias)])
    return _StackedAffine.apply(x, weight, bias)


def one_world_at_a_time(B: int, K: int, N: int) -> bool:
    """Whether a world's `[B, K] @ [K, N]` must be computed on its own to get its own numbers: a single output column
    (MKL then computes the product as a matrix-vector product, summed in another order; seen for K >= 8), or fewer
    than 400 multiply-adds per matrix (torch's `bmm` then loops in plain C++ where `addmm` calls MKL). Only the
    GATE blend's gate (N = 1) and a short last minibatch meet either."""
    return N == 1 or B * K * N < 400


VECTOR_FLOATS = 16 if torch.backends.cpu.get_cpu_capability() == "AVX512" else 8
ELEMENTWISE_CHUNK = 2 * VECTOR_FLOATS
"""Floats per step of ATen's vectorized elementwise loop on this CPU: a contiguous tensor's first `n - n % CHUNK`
values take the vector code, the rest the scalar code (`vectorized_loop` in ATen/native/cpu/Loops.h)."""


def per_world(op: Callable[..., torch.Tensor], *xs: torch.Tensor) -> torch.Tensor:
    """Elementwise `op` on `[G, n]` tensors, each row computed as `op` computes one world's own `[n]` tensor. The
    vector and scalar codes of a transcendental function (sigmoid's exp) round differently, so a world's values must
    fall on the same side of the split as in its own tensor: rows are kept apart (a strided view is not merged into
    one loop), each row's body runs the vector code and its tail the scalar code."""
    n = xs[0].shape[1]
    body = n - n % ELEMENTWISE_CHUNK
    if body == n:  # whole chunks per row: one call over all rows splits them the same way
        return op(*xs)
    parts = [op(*(x[:, :body] for x in xs))] if body else []
    tails = [x[:, body:] if body else F.pad(x, (0, 1))[:, :n] for x in xs]  # padded apart when the tail is the row
    parts.append(op(*tails))
    return torch.cat(parts, dim=1) if body else parts[0]


class _WorldSigmoid(torch.autograd.Function):
    """`torch.sigmoid` on `[G*B, ...]`, each world's `B*...` values as in the world's own tensor, forward and
    backward (`per_world`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, G: int) -> torch.Tensor:
        y = per_world(torch.sigmoid, x.reshape(G, -1)).view(x.shape)
        ctx.save_for_backward(y)
        ctx.G = G
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (y,) = ctx.saved_tensors
        grad = per_world(torch.ops.aten.sigmoid_backward, g.reshape(ctx.G, -1), y.view(ctx.G, -1))
        return grad.view(g.shape), None


def world_sigmoid(G: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """`torch.sigmoid` for a batch of G worlds folded into dim 0, bit for bit each world's own."""
    return lambda x: _WorldSigmoid.apply(x, G)
