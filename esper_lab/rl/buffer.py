"""RolloutBuffer: one row per env, `[num_envs, max_steps, ...]` (Esper's `TamiyoRolloutBuffer`).

Each row is one env's contiguous episode, so GAE never mixes envs and the PPO update can re-run a row as ONE
sequence from the hidden state stored at its first step. One `add(...)` call stores one step for every env at once,
with the exact tensors the policy saw and returned:

    obs [E, D]  (NORMALISED)     blueprint_indices [E, S] int64   actions / log_probs: {head: [E]}
    value [E]   op_values [E, 6]  reward / done / truncated [E]      masks: {head: [E, k] bool}
    hidden (h, c), each [layers, E, H]: the PRE-step state fed into the policy at this step

Every field is required: forgetting one (say `blueprint_indices`, the addendum's "pitfall 2: buffer schema
mismatch") raises a `BufferSchemaError` naming it at `add` time, not a KeyError deep inside PPO.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from esper_lab.actions import HEAD_NAMES, NUM_OPS, head_sizes


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
    actions: dict[str, torch.Tensor]  # {head: [E, T] int64}
    log_probs: dict[str, torch.Tensor]  # {head: [E, T] float32}
    values: torch.Tensor  # [E, T]
    op_values: torch.Tensor  # [E, T, 6]
    rewards: torch.Tensor  # [E, T]
    dones: torch.Tensor  # [E, T] bool
    truncated: torch.Tensor  # [E, T] bool
    bootstrap_values: torch.Tensor  # [E, T], non-zero only where set_bootstrap wrote
    masks: dict[str, torch.Tensor]  # {head: [E, T, k] bool}
    hidden_h: torch.Tensor  # [E, T, layers, H] pre-step hidden
    hidden_c: torch.Tensor  # [E, T, layers, H]
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
        self.actions = {h: torch.zeros(E, T, dtype=torch.long, device=dev) for h in HEAD_NAMES}  # [E, T]
        self.log_probs = {h: torch.zeros(E, T, device=dev) for h in HEAD_NAMES}  # [E, T]
        self.values = torch.zeros(E, T, device=dev)  # [E, T]
        self.op_values = torch.zeros(E, T, NUM_OPS, device=dev)  # [E, T, 6]
        self.rewards = torch.zeros(E, T, device=dev)  # [E, T]
        self.dones = torch.zeros(E, T, dtype=torch.bool, device=dev)  # [E, T]
        self.truncated = torch.zeros(E, T, dtype=torch.bool, device=dev)  # [E, T]
        self.bootstrap_values = torch.zeros(E, T, device=dev)  # [E, T]
        self.masks = {h: torch.ones(E, T, k, dtype=torch.bool, device=dev) for h, k in self.head_sizes.items()}
        self.hidden_h = torch.zeros(E, T, lstm_layers, lstm_hidden_dim, device=dev)  # [E, T, layers, H]
        self.hidden_c = torch.zeros(E, T, lstm_layers, lstm_hidden_dim, device=dev)  # [E, T, layers, H]
        self.step = 0  # steps stored, the same for every env

    def __len__(self) -> int:
        return self.step

    @property
    def full(self) -> bool:
        return self.step >= self.max_steps

    def reset(self) -> None:
        """Forget every stored step (the tensors are overwritten by the next rollout; bootstraps are zeroed)."""
        self.step = 0
        self.bootstrap_values.zero_()
        self.dones.zero_()
        self.truncated.zero_()

    def add(
        self,
        *,
        obs: torch.Tensor | None = None,
        blueprint_indices: torch.Tensor | None = None,
        actions: dict[str, torch.Tensor] | None = None,
        log_probs: dict[str, torch.Tensor] | None = None,
        value: torch.Tensor | None = None,
        op_values: torch.Tensor | None = None,
        reward: torch.Tensor | None = None,
        done: torch.Tensor | None = None,
        truncated: torch.Tensor | None = None,
        masks: dict[str, torch.Tensor] | None = None,
        hidden: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Store one step for all E envs. Every argument is required (keyword only); shapes in the module docstring.

        Raises `BufferSchemaError` naming any missing field, missing head or wrong shape, and `BufferFullError`
        naming the capacity when the buffer already holds `max_steps` steps. Everything is detached and copied.
        """
        given = dict(obs=obs, blueprint_indices=blueprint_indices, actions=actions, log_probs=log_probs, value=value,
                     op_values=op_values, reward=reward, done=done, truncated=truncated, masks=masks, hidden=hidden)
        missing = [name for name, x in given.items() if x is None]
        if missing:
            raise BufferSchemaError(
                f"RolloutBuffer.add: missing field(s) {missing}. Every step must store all of {list(given)} "
                "(the policy's view of the step: normalised obs, blueprint_indices, actions, per-head log-probs, "
                "value, op_values, masks and the pre-step hidden state)."
            )
        if self.step >= self.max_steps:
            raise BufferFullError(
                f"RolloutBuffer.add: buffer is full, capacity is max_steps={self.max_steps} steps per env "
                f"(num_envs={self.num_envs}); call reset() before the next rollout."
            )
        E, S, L, H = self.num_envs, self.num_slots, self.lstm_layers, self.lstm_hidden_dim
        for name, head_dict in (("actions", actions), ("log_probs", log_probs), ("masks", masks)):
            absent = [h for h in HEAD_NAMES if h not in head_dict]
            extra = [h for h in head_dict if h not in HEAD_NAMES]
            if absent or extra:
                raise BufferSchemaError(f"RolloutBuffer.add: {name} must have exactly the heads {list(HEAD_NAMES)}; "
                                        f"missing {absent}, unknown {extra}")
        if not (isinstance(hidden, (tuple, list)) and len(hidden) == 2):
            raise BufferSchemaError("RolloutBuffer.add: hidden must be the pre-step (h, c) pair")

        t = self.step
        self._put("obs", self.obs, t, obs, (E, self.obs_dim))
        self._put("blueprint_indices", self.blueprint_indices, t, blueprint_indices, (E, S))
        for h in HEAD_NAMES:
            self._put(f"actions[{h!r}]", self.actions[h], t, actions[h], (E,))
            self._put(f"log_probs[{h!r}]", self.log_probs[h], t, log_probs[h], (E,))
            self._put(f"masks[{h!r}]", self.masks[h], t, masks[h], (E, self.head_sizes[h]))
        self._put("value", self.values, t, value, (E,))
        self._put("op_values", self.op_values, t, op_values, (E, NUM_OPS))
        self._put("reward", self.rewards, t, reward, (E,))
        self._put("done", self.dones, t, done, (E,))
        self._put("truncated", self.truncated, t, truncated, (E,))
        h, c = hidden
        for name, x, store in (("hidden h", h, self.hidden_h), ("hidden c", c, self.hidden_c)):
            if tuple(x.shape) != (L, E, H):
                raise BufferSchemaError(f"RolloutBuffer.add: {name} has shape {tuple(x.shape)}, "
                                        f"expected [layers, E, H] = {[L, E, H]}")
            store[:, t] = x.detach().transpose(0, 1).to(store.device, store.dtype)  # [E, L, H]
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

        `initial_hidden` is the pre-step hidden of step 0 as `(h0, c0)`, each `[layers, E, H]`, ready for the LSTM.
        """
        if self.step == 0:
            raise RuntimeError("RolloutBuffer.batched: the buffer is empty")
        T = self.step
        h0 = self.hidden_h[:, 0].transpose(0, 1).contiguous()  # [E, L, H] -> [L, E, H]
        c0 = self.hidden_c[:, 0].transpose(0, 1).contiguous()  # [L, E, H]
        return RolloutBatch(
            obs=self.obs[:, :T],
            blueprint_indices=self.blueprint_indices[:, :T],
            actions={h: a[:, :T] for h, a in self.actions.items()},
            log_probs={h: lp[:, :T] for h, lp in self.log_probs.items()},
            values=self.values[:, :T],
            op_values=self.op_values[:, :T],
            rewards=self.rewards[:, :T],
            dones=self.dones[:, :T],
            truncated=self.truncated[:, :T],
            bootstrap_values=self.bootstrap_values[:, :T],
            masks={h: m[:, :T] for h, m in self.masks.items()},
            hidden_h=self.hidden_h[:, :T],
            hidden_c=self.hidden_c[:, :T],
            valid=torch.ones(self.num_envs, T, dtype=torch.bool, device=self.device),
            initial_hidden=(h0, c0),
        )
