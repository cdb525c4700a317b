"""Part A: rollout inference, microseconds per vectorised step, ours against sb3-contrib's RecurrentPPO.

For each LSTM width H (512, 128) and batch n (8 worlds, 1 world), `steps` policy calls per repeat with the LSTM
state carried from call to call, random observations `[n, 121]`, under `torch.inference_mode()`:

- ours: `Agent.from_config(PolicyConfig(lstm_hidden_dim=H)).get_action(obs, blueprint_indices, masks, hidden)` with
  valid blueprint indices and all-legal masks `[n, k]` per head. feature_dim stays at its default 512 (the Phase 4 network: Linear -> LayerNorm -> ReLU -> LSTM -> LayerNorm -> 8 heads + Q(s, op)).
- SB3: RecurrentPPO("MlpLstmPolicy") with `shared_lstm=True, enable_critic_lstm=False, net_arch=dict(pi=[256],
  vf=[256])` on a toy env with our head sizes: `policy.forward(obs_t, lstm_states, episode_starts)` (tensors in,
  tensors out) and `policy.predict(obs, state, episode_start)` (numpy in and out, SB3's own no_grad, what a user
  calls).

ratio = SB3 forward / ours: above 1 means ours is faster. Both networks differ in size (parameter counts recorded):
and with shared_lstm=True SB3 feeds the critic `latent_pi.detach()`, so its value loss never trains the LSTM, while
our one LSTM is trained by both the policy and the value loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from esper_lab.actions import DEFAULT_NUM_SLOTS
from esper_lab.agent import Agent
from esper_lab.bench.synthetic import all_legal_masks, random_inputs
from esper_lab.bench.floor import bare_step
from esper_lab.bench.processes import best_setting, cell, pooled_by_setting
from esper_lab.bench.timing import Log, measure, quiet
from esper_lab.config import PolicyConfig
from esper_lab.env.host import param_count

NOTES = (
    "ours: Agent.from_config(PolicyConfig(lstm_hidden_dim=H), num_slots=3), feature_dim 512 "
    "(default), get_action with all-legal masks and valid blueprint indices, hidden carried",
    "sb3: RecurrentPPO MlpLstmPolicy, shared_lstm=True, enable_critic_lstm=False, net_arch pi=[256] vf=[256]; "
    "forward = policy.forward(obs_t, lstm_states, episode_starts), predict = policy.predict(obs, state, episode_start)",
    "with shared_lstm=True SB3 feeds the critic latent_pi.detach(): its value loss never trains the LSTM; our one LSTM "
    "is trained by both the policy and the value loss",
    "ratio_forward = sb3 forward / ours (> 1: ours faster); ratio_predict = sb3 predict / ours",
)


@dataclass
class InferenceBenchConfig:
    """Part A settings."""

    hidden_sizes: tuple[int, ...] = (512, 128)
    """LSTM widths H to measure (the same on both sides)."""
    batches: tuple[int, ...] = (8, 1)
    """Worlds per vectorised step."""
    steps: int = 300
    """Policy calls per timed repeat."""
    repeats: int = 7
    """Timed repeats per cell (median and IQR reported)."""
    warmup: int = 1
    """Untimed repeats before timing."""
    seed: int = 0
    """Seed of the weights and the random inputs."""


def bench_ours(lstm_hidden: int, n: int, cfg: InferenceBenchConfig) -> tuple[dict, int]:
    """(microseconds per `get_action` step: median / IQR summary, parameter count) for our agent."""
    torch.manual_seed(cfg.seed)
    agent = Agent.from_config(PolicyConfig(lstm_hidden_dim=lstm_hidden), DEFAULT_NUM_SLOTS)
    agent.eval()
    obs, bp_idx = random_inputs(n, torch.Generator().manual_seed(cfg.seed))
    masks = all_legal_masks(n)
    carried = {"hidden": agent.initial_hidden(n)}  # (h, c), each [1, n, H]

    def run() -> None:
        with torch.inference_mode():
            hidden = carried["hidden"]
            for _ in range(cfg.steps):
                hidden = agent.get_action(obs, bp_idx, masks, hidden).hidden
            carried["hidden"] = hidden

    return measure(run, repeats=cfg.repeats, warmup=cfg.warmup, scale=1e6 / cfg.steps), param_count(agent)


def bench_floor(lstm_hidden: int, n: int, cfg: InferenceBenchConfig, use_onednn: bool) -> dict:
    """Microseconds per `floor.bare_step` (feature net, one LSTM step through oneDNN or the native kernel, every
    head's and the critic's matmuls; no masks, no sampling) with our network's sizes."""
    torch.manual_seed(cfg.seed)
    step = bare_step(Agent.from_config(PolicyConfig(lstm_hidden_dim=lstm_hidden), DEFAULT_NUM_SLOTS).network, n,
                     use_onednn=use_onednn, seed=cfg.seed)

    def run() -> None:
        for _ in range(cfg.steps):
            step()

    return measure(run, repeats=cfg.repeats, warmup=cfg.warmup, scale=1e6 / cfg.steps)


