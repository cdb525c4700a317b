"""Ground truth for the critic: a Monte Carlo estimate of Q^pi(s, op) on the probe states.

The worlds are deterministic given their state, so from a probe state (a world snapshot, `Probe.states`, and the
policy's hidden state there) the value of each op can be measured rather than guessed: take the op (the other seven
heads sampled by the policy given that op), then let the current policy play to the end of the episode; the mean of
K such returns is the Monte Carlo estimate of Q^pi(s, op) (Sutton and Barto 2018, "Reinforcement Learning: An
Introduction", section 5.2). The K rollouts differ only in the policy's samples (one seeded stream): the world, its
data order and its initial weights are the snapshot's, the same for every rollout and op.

Two returns per rollout of n = T - t steps, rewards r_0..r_{n-1}, discount gamma as in training:

    target   sum_j gamma^j * norm(r_j) + gamma^n * V_boot      what the critic is trained toward: the run's reward
             normaliser applied, and the trainer's truncation bootstrap (`Agent.bootstrap` on the post-episode state,
             with the carried hidden state) added at the last step; the critic's Q(s, op) is in these units
    raw      sum_j gamma^j * r_j                               the raw discounted return to the end of the episode

PPO fits the critic to GAE(lambda) returns, whose expectation under the policy is the `target` above when the
critic is right; so `target` is what Q(s, op) should equal, and `raw` is the same thing in reward units.

    probe state, legal ops o_1..o_m, K rollouts each  ->  m*K worlds restored from the snapshot (`set_states`)
    step 1: op head forced to o_i (mask = one-hot), other heads sampled    [m*K, 8]
    steps 2..n: the policy samples, hidden state carried                     [m*K, 8]
    -> per op: mean and 95 % t interval of K returns (esper_lab.stats)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch

from esper_lab.actions import OP_NAMES
from esper_lab.agent import Agent
from esper_lab.config import TrainConfig, TruthConfig, WorldConfig
from esper_lab.env.backends import close_vector_env, make_worlds
from esper_lab.policy.normalize import RewardNormalizer
from esper_lab.rl.probes import Probe, make_probe
from esper_lab.stats import t_interval

TARGET_DEFINITION = ("sum_j gamma^j * normalised r_j + gamma^n * bootstrap value (the critic's own target: PPO's "
                     "returns, reward normaliser and truncation bootstrap of the checkpoint)")
RAW_DEFINITION = "sum_j gamma^j * r_j to the end of the episode (raw rewards, no bootstrap)"


class UnknownProbeState(ValueError):
    """A probe state index the run does not have."""


@dataclass
class Returns:
    """The K returns of every op of one probe state, both definitions."""

    ops: list[int]  # the legal ops measured, m of them
    target: torch.Tensor  # [m, K] in the critic's units
    raw: torch.Tensor  # [m, K] raw discounted return


@torch.no_grad()
def hidden_at(agent: Agent, probe: Probe, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's hidden state on arriving at probe step `step` (the probe's episode run from a zero hidden state,
    as `probes.snapshot` runs it): `(h, c)`, each `[1, 1, H]`."""
    if step == 0:
        return agent.initial_hidden(1)
    obs = agent.obs_norm.normalize(probe.obs[:, :step])  # [1, step, D]
    _, hidden = agent.network.encode(obs, probe.blueprint_indices[:, :step])
    return hidden


@torch.no_grad()
def critic_values(agent: Agent, probe: Probe, step: int) -> torch.Tensor:
    """Q(s, op) for every op at probe step `step`, from the same pass `probes.snapshot` makes. `[6]`."""
    obs = agent.obs_norm.normalize(probe.obs[:, :step + 1])  # [1, step+1, D]
    lstm_out, _ = agent.network.encode(obs, probe.blueprint_indices[:, :step + 1])  # [1, step+1, H]
    return agent.network.q_values(lstm_out[:, -1])[0]  # [6]


