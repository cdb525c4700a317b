"""bench_policy: how fast the Phase-4-sized policy runs on this machine (`esper-lab bench policy`).

Two numbers matter for training speed:
- rollout: `get_action` milliseconds per vectorised step for 4, 8 and 16 worlds, with the hidden state carried
  from step to step and real legal-action masks (median over many steps, after a warm-up);
- update: one forward + backward of `evaluate_actions` and a PPO-style loss over 16 sequences of 150 steps (one
  Phase 4 rollout), optimizer step excluded.

Run: `python -m esper_lab.policy.timing` (prints the dict as JSON).
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from esper_lab.actions import SeedStage, SlotView, causal_masks, compute_action_masks
from esper_lab.policy.network import FactoredRecurrentActorCritic


def _world_masks(num_envs: int, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Legal-action masks of a plausible mid-episode world (one empty, one training, one holding slot)."""
    views = [SlotView(None), SlotView(SeedStage.TRAINING, seed_age=3), SlotView(SeedStage.HOLDING, seed_age=9)]
    one = compute_action_masks(views)  # {head: [k]}
    return {name: m.expand(*batch_shape, m.shape[-1]).clone() for name, m in one.items()}


def _random_legal(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One uniformly random legal action per head: `{head: [..., k]} -> {head: [...] int64}`."""
    out = {}
    for name, m in masks.items():
        flat = m.reshape(-1, m.shape[-1]).float()  # [N, k]
        out[name] = torch.multinomial(flat, 1).reshape(m.shape[:-1])
    return out


def _median_ms(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_policy(
    threads: int = 2,
    *,
    state_dim: int = 121,
    num_slots: int = 3,
    feature_dim: int = 512,
    lstm_hidden_dim: int = 512,
    critic: str = "q_op",
    env_counts: tuple[int, ...] = (4, 8, 16),
    steps: int = 100,
    num_seqs: int = 16,
    seq_len: int = 150,
    train_repeats: int = 5,
    seed: int = 0,
) -> dict:
    """Time the rollout step and the update pass at the Phase 4 sizes.

    Returns:
        dict with `threads`, `params`, the sizes used, `get_action_ms` ({num_envs: median ms per step over `steps`
        steps, after 10 warm-up steps}) and `update_fwd_bwd_ms` (median over `train_repeats` after one warm-up) for
        `num_seqs` x `seq_len`.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        net = FactoredRecurrentActorCritic(
            state_dim, num_slots, feature_dim=feature_dim, lstm_hidden_dim=lstm_hidden_dim, critic=critic
        )
        result: dict = dict(
            threads=threads,
            params=sum(p.numel() for p in net.parameters()),
            state_dim=state_dim,
            num_slots=num_slots,
            feature_dim=feature_dim,
            lstm_hidden_dim=lstm_hidden_dim,
            critic=critic,
            get_action_ms={},
        )
        for n in env_counts:
            obs = torch.randn(n, state_dim)  # [E, D]
            bp_idx = torch.tensor([[-1, 3, 5]] * n)[:, :num_slots]  # [E, S]
            masks = _world_masks(n, (n,))  # {head: [E, k]}
            state = {"hidden": net.initial_hidden(n)}

            def step() -> None:
                state["hidden"] = net.get_action(obs, bp_idx, state["hidden"], masks).hidden

            result["get_action_ms"][n] = _median_ms(step, repeats=steps, warmup=10)

        B, T = num_seqs, seq_len
        obs = torch.randn(B, T, state_dim)  # [B, T, D]
        bp_idx = torch.randint(-1, 13, (B, T, num_slots))  # [B, T, S]
        masks = _world_masks(B, (B, T))  # {head: [B, T, k]}
        actions = _random_legal(masks)  # {head: [B, T]}
        relevance = causal_masks(actions["op"])  # {head: bool [B, T]}
        advantages, returns = torch.randn(B, T), torch.randn(B, T)
        with torch.no_grad():
            old = net.evaluate_actions(obs, bp_idx, actions, masks=masks)

        def update() -> None:
            net.zero_grad(set_to_none=True)
            out = net.evaluate_actions(obs, bp_idx, actions, masks=masks)
            loss = torch.zeros(())
            for name in out.log_probs:
                ratio = (out.log_probs[name] - old.log_probs[name]).exp()  # [B, T]
                clipped = torch.minimum(ratio * advantages, ratio.clamp(0.8, 1.2) * advantages)
                loss = loss - (clipped * relevance[name]).mean() - 0.05 * out.entropy[name].mean()
            loss = loss + 0.5 * (out.value - returns).pow(2).mean() + 0.5 * (out.q_value - returns).pow(2).mean()
            loss.backward()

        result["update_fwd_bwd_ms"] = _median_ms(update, repeats=train_repeats, warmup=1)
        result["update_shape"] = [B, T]
        return result
    finally:
        torch.set_num_threads(previous_threads)


if __name__ == "__main__":
    print(json.dumps(bench_policy(), indent=2))
