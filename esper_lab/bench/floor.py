"""The physical floor of our shapes: the bare computation a benchmark holds our code against.

- `bare_update`: the trunk alone (Linear -> LayerNorm -> ReLU -> LSTM(H) -> LayerNorm, the network's own sizes) trained
  in our update's data layout: `epochs x minibatches` optimizer steps, each one LSTM call over `rows` rows x T steps
  from a stored initial hidden state, a scalar loss, backward, fused Adam. No heads, masks, distributions, critic,
  KL or gradient norms: what remains of our update once everything that is ours is removed.
- `bare_step`: one no-grad rollout step for n worlds through the network's own weights: feature net, one LSTM step,
  LayerNorm, then every head's and the critic's matmuls (`F.linear` + ReLU), without masking or sampling.

Both are measured in the same process as ours (`bench compare` parts A and B), under the same threads and malloc.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from esper_lab.policy.network import FactoredRecurrentActorCritic, onednn


class BareTrunk(nn.Module):
    """Feature net and LSTM of `network`'s sizes, nothing else: `x [B, T, D_in] -> [B, T, H]`."""

    def __init__(self, network: FactoredRecurrentActorCritic):
        super().__init__()
        first: nn.Linear = network.feature_net[0]
        H = network.lstm_hidden_dim
        self.inputs = first.in_features
        self.feature = nn.Sequential(nn.Linear(first.in_features, first.out_features),
                                     nn.LayerNorm(first.out_features), nn.ReLU())
        self.lstm = nn.LSTM(first.out_features, H, batch_first=True)
        self.ln = nn.LayerNorm(H)

    def forward(self, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        out, _ = self.lstm(self.feature(x), hidden)  # [B, T, H]
        return self.ln(out)


def bare_update(network: FactoredRecurrentActorCritic, rows: int, steps: int, *, epochs: int, minibatches: int,
                lr: float = 3e-4, seed: int = 0) -> Callable[[], None]:
    """`update()`: `epochs x minibatches` fwd + bwd + fused-Adam steps of `BareTrunk(network)` over random data
    `[rows, steps, D_in]` split into `minibatches` groups of whole rows, each from its own initial hidden state."""
    gen = torch.Generator().manual_seed(seed)
    trunk = BareTrunk(network)
    H = network.lstm_hidden_dim
    x = torch.randn(rows, steps, trunk.inputs, generator=gen)  # [E, T, D_in]
    h0, c0 = torch.randn(2, 1, rows, H, generator=gen).unbind(0)  # each [1, E, H]
    optimizer = torch.optim.Adam(trunk.parameters(), lr=lr, eps=1e-5, fused=True)

    def update() -> None:
        for _ in range(epochs):
            for mb in torch.randperm(rows, generator=gen).tensor_split(minibatches):
                loss = trunk(x[mb], (h0[:, mb], c0[:, mb])).square().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    return update


def _mlp(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The Linear layers of `layers` with ReLU between them (the heads' structure), as bare `F.linear` calls."""
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        x = F.linear(x, layer.weight, layer.bias)
        if i < len(linears) - 1:
            x = F.relu(x)
    return x


def bare_step(network: FactoredRecurrentActorCritic, n: int, *, use_onednn: bool, seed: int = 0) -> Callable[[], None]:
    """`step()`: one no-grad step for `n` worlds through `network`'s weights (feature net, LSTM step through oneDNN
    or torch's native kernel, LayerNorm, every head, Q(s, op) for all six ops), hidden carried, no masks or
    sampling."""
    gen = torch.Generator().manual_seed(seed)
    first: nn.Linear = network.feature_net[0]
    x = torch.randn(n, 1, first.in_features, generator=gen)  # [n, 1, D_in]
    H = network.lstm_hidden_dim
    carried = {"hidden": (torch.zeros(1, n, H), torch.zeros(1, n, H))}

    def step() -> None:
        with torch.inference_mode(), onednn(use_onednn):
            out, carried["hidden"] = network.lstm(network.feature_net(x), carried["hidden"])  # [n, 1, H]
            out = network.lstm_ln(out)
            for head in network.heads.values():
                _mlp(head, out)
            network.q_values(out)  # [n, 1, 6]: Q(s, op) for every op, the critic's own matmuls

    return step
