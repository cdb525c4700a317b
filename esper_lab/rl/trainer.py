"""Rollout -> bootstrap -> PPO update, one loop, one metrics record per update (Phase 4 steps 3 to 5).

Three things agree everywhere (DESIGN.md): the op that conditions the value is the op acted on (one `get_action`
call returns both); the blueprint indices stored are the ones the policy saw; the observation stored is the
normalised one the policy saw (the normaliser is frozen during the rollout and updated just before the update).

Each update runs exactly one episode per world (a fresh host, as in Esper), so every buffer row is one whole
episode that the PPO update re-runs as one LSTM sequence from the stored initial hidden state.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from esper_lab.actions import HEAD_NAMES, LifecycleOp
from esper_lab.config import TrainConfig
from esper_lab.env.backends import close_vector_env, make_vector_env
from esper_lab.features import OBS_DIM, batch_obs_to_features
from esper_lab.malloc import tune_malloc
from esper_lab.policy.baselines import BASELINES
from esper_lab.policy.bundle import LSTMPolicyBundle
from esper_lab.rl import probes
from esper_lab.rl.buffer import RolloutBuffer
from esper_lab.rl.normalize import RewardNormalizer, RunningMeanStd
from esper_lab.rl.ppo import PPOUpdater
from esper_lab.runs import METRIC_KEYS, OP_NAMES, RunWriter, atomic_write, dumps, load_checkpoint

NUM_SLOTS = 3


class StopRequested(Exception):
    """Raised inside the loop by SIGTERM/SIGINT so the run stops cleanly with its last checkpoint intact."""


def episode_seeds(seed: int, update: int, num_envs: int) -> list[int]:
    """The world seeds of one update: distinct per (run seed, update, env), so resume replays the same worlds."""
    return [seed * 1_000_003 + update * num_envs + i for i in range(num_envs)]


@dataclass
class Rollout:
    """What one rollout produced besides the buffer."""

    raw_obs: torch.Tensor  # [E*T, D] un-normalised, for the normaliser update
    raw_rewards: torch.Tensor  # [E, T] un-normalised, for the reward normaliser update
    dones: torch.Tensor  # [E, T]
    episode_returns: torch.Tensor  # [E] raw (un-normalised) return
    final_infos: list[dict[str, Any]]
    op_counts: torch.Tensor  # [NUM_OPS]
    illegal: int
    events: list[dict[str, Any]] = field(default_factory=list)
    env_seconds: float = 0.0
    policy_seconds: float = 0.0


class Trainer:
    """Owns the worlds, the policy, the PPO updater, the normalisers and (optionally) a run directory."""

    def __init__(self, cfg: TrainConfig, run_dir: Path | str | None = None, *, resume: bool = False):
        tune_malloc()  # esper_lab/malloc.py: oneDNN's per-call buffers stay in the heap
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.envs = make_vector_env(cfg)
        self.bundle = LSTMPolicyBundle.from_config(OBS_DIM, cfg.policy, num_slots=NUM_SLOTS)
        self.updater = PPOUpdater(self.bundle, cfg.ppo)
        self.obs_norm = RunningMeanStd(OBS_DIM)
        self.reward_norm = RewardNormalizer(gamma=cfg.ppo.gamma)
        self.buffer = RolloutBuffer(
            cfg.num_envs, cfg.world.max_epochs, OBS_DIM, NUM_SLOTS, cfg.policy.lstm_hidden_dim
        )
        self.update_idx = 0  # updates completed
        self.env_steps = 0
        self.probe = probes.make_probe(cfg.world, seed=cfg.seed)
        self.writer = RunWriter(run_dir, cfg.to_dict(), resume=resume) if run_dir is not None else None
        if resume:
            self._restore()

    # --- one update ----------------------------------------------------------------------------------------------

    def collect(self, *, trace: bool = False) -> Rollout:
        """Run one episode in every world, filling the buffer; then bootstrap the truncated last step."""
        E, T = self.cfg.num_envs, self.cfg.world.max_epochs
        self.buffer.reset()
        reports = self.envs.reset(episode_seeds(self.cfg.seed, self.update_idx, E))
        hidden = self.bundle.initial_hidden(E)
        returns = torch.zeros(E)
        op_counts = torch.zeros(len(LifecycleOp), dtype=torch.long)
        raw_obs, raw_rewards, dones, events, infos, illegal = [], [], [], [], [], 0
        env_s = policy_s = 0.0
        for t in range(T):
            t0 = time.perf_counter()
            obs, bp_idx = batch_obs_to_features(reports)  # [E, D], [E, S]
            raw_obs.append(obs)
            obs_n = self.obs_norm.normalize(obs)  # frozen statistics during the rollout
            masks = self.envs.masks()  # {head: [E, k]}
            result = self.bundle.get_action(obs_n, bp_idx, masks, hidden)
            actions = torch.stack([result.actions[h] for h in HEAD_NAMES], dim=1)  # [E, 8]
            t1 = time.perf_counter()
            reports, rewards, terminated, truncated, infos = self.envs.step(actions)
            t2 = time.perf_counter()
            done = terminated | truncated
            self.buffer.add(
                obs=obs_n,
                blueprint_indices=bp_idx,
                actions=result.actions,
                log_probs=result.log_probs,
                value=result.value,
                op_values=result.op_values,
                reward=self.reward_norm.normalize(rewards),  # frozen statistics during the rollout
                done=done,
                truncated=truncated,
                masks=masks,
                hidden=hidden,  # the PRE-step hidden fed into this step
            )
            hidden = result.hidden  # carried; never reset before the bootstrap (B11-DRL-01)
            returns += rewards
            raw_rewards.append(rewards)
            dones.append(done)
            op_counts += torch.bincount(actions[:, HEAD_NAMES.index("op")], minlength=len(LifecycleOp))
            illegal += sum(bool(info.get("illegal")) for info in infos)
            events += [{"kind": "transition", "update": self.update_idx + 1, "env": i,
                        "contribution": _contribution(reports[i], ev.get("slot")), **ev}
                       for i, info in enumerate(infos) for ev in info.get("events", [])]
            if trace:
                events += probes.tick_records(reports, self.update_idx + 1, epoch=t + 1)
            env_s += t2 - t1
            policy_s += (t1 - t0) + (time.perf_counter() - t2)
        self._bootstrap(reports, hidden, truncated)
        return Rollout(torch.cat(raw_obs), torch.stack(raw_rewards, 1), torch.stack(dones, 1), returns, infos,
                       op_counts, illegal, events, env_s, policy_s)

    def _bootstrap(self, reports: list, hidden: tuple[torch.Tensor, torch.Tensor], truncated: torch.Tensor) -> None:
        """Value of the POST-action state with the carried hidden state, `get_action(deterministic=True)`."""
        if not bool(truncated.any()):
            return
        obs, bp_idx = batch_obs_to_features(reports)  # post-action features and blueprint indices
        result = self.bundle.get_action(self.obs_norm.normalize(obs), bp_idx, self.envs.masks(), hidden,
                                        deterministic=True)
        self.buffer.set_bootstrap(result.value * truncated.float())

    def train_step(self) -> dict[str, Any]:
        """One update: rollout, normaliser update, PPO. Returns the metrics record (keys = runs.METRIC_KEYS)."""
        start = time.perf_counter()
        snapshot_now = (self.update_idx + 1) % self.cfg.snapshot_every == 0
        rollout = self.collect(trace=snapshot_now)
        rollout_s = time.perf_counter() - start
        self.obs_norm.update(rollout.raw_obs)  # just before the update, never during the rollout
        self.reward_norm.update(rollout.raw_rewards, rollout.dones)
        t0 = time.perf_counter()
        ppo_metrics = self.updater.update(self.buffer)
        update_s = time.perf_counter() - t0
        self.update_idx += 1
        steps = self.cfg.num_envs * self.cfg.world.max_epochs
        self.env_steps += steps
        record = self._record(rollout, ppo_metrics, rollout_s, update_s, time.perf_counter() - start)
        if self.writer is not None:
            self.writer.metrics(record)
            self.writer.events(rollout.events)
            if snapshot_now:
                self.writer.snapshot(self.update_idx, probes.snapshot(self))
        return record

    def _record(self, ro: Rollout, ppo: dict[str, Any], rollout_s: float, update_s: float, total_s: float) -> dict:
        summaries = [info.get("episode", {}) for info in ro.final_infos]

        def mean_of(key: str) -> float:
            return float(np.mean([s.get(key, float("nan")) for s in summaries]))

        val_accs = np.array([info.get("val_acc", float("nan")) for info in ro.final_infos], dtype=float)
        record: dict[str, Any] = {
            "update": self.update_idx,
            "env_steps": self.env_steps,
            "time_s": time.time(),
            "sps": self.cfg.num_envs * self.cfg.world.max_epochs / total_s,
            "rollout_seconds": rollout_s,
            "env_seconds": ro.env_seconds,
            "policy_seconds": ro.policy_seconds,
            "update_seconds": update_s,
            "episode_return": ro.episode_returns.mean().item(),
            "episode_return_std": ro.episode_returns.std(correction=0).item(),
            "val_acc": float(val_accs.mean()),
            "val_acc_std": float(val_accs.std()),
            "fossilized": mean_of("fossilized"),
            "pruned": mean_of("pruned"),
            "germinated": mean_of("germinated"),
            "seed_params": mean_of("seed_params"),
            "host_params": mean_of("host_params"),
            "illegal_actions": ro.illegal,
        }
        for op, name in zip(LifecycleOp, OP_NAMES):
            record[f"op_count_{name}"] = int(ro.op_counts[op])
        for key in METRIC_KEYS:
            if key not in record:
                value = ppo.get(key, float("nan"))
                record[key] = value.item() if isinstance(value, torch.Tensor) else value
        return record

    # --- the loop -----------------------------------------------------------------------------------------------

    def run(self, updates: int | None = None, progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict]:
        """Train until `updates` updates are done (default cfg.updates), writing the run directory if there is one."""
        total = updates if updates is not None else self.cfg.updates
        records = []
        previous = _install_stop_handlers()
        try:
            self._status("running", updates_total=total, started_at=time.time())
            self._write_baselines()
            deadline = None if self.cfg.max_minutes is None else time.monotonic() + 60 * self.cfg.max_minutes
            while self.update_idx < total and (deadline is None or time.monotonic() < deadline):
                record = self.train_step()
                records.append(record)
                last = self.update_idx == total or (deadline is not None and time.monotonic() >= deadline)
                if self.writer is not None and (self.update_idx % self.cfg.checkpoint_every == 0 or last):
                    self.save()
                self._status("running", update=self.update_idx, updates_total=total)
                if progress is not None:
                    progress(record)
            self._status("finished", update=self.update_idx, updates_total=total)
        except StopRequested:
            self._status("stopped", update=self.update_idx, updates_total=total)
        except BaseException as exc:
            self._status("failed", update=self.update_idx, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            _restore_handlers(previous)
        return records

    def close(self) -> None:
        """Release the worlds' workers (Ray actors; nothing for 'local')."""
        close_vector_env(self.envs)

    def _status(self, state: str, **fields: Any) -> None:
        if self.writer is not None:
            self.writer.status(state, **fields)

    def _write_baselines(self) -> None:
        if self.writer is None or (self.writer.dir / "baselines.json").exists():
            return
        from esper_lab.evaluate import evaluate_policies

        results = evaluate_policies(tuple(BASELINES), self.cfg.world, episodes=self.cfg.num_envs, seed=self.cfg.seed)
        ref = {name: {"episode_return": r["return_mean"], "val_acc": r["final_val_acc_mean"]}
               for name, r in results.items()}
        atomic_write(self.writer.dir / "baselines.json", dumps(ref))

    # --- checkpoints --------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "update": self.update_idx,
            "env_steps": self.env_steps,
            "policy": self.bundle.state_dict(),
            "optimizer": self.updater.optimizer.state_dict(),
            "obs_norm": self.obs_norm.state_dict(),
            "reward_norm": self.reward_norm.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def save(self) -> None:
        if self.writer is None:
            raise RuntimeError("this trainer has no run directory to save into")
        self.writer.checkpoint(self.state())

    def _restore(self) -> None:
        assert self.writer is not None
        ckpt = load_checkpoint(self.writer.checkpoint_path)
        self.load_state(ckpt)
        self.writer.truncate_after(self.update_idx)

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.bundle.load_state_dict(ckpt["policy"])
        self.updater.optimizer.load_state_dict(ckpt["optimizer"])
        self.obs_norm.load_state_dict(ckpt["obs_norm"])
        self.reward_norm.load_state_dict(ckpt["reward_norm"])
        self.update_idx = int(ckpt["update"])
        self.env_steps = int(ckpt["env_steps"])
        torch.set_rng_state(ckpt["torch_rng"])


def _contribution(report: Any, slot_id: str | None) -> float | None:
    """The counterfactual contribution (pp) of the seed in `slot_id` after the step, if it has one."""
    for slot in report.slots:
        if slot is not None and slot.slot_id == slot_id:
            return slot.contribution
    return None


def _raise_stop(signum: int, frame: Any) -> None:
    raise StopRequested(signal.Signals(signum).name)


def _install_stop_handlers() -> dict[int, Any]:
    try:
        return {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread (e.g. inside a notebook helper thread): no handlers
        return {}


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
