"""Part B: PPO update time, ms per 1,000 samples per epoch, at episode lengths L = 1024, 32 and 8 (H = 512).

The same data volume on both sides: 1,024 samples per update, 4 epochs of 4 minibatches of 256 samples.

- SB3: RecurrentPPO (shared-LSTM layout of part A), n_envs 8, n_steps 128, batch_size 256, n_epochs 4, on a toy env
  with fixed episode length L. `learn(2048)` fills the buffer (it then holds the second rollout: for L = 1024 it has
  no episode start), then `model.train()` is timed (each call changes the model: fine, the work is the same).
  Any episode start inside a minibatch sends SB3 into its per-step LSTM loop.
- ours: our real Phase 4 agent (`Agent.from_config(PolicyConfig(lstm_hidden_dim=H))`, parameter count recorded) and
  `bench.synthetic.synthetic_update`: a `RolloutBuffer` filled by `get_action` on random observations so the stored
  log-probs are exact, rows that are whole episodes re-run from their stored initial hidden state: E rows x T steps
  = 1,024. L >= 128: 8 rows x 128 steps, chunks of longer episodes (no done inside; the last step is a truncation
  with a bootstrap value; the initial hidden state is a mid-episode one). L < 128: 1024 / L rows x L steps, each
  ending with a true terminal. `PPOConfig(epochs=4, minibatches=4, target_kl=None)` so no early stop changes the
  work; `PPOUpdater(agent, cfg, gamma).update(batch)` is timed.

A forward hook on every `nn.LSTM` counts calls per update and sums T x batch over them ("padded samples"; 4,096 real
samples = 1,024 x 4 epochs). ratio = SB3 / ours: above 1 means ours is faster. With shared_lstm=True SB3's value
loss never trains the LSTM (the critic reads `latent_pi.detach()`); ours back-propagates both losses into it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn

from esper_lab.actions import DEFAULT_NUM_SLOTS
from esper_lab.agent import Agent
from esper_lab.bench.synthetic import all_legal_masks, synthetic_update
from esper_lab.bench.floor import bare_update
from esper_lab.bench.processes import best_setting, cell, pooled_by_setting
from esper_lab.bench.timing import Log, measure, quiet
from esper_lab.config import ConfigError, PolicyConfig, PPOConfig
from esper_lab.env.host import param_count
from esper_lab.rl.buffer import RolloutBatch

WARM_STEPS = 8  # steps run (not stored) before a chunk row starts, so its initial hidden state is a mid-episode one


@dataclass
class UpdateBenchConfig:
    """Part B settings."""

    episode_lengths: tuple[int, ...] = (1024, 32, 8)
    """Fixed episode lengths L."""
    lstm_hidden_dim: int = 512
    """H on both sides."""
    samples: int = 1024
    """Samples per update (SB3: n_envs x n_steps)."""
    envs: int = 8
    """SB3's n_envs; our rows when an episode is longer than samples / envs."""
    epochs: int = 4
    """Passes over the rollout per update."""
    minibatches: int = 4
    """Minibatches per epoch (SB3 batch_size = samples / minibatches)."""
    repeats: int = 7
    """Timed updates per side and L (after one counted warm-up update)."""
    seed: int = 0
    """Seed of the weights and the data."""


def our_layout(episode_length: int, samples: int = 1024, envs: int = 8) -> tuple[int, int, bool]:
    """`(rows E, steps T, chunked)` with E x T = samples: whole episodes of L steps when L < samples / envs, else
    `envs` rows of samples / envs steps cut from longer episodes (chunked = True)."""
    if samples % envs:
        raise ConfigError(f"samples ({samples}) must be a multiple of envs ({envs})")
    steps = samples // envs
    if episode_length >= steps:
        return envs, steps, episode_length > steps
    if episode_length < 1 or samples % episode_length:
        raise ConfigError(f"episode length {episode_length} must divide samples ({samples})")
    return samples // episode_length, episode_length, False


