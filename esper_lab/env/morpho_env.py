"""The morphogenetic world: one host CNN training on digits, with three seed slots.

`World` is the plain-Python world the vector env steps; `MorphoEnv` wraps one as a `gymnasium.Env`.

One episode = `max_epochs` steps. The order inside the world is Esper's (its vectorized training loop): for each epoch,
train the host and its seeds, validate, measure counterfactuals, let the policy see it, execute its lifecycle action,
compute the reward, tick the slots. The gym step boundary falls after the tick, so:

    reset()   fresh host, empty slots; train + validate epoch 1                  -> report of epoch 1
    step(a)   execute `a` on what the policy saw; reward; tick the slots;
              then (unless this was the last step) train + validate the next epoch -> report

The policy therefore always acts on the freshest validation, the bootstrap state after the last step is the
post-tick state (Esper commit f1702fd (tachyon-beep/esper-lite): bootstrap value now taken after the epoch's
lifecycle tick, not before it), and the final step's terminal reward uses the last epoch's accuracy.

Determinism: each world owns a `torch.Generator` seeded with the episode seed (data order, and through
`torch.random.fork_rng` the initial weights of the host and of every seed). The global torch RNG is neither read nor
changed, so the same seed gives the same episode whatever else the process does.

Snapshots: `world.get_state()` is everything that decides the world's future as bytes (host, seeds, Adam state,
slots, signals, counters, the generator's state; not the training data, which is re-loaded from its cache), and
`World.from_state(state)` / `world.set_state(state)` bring it back: the clone continues exactly as the original would.

Speed (the step is dominated by per-op overhead, the tensors are tiny): a world runs its ops on `cfg.env_threads`
torch threads (1; a second thread only adds waiting, badly so when other processes share the cores), unwired slots
are left out of the forward pass, and `WorldAdam` updates host and seeds with one fused kernel call per minibatch.
"""

from __future__ import annotations

import io
import pickle
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from gymnasium import spaces

from esper_lab.actions import (
    ALPHA_SPEED_TICKS,
    ALPHA_TARGET_VALUES,
    BLUEPRINT_NULL_INDEX,
    CNN_BLUEPRINTS,
    DEFAULT_SLOT_IDS,
    HEAD_NAMES,
    NUM_HEADS,
    STYLE_DECODE,
    TEMPO_EPOCHS,
    AlphaSpeedAction,
    AlphaTargetAction,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    SeedStage,
    SlotView,
    TempoAction,
    compute_action_masks,
    head_masks,
    head_sizes,
    is_op_legal_for_slot,
)
from esper_lab.config import WorldConfig
from esper_lab.env.blueprints import make_seed
from esper_lab.env.data import load_digits_data
from esper_lab.env.host import make_host, param_count
from esper_lab.env.reward import RewardBreakdown, StepOutcome, compute_reward
from esper_lab.env.slot import COUNTERFACTUAL_STAGES, LIVE_STAGES, FORWARD_STAGES, SeedSlot, SlotReport, decode_curve
from esper_lab import features

PLATEAU_DELTA = 0.5  # an epoch that improves validation accuracy by less than this (pp) extends the plateau
STABILIZE_WINDOW = 3  # host_stabilized: relative val-loss improvement over this many epochs...
STABILIZE_THRESHOLD = 0.03  # ...below 3% (latched once reached)
SUMMARY_KEY = "summary"
"""The step-info key of the env's own episode summary (`World.summary()`), set on an episode's last step by every
world face: World, VectorEnv, the process and Ray backends, MorphoEnv."""
EPISODE_STATS_KEY = "episode"
"""The step-info key of the ecosystem's episode statistics `{"r": return, "l": length, "t": seconds}` (gymnasium's
`RecordEpisodeStatistics`, Stable-Baselines3's `Monitor` and logger), set by MorphoEnv on an episode's last step."""


