"""The batched engine's parts give each world the numbers of its own modules, bit for bit (env/batched/).

Every stacked twin (host, each blueprint, the gate) is checked forward and backward against G separate modules,
at the minibatch sizes a world sees (128, the last 29 of an epoch, the 360 validation images) and at both host widths;
then the shapes where one world's matmul takes another road than `bmm`, the per-world sigmoid, the grouped blends and
the row-wise Adam.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn as nn

from esper_lab.actions import CNN_BLUEPRINTS, BlendOp, BlueprintAction, SeedStage
from esper_lab.env.batched.exact import ELEMENTWISE_CHUNK, one_world_at_a_time, stacked_affine, world_sigmoid
from esper_lab.env.batched.seeds import SeedGroup, SlotInjector
from esper_lab.env.batched.stack import ParamStack, RowAdam
from esper_lab.env.blueprints import make_seed
from esper_lab.env.host import HOST_WIDTHS, make_host
from esper_lab.env.morpho_env import WorldAdam
from esper_lab.env.slot import gate_weight, seed_forward

G = 3
SIZES = (128, 29, 360)  # a full minibatch, the last one of an epoch (1437 = 11 * 128 + 29), validation


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _modules(make, n=G, seed=0):
    torch.manual_seed(seed)
    return [make() for _ in range(n)]


def _stack(modules):
    stack = ParamStack(modules[0], len(modules))
    for row, module in enumerate(modules):
        stack.load(row, module)
    return stack


def _compare(modules, inputs, run_one, run_twin):
    """Forward and parameter/input gradients of each module on its input vs the stack's twin on all of them."""
    stack = _stack(modules)
    expected = []
    for module, x in zip(modules, inputs):
        x = x.clone().requires_grad_()
        for p in module.parameters():
            p.grad = None
        y = run_one(module, x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        expected.append((y.detach(), x.grad, [p.grad for p in module.parameters()]))
    x = torch.cat(inputs).requires_grad_()
    y = run_twin(stack.select(None), x)
    weights = torch.cat([torch.linspace(-1, 1, e[0].numel()).view_as(e[0]) for e in expected])
    (y * weights).sum().backward()
    B = inputs[0].shape[0]
    for g, (y_g, x_grad, p_grads) in enumerate(expected):
        assert torch.equal(y[g * len(y_g):(g + 1) * len(y_g)].detach(), y_g)
        assert torch.equal(x.grad[g * B:(g + 1) * B], x_grad)
        for leaf, p_grad in zip(stack.leaves, p_grads):
            assert torch.equal(leaf.grad[g], p_grad)


@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("host", sorted(HOST_WIDTHS))
def test_host_twin_is_each_host_bit_for_bit(host, B):
    hosts = _modules(lambda: make_host(host))
    _compare(hosts, [torch.randn(B, 1, 8, 8) for _ in hosts], lambda m, x: m(x), lambda t, x: t(x))


@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("width", sorted(HOST_WIDTHS.values()))
@pytest.mark.parametrize("blueprint", CNN_BLUEPRINTS, ids=lambda bp: bp.name)
def test_blueprint_twin_is_each_seed_bit_for_bit(blueprint, width, B):
    seeds = _modules(lambda: make_seed(blueprint, width))
    inputs = [torch.randn(B, width, 4, 4) for _ in seeds]
    _compare(seeds, inputs, lambda m, x: m.residual(x), lambda t, x: t.residual(x))


@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("width", sorted(HOST_WIDTHS.values()))
def test_gate_weight_is_each_gate_bit_for_bit(width, B):
    gates = _modules(lambda: nn.Linear(width, 1))
    _compare(gates, [torch.randn(B, width, 4, 4) for _ in gates], lambda m, x: gate_weight(m, x),
             lambda t, x: gate_weight(t, x, sigmoid=world_sigmoid(G)))


def test_affine_falls_back_to_one_world_at_a_time_where_bmm_differs():
    """Shapes where `bmm` is not each world's `addmm`: a single output column (MKL's matrix-vector road) and tiny
    products (torch's plain-C++ `bmm`); all of them come out exact."""
    assert one_world_at_a_time(128, 16, 1) and one_world_at_a_time(5, 4, 10) and not one_world_at_a_time(128, 64, 64)
    torch.manual_seed(1)
    for B, K, N in [(128, 16, 1), (29, 4, 1), (5, 4, 10), (9, 8, 4), (128, 64, 64), (29, 256, 64), (360, 4, 10)]:
        x, w, b = torch.randn(G, B, K, requires_grad=True), torch.randn(G, N, K, requires_grad=True), torch.randn(G, N)
        y = stacked_affine(x, w, b)
        grad = torch.randn_like(y)
        y.backward(grad)
        for g in range(G):
            xg, wg = x.detach()[g].clone().requires_grad_(), w.detach()[g].clone().requires_grad_()
            yg = torch.addmm(b[g], xg, wg.t())
            yg.backward(grad[g])
            assert torch.equal(yg, y[g]) and torch.equal(xg.grad, x.grad[g]) and torch.equal(wg.grad, w.grad[g])


@pytest.mark.parametrize("B", [1, 7, 29, ELEMENTWISE_CHUNK, 100, 128, 360])
def test_world_sigmoid_is_each_worlds_sigmoid(B):
    x = (torch.randn(G * B, 1) * 4).requires_grad_()
    weights = torch.randn(G * B, 1)
    (world_sigmoid(G)(x) * weights).sum().backward()
    for g in range(G):
        xg = x.detach()[g * B:(g + 1) * B].clone().requires_grad_()
        yg = torch.sigmoid(xg)
        (yg * weights[g * B:(g + 1) * B]).sum().backward()
        assert torch.equal(world_sigmoid(G)(x.detach())[g * B:(g + 1) * B], yg)
        assert torch.equal(x.grad[g * B:(g + 1) * B], xg.grad)


KINDS = [  # (stage, blend op, alpha): every way a wired seed enters the host, alphas differing
    (SeedStage.BLENDING, BlendOp.GATE, 1.0), (SeedStage.TRAINING, BlendOp.ADD, 0.0),
    (SeedStage.BLENDING, BlendOp.ADD, 0.37), (SeedStage.HOLDING, BlendOp.MULTIPLY, 0.8),
    (SeedStage.TRAINING, BlendOp.GATE, 0.0), (SeedStage.FOSSILIZED, BlendOp.ADD, 1.0),
]


@pytest.mark.parametrize("B", [128, 29])
def test_a_group_of_mixed_blends_is_each_slot_bit_for_bit(B):
    """One (slot, blueprint) group whose worlds blend six different ways, behind an injector that also has a world
    without a seed: outputs, activation gradients, seed and gate gradients equal each slot's own."""
    n = len(KINDS)
    seeds = _modules(lambda: make_seed(BlueprintAction.CONV_SMALL, 4), n)
    gates = _modules(lambda: nn.Linear(4, 1), n, seed=1)
    hs = [torch.randn(B, 4, 4, 4) for _ in range(n + 1)]  # the last world has no seed in this slot
    weights = torch.randn((n + 1) * B, 4, 4, 4)
    expected = []
    for (stage, op, alpha), seed, gate, h in zip(KINDS, seeds, gates, hs):
        h = h.clone().requires_grad_()
        y = seed_forward(h, seed.residual, stage, alpha, op, partial(gate_weight, gate))
        (y * weights[:B]).sum().backward()
        expected.append((y.detach(), h.grad, [p.grad for p in seed.parameters()], [p.grad for p in gate.parameters()]))
    stack, gate_stack = _stack(seeds), _stack(gates)
    group = SeedGroup(0, stack, gate_stack, positions=list(range(1, n + 1)), rows=list(range(n)),
                      blends=[(stage == SeedStage.TRAINING, op) for stage, op, _ in KINDS],
                      alphas=[alpha for *_, alpha in KINDS])
    h = torch.cat([hs[-1], *hs[:-1]]).requires_grad_()  # the seedless world first: the injector permutes
    out = SlotInjector([group], n + 1)(h)
    (out * torch.cat([weights[:B]] * (n + 1))).sum().backward()
    assert torch.equal(out[:B], hs[-1]) and torch.equal(h.grad[:B], weights[:B])  # identity path
    for g, (y, h_grad, seed_grads, gate_grads) in enumerate(expected):
        rows = slice((g + 1) * B, (g + 2) * B)
        assert torch.equal(out[rows].detach(), y) and torch.equal(h.grad[rows], h_grad)
        assert all(torch.equal(leaf.grad[g], p) for leaf, p in zip(stack.leaves, seed_grads))
        if KINDS[g][1] == BlendOp.GATE:
            assert all(torch.equal(leaf.grad[g], p) for leaf, p in zip(gate_stack.leaves, gate_grads))


def test_row_adam_is_world_adam_per_world_with_its_own_step_count():
    """Rows stepped by one RowAdam call equal each world's WorldAdam, also when rows joined at different steps
    (a seed germinated later), and rows not listed are not touched."""
    torch.manual_seed(0)
    modules = [nn.Sequential(nn.Linear(4, 10), nn.Linear(10, 4)) for _ in range(3)]  # 40, 10, 40, 4 values
    shapes = [p.shape for p in modules[0].parameters()]
    worlds = [[nn.Parameter(p.detach().clone()) for p in m.parameters()] for m in modules]
    stack = _stack(modules)
    optimizers = [WorldAdam(params, lr=3e-3) for params in worlds]
    for step in range(12):
        rows = [0, 1, 2] if step >= 5 else [0, 2]  # world 1 starts late
        adam = RowAdam([(stack, rows)], lr=3e-3)
        adam.zero_grad()
        grads = [[torch.randn(s) * 10.0 ** -(step % 4) for s in shapes] for _ in range(3)]
        for row in rows:
            for leaf, g in zip(stack.leaves, grads[row]):
                leaf.grad[row] += g
            for p, g in zip(worlds[row], grads[row]):
                p.grad = g
            optimizers[row].step()
        adam.step()
    for row, params in enumerate(worlds):
        for leaf, p in zip(stack.leaves, params):
            assert torch.equal(leaf[row], p)