def bench_sb3(lstm_hidden: int, n: int, cfg: InferenceBenchConfig) -> tuple[dict, dict, int]:
    """(forward µs per step, predict µs per step, parameter count) for SB3's shared-LSTM policy."""
    from esper_lab.bench.compare.sb3_side import initial_states, make_toy_model

    torch.manual_seed(cfg.seed)
    policy = make_toy_model(2048, lstm_hidden, seed=cfg.seed).policy
    policy.set_training_mode(False)
    obs = random_inputs(n, torch.Generator().manual_seed(cfg.seed))[0].numpy()  # [n, D], the same as ours
    obs_t, starts, starts_np = torch.as_tensor(obs), torch.zeros(n), np.zeros(n, dtype=bool)
    carried = {"forward": initial_states(n, lstm_hidden), "predict": None}

    def forward() -> None:
        with torch.inference_mode():
            states = carried["forward"]
            for _ in range(cfg.steps):
                states = policy(obs_t, states, starts)[3]  # (actions, values, log_prob, lstm_states)
            carried["forward"] = states

    def predict() -> None:
        state = carried["predict"]
        for _ in range(cfg.steps):
            state = policy.predict(obs, state=state, episode_start=starts_np)[1]
        carried["predict"] = state

    scale = 1e6 / cfg.steps
    fwd = measure(forward, repeats=cfg.repeats, warmup=cfg.warmup, scale=scale)
    pred = measure(predict, repeats=cfg.repeats, warmup=cfg.warmup, scale=scale)
    return fwd, pred, param_count(policy)


def measure_side(side: str, cfg: InferenceBenchConfig, log: Log = quiet) -> list[dict]:
    """Every (H, batch) cell of one side, in this process: ours `{lstm_hidden, batch, ours, floor_native,
    floor_onednn, params}`; sb3 `{lstm_hidden, batch, sb3_forward, sb3_predict, params}` (µs summaries)."""
    rows = []
    for lstm_hidden in cfg.hidden_sizes:
        for n in cfg.batches:
            log(f"A H={lstm_hidden} batch={n}: {side}")
            if side == "ours":
                ours, params = bench_ours(lstm_hidden, n, cfg)
                rows.append(dict(lstm_hidden=lstm_hidden, batch=n, ours=ours, params=params,
                                 floor_native=bench_floor(lstm_hidden, n, cfg, False),
                                 floor_onednn=bench_floor(lstm_hidden, n, cfg, True)))
            else:
                fwd, pred, params = bench_sb3(lstm_hidden, n, cfg)
                rows.append(dict(lstm_hidden=lstm_hidden, batch=n, sb3_forward=fwd, sb3_predict=pred, params=params))
    return rows


MEASURES = {"ours": ("ours", "floor_native", "floor_onednn"), "sb3": ("sb3_forward", "sb3_predict")}


def combine(cfg: InferenceBenchConfig, measured: dict[str, dict[str, list[dict]]]) -> dict:
    """Part A from `measured[side][setting]` = one `measure_side` result per fresh process. Each row: per
    measure `{setting: summary}` (samples pooled over processes), `best` (the setting with the lower median, per
    measure), the ratios at each side's best (`ratio_predict`, `ratio_forward`: SB3 / ours, > 1 means ours is
    faster) and under glibc's defaults (`*_default`), and `floor_ratio` = ours / the faster floor kernel, both
    from ours' best setting (the same processes)."""
    rows = []
    for H in cfg.hidden_sizes:
        for n in cfg.batches:
            row: dict = dict(lstm_hidden=H, batch=n)
            for side, names in MEASURES.items():
                for name in names:
                    row[name] = pooled_by_setting(measured[side], name, lstm_hidden=H, batch=n)
                row[f"{side}_params"] = cell(measured[side], lstm_hidden=H, batch=n)["params"]
            row["best"] = {name: best_setting(row[name]) for names in MEASURES.values() for name in names}
            ours = row["ours"][row["best"]["ours"]]["median"]
            for name in ("predict", "forward"):
                sb3 = row[f"sb3_{name}"]
                row[f"ratio_{name}"] = sb3[row["best"][f"sb3_{name}"]]["median"] / ours
                if "default" in sb3 and "default" in row["ours"]:
                    row[f"ratio_{name}_default"] = sb3["default"]["median"] / row["ours"]["default"]["median"]
            setting = row["best"]["ours"]
            floors = {k: row[f"floor_{k}"][setting]["median"] for k in ("native", "onednn")}
            row["floor_kernel"] = min(floors, key=floors.get)
            row["floor_ratio"] = ours / floors[row["floor_kernel"]]
            rows.append(row)
    return {"config": asdict(cfg), "notes": list(NOTES), "rows": rows}