class WorldAdam:
    """Adam (torch's defaults, no weight decay) over a list of parameters that grows at germination and shrinks when
    a seed is cleared, as ONE fused kernel call per step. Same numbers as `torch.optim.Adam(fused=True)` (a test
    checks it) without its per-step Python bookkeeping, which costs more than the kernel for this many small tensors.
    Parameters without a gradient this step (a seed that is not wired in) are skipped, as `torch.optim` does."""

    def __init__(self, params: Sequence[nn.Parameter], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.params: list[nn.Parameter] = []
        self.exp_avg: list[torch.Tensor] = []
        self.exp_avg_sq: list[torch.Tensor] = []
        self.steps: list[torch.Tensor] = []
        self.add(params)

    def add(self, params: Sequence[nn.Parameter]) -> None:
        for p in params:
            self.params.append(p)
            self.exp_avg.append(torch.zeros_like(p))
            self.exp_avg_sq.append(torch.zeros_like(p))
            self.steps.append(torch.zeros(()))

    def remove(self, params: Sequence[nn.Parameter]) -> None:
        gone = {id(p) for p in params}
        keep = [i for i, p in enumerate(self.params) if id(p) not in gone]
        for name in ("params", "exp_avg", "exp_avg_sq", "steps"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        params, steps = [self.params[i] for i in live], [self.steps[i] for i in live]
        torch._foreach_add_(steps, 1.0)
        torch._fused_adam_(
            params, [p.grad for p in params], [self.exp_avg[i] for i in live], [self.exp_avg_sq[i] for i in live],
            [], steps, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0, eps=self.eps,
            amsgrad=False, maximize=False,
        )


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch threads, then restore the previous count (switching costs ~1 us)."""
    previous = torch.get_num_threads()
    if n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class WorldReport:
    """An immutable snapshot of one world as the policy sees it; `features.py` turns it into numbers."""

    epoch: int
    """Host epochs trained so far (1 after reset, `max_epochs` at the end)."""
    max_epochs: int
    val_loss: float
    val_acc: float
    """Validation accuracy, percent."""
    prev_val_loss: float
    prev_val_acc: float
    train_loss: float
    loss_history: tuple[float, ...]
    """Validation losses of the (up to 5) epochs before this one, oldest first."""
    acc_history: tuple[float, ...]
    best_acc: float
    best_loss: float
    plateau_epochs: int
    host_stabilized: bool
    host_params: int
    seed_params: int
    """Parameters of the seeds present (live or fossilized)."""
    slots: tuple[SlotReport | None, ...]
    last_action_success: bool
    last_op: LifecycleOp
    seeds_germinated: int
    max_seeds: int | None

    @property
    def num_slots(self) -> int:
        return len(self.slots)

    def slot_views(self) -> tuple[SlotView, ...]:
        """What the masks need, per slot."""
        return tuple(
            SlotView(stage=None) if s is None else SlotView(stage=s.stage, alpha_mode=s.alpha_mode, seed_age=s.seed_age)
            for s in self.slots
        )

    def action_masks(self) -> dict[str, torch.Tensor]:
        """Legal-action masks `{head: bool [k]}` and the op-conditioned slot masks (`actions.compute_action_masks`)."""
        return compute_action_masks(self.slot_views(), max_seeds=self.max_seeds, seeds_used=self.seeds_germinated)

    def can_execute(self, op: LifecycleOp, slot: int) -> bool:
        """Whether `op` on `slot` is legal (executes as itself rather than as WAIT)."""
        can_germinate = self.max_seeds is None or self.seeds_germinated < self.max_seeds
        return is_op_legal_for_slot(LifecycleOp(op), self.slot_views()[slot], can_germinate=can_germinate)


@dataclass(frozen=True)
class Action:
    """One factored action, decoded from the 8 head values in `HEAD_NAMES` order."""

    slot: int
    blueprint: int
    style: int
    tempo: int
    alpha_target: int
    alpha_speed: int
    alpha_curve: int
    op: int

    @classmethod
    def from_heads(cls, values: Sequence[int], num_slots: int) -> Action:
        """Raises ValueError for a wrong length or a value outside its head's range (a bug, not an illegal move)."""
        values = [int(v) for v in values]
        if len(values) != NUM_HEADS:
            raise ValueError(f"an action has {NUM_HEADS} heads {HEAD_NAMES}, got {len(values)} values")
        sizes = head_sizes(num_slots)
        for name, value in zip(HEAD_NAMES, values):
            if not 0 <= value < sizes[name]:
                raise ValueError(f"action head {name!r} = {value} out of range [0, {sizes[name]})")
        return cls(*values)


class World:
    """One host and its slots. `reset(seed)`, then `step(action)` `max_epochs` times."""

    def __init__(self, cfg: WorldConfig):
        self.cfg = cfg
        self.data = load_digits_data(cfg.data_seed)
        self.host: nn.Module | None = None
        self.slots: list[SeedSlot] = []
        self.timings: dict[str, float] = {}

    # -- snapshots ---------------------------------------------------------------------------------------------

    def get_state(self) -> bytes:
        """Everything that decides this world's future, as bytes: host, seeds and gates, the Adam state (its
        parameter list pickled as the same objects as the host's and seeds'), slots, signal history, counters and
        the generator's state. Any time: before reset, mid-episode, after the episode's end. Only for a world that
        `World.step` steps (the 'sequential' engine): a batched engine keeps the parameters in its own stacks.

        The bytes are a pickle of this trusted in-process object, meant for our own processes (the worker pipe),
        never for storage: `from_state` runs `pickle.loads`, so never feed it bytes from elsewhere. Tensors travel as
        numpy arrays (`_SnapshotPickler`), so loading never goes through `torch.load`."""
        buffer = io.BytesIO()
        _SnapshotPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(self)
        return buffer.getvalue()

    @classmethod
    def from_state(cls, state: bytes, cfg: WorldConfig | None = None) -> World:
        """The world `get_state()` saved, continuing exactly as the original would. With `cfg`, raises ValueError
        unless the snapshot's world has that config. Trusted bytes only (see `get_state`)."""
        world = pickle.loads(state)
        if not isinstance(world, cls):
            raise ValueError(f"not a World snapshot: the bytes hold a {type(world).__name__}")
        if cfg is not None and world.cfg != cfg:
            raise ValueError(f"the snapshot is of a world with another config: {world.cfg} (this world: {cfg})")
        return world

    def set_state(self, state: bytes) -> None:
        """Become the world `get_state()` saved (of a world with this config, else ValueError, changing nothing)."""
        self.__dict__ = World.from_state(state, self.cfg).__dict__

    def __getstate__(self) -> dict[str, Any]:
        """What pickling keeps: every attribute but the training data (the same for every world of `cfg`, cached per
        process), with the generator as its state tensor."""
        state = {k: v for k, v in self.__dict__.items() if k != "data"}
        if "gen" in state:  # a world that has started an episode
            state["gen"] = self.gen.get_state()  # uint8 [n]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "gen" in state:
            gen = torch.Generator()
            gen.set_state(state["gen"])
            state["gen"] = gen
        self.__dict__.update(state)
        self.data = load_digits_data(self.cfg.data_seed)  # cached: every world of a process shares it

    # -- episode start -------------------------------------------------------------------------------------------

    def reset(self, seed: int) -> WorldReport:
        """Fresh host and empty slots for the episode `seed`; trains and validates epoch 1."""
        with torch_threads(self.cfg.env_threads):
            return self._reset(seed)

    def _reset(self, seed: int) -> WorldReport:
        self.start_episode(seed)
        self._run_epoch()
        return self.report()

    def start_episode(self, seed: int) -> None:
        """Fresh host, empty slots and signals for the episode `seed`; no epoch trained yet (`reset` trains epoch 1;
        the batched engine trains it for many worlds at once)."""
        self.seed = int(seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._draw_seed())
            self.host = make_host(self.cfg.host)
        channels = self.host.injection_shape(DEFAULT_SLOT_IDS[0])[0]
        self.slots = [SeedSlot(slot_id, channels) for slot_id in DEFAULT_SLOT_IDS]
        self.slot_map = dict(zip(DEFAULT_SLOT_IDS, self.slots))
        self.optimizer = WorldAdam(list(self.host.parameters()), lr=self.cfg.host_lr)
        self.seed_params_by_slot: dict[int, list[nn.Parameter]] = {}
        self.host_params = param_count(self.host)
        self.epoch, self.done = 0, False
        self.val_losses: list[float] = []
        self.val_accs: list[float] = []
        self.best_acc, self.best_loss = 0.0, float("inf")
        self.plateau_epochs, self.host_stabilized = 0, False
        self.last_action_success, self.last_op = True, LifecycleOp.WAIT
        self.seeds_germinated = self.seeds_pruned = self.illegal_actions = 0
        self.episode_return = 0.0

    def _draw_seed(self) -> int:
        return int(torch.randint(0, 2**62, (1,), generator=self.gen))

    # -- one step -------------------------------------------------------------------------------------------------

    def step(self, values: Sequence[int]) -> tuple[float, bool, dict[str, Any]]:
        """Execute one action, reward it, tick, train the next epoch. Returns `(reward, truncated, info)`; on the
        episode's last step `info[SUMMARY_KEY]` is `summary()`."""
        with torch_threads(self.cfg.env_threads):
            return self._step(values)

    def _step(self, values: Sequence[int]) -> tuple[float, bool, dict[str, Any]]:
        reward, terminal, info = self.apply_action(self.check_action(values))
        if not terminal:
            self._run_epoch()
        return reward, terminal, info

    def check_action(self, values: Sequence[int]) -> Action:
        """The decoded action; raises (changing nothing) before reset, after the episode's end, or for a head value
        out of range."""
        if self.host is None:
            raise RuntimeError("World.step called before reset()")
        if self.done:
            raise RuntimeError(f"World.step after the episode ended (epoch {self.epoch} of {self.cfg.max_epochs}); "
                               "call reset()")
        return Action.from_heads(values, len(self.slots))

    def apply_action(self, action: Action) -> tuple[float, bool, dict[str, Any]]:
        """Everything of a step but the next host epoch: execute `action`, reward it, tick the slots. Returns
        `(reward, terminal, info)`; on the episode's last step `info[SUMMARY_KEY]` is `summary()`."""
        before = self.slot_reports()
        requested = LifecycleOp(action.op)
        legal = self._is_legal(action)
        executed = requested if legal else LifecycleOp.WAIT
        succeeded = self._execute(action) if legal else False
        events = self._collect_events()
        for slot in self.slots:
            slot.step_epoch()
        events += self._collect_events()
        terminal = self.epoch >= self.cfg.max_epochs
        outcome = StepOutcome(
            requested_op=requested, executed_op=executed, slot=action.slot, succeeded=succeeded,
            val_acc=self.val_accs[-1], acc_delta=self.val_accs[-1] - self._prev(self.val_accs),
            before=before, after=self.slot_reports(), host_params=self.host_params, terminal=terminal,
            start_acc=self.val_accs[0], best_acc=self.best_acc,
        )
        terms = compute_reward(outcome, self.cfg.reward)
        self.last_action_success = succeeded
        self.last_op = requested
        self.illegal_actions += int(not legal)
        self.episode_return += terms.total
        info = self._step_info(action, requested, executed, legal, succeeded, terms, events)
        self.done = terminal
        if terminal:
            info[SUMMARY_KEY] = self.summary()
        return terms.total, terminal, info

    def _is_legal(self, a: Action) -> bool:
        op = LifecycleOp(a.op)
        if op == LifecycleOp.GERMINATE and BlueprintAction(a.blueprint) not in CNN_BLUEPRINTS:
            return False
        can_germinate = self.cfg.max_seeds is None or self.seeds_germinated < self.cfg.max_seeds
        return is_op_legal_for_slot(op, self.slots[a.slot].view(), can_germinate=can_germinate)

    def _execute(self, a: Action) -> bool:
        """Run a legal action. Returns whether it changed the world (False when a gate held the seed)."""
        op, slot = LifecycleOp(a.op), self.slots[a.slot]
        if op == LifecycleOp.WAIT:
            return True
        if op == LifecycleOp.GERMINATE:
            self._germinate(a, slot)
            return True
        if op == LifecycleOp.ADVANCE:
            return slot.advance()
        if op == LifecycleOp.FOSSILIZE:
            return slot.fossilize()
        curve, steepness = decode_curve(a.alpha_curve)
        ticks = ALPHA_SPEED_TICKS[AlphaSpeedAction(a.alpha_speed)]
        if op == LifecycleOp.PRUNE:
            slot.prune(ticks, curve, steepness)
            self.seeds_pruned += 1
            return True
        blend_op = STYLE_DECODE[GerminationStyle(a.style)][1]
        slot.set_alpha_target(ALPHA_TARGET_VALUES[AlphaTargetAction(a.alpha_target)], ticks, curve, steepness, blend_op)
        return True

    def _germinate(self, a: Action, slot: SeedSlot) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._draw_seed())
            seed = make_seed(a.blueprint, slot.channels)
            gate = nn.Linear(slot.channels, 1)
        slot.germinate(
            seed, gate, GerminationStyle(a.style), TEMPO_EPOCHS[TempoAction(a.tempo)],
            ALPHA_TARGET_VALUES[AlphaTargetAction(a.alpha_target)], acc_at_germination=self.val_accs[-1],
        )
        params = [*seed.parameters(), *gate.parameters()]
        self.optimizer.add(params)
        self.seed_params_by_slot[a.slot] = params
        self.seeds_germinated += 1

    def _collect_events(self) -> list[dict]:
        """Lifecycle events since the last call, stamped with the epoch; frees the optimizer state of cleared
        slots."""
        events = []
        for i, slot in enumerate(self.slots):
            for event in slot.pop_events():
                events.append({**event, "epoch": self.epoch})
                if event["to"] == SeedStage.DORMANT.name:
                    self._drop_seed_params(i)
        return events

    def _drop_seed_params(self, slot_index: int) -> None:
        """Remove a cleared seed's parameters and Adam state from the optimizer."""
        self.optimizer.remove(self.seed_params_by_slot.pop(slot_index))

    def _step_info(self, a, requested, executed, legal, succeeded, terms: RewardBreakdown, events) -> dict:
        return {
            "epoch": self.epoch,
            "val_acc": self.val_accs[-1],
            "val_loss": self.val_losses[-1],
            "op": requested.name,
            "slot": a.slot,
            "executed_op": executed.name,
            "illegal": not legal,
            "success": succeeded,
            "reward_terms": terms.as_dict(),
            "events": events,
        }

    # -- one host epoch -------------------------------------------------------------------------------------------

    def _run_epoch(self) -> None:
        """Train one epoch, validate, measure counterfactuals, update the signal history."""
        t0, c0 = time.perf_counter(), time.thread_time()
        train_loss = self._train_epoch()
        t1, c1 = time.perf_counter(), time.thread_time()
        val_loss, val_acc = self._validate()
        t2, c2 = time.perf_counter(), time.thread_time()
        self.finish_epoch(train_loss, val_loss, val_acc, epoch_timings(t0, t1, t2, c0, c1, c2))

    def finish_epoch(self, train_loss: float, val_loss: float, val_acc: float, timings: dict[str, float]) -> None:
        """Count the epoch just trained and validated, and update the signal history."""
        self.timings = timings
        self.epoch += 1
        self._record_signals(train_loss, val_loss, val_acc)

    def _train_epoch(self) -> float:
        """One pass over the shuffled training set; returns the mean training loss."""
        x, y = self.data.x_train, self.data.y_train
        perm = torch.randperm(len(y), generator=self.gen)
        x, y = x[perm], y[perm]  # [N, 1, 8, 8], [N]
        wired = {s.slot_id: s for s in self.slots if s.stage in FORWARD_STAGES}  # empty slots cost nothing
        bs, total = self.cfg.host_batch_size, torch.zeros(())
        for i in range(0, len(y), bs):
            loss = F.cross_entropy(self.host(x[i:i + bs], wired), y[i:i + bs])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * len(y[i:i + bs])
        self._record_gradients()
        return total.item() / len(y)

    def _record_gradients(self) -> None:
        """Seed gradient norms of the epoch's last minibatch."""
        for slot in self.slots:
            if slot.seed is None or slot.stage not in FORWARD_STAGES:
                continue
            grads = [p.grad for p in slot.seed.parameters() if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else 0.0
            slot.record_gradient(float(norm))

    @torch.inference_mode()
    def _validate(self) -> tuple[float, float]:
        """Validation loss and accuracy (percent); then every measured seed's counterfactual."""
        x, y = self.data.x_val, self.data.y_val
        logits = self.host(x, self.slot_map)  # [N_val, 10]
        loss, acc = F.cross_entropy(logits, y).item(), _accuracy(logits, y)
        self._measure_counterfactuals(acc)
        return loss, acc

    def _measure_counterfactuals(self, acc: float) -> None:
        """For every seed from BLENDING on: contribution = accuracy with it minus accuracy with its alpha forced to
        0 (pp); with `cfg.interactions`, also the pairwise interaction sum
        `sum_j [acc - acc(-i) - acc(-j) + acc(-i,-j)]`."""
        x, y = self.data.x_val, self.data.y_val
        without = {g: _accuracy(self.host(x, self.slot_map, skip=g), y) for g in self.counterfactual_groups()}
        self.record_counterfactuals(acc, without)

    def _measured(self) -> list[str]:
        """Slots whose seed is measured by a counterfactual this epoch."""
        return [s.slot_id for s in self.slots if s.stage in COUNTERFACTUAL_STAGES]

    def counterfactual_groups(self) -> list[frozenset[str]]:
        """The slot sets whose seeds a counterfactual pass switches off this epoch: every measured slot alone, and
        with `cfg.interactions` every pair of them."""
        measured = self._measured()
        groups = [frozenset({sid}) for sid in measured]
        if self.cfg.interactions:
            groups += list({frozenset({a, b}) for a in measured for b in measured if a != b})
        return groups

    def record_counterfactuals(self, acc: float, without: dict[frozenset[str], float]) -> None:
        """Store each measured seed's contribution (and interaction sum) from the validation accuracy `acc` and the
        accuracy `without[g]` of every pass of `counterfactual_groups()`."""
        measured = self._measured()
        for sid in measured:
            slot, alone = self.slot_map[sid], without[frozenset({sid})]
            slot.record_counterfactual(acc - alone)
            others = [o for o in measured if o != sid] if self.cfg.interactions else []
            slot.interaction_sum = sum(acc - alone - without[frozenset({o})] + without[frozenset({sid, o})]
                                       for o in others)

    def _record_signals(self, train_loss: float, val_loss: float, val_acc: float) -> None:
        prev_acc = self.val_accs[-1] if self.val_accs else 0.0
        self.train_loss = train_loss
        self.val_losses.append(val_loss)
        self.val_accs.append(val_acc)
        self.plateau_epochs = self.plateau_epochs + 1 if val_acc - prev_acc < PLATEAU_DELTA else 0
        self.best_acc, self.best_loss = max(self.best_acc, val_acc), min(self.best_loss, val_loss)
        if len(self.val_losses) > STABILIZE_WINDOW and not self.host_stabilized:
            old = self.val_losses[-1 - STABILIZE_WINDOW]
            self.host_stabilized = (old - val_loss) / max(old, 1e-8) < STABILIZE_THRESHOLD

    @staticmethod
    def _prev(values: list[float]) -> float:
        """The value before the latest (the latest itself on the first epoch)."""
        return values[-2] if len(values) > 1 else values[-1]

    # -- what others read -----------------------------------------------------------------------------------------

    def slot_reports(self) -> tuple[SlotReport | None, ...]:
        return tuple(slot.report() for slot in self.slots)

    def report(self) -> WorldReport:
        """The snapshot the policy sees now."""
        slots = self.slot_reports()
        return WorldReport(
            epoch=self.epoch,
            max_epochs=self.cfg.max_epochs,
            val_loss=self.val_losses[-1],
            val_acc=self.val_accs[-1],
            prev_val_loss=self._prev(self.val_losses),
            prev_val_acc=self._prev(self.val_accs),
            train_loss=self.train_loss,
            loss_history=tuple(self.val_losses[-1 - features.HISTORY_LEN:-1]),
            acc_history=tuple(self.val_accs[-1 - features.HISTORY_LEN:-1]),
            best_acc=self.best_acc,
            best_loss=self.best_loss,
            plateau_epochs=self.plateau_epochs,
            host_stabilized=self.host_stabilized,
            host_params=self.host_params,
            seed_params=sum(s.seed_params for s in slots if s is not None and s.stage in LIVE_STAGES),
            slots=slots,
            last_action_success=self.last_action_success,
            last_op=self.last_op,
            seeds_germinated=self.seeds_germinated,
            max_seeds=self.cfg.max_seeds,
        )

    def action_masks(self) -> dict[str, torch.Tensor]:
        return self.report().action_masks()

    def summary(self) -> dict[str, Any]:
        """The episode so far: final accuracy, seed counts and parameters, return."""
        slots = [s for s in self.slot_reports() if s is not None]
        fossils = [s for s in slots if s.stage == SeedStage.FOSSILIZED]
        return {
            "final_val_acc": self.val_accs[-1],
            "best_val_acc": self.best_acc,
            "fossilized": len(fossils),
            "pruned": self.seeds_pruned,
            "germinated": self.seeds_germinated,
            "seed_params": sum(s.seed_params for s in slots if s.stage in LIVE_STAGES),
            "fossilized_params": sum(s.seed_params for s in fossils),
            "host_params": self.host_params,
            "illegal_actions": self.illegal_actions,
            "return": self.episode_return,
            "epochs": self.epoch,
        }


class _SnapshotPickler(pickle.Pickler):
    """Pickles a tensor as a numpy array (and whether it is a Parameter, and requires grad), so unpickling never
    calls `torch.load` (plain pickle of a tensor does, with weights_only=False). Pickle's memo still keeps shared
    objects shared: a parameter in the optimizer's list comes back as the same object as in its module."""

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, torch.Tensor):
            return NotImplemented
        if obj.device.type != "cpu":
            raise ValueError(f"world snapshots hold CPU tensors only, found one on {obj.device}")
        return _rebuild_tensor, (obj.detach().numpy(), obj.requires_grad and obj.is_leaf,
                                 isinstance(obj, nn.Parameter))


def _rebuild_tensor(array: np.ndarray, requires_grad: bool, parameter: bool) -> torch.Tensor:
    """The tensor `_SnapshotPickler` saved as `array` (copied: the tensor owns its memory)."""
    tensor = torch.tensor(array)
    return nn.Parameter(tensor, requires_grad=requires_grad) if parameter else tensor.requires_grad_(requires_grad)


def for_each_world(worlds: Sequence[World], fn: Callable[[World, Any], Any], args: Sequence[Any],
                   labels: Sequence[int] | None = None) -> list[Any]:
    """`[fn(world, arg)]` in order. With `labels` (the worlds' env ids), an error is re-raised as a RuntimeError
    naming the world: "env 3: ValueError: ..."."""
    if labels is None:
        return [fn(world, arg) for world, arg in zip(worlds, args)]
    out = []
    for label, world, arg in zip(labels, worlds, args):
        try:
            out.append(fn(world, arg))
        except Exception as exc:
            raise RuntimeError(f"env {label}: {type(exc).__name__}: {exc}") from exc
    return out


def stack_masks(per_world: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """E worlds' `action_masks()` -> `{key: bool [E, ...]}` for every key (the heads and `OP_SLOT_KEY`)."""
    return {key: torch.stack([m[key] for m in per_world]) for key in per_world[0]}


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Percent of rows of `logits [N, 10]` whose argmax equals the label."""
    return accuracies(logits[None], y)[0]


def accuracies(logits: torch.Tensor, y: torch.Tensor) -> list[float]:
    """`logits [P, N, 10]` of P worlds on the same labels `y [N]` -> each world's percent of rows whose argmax is
    the label."""
    return [hits * 100.0 for hits in (logits.argmax(dim=2) == y).float().mean(dim=1).tolist()]


def epoch_timings(t0: float, t1: float, t2: float, c0: float, c1: float, c2: float, share: float = 1.0) -> dict:
    """`World.timings` from the wall clock (`t*`) and this thread's CPU clock (`c*`) at the start of training, the
    start of validation and the end of the epoch, in milliseconds, times `share` (a world's part of a batched
    epoch)."""
    return {"train_ms": (t1 - t0) * 1e3 * share, "validate_ms": (t2 - t1) * 1e3 * share,  # wall clock
            "train_cpu_ms": (c1 - c0) * 1e3 * share, "validate_cpu_ms": (c2 - c1) * 1e3 * share}  # this thread's CPU


# --- gymnasium ----------------------------------------------------------------------------------------------------


def observation_space(num_slots: int = len(DEFAULT_SLOT_IDS)) -> spaces.Dict:
    """The gym observation: the Obs-V3 vector and the blueprint indices (-1 = empty)."""
    return spaces.Dict({
        "obs": spaces.Box(-1.0, 1.0, (features.obs_dim(num_slots),), np.float32),
        "blueprint_indices": spaces.Box(-1, BLUEPRINT_NULL_INDEX - 1, (num_slots,), np.int64),
    })


def action_space(num_slots: int = len(DEFAULT_SLOT_IDS)) -> spaces.MultiDiscrete:
    """The 8 factored heads in `HEAD_NAMES` order."""
    sizes = head_sizes(num_slots)
    return spaces.MultiDiscrete(np.array([sizes[h] for h in HEAD_NAMES], dtype=np.int64))


class MorphoEnv(gym.Env):
    """One `World` as a gymnasium env. Observations carry exactly the numbers of `features.py`.

    `reset(seed=s)` starts episode `s`; `reset()` without a seed starts the next episode of this env's stream (the
    constructor's `seed` seeds that stream). Episodes end by truncation at `max_epochs`; `terminated` is always False.
    An illegal action executes as WAIT, and `info["illegal"]` / `info["executed_op"]` say so. The last step's info
    holds the ecosystem's episode statistics `info["episode"] = {"r", "l", "t"}` (`EPISODE_STATS_KEY`) and the
    world's own summary `info[SUMMARY_KEY]`, so gymnasium's and Stable-Baselines3's tools (sb3-contrib's MaskablePPO
    and RecurrentPPO included) work on it without a wrapper.
    """

    metadata = {"render_modes": []}

    def __init__(self, cfg: WorldConfig | None = None, seed: int | None = None):
        super().__init__()
        self.cfg = cfg or WorldConfig()
        self.world = World(self.cfg)
        self.action_space = action_space()
        self.observation_space = observation_space()
        self._first_seed = seed
        self.timings: dict[str, float] = {}
        self._episode_start, self._episode_length = time.perf_counter(), 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._first_seed is not None:
            seed = self._first_seed
        self._first_seed = None
        super().reset(seed=seed)
        episode_seed = seed if seed is not None else int(self.np_random.integers(2**62))
        self._episode_start, self._episode_length = time.perf_counter(), 0
        self.world.reset(episode_seed)
        return self._observation(), {"episode_seed": episode_seed, "val_acc": self.world.val_accs[-1]}

    def step(self, action):
        reward, truncated, info = self.world.step(np.asarray(action).reshape(-1).tolist())
        self._episode_length += 1
        if truncated:
            info[EPISODE_STATS_KEY] = self._episode_statistics()
        return self._observation(), float(reward), False, truncated, info

    def _episode_statistics(self) -> dict[str, float | int]:
        """`{"r": return (float), "l": steps (int), "t": seconds since reset (float)}`, as gymnasium's
        `RecordEpisodeStatistics` reports them; `r` is the sum of the rewards `step` returned."""
        return {"r": float(self.world.episode_return), "l": self._episode_length,
                "t": round(time.perf_counter() - self._episode_start, 6)}

    def _observation(self) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        obs, idx = features.batch_obs_to_features([self.world.report()])  # [1, 121], [1, 3]
        self.timings = {**self.world.timings, "features_ms": (time.perf_counter() - t0) * 1e3}  # the last step's
        return {"obs": obs[0].numpy(), "blueprint_indices": idx[0].numpy()}

    def report(self) -> WorldReport:
        """What `features.py` consumes for this world."""
        return self.world.report()

    def action_masks(self) -> np.ndarray:
        """The legal-action mask as masked-PPO libraries (sb3-contrib's MaskablePPO, ...) read it: ONE flat bool
        array of length `sum(action_space.nvec)`, the per-head masks concatenated in `HEAD_NAMES` order.

        A flat per-head mask cannot say that the legal slots depend on the op: its slot part allows every enabled
        slot and its op part every op legal in SOME slot. Such libraries sample the heads independently, so they can
        pick an op on a slot where it is illegal; the world executes that combination as WAIT and reports
        `info["illegal"]`. `action_masks_by_head()` has the op-conditioned slot table."""
        masks = head_masks(self.world.action_masks())
        return torch.cat([masks[h] for h in HEAD_NAMES]).numpy()

    def action_masks_by_head(self) -> dict[str, torch.Tensor]:
        """Legal-action masks `{head: bool [k]}` in `HEAD_NAMES` order, plus `actions.OP_SLOT_KEY`: the
        op-conditioned slot masks `[NUM_OPS, S]` (what our own policy samples the slot under)."""
        return self.world.action_masks()
