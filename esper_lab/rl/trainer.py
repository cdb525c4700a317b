"""The training loop: rollout -> normalisers -> PPO update -> checkpoint, status, snapshots (Phase 4 steps 3 to 5),
and, at `cfg.truth`'s cadence and within its budget, the critic's ground truth on the probe states (rl/truth.py).

The trainer only orchestrates: `rollout.collect` plays the episodes into the buffer (and bootstraps), `PPOUpdater`
updates the agent, `runs.RunWriter` writes the run directory. Each update runs exactly one episode per world (a
fresh host, as in Esper), so every buffer row is one whole episode that the PPO update re-runs as one LSTM
sequence from its initial hidden state. The normalisers are updated after the rollout and before the update, so
what the buffer stores is what the policy saw.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from esper_lab.actions import DEFAULT_NUM_SLOTS, OP_NAMES
from esper_lab.agent import Agent
from esper_lab.config import TrainConfig, config_differences
from esper_lab.env.backends import close_vector_env, make_vector_env
from esper_lab.env.morpho_env import SUMMARY_KEY
from esper_lab.env.reward import REWARD_TERMS
from esper_lab.evaluate import evaluate_policies
from esper_lab.features import OBS_DIM
from esper_lab.policy.baselines import BASELINES
from esper_lab.policy.normalize import RewardNormalizer
from esper_lab.rl import probes
from esper_lab.rl.buffer import RolloutBuffer
from esper_lab.rl.ppo import PPOUpdater
from esper_lab.rl.rollout import Rollout, Telemetry, collect
from esper_lab.rl.truth import GroundTruth, TruthSchedule
from esper_lab.runs import (METRIC_KEYS, REWARD_TERM_PREFIX, ROLLOUT_METRIC_KEYS, CheckpointError, RunWriter,
                            load_checkpoint, read_cached, restoring, write_cached)


class StopRequested(Exception):
    """Raised inside the loop by SIGTERM/SIGINT so the run stops cleanly with its last checkpoint intact."""


def episode_seeds(seed: int, update: int, num_envs: int) -> list[int]:
    """The world seeds of one update: distinct per (run seed, update, env), so resume replays the same worlds."""
    return [seed * 1_000_003 + update * num_envs + i for i in range(num_envs)]


class Trainer:
    """Owns the worlds, the policy, the PPO updater, the normalisers and (optionally) a run directory."""

    def __init__(self, cfg: TrainConfig, run_dir: Path | str | None = None, *, resume: bool = False,
                 overwrite: bool = False):
        """`run_dir`: written by a `RunWriter`, which owns it (its lock) until `run` ends or `close`; `resume`
        continues its checkpoint, `overwrite` restarts a run there from scratch (runs.RunWriter says what is refused)."""
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        # the run directory first: a refused folder costs no worlds, and the lock is held before anything is written;
        # an earlier run's outputs go only once the worlds are built (a bad --ray-address leaves the old run whole)
        self.writer = (RunWriter(run_dir, cfg.to_dict(), resume=resume, overwrite=overwrite, deferred=True)
                       if run_dir is not None else None)
        try:
            self._build(cfg, resume)
            if self.writer is not None:
                self.writer.start()
        except BaseException:
            self.close()
            raise

    def _build(self, cfg: TrainConfig, resume: bool) -> None:
        """The worlds, the agent, the updater, the normalisers, the buffer and the probe (restored if `resume`)."""
        self.envs = make_vector_env(cfg)
        self.agent = Agent.from_config(cfg.policy, DEFAULT_NUM_SLOTS)
        self.updater = PPOUpdater(self.agent, cfg.ppo, cfg.gamma)
        self.reward_norm = RewardNormalizer(gamma=cfg.gamma)
        self.buffer = RolloutBuffer(
            cfg.num_envs, cfg.world.max_epochs, OBS_DIM, DEFAULT_NUM_SLOTS, cfg.policy.lstm_hidden_dim
        )
        self.update_idx = 0  # updates completed
        self.env_steps = 0
        self.probe = probes.make_probe(cfg.world, seed=cfg.seed)
        self.truth: TruthSchedule | None = None  # built at the first measurement (its worlds cost nothing till then)
        self.started = time.perf_counter()  # the truth budget's clock: wall time since the trainer was built
        if resume:
            self._restore()

    # --- one update ----------------------------------------------------------------------------------------------

    def collect(self, *, trace: bool = False) -> Rollout:
        """Run one episode in every world, filling the buffer; then bootstrap the truncated last step."""
        seeds = episode_seeds(self.cfg.seed, self.update_idx, self.cfg.num_envs)
        return collect(self.agent, self.envs, self.buffer, self.reward_norm, seeds,
                       Telemetry(update=self.update_idx + 1, trace=trace))

    def train_step(self) -> dict[str, Any]:
        """One update: rollout, normaliser update, PPO. Returns the metrics record (keys = `runs.METRIC_KEYS`, then
        one `reward_term_<name>` per `REWARD_TERMS`)."""
        start = time.perf_counter()
        snapshot_now = (self.update_idx + 1) % self.cfg.snapshot_every == 0
        rollout = self.collect(trace=snapshot_now)
        rollout_s = time.perf_counter() - start
        self.agent.obs_norm.update(rollout.raw_obs)  # just before the update, never during the rollout
        self.reward_norm.update(rollout.raw_rewards, rollout.dones)
        t0 = time.perf_counter()
        ppo_metrics = self.updater.update(self.buffer)
        update_s = time.perf_counter() - t0
        self.update_idx += 1
        steps = self.cfg.num_envs * self.cfg.world.max_epochs
        self.env_steps += steps
        record = self._record(rollout, ppo_metrics, rollout_s, update_s, time.perf_counter() - start)
        truth = self._ground_truth(record)
        if self.writer is not None:
            self.writer.metrics(record)
            self.writer.events(rollout.telemetry.events)
            if snapshot_now:
                self.writer.snapshot(self.update_idx, probes.snapshot(self.agent, self.probe))
            self.writer.truth(truth)
        return record

    def _ground_truth(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Monte Carlo Q^pi(s, op) on probe states when `cfg.truth` says so; its seconds go into `record`."""
        if self.cfg.truth.every == 0 or self.update_idx % self.cfg.truth.every != 0:
            return []
        if self.truth is None:
            truth = GroundTruth(self.cfg.world, self.probe, self.cfg.backend, self.cfg.workers, seed=self.cfg.seed)
            self.truth = TruthSchedule(self.cfg.truth, truth, started=self.started, seed=self.cfg.seed)
            self.truth.seconds_per_step = 1.0 / record["sps"]  # until the first measurement says better
        records = self.truth.run(self.agent, self.update_idx, self.reward_norm, self.cfg.gamma)
        record["truth_seconds"] = sum(r["seconds"] for r in records)
        return records

    def _record(self, ro: Rollout, ppo: dict[str, Any], rollout_s: float, update_s: float, total_s: float) -> dict:
        """The metrics.jsonl record of this update: the rollout's keys, every key PPO computed, then each reward term's
        raw sum over a world's episode, averaged over the worlds (they add up to `episode_return`)."""
        tm = ro.telemetry
        summaries = [info.get(SUMMARY_KEY, {}) for info in ro.final_infos]

        def mean_of(key: str) -> float:
            return float(np.mean([s.get(key, float("nan")) for s in summaries]))

        val_accs = np.array([info.get("val_acc", float("nan")) for info in ro.final_infos], dtype=float)
        record: dict[str, Any] = {
            "update": self.update_idx,
            "env_steps": self.env_steps,
            "time_s": time.time(),
            "sps": self.cfg.num_envs * self.cfg.world.max_epochs / total_s,
            "rollout_seconds": rollout_s,
            "env_seconds": tm.env_seconds,
            "policy_seconds": tm.policy_seconds,
            "update_seconds": update_s,
            "episode_return": tm.episode_returns.mean().item(),
            "episode_return_std": tm.episode_returns.std(correction=0).item(),
            "val_acc": float(val_accs.mean()),
            "val_acc_std": float(val_accs.std()),
            "fossilized": mean_of("fossilized"),
            "pruned": mean_of("pruned"),
            "germinated": mean_of("germinated"),
            "seed_params": mean_of("seed_params"),
            "host_params": mean_of("host_params"),
            "illegal_actions": tm.illegal,
            "illegal_fraction": tm.illegal_fraction,
            **{f"op_count_{name}": int(count) for name, count in zip(OP_NAMES, tm.op_counts)},
        }
        assert tuple(record) == ROLLOUT_METRIC_KEYS, "the rollout record and runs.ROLLOUT_METRIC_KEYS disagree"
        record.update(ppo, truth_seconds=0.0)  # `_ground_truth` fills it in
        terms = {f"{REWARD_TERM_PREFIX}{name}": tm.reward_terms[name].mean().item() if name in tm.reward_terms
                 else float("nan") for name in REWARD_TERMS}
        return {**{key: record[key] for key in METRIC_KEYS}, **terms}

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
                _check_stop()
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
            if self.writer is not None:
                self.writer.release()  # the loop is over: the run is free to resume (a later write takes it again)
        return records

    def close(self) -> None:
        """Release the worlds' workers (Ray actors; nothing for 'local') and the run directory's lock."""
        close_vector_env(getattr(self, "envs", None))
        if getattr(self, "truth", None) is not None:
            self.truth.truth.close()
        if self.writer is not None:
            self.writer.release()

    def _status(self, state: str, **fields: Any) -> None:
        if self.writer is not None:
            self.writer.status(state, **fields)

    def _write_baselines(self) -> None:
        """baselines.json: every baseline on this run's world, from the cache when the same (world, seed, episodes)
        was evaluated before by the same code (runs.cache_path)."""
        if self.writer is None or self.writer.has_baselines():
            return
        key = {"world": dataclasses.asdict(self.cfg.world), "seed": self.cfg.seed, "episodes": self.cfg.num_envs}
        reference = read_cached("baselines", key)
        if reference is None:
            results = evaluate_policies(tuple(BASELINES), self.cfg.world, episodes=self.cfg.num_envs,
                                        seed=self.cfg.seed)
            reference = {name: {"episode_return": r["return_mean"], "val_acc": r["final_val_acc_mean"]}
                         for name, r in results.items()}
            write_cached("baselines", key, reference)
        self.writer.baselines(reference)

    # --- checkpoints --------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "update": self.update_idx,
            "env_steps": self.env_steps,
            **self.agent.checkpoint_state(),  # policy, obs_norm
            "optimizer": self.updater.optimizer.state_dict(),
            "reward_norm": self.reward_norm.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def save(self) -> None:
        if self.writer is None:
            raise RuntimeError("this trainer has no run directory to save into")
        self.writer.checkpoint(self.state())

    def _restore(self) -> None:
        assert self.writer is not None
        path = self.writer.checkpoint_path
        ckpt = load_checkpoint(path)
        with restoring(path):
            differing = config_differences(TrainConfig.from_dict(ckpt["config"]), self.cfg)
            if differing:  # a checkpoint copied in from another run
                raise CheckpointError(f"{path} was not written by this run: its config differs from config.json in "
                                      f"{', '.join(differing)}")
            self.load_state(ckpt)
        self.writer.truncate_after(self.update_idx)

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.agent.load_checkpoint_state(ckpt)
        self.updater.optimizer.load_state_dict(ckpt["optimizer"])
        self.reward_norm.load_state_dict(ckpt["reward_norm"])
        self.update_idx = int(ckpt["update"])
        self.env_steps = int(ckpt["env_steps"])
        torch.set_rng_state(ckpt["torch_rng"])


_stops_received: list[str] = []
"""The stop signals received since the handlers were installed. The handler raises at once, but Python discards an
exception raised where it cannot propagate (a `__del__`, a fork hook of `logging`): the loop checks this too."""


def _raise_stop(signum: int, frame: Any) -> None:
    _stops_received.append(signal.Signals(signum).name)
    raise StopRequested(_stops_received[-1])


def _check_stop() -> None:
    """Raise StopRequested if a stop signal arrived whose exception was lost."""
    if _stops_received:
        raise StopRequested(_stops_received[-1])


def _install_stop_handlers() -> dict[int, Any]:
    _stops_received.clear()
    try:
        return {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread (e.g. inside a notebook helper thread): no handlers
        return {}


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