@contextmanager
def count_lstm_calls(*modules: nn.Module) -> Iterator[dict[str, int]]:
    """Count forward calls of every `nn.LSTM` inside `modules`: yields `{calls, padded_samples}` where
    padded_samples sums T x batch of each call's input (`[T, N, F]` or batch-first `[N, T, F]`)."""
    counts = {"calls": 0, "padded_samples": 0}

    def hook(module: nn.Module, inputs: tuple, output) -> None:
        x = inputs[0]
        counts["calls"] += 1
        counts["padded_samples"] += x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]

    lstms = {id(m): m for root in modules for m in root.modules() if isinstance(m, nn.LSTM)}
    handles = [m.register_forward_hook(hook) for m in lstms.values()]
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def our_update(agent: Agent, episode_length: int, cfg: UpdateBenchConfig) -> tuple[RolloutBatch, Callable[[], dict]]:
    """`synthetic_update` in `our_layout(L)` rows x steps with all-legal masks: `(batch, update)`. Chunks of longer
    episodes start WARM_STEPS into one and end in a truncation + bootstrap; whole episodes end in a terminal."""
    E, T, chunked = our_layout(episode_length, cfg.samples, cfg.envs)
    ppo = PPOConfig(epochs=cfg.epochs, minibatches=cfg.minibatches, target_kl=None)
    return synthetic_update(agent, ppo, all_legal_masks(E), T, seed=cfg.seed,
                            warm_steps=WARM_STEPS if chunked else 0, truncate=chunked)


def ms_per_1k_per_epoch(seconds: float, cfg: UpdateBenchConfig) -> float:
    return seconds * 1e3 / cfg.epochs / (cfg.samples / 1000)


def bench_ours(episode_length: int, cfg: UpdateBenchConfig) -> dict:
    """Our update at episode length L: `{ms_per_1k_epoch (summary), lstm_calls, padded_samples, rows, steps,
    params}`."""
    torch.manual_seed(cfg.seed)
    agent = Agent.from_config(PolicyConfig(lstm_hidden_dim=cfg.lstm_hidden_dim), DEFAULT_NUM_SLOTS)
    batch, update = our_update(agent, episode_length, cfg)
    with count_lstm_calls(agent.network) as counts:
        update()  # counted, and the warm-up
    timing = measure(update, repeats=cfg.repeats, warmup=0, scale=ms_per_1k_per_epoch(1.0, cfg))
    return dict(ms_per_1k_epoch=timing, lstm_calls=counts["calls"], padded_samples=counts["padded_samples"],
                rows=batch.num_envs, steps=batch.num_steps, params=param_count(agent))


