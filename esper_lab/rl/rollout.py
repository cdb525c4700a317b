"""One rollout: every world plays one whole episode into the buffer, then the truncated last step is bootstrapped.

`collect` reads like the inner loop of CleanRL's `ppo_atari_lstm.py`: act, step, store, carry the hidden state.
Everything that only watches (timers, op counts, illegal actions, returns and their reward terms, lifecycle events,
swimlane ticks) goes to a `Telemetry`, so the loop holds nothing but the algorithm. Three things agree by construction
(DESIGN.md): the op the value is conditioned on is the op acted on (one `get_action` returns both), the blueprint
indices and the normalised observation stored are the ones the policy saw (one `Observation` is both acted on and
stored).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from esper_lab.actions import HEAD_INDEX, NUM_OPS, LifecycleOp, check_op_slot_masks
from esper_lab.agent import Agent
from esper_lab.policy.normalize import RewardNormalizer
from esper_lab.rl.buffer import RolloutBuffer


@dataclass
class Telemetry:
    """What a rollout reports besides the buffer: gathered step by step, never read by the algorithm."""

    update: int  # the update this rollout feeds (1-based), stamped on every event
    trace: bool = False  # also record every occupied slot's stage and alpha at every epoch (snapshot updates)
    episode_returns: torch.Tensor | None = None  # [E] raw (un-normalised) return
    reward_terms: dict[str, torch.Tensor] = field(default_factory=dict)  # term -> [E] raw sum over the episode
    op_counts: torch.Tensor = field(default_factory=lambda: torch.zeros(NUM_OPS, dtype=torch.long))  # [6]
    illegal: int = 0  # actions that could not execute as requested (they ran as WAIT)
    steps: int = 0  # env steps seen (E per step)
    events: list[dict[str, Any]] = field(default_factory=list)
    env_seconds: float = 0.0  # inside envs.step
    policy_seconds: float = 0.0  # features, masks, get_action, buffer writes, bootstrap

    def record(self, epoch: int, actions: torch.Tensor, rewards: torch.Tensor, reports: Sequence[Any],
               infos: Sequence[dict[str, Any]]) -> None:
        """One step of E worlds: `actions [E, 8]`, raw `rewards [E]`, the post-step reports and infos."""
        self.episode_returns = rewards.clone() if self.episode_returns is None else self.episode_returns + rewards
        self.op_counts += torch.bincount(actions[:, HEAD_INDEX["op"]], minlength=NUM_OPS)
        for name in (infos[0].get("reward_terms", {}) if infos else {}):  # info["reward_terms"]: every term
            step = torch.tensor([info["reward_terms"][name] for info in infos], dtype=torch.float64)  # [E]
            self.reward_terms[name] = self.reward_terms.get(name, 0.0) + step
        self.illegal += sum(bool(info.get("illegal")) for info in infos)
        self.steps += len(infos)
        self.events += [{"kind": "transition", "update": self.update, "env": i,
                         "contribution": _contribution(reports[i], ev.get("slot")), **ev}
                        for i, info in enumerate(infos) for ev in info.get("events", [])]
        if self.trace:
            self.events += tick_records(reports, self.update, epoch)

    @property
    def illegal_fraction(self) -> float:
        """Illegal actions / env steps (0 by construction with conditional masks)."""
        return self.illegal / self.steps if self.steps else float("nan")


@dataclass
class Rollout:
    """What one rollout produced besides the buffer: the raw signals the normalisers learn from."""

    raw_obs: torch.Tensor  # [E*T, D] un-normalised features
    raw_rewards: torch.Tensor  # [E, T] un-normalised rewards
    dones: torch.Tensor  # [E, T] bool
    final_infos: list[dict[str, Any]]  # each world's info at its last step (its SUMMARY_KEY summary)
    telemetry: Telemetry


def collect(agent: Agent, envs: Any, buffer: RolloutBuffer, reward_norm: RewardNormalizer, seeds: Sequence[int],
            telemetry: Telemetry) -> Rollout:
    """Play one episode in each of E worlds (world seeds `seeds`) with `agent`, filling `buffer`.

    The normalisers are frozen here (the trainer updates them afterwards, from `Rollout.raw_obs` / `raw_rewards`).
    The hidden state is carried from step to step and into the bootstrap, never reset in between.
    """
    reports = envs.reset(list(seeds))
    hidden = agent.initial_hidden(len(seeds))
    buffer.reset(hidden)
    raw_obs, raw_rewards, dones = [], [], []
    for epoch in range(1, buffer.max_steps + 1):
        t0 = time.perf_counter()
        masks = envs.masks()  # {head: [E, k]}, OP_SLOT_KEY: [E, 6, S]
        check_op_slot_masks(masks, epoch)
        seen, step = agent.act(reports, masks, hidden)  # obs [E, D], joint_actions [E, 8]
        t1 = time.perf_counter()
        reports, rewards, terminated, truncated, infos = envs.step(step.joint_actions)
        t2 = time.perf_counter()
        done = terminated | truncated  # [E]
        executed = executed_ops(infos, step.joint_actions)  # [E]
        buffer.add(obs=seen.obs, blueprint_indices=seen.blueprint_indices, actions=step.joint_actions,
                   log_probs=step.joint_log_probs, value=agent.executed_value(step, executed),
                   op_values=step.op_values, executed_op=executed, reward=reward_norm.normalize(rewards),
                   done=done, truncated=truncated, masks=step.masks)  # the masks each head was sampled under
        hidden = step.hidden  # carried, also into the bootstrap below
        raw_obs.append(seen.raw)
        raw_rewards.append(rewards)
        dones.append(done)
        telemetry.record(epoch, step.joint_actions, rewards, reports, infos)
        telemetry.env_seconds += t2 - t1
        telemetry.policy_seconds += (t1 - t0) + (time.perf_counter() - t2)
    if bool(truncated.any()):  # V(post-action state), with the post-action blueprint indices and carried hidden
        t0 = time.perf_counter()
        buffer.set_bootstrap(agent.bootstrap(reports, envs.masks(), hidden) * truncated.float())
        telemetry.policy_seconds += time.perf_counter() - t0
    return Rollout(torch.cat(raw_obs), torch.stack(raw_rewards, 1), torch.stack(dones, 1), list(infos), telemetry)


def executed_ops(infos: Sequence[dict[str, Any]], actions: torch.Tensor) -> torch.Tensor:
    """`[E]` int64: the op each world executed (`info["executed_op"]`; the requested op where a world does not say)."""
    requested = actions[:, HEAD_INDEX["op"]].tolist()
    return torch.tensor([LifecycleOp[info["executed_op"]] if "executed_op" in info else op
                         for info, op in zip(infos, requested)], dtype=torch.long)


def _contribution(report: Any, slot_id: str | None) -> float | None:
    """The counterfactual contribution (pp) of the seed in `slot_id` after the step, if it has one."""
    for slot in report.slots:
        if slot is not None and slot.slot_id == slot_id:
            return slot.contribution
    return None


def tick_records(reports: Sequence[Any], update: int, epoch: int) -> list[dict[str, Any]]:
    """Per-epoch stage and alpha of every occupied slot (for the dashboard's swimlane)."""
    rows = []
    for env_idx, report in enumerate(reports):
        for slot in report.slots:
            if slot is None:  # an empty slot has no report
                continue
            rows.append({
                "kind": "tick", "update": update, "env": env_idx, "slot": slot.slot_id, "epoch": epoch,
                "stage": slot.stage.name, "blueprint": slot.blueprint.name, "alpha": float(slot.alpha),
            })
    return rows