def rollout_returns(agent: Agent, envs: Any, state: bytes, hidden: tuple[torch.Tensor, torch.Tensor],
                    ops: Sequence[int], rollouts: int, reward_norm: RewardNormalizer, gamma: float,
                    seed: int) -> Returns:
    """Play `rollouts` episodes from the snapshot `state` for each op in `ops` on `envs` (len(ops) * rollouts
    worlds): the first action's op is forced, the policy does the rest. Sampling uses its own generator stream
    (`fork_rng`), so the caller's RNG is untouched and the same `seed` gives the same returns. (Not under
    `no_grad`: 'local' worlds train their hosts in this thread; the agent's `get_action` builds no graph.)"""
    m, K = len(ops), rollouts
    reports = envs.set_states([state] * (m * K))
    forced = torch.tensor(ops).repeat_interleave(K)  # [m*K]: rows of op 0 first
    h = tuple(x.expand(-1, m * K, -1).contiguous() for x in hidden)  # [1, m*K, H] each
    raw, norm = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        masks = envs.masks()
        masks["op"] = torch.nn.functional.one_hot(forced, len(OP_NAMES)).bool()  # [m*K, 6]
        _, step = agent.act(reports, masks, h)
        while True:
            reports, rewards, _, truncated, _ = envs.step(step.joint_actions)
            raw.append(rewards)
            norm.append(reward_norm.normalize(rewards))
            if bool(truncated.all()):
                break
            _, step = agent.act(reports, envs.masks(), step.hidden)
        boot = agent.bootstrap(reports, envs.masks(), step.hidden)  # [m*K]
    discounts = gamma ** torch.arange(len(raw), dtype=torch.float64)  # [n]
    raw_t, norm_t = torch.stack(raw, 1).double(), torch.stack(norm, 1).double()  # [m*K, n]
    target = norm_t @ discounts + gamma ** len(raw) * boot.double()  # [m*K]
    return Returns(list(ops), target.view(m, K), (raw_t @ discounts).view(m, K))


def summarize(returns: Returns, critic: torch.Tensor) -> dict[str, Any]:
    """Per op the mean and 95 % interval of both returns, beside the critic's Q(s, op); then how well the critic
    matches: mean absolute error (critic units) and the agreement of the two orderings of the ops."""
    target = [t_interval(row.tolist()) for row in returns.target]
    raw = [t_interval(row.tolist()) for row in returns.raw]
    q = [float(critic[o]) for o in returns.ops]
    return {
        "ops": [OP_NAMES[o] for o in returns.ops],
        "rollouts": int(returns.target.shape[1]),
        "critic": q,
        "target": _columns(target),
        "raw": _columns(raw),
        **calibration(q, target),
    }


def _columns(intervals: Sequence[Any]) -> dict[str, list]:
    return {"mean": [i.mean for i in intervals], "low": [i.low for i in intervals],
            "high": [i.high for i in intervals], "std": [i.std for i in intervals]}


def calibration(q: Sequence[float], truth: Sequence[Any]) -> dict[str, Any]:
    """How the critic's `q` (per op) matches the Monte Carlo `truth` (intervals, per op).

    - `mae`: mean |Q(s, op) - truth mean| over the ops;
    - `pair_agreement`: of all pairs of ops, the fraction the critic orders as the truth means do (1 = the same
      ranking, 0.5 = no better than a coin; None with one op);
    - `separated_pairs` / `separated_agreement`: the same over the pairs whose truth intervals do not overlap (the
      pairs the measurement can tell apart);
    - `best_agrees`: the critic's best op is the truth's best op."""
    means = [t.mean for t in truth]
    pairs = [(a, b) for a in range(len(q)) for b in range(a + 1, len(q))]
    agree = [(q[a] - q[b]) * (means[a] - means[b]) > 0 for a, b in pairs]
    separated = [i for i, (a, b) in enumerate(pairs) if _apart(truth[a], truth[b])]
    return {
        "mae": sum(abs(x - m) for x, m in zip(q, means)) / len(q),
        "pair_agreement": sum(agree) / len(agree) if agree else None,
        "separated_pairs": len(separated),
        "separated_agreement": sum(agree[i] for i in separated) / len(separated) if separated else None,
        "best_agrees": max(range(len(q)), key=q.__getitem__) == max(range(len(q)), key=means.__getitem__),
    }