def bench_sb3(episode_length: int, cfg: UpdateBenchConfig) -> dict:
    """SB3's `train()` at episode length L: `{ms_per_1k_epoch, lstm_calls, padded_samples, starts_in_buffer,
    params}`."""
    from esper_lab.bench.compare.sb3_side import make_toy_model

    torch.manual_seed(cfg.seed)
    model = make_toy_model(episode_length, cfg.lstm_hidden_dim, n_envs=cfg.envs, n_steps=cfg.samples // cfg.envs,
                           batch_size=cfg.samples // cfg.minibatches, n_epochs=cfg.epochs, seed=cfg.seed)
    model.learn(2 * cfg.samples)  # two rollouts; the buffer holds the second
    with count_lstm_calls(model.policy) as counts:
        model.train()  # counted, and the warm-up
    timing = measure(model.train, repeats=cfg.repeats, warmup=0, scale=ms_per_1k_per_epoch(1.0, cfg))
    return dict(ms_per_1k_epoch=timing, lstm_calls=counts["calls"], padded_samples=counts["padded_samples"],
                starts_in_buffer=int(model.rollout_buffer.episode_starts.sum()), params=param_count(model.policy))


def bench_bare(episode_length: int, cfg: UpdateBenchConfig) -> dict:
    """The bare trunk (`floor.bare_update`: Linear + LayerNorm + LSTM(H) fwd + bwd + fused Adam) in our layout at
    episode length L, ms per 1k samples per epoch."""
    E, T, _ = our_layout(episode_length, cfg.samples, cfg.envs)
    torch.manual_seed(cfg.seed)
    network = Agent.from_config(PolicyConfig(lstm_hidden_dim=cfg.lstm_hidden_dim), DEFAULT_NUM_SLOTS).network
    update = bare_update(network, E, T, epochs=cfg.epochs, minibatches=cfg.minibatches, seed=cfg.seed)
    update()  # warm-up
    return measure(update, repeats=cfg.repeats, warmup=0, scale=ms_per_1k_per_epoch(1.0, cfg))


def measure_side(side: str, cfg: UpdateBenchConfig, log: Log = quiet) -> list[dict]:
    """Every episode length of one side, in this process: ours `{episode_length, ours, bare}` (`bench_ours` /
    `bench_bare`), sb3 `{episode_length, sb3}` (`bench_sb3`)."""
    if cfg.samples % cfg.minibatches:
        raise ConfigError(f"samples ({cfg.samples}) must be a multiple of minibatches ({cfg.minibatches})")
    rows = []
    for L in cfg.episode_lengths:
        E, T, _ = our_layout(L, cfg.samples, cfg.envs)
        if E % cfg.minibatches:
            raise ConfigError(f"L={L}: our {E} rows do not split into {cfg.minibatches} minibatches")
        if side == "ours":
            log(f"B L={L} H={cfg.lstm_hidden_dim}: ours ({E} rows x {T} steps) and the bare trunk, {cfg.repeats} each")
            rows.append(dict(episode_length=L, ours=bench_ours(L, cfg), bare=bench_bare(L, cfg)))
        else:
            log(f"B L={L} H={cfg.lstm_hidden_dim}: sb3 learn({2 * cfg.samples}) then {cfg.repeats} x train()")
            rows.append(dict(episode_length=L, sb3=bench_sb3(L, cfg)))
    return rows


def _timings(measured: dict[str, list[dict]], name: str, L: int) -> dict[str, dict]:
    """`{setting: summary}` of ms_per_1k_epoch (ours, sb3) or the bare summary, pooled over processes."""
    flat = {setting: [{"rows": [{"episode_length": row["episode_length"],
                                 name: row[name]["ms_per_1k_epoch"] if name != "bare" else row[name]}
                                for row in result["rows"]]} for result in results]
            for setting, results in measured.items()}
    return pooled_by_setting(flat, name, episode_length=L)


def combine(cfg: UpdateBenchConfig, measured: dict[str, dict[str, list[dict]]]) -> dict:
    """Part B from `measured[side][setting]`. Each row: `ours`, `bare`, `sb3` as `{setting: summary}` (ms per 1k
    samples per epoch, pooled over processes), `best` per measure, `ratio` = SB3 / ours at each side's best
    (> 1: ours faster), `ratio_default` under glibc's defaults, `bare_ratio` = ours / bare at ours' best setting
    (the same processes), and the LSTM counts and parameters of each side."""
    rows = []
    for L in cfg.episode_lengths:
        row: dict = dict(episode_length=L, ours=_timings(measured["ours"], "ours", L),
                         bare=_timings(measured["ours"], "bare", L), sb3=_timings(measured["sb3"], "sb3", L))
        row["best"] = {name: best_setting(row[name]) for name in ("ours", "bare", "sb3")}
        ours_best = row["ours"][row["best"]["ours"]]["median"]
        row["ratio"] = row["sb3"][row["best"]["sb3"]]["median"] / ours_best
        if "default" in row["sb3"] and "default" in row["ours"]:
            row["ratio_default"] = row["sb3"]["default"]["median"] / row["ours"]["default"]["median"]
        row["bare_ratio"] = ours_best / row["bare"][row["best"]["ours"]]["median"]
        for side in ("ours", "sb3"):
            facts = cell(measured[side], episode_length=L)[side]
            row[f"{side}_counts"] = {k: v for k, v in facts.items() if k != "ms_per_1k_epoch"}
        rows.append(row)
    notes = [
        f"{cfg.samples} samples per update, {cfg.epochs} epochs x {cfg.minibatches} minibatches of "
        f"{cfg.samples // cfg.minibatches} samples on both sides; ratio = sb3 / ours (> 1: ours faster)",
        "ours: the real Phase 4 network (feature_dim 512, LSTM, LayerNorm, 8 heads, Q(s, op)), PPOConfig(epochs, "
        "minibatches, target_kl=None); rows are whole episodes (or chunks of longer ones) re-run from a stored "
        "initial hidden state in one LSTM call per minibatch",
        "bare: Linear + LayerNorm + ReLU + LSTM(H) + LayerNorm, fwd + bwd + fused Adam, in our layout, in ours' process",
        "sb3: shared_lstm=True, enable_critic_lstm=False, net_arch pi=[256] vf=[256]; buffer from learn(2 * samples)",
        "with shared_lstm=True SB3 feeds the critic latent_pi.detach(): its value loss never trains the LSTM; our one "
        "LSTM is trained by both the policy and the value loss",
    ]
    return {"config": asdict(cfg), "notes": notes, "rows": rows}
