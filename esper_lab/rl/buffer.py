"""RolloutBuffer: one row per env, `[num_envs, max_steps, ...]` (Esper's `TamiyoRolloutBuffer`).

Each row is one env's contiguous episode, so GAE never mixes envs and the PPO update can re-run a row as ONE
sequence from the hidden state the row started from. `reset(initial_hidden)` starts a rollout with that state
(h0, c0), each `[layers, E, H]`; one `add(...)` call then stores one step for every env at once, with the exact
tensors the policy saw and returned:

    obs [E, D]  (NORMALISED)     blueprint_indices [E, S] int64   actions / log_probs: [E, 8] (joint, HEAD_NAMES order)
    value [E]   op_values [E, 6]  reward / done / truncated [E]      executed_op [E] int64 (what the world ran)
    masks: {head: [E, k] bool}, the mask each head was SAMPLED under (with conditional masks the slot mask is the
           one of the op drawn), so re-evaluating the stored actions reproduces the stored log-probs exactly

Only the initial hidden state is kept: the update re-runs whole rows, so the state at any later step is recomputed
by the LSTM itself. Every field is required: forgetting one (say `blueprint_indices`, the addendum's "pitfall 2:
buffer schema mismatch") raises a `BufferSchemaError` naming it at `add` time, not a KeyError deep inside PPO.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from esper_lab.actions import HEAD_NAMES, NUM_HEADS, NUM_OPS, head_sizes


class BufferSchemaError(ValueError):
    """A step given to `RolloutBuffer.add` is missing a field or has a wrong shape."""


class BufferFullError(RuntimeError):
    """`RolloutBuffer.add` was called past `max_steps`."""


@dataclass
class RolloutBatch:
    """The filled part of a buffer, every field `[E, T, ...]` with T = steps stored (shapes below).

    The PPO update re-runs row e as one sequence: `evaluate_actions(obs[e], blueprint_indices[e], actions[e],
    hidden=(h0[:, e], c0[:, e]), masks[e])` must reproduce `log_probs[e]` and `values[e]` before any step.
    """

    obs: torch.Tensor  # [E, T, D] float32, normalised
    blueprint_indices: torch.Tensor  # [E, T, S] int64
    actions: torch.Tensor  # [E, T, 8] int64, columns in HEAD_NAMES order
    log_probs: torch.Tensor  # [E, T, 8] float32
    values: torch.Tensor  # [E, T]
    op_values: torch.Tensor  # [E, T, 6]
    executed_ops: torch.Tensor  # [E, T] int64: the op the world executed (WAIT where the requested one could not run)
    rewards: torch.Tensor  # [E, T]
    dones: torch.Tensor  # [E, T] bool
    truncated: torch.Tensor  # [E, T] bool
    bootstrap_values: torch.Tensor  # [E, T], non-zero only where set_bootstrap wrote
    masks: dict[str, torch.Tensor]  # {head: [E, T, k] bool}
    valid: torch.Tensor  # [E, T] bool; all True here (every env stores every step), honoured by GAE users and PPO
    initial_hidden: tuple[torch.Tensor, torch.Tensor]  # (h0, c0), each [layers, E, H]

    @property
    def num_envs(self) -> int:
        return self.obs.shape[0]

    @property
    def num_steps(self) -> int:
        return self.obs.shape[1]

    def rows(self, index: torch.Tensor) -> "RolloutBatch":
        """The same batch restricted to env rows `index` (a 1-D long tensor), for minibatches of whole episodes."""
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "initial_hidden":
                picked[f.name] = (value[0][:, index], value[1][:, index])  # [layers, e, H]
            elif isinstance(value, dict):
                picked[f.name] = {k: v[index] for k, v in value.items()}
            else:
                picked[f.name] = value[index]
        return RolloutBatch(**picked)


class RolloutBuffer:
    """Pre-allocated per-env storage for one rollout of at most `max_steps` steps per env.

    Args:
        num_envs: E, the envs stepped together.
        max_steps: capacity per env (the episode length).
        obs_dim: D, the feature size the policy takes.
        num_slots: S, slots per world (sets the slot head size and blueprint_indices width).
        lstm_hidden_dim: H.
        lstm_layers: layers of the policy LSTM.
        device: where the tensors live.
    """

    def __init__(
        self,
        num_envs: int,
        max_steps: int,
        obs_dim: int,
        num_slots: int,
        lstm_hidden_dim: int,
        lstm_layers: int = 1,
        device: torch.device | str = "cpu",
    ):
        if num_envs < 1 or max_steps < 1:
            raise ValueError(f"RolloutBuffer: num_envs ({num_envs}) and max_steps ({max_steps}) must be at least 1")
        self.num_envs, self.max_steps, self.obs_dim = num_envs, max_steps, obs_dim
        self.num_slots, self.lstm_hidden_dim, self.lstm_layers = num_slots, lstm_hidden_dim, lstm_layers
        self.device = torch.device(device)
        self.head_sizes = head_sizes(num_slots)
        E, T, dev = num_envs, max_steps, self.device

        self.obs = torch.zeros(E, T, obs_dim, device=dev)  # [E, T, D]
        self.blueprint_indices = torch.zeros(E, T, num_slots, dtype=torch.long, device=dev)  # [E, T, S]
        self.actions = torch.zeros(E, T, NUM_HEADS, dtype=torch.long, device=dev)  # [E, T, 8]
        self.log_probs = torch.zeros(E, T, NUM_HEADS, device=dev)  # [E, T, 8]
        self.values = torch.zeros(E, T, device=dev)  # [E, T]
        self.op_values = torch.zeros(E, T, NUM_OPS, device=dev)  # [E, T, 6]
        self.executed_ops = torch.zeros(E, T, dtype=torch.long, device=dev)  # [E, T]
        self.rewards = torch.zeros(E, T, device=dev)  # [E, T]
        self.dones = torch.zeros(E, T, dtype=torch.bool, device=dev)  # [E, T]
        self.truncated = torch.zeros(E, T, dtype=torch.bool, device=dev)  # [E, T]
        self.bootstrap_values = torch.zeros(E, T, device=dev)  # [E, T]
        self.masks = {h: torch.ones(E, T, k, dtype=torch.bool, device=dev) for h, k in self.head_sizes.items()}
        self.initial_hidden: tuple[torch.Tensor, torch.Tensor] | None = None  # (h0, c0), each [layers, E, H]
        self.step = 0  # steps stored, the same for every env

    def __len__(self) -> int:
        return self.step

    @property
    def full(self) -> bool:
        return self.step >= self.max_steps

    def reset(self, initial_hidden: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Start a rollout whose rows begin from `initial_hidden` = (h0, c0), each `[layers, E, H]`: forget every
        stored step (the tensors are overwritten by the next rollout; bootstraps are zeroed)."""
        L, E, H = self.lstm_layers, self.num_envs, self.lstm_hidden_dim
        if not (isinstance(initial_hidden, (tuple, list)) and len(initial_hidden) == 2):
            raise BufferSchemaError("RolloutBuffer.reset: initial_hidden must be the (h, c) pair the rows start from")
        for name, x in zip(("h", "c"), initial_hidden):
            if tuple(x.shape) != (L, E, H):
                raise BufferSchemaError(f"RolloutBuffer.reset: initial hidden {name} has shape {tuple(x.shape)}, "
                                        f"expected [layers, E, H] = {[L, E, H]}")
        self.initial_hidden = tuple(x.detach().to(self.device).clone() for x in initial_hidden)  # type: ignore
        self.step = 0
        self.bootstrap_values.zero_()
        self.dones.zero_()
        self.truncated.zero_()

    def add(
        self,
        *,
        obs: torch.Tensor | None = None,
        blueprint_indices: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
        log_probs: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        op_values: torch.Tensor | None = None,
        executed_op: torch.Tensor | None = None,
        reward: torch.Tensor | None = None,
        done: torch.Tensor | None = None,
        truncated: torch.Tensor | None = None,
        masks: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Store one step for all E envs. Every argument is required (keyword only); shapes in the module docstring.

        Raises `BufferSchemaError` naming any missing field, missing head or wrong shape, and `BufferFullError`
        naming the capacity when the buffer already holds `max_steps` steps. Everything is detached and copied.
        """
        given = dict(obs=obs, blueprint_indices=blueprint_indices, actions=actions, log_probs=log_probs, value=value,
                     op_values=op_values, executed_op=executed_op, reward=reward, done=done, truncated=truncated,
                     masks=masks)
        missing = [name for name, x in given.items() if x is None]
        if missing:
            raise BufferSchemaError(
                f"RolloutBuffer.add: missing field(s) {missing}. Every step must store all of {list(given)} "
                "(the policy's view of the step: normalised obs, blueprint_indices, the joint action [E, 8], its "
                "per-head log-probs [E, 8], value, op_values, the executed op and the masks it was sampled under)."
            )
        if self.step >= self.max_steps:
            raise BufferFullError(
                f"RolloutBuffer.add: buffer is full, capacity is max_steps={self.max_steps} steps per env "
                f"(num_envs={self.num_envs}); call reset() before the next rollout."
            )
        if self.initial_hidden is None:
            raise BufferSchemaError("RolloutBuffer.add: call reset(initial_hidden) first: the PPO update re-runs "
                                    "each row from the hidden state it started from")
        E, S = self.num_envs, self.num_slots
        absent = [h for h in HEAD_NAMES if h not in masks]
        extra = [h for h in masks if h not in HEAD_NAMES]
        if absent or extra:
            raise BufferSchemaError(f"RolloutBuffer.add: masks must have exactly the heads {list(HEAD_NAMES)}; "
                                    f"missing {absent}, unknown {extra}")

        t = self.step
        self._put("obs", self.obs, t, obs, (E, self.obs_dim))
        self._put("blueprint_indices", self.blueprint_indices, t, blueprint_indices, (E, S))
        self._put("actions", self.actions, t, actions, (E, NUM_HEADS))
        self._put("log_probs", self.log_probs, t, log_probs, (E, NUM_HEADS))
        for h in HEAD_NAMES:
            self._put(f"masks[{h!r}]", self.masks[h], t, masks[h], (E, self.head_sizes[h]))
        self._put("value", self.values, t, value, (E,))
        self._put("op_values", self.op_values, t, op_values, (E, NUM_OPS))
        self._put("executed_op", self.executed_ops, t, executed_op, (E,))
        self._put("reward", self.rewards, t, reward, (E,))
        self._put("done", self.dones, t, done, (E,))
        self._put("truncated", self.truncated, t, truncated, (E,))
        self.step += 1

    def _put(self, name: str, store: torch.Tensor, t: int, x: torch.Tensor, shape: tuple[int, ...]) -> None:
        if not isinstance(x, torch.Tensor):
            raise BufferSchemaError(f"RolloutBuffer.add: {name} must be a tensor, got {type(x).__name__}")
        if tuple(x.shape) != shape:
            raise BufferSchemaError(f"RolloutBuffer.add: {name} has shape {tuple(x.shape)}, expected {list(shape)}")
        store[:, t] = x.detach().to(store.device, store.dtype)

    def set_bootstrap(self, values: torch.Tensor) -> None:
        """Store V(post-action state) `[E]` at the last stored step, the value a truncated episode bootstraps from."""
        if self.step == 0:
            raise RuntimeError("RolloutBuffer.set_bootstrap: no step stored yet")
        if tuple(values.shape) != (self.num_envs,):
            raise BufferSchemaError(f"RolloutBuffer.set_bootstrap: values has shape {tuple(values.shape)}, "
                                    f"expected [{self.num_envs}]")
        self.bootstrap_values[:, self.step - 1] = values.detach().to(self.device, self.bootstrap_values.dtype)

    def batched(self) -> RolloutBatch:
        """The stored steps as a `RolloutBatch` of `[E, T, ...]` tensors (views into the buffer, T = steps stored).

        `initial_hidden` is the state the rows started from, `(h0, c0)`, each `[layers, E, H]`, ready for the LSTM.
        """
        if self.step == 0 or self.initial_hidden is None:
            raise RuntimeError("RolloutBuffer.batched: the buffer is empty")
        T = self.step
        return RolloutBatch(
            obs=self.obs[:, :T],
            blueprint_indices=self.blueprint_indices[:, :T],
            actions=self.actions[:, :T],
            log_probs=self.log_probs[:, :T],
            values=self.values[:, :T],
            op_values=self.op_values[:, :T],
            executed_ops=self.executed_ops[:, :T],
            rewards=self.rewards[:, :T],
            dones=self.dones[:, :T],
            truncated=self.truncated[:, :T],
            bootstrap_values=self.bootstrap_values[:, :T],
            masks={h: m[:, :T] for h, m in self.masks.items()},
            valid=torch.ones(self.num_envs, T, dtype=torch.bool, device=self.device),
            initial_hidden=self.initial_hidden,
        )