def _apart(a: Any, b: Any) -> bool:
    """The two intervals do not overlap (neither has None bounds)."""
    if None in (a.low, a.high, b.low, b.high):
        return False
    return a.high < b.low or b.high < a.low


class GroundTruth:
    """Monte Carlo Q^pi(s, op) on a run's probe states, on worlds of its own (`make_worlds` with the run's
    backend; the sequential engine, which can snapshot). Vector envs are kept per size and reused."""

    def __init__(self, world: WorldConfig, probe: Probe, backend: str = "local", workers: int | None = None,
                 seed: int = 0):
        if not probe.states:
            raise ValueError("this probe has no world snapshots (make_probe records them)")
        self.world, self.probe = replace(world, engine="sequential"), probe
        self.backend, self.workers, self.seed = backend, workers, seed
        self._envs: dict[int, Any] = {}

    def legal_ops(self, index: int) -> list[int]:
        """The ops legal at probe state `index` (of `probe.steps`)."""
        return [o for o, ok in enumerate(self.probe.masks["op"][0, self.probe.steps[index]].tolist()) if ok]

    def world_steps(self, index: int, rollouts: int) -> int:
        """World steps one estimate of probe state `index` costs."""
        return len(self.legal_ops(index)) * rollouts * (self.world.max_epochs - self.probe.steps[index])

    def measure(self, agent: Agent, index: int, rollouts: int, reward_norm: RewardNormalizer, gamma: float,
                seed: int) -> dict[str, Any]:
        """The record of probe state `index`: the critic's Q(s, op) beside the truth, both returns, calibration."""
        if rollouts < 2:
            raise ValueError(f"ground truth needs at least 2 rollouts per op for an interval, got {rollouts}")
        start = time.perf_counter()
        step, ops = self.probe.steps[index], self.legal_ops(index)
        envs = self._env(len(ops) * rollouts)
        returns = rollout_returns(agent, envs, self.probe.states[index], hidden_at(agent, self.probe, step), ops,
                                  rollouts, reward_norm, gamma, seed)
        record = summarize(returns, critic_values(agent, self.probe, step))
        return {"probe": index, "step": step, "name": self.probe.names[index], "seed": seed, "gamma": gamma,
                "target_definition": TARGET_DEFINITION, "raw_definition": RAW_DEFINITION, **record,
                "seconds": time.perf_counter() - start}

    def _env(self, size: int) -> Any:
        if size not in self._envs:
            self._envs[size] = make_worlds(self.world, size, self.seed, self.backend, self.workers)
        return self._envs[size]

    def close(self) -> None:
        for envs in self._envs.values():
            close_vector_env(envs)
        self._envs.clear()


class TruthSchedule:
    """When the trainer measures: every `cfg.every` updates, probe states in turn, while the time spent on truth
    stays within `cfg.budget` of the wall time since training started. A state is measured only if its estimated
    cost (its world steps at the last measured seconds per world step) fits the credit left, so the budget holds
    at every measurement as far as that estimate is right (tests/test_truth.py; a 10-minute `demo` run spent 9.3 to
    9.7 % of its wall time on it, README "Is the critic right?")."""

    def __init__(self, cfg: TruthConfig, truth: GroundTruth, started: float | None = None, seed: int = 0):
        self.cfg, self.truth, self.seed = cfg, truth, seed
        self.started = time.perf_counter() if started is None else started
        self.spent = 0.0
        self.next_index = 0
        self.seconds_per_step: float | None = None

    def due(self, update: int) -> bool:
        return self.cfg.every > 0 and update % self.cfg.every == 0

    def run(self, agent: Agent, update: int, reward_norm: RewardNormalizer, gamma: float) -> list[dict[str, Any]]:
        """Measure as many probe states as the budget allows now (at most one round of them)."""
        records: list[dict[str, Any]] = []
        for _ in range(len(self.truth.probe.steps)):
            index = self.next_index
            steps = self.truth.world_steps(index, self.cfg.rollouts)
            cost = 0.0 if self.seconds_per_step is None else self.seconds_per_step * steps
            credit = self.cfg.budget * (time.perf_counter() - self.started) - self.spent
            if cost > credit or credit <= 0:
                break
            record = self.truth.measure(agent, index, self.cfg.rollouts, reward_norm, gamma,
                                        seed=self.seed * 1_000_003 + 1_000 * update + index)
            self.spent += record["seconds"]
            self.seconds_per_step = record["seconds"] / steps
            self.next_index = (index + 1) % len(self.truth.probe.steps)
            records.append({"update": update, **record})
        return records


def probe_checkpoint(path: Any, states: Sequence[int] | None, rollouts: int, seed: int, backend: str = "local",
                     workers: int | None = None) -> tuple[list[dict[str, Any]], TrainConfig]:
    """Ground truth for a training checkpoint on its run's probe states (`states`: indices into the probe's steps;
    None: all), with the checkpoint's reward normaliser and discount. Returns the records and the run's config."""
    from esper_lab.runs import load_checkpoint, restoring

    ckpt = load_checkpoint(path)
    with restoring(path):
        cfg = TrainConfig.from_dict(ckpt["config"])
        agent = Agent.from_config(cfg.policy)
        agent.load_checkpoint_state(ckpt)
        reward_norm = RewardNormalizer(gamma=cfg.gamma)
        reward_norm.load_state_dict(ckpt["reward_norm"])
    probe = make_probe(cfg.world, seed=cfg.seed)
    indices = list(range(len(probe.steps))) if states is None else list(states)
    bad = [i for i in indices if not 0 <= i < len(probe.steps)]
    if bad:
        raise UnknownProbeState(f"probe states {bad} do not exist: this run has {len(probe.steps)} (0 to "
                         f"{len(probe.steps) - 1}: {', '.join(probe.names)})")
    truth = GroundTruth(cfg.world, probe, backend, workers, seed=cfg.seed)
    try:
        update = int(ckpt["update"])
        return [{"update": update, "source": "esper-lab probe",
                 **truth.measure(agent, i, rollouts, reward_norm, cfg.gamma, seed=seed * 1_000_003 + i)}
                for i in indices], cfg
    finally:
        truth.close()


def format_truth(records: Sequence[dict[str, Any]]) -> str:
    """Per probe state: each op's Q(s, op) beside the truth (critic units, and raw), then the calibration."""
    lines = []
    for r in records:
        lines.append(f"update {r['update']}, probe {r['probe']} ({r['name']}), K = {r['rollouts']} rollouts per op")
        lines.append(f"  {'op':<18}{'critic Q':>10}{'truth (critic units) [95 % CI]':>34}{'raw return [95 % CI]':>30}")
        for i, op in enumerate(r["ops"]):
            lines.append(f"  {op:<18}{r['critic'][i]:>10.3f}{_interval_text(r['target'], i):>34}"
                         f"{_interval_text(r['raw'], i):>30}")
        agreement = "-" if r["pair_agreement"] is None else f"{r['pair_agreement']:.2f}"
        lines.append(f"  mean |Q - truth| {r['mae']:.3f}; op pairs ordered as the truth orders them: {agreement}; "
                     f"best op agrees: {'yes' if r['best_agrees'] else 'no'}; {r['seconds']:.1f} s")
    return "\n".join(lines)


def _interval_text(columns: dict[str, list], i: int) -> str:
    low, high = columns["low"][i], columns["high"][i]
    bounds = "" if low is None else f" [{low:.3f}, {high:.3f}]"
    return f"{columns['mean'][i]:.3f}{bounds}"
