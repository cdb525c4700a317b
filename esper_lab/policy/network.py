"""Policy Network V2 (Esper's Tamiyo Next, Phase 4): a recurrent, factored actor-critic.

    obs [B,T,D] ++ BlueprintEmbedding(bp_idx) [B,T,4S] -> Linear -> LayerNorm -> ReLU      [B,T,512]
    -> LSTM(512) -> LayerNorm                                                             [B,T,512]  "lstm_out"
    -> eight policy heads, 512 -> 256 -> k (blueprint: 512 -> 512 -> 256 -> 13)             [B,T,k] each
    -> critic: Q(s, op) = value_head(cat(lstm_out, one_hot(op)))  (+ V(s) in critic "v")  [B,T]

The one rule the original broke on its first day: ONE op sample serves both the action and the value. forward()
samples the op and conditions the value on it; get_action() returns that same op as `actions["op"]` (or, when
deterministic, the argmax op with the value recomputed for it); evaluate_actions() conditions on the STORED op.

Critic modes (`critic=`), i.e. what `value` (the PPO baseline) means:
- "q_op": Q(s, op), Phase 4 as shipped. The baseline depends on the op it scores, which biases the op head's
  gradient (Esper commit 6a27b8e (tachyon-beep/esper-lite) replaced it with an op-independent V(s) for that reason).
- "v": an op-independent V(s) head `512 -> 256 -> 1`. The Q head is trained only as an auxiliary on DETACHED
  features: `EvaluateOutput.q_value` = Q(s, stored op) on `lstm_out.detach()`; the PPO code adds
  `q_aux_coef * (q_value - returns)^2`, which moves the Q head and nothing else.
- "q_marginal": sum over legal ops of pi(op|s).detach() * Q(s, op), an op-independent baseline built from Q.
`op_values` [.., 6] is Q(s, every op) in all three modes (telemetry, the dashboard's per-op values).

All eight heads are packed into one padded `[B, T, 8, 13]` MaskedCategorical (padding = illegal), so a rollout step
costs one log-softmax and one random draw, and the rollout and update paths compute log-probs identically.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from esper_lab.actions import (
    EMPTY_BLUEPRINT_INDEX,
    HEAD_INDEX,
    HEAD_NAMES,
    NUM_BLUEPRINTS,
    NUM_OPS,
    OP_SLOT_KEY,
    head_sizes,
    unpack_heads,
)
from esper_lab.config import CRITIC_MODES
from esper_lab.policy.distributions import MaskedCategorical


@contextmanager
def onednn(enabled: bool) -> Iterator[None]:
    """oneDNN on or off for the block (torch's own `backends.mkldnn.flags` also flips TF32 flags and warns)."""
    previous = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(enabled)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(previous)


def _use_onednn(x: torch.Tensor) -> bool:
    """Whether the LSTM call on `x [B, T, F]` should use oneDNN: for sequences and anything with a graph (the PPO
    update, where oneDNN's fused kernel wins), not for a single no-grad step, where torch's native kernel is faster
    even with malloc tuned at process start (docs/performance.md, "Inference")."""
    return x.shape[1] > 1 or torch.is_grad_enabled()

Hidden = tuple[torch.Tensor, torch.Tensor]
EMBED_DIM = 4
OP = HEAD_INDEX["op"]  # row of the op head in the packed [.., 8, 13] layout


class BlueprintEmbedding(nn.Module):
    """Learned vector per blueprint, plus a learned null row for an empty slot.

    `num_blueprints + 1` rows of `embed_dim`; index -1 (empty slot) maps to row `num_blueprints` (13 by default,
    `actions.BLUEPRINT_NULL_INDEX`). Init N(0, 0.02), no padding_idx: the null vector is trainable and non-zero.

    forward: `indices [..., S] int64 -> [..., S, embed_dim]`. Raises ValueError for a non-int64 dtype or an index
    below -1 or at least `num_blueprints`, naming the bad values.
    """

    def __init__(self, num_blueprints: int = NUM_BLUEPRINTS, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.num_blueprints = num_blueprints
        self.embedding = nn.Embedding(num_blueprints + 1, embed_dim)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=0.02)
        self.register_buffer("_null_idx", torch.tensor(num_blueprints, dtype=torch.int64))

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.dtype != torch.int64:
            raise ValueError(f"blueprint_indices must be int64, got {indices.dtype}")
        bad = (indices < EMPTY_BLUEPRINT_INDEX) | (indices >= self.num_blueprints)
        if bool(bad.any()):
            values = sorted(set(indices[bad].tolist()))
            raise ValueError(
                f"blueprint_indices: invalid indices {values}; expected -1 (empty slot) or 0..{self.num_blueprints - 1}"
            )
        rows = torch.where(indices == EMPTY_BLUEPRINT_INDEX, self._null_idx, indices)  # [..., S]
        return self.embedding(rows)  # [..., S, embed_dim]

    def table_weight(self) -> torch.Tensor:
        """The whole table, detached: `[num_blueprints + 1, embed_dim]`, last row = the null (empty-slot) vector."""
        return self.embedding.weight.detach()


class ForwardOutput(NamedTuple):
    """forward(): masked logits of every head, the value of the op it sampled, Q of every op, the new hidden."""

    op_logits: torch.Tensor  # [B, T, 6]; illegal entries = MASKED_LOGIT_VALUE
    slot_logits: torch.Tensor  # [B, T, num_slots]
    blueprint_logits: torch.Tensor  # [B, T, 13]
    style_logits: torch.Tensor  # [B, T, 4]
    tempo_logits: torch.Tensor  # [B, T, 3]
    alpha_target_logits: torch.Tensor  # [B, T, 3]
    alpha_speed_logits: torch.Tensor  # [B, T, 4]
    alpha_curve_logits: torch.Tensor  # [B, T, 5]
    value: torch.Tensor  # [B, T] baseline for sampled_op (Q(s, sampled_op) in critic "q_op")
    sampled_op: torch.Tensor  # [B, T] int64
    op_values: torch.Tensor  # [B, T, 6] Q(s, op) for every op
    hidden: Hidden  # (h, c), each [1, B, H]


class EvaluateOutput(NamedTuple):
    """evaluate_actions(): the first four fields are Phase 4's 4-tuple `(log_probs, value, entropy, hidden)`."""

    log_probs: dict[str, torch.Tensor]  # head -> [B, T], log pi of the stored action
    value: torch.Tensor  # [B, T] baseline for the STORED op (Q(s, stored op) in critic "q_op")
    entropy: dict[str, torch.Tensor]  # head -> [B, T], normalised to [0, 1]
    hidden: Hidden  # (h, c) after the sequence, each [1, B, H]
    q_value: torch.Tensor  # [B, T] Q(s, stored op) on DETACHED lstm_out: the auxiliary target in critic "v"


@dataclass(frozen=True)
class GetActionResult:
    """get_action(): one step for B worlds. `actions["op"]` IS `sampled_op`, the op `value` was computed for.

    `joint_actions` / `joint_log_probs` are the same numbers as one `[B, 8]` tensor each, columns in HEAD_NAMES
    order: the form the env, the buffer and the PPO update use (`actions[h]` is a view of a column)."""

    actions: dict[str, torch.Tensor]  # head -> [B] int64
    log_probs: dict[str, torch.Tensor]  # head -> [B]
    value: torch.Tensor  # [B]
    sampled_op: torch.Tensor  # [B] int64
    op_values: torch.Tensor  # [B, 6] Q(s, op) for every op
    hidden: Hidden  # (h, c), each [1, B, H]; ordinary tensors (no graph, not inference-mode)
    joint_actions: torch.Tensor  # [B, 8] int64
    joint_log_probs: torch.Tensor  # [B, 8]
    masks: dict[str, torch.Tensor] | None  # head -> [B, k]: the mask each head was sampled under (None: no masks)


def _mlp(*sizes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FactoredRecurrentActorCritic(nn.Module):
    """Recurrent factored actor-critic with blueprint embeddings and an op-conditioned critic.

    Args:
        state_dim: D, the observation width (121 for Obs V3 here, 114 in the Phase 4 plan).
        num_slots: S, seed slots; the slot head has S choices and the embedding adds 4*S inputs.
        feature_dim: width of the feature net.
        lstm_hidden_dim: H, LSTM width; the heads' hidden width is H // 2.
        critic: "q_op", "v" or "q_marginal" (see the module docstring).

    Modules: `blueprint_embedding`, `feature_net`, `lstm`, `lstm_ln`, `heads` (a ModuleDict over HEAD_NAMES),
    `value_head` (the Q head, `(H + 6) -> H/2 -> 1`) and, in critic "v" only, `state_value_head` (`H -> H/2 -> 1`).
    """

    def __init__(
        self,
        state_dim: int,
        num_slots: int = 3,
        *,
        feature_dim: int = 512,
        lstm_hidden_dim: int = 512,
        critic: str = "q_op",
    ):
        super().__init__()
        if critic not in CRITIC_MODES:
            raise ValueError(f"unknown critic {critic!r}; choose one of {CRITIC_MODES}")
        self.state_dim, self.num_slots, self.critic = state_dim, num_slots, critic
        self.lstm_hidden_dim = lstm_hidden_dim
        self.head_sizes = head_sizes(num_slots)
        self.max_head_size = max(self.head_sizes.values())
        head_hidden = lstm_hidden_dim // 2

        self.blueprint_embedding = BlueprintEmbedding(NUM_BLUEPRINTS, EMBED_DIM)
        self.feature_net = nn.Sequential(
            nn.Linear(state_dim + EMBED_DIM * num_slots, feature_dim), nn.LayerNorm(feature_dim), nn.ReLU()
        )
        self.lstm = nn.LSTM(feature_dim, lstm_hidden_dim, num_layers=1, batch_first=True)
        self.lstm_ln = nn.LayerNorm(lstm_hidden_dim)  # against magnitude drift of the LSTM output
        self.heads = nn.ModuleDict(
            {
                name: _mlp(lstm_hidden_dim, lstm_hidden_dim, head_hidden, k)
                if name == "blueprint"
                else _mlp(lstm_hidden_dim, head_hidden, k)
                for name, k in self.head_sizes.items()
            }
        )
        self.value_head = _mlp(lstm_hidden_dim + NUM_OPS, head_hidden, 1)  # Q(s, op)
        self.state_value_head = _mlp(lstm_hidden_dim, head_hidden, 1) if critic == "v" else None  # V(s)

        # [8, 13] bool: which entries of the packed head layout exist (False = padding, always illegal).
        legal = torch.zeros(len(HEAD_NAMES), self.max_head_size, dtype=torch.bool)
        for i, k in enumerate(self.head_sizes.values()):
            legal[i, :k] = True
        self.register_buffer("_head_entries", legal, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """Orthogonal sqrt(2) with zero bias; policy-head outputs 0.01, critic outputs 1.0; LSTM forget bias 1."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.orthogonal_(module.weight, gain=math.sqrt(2))
                nn.init.zeros_(module.bias)
        for head in self.heads.values():
            nn.init.orthogonal_(head[-1].weight, gain=0.01)
        for critic_head in (self.value_head, self.state_value_head):
            if critic_head is not None:
                nn.init.orthogonal_(critic_head[-1].weight, gain=1.0)
        H = self.lstm_hidden_dim
        for name, param in self.lstm.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(param, gain=1.0)
            else:
                nn.init.zeros_(param)
        with torch.no_grad():  # gate order i, f, g, o; b_ih + b_hh is the effective bias, so set one of them
            self.lstm.bias_ih_l0[H : 2 * H].fill_(1.0)

    # ------------------------------------------------------------------------------------------------------------
    # trunk and critic pieces

    def initial_hidden(self, batch: int) -> Hidden:
        """Zero (h, c), each `[1, batch, H]`, on the model's device; ordinary tensors usable in autograd."""
        p = self.value_head[0].weight
        zeros = torch.zeros(1, batch, self.lstm_hidden_dim, device=p.device, dtype=p.dtype)
        return zeros, zeros.clone()

    def encode(
        self, state: torch.Tensor, blueprint_indices: torch.Tensor, hidden: Hidden | None = None
    ) -> tuple[torch.Tensor, Hidden]:
        """The shared trunk: `state [B,T,D]`, `blueprint_indices [B,T,S]` -> `lstm_out [B,T,H]`, `(h, c)`."""
        self._check_inputs(state, blueprint_indices, hidden)
        B = state.shape[0]
        emb = self.blueprint_embedding(blueprint_indices)  # [B, T, S, 4]
        x = torch.cat([state, emb.flatten(-2)], dim=-1)  # [B, T, D + 4S]
        x = self.feature_net(x)  # [B, T, F]
        with onednn(_use_onednn(x)):
            out, hidden = self.lstm(x, self.initial_hidden(B) if hidden is None else hidden)  # [B, T, H]
        return self.lstm_ln(out), hidden  # [B, T, H]

    def _compute_value(self, lstm_out: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
        """Q(s, op): `value_head(cat(lstm_out, one_hot(op)))`. `[..., H]`, `[...]` int64 -> `[...]`."""
        one_hot = F.one_hot(op, NUM_OPS).to(lstm_out.dtype)  # [..., 6]
        return self.value_head(torch.cat([lstm_out, one_hot], dim=-1)).squeeze(-1)  # [...]

    def q_values(self, lstm_out: torch.Tensor) -> torch.Tensor:
        """Q(s, op) for all six ops in one pass: `[..., H] -> [..., 6]`.

        The first layer is linear in cat(lstm_out, one_hot), so W @ cat(h, e_op) = W_h @ h + W[:, H + op]:
        one matmul for the state part, plus a broadcast per op. Equals `_compute_value` per op up to rounding.
        """
        first, last = self.value_head[0], self.value_head[-1]
        H = lstm_out.shape[-1]
        pre = F.linear(lstm_out, first.weight[:, :H], first.bias)  # [..., H/2]
        pre = pre.unsqueeze(-2) + first.weight[:, H:].t()  # [..., 6, H/2]
        return last(F.relu(pre)).squeeze(-1)  # [..., 6]

    def _baseline(
        self,
        lstm_out: torch.Tensor,
        op: torch.Tensor,
        op_probs: torch.Tensor,
        op_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The PPO baseline for `op` in this critic mode: `[..., H]`, `[...]`, `[..., 6]` -> `[...]`. Given
        `op_values` (Q for every op, already computed), critic "q_op" reads Q(s, op) from them: no second pass."""
        if self.critic == "q_op":
            if op_values is not None:
                return op_values.gather(-1, op.unsqueeze(-1)).squeeze(-1)  # [...]
            return self._compute_value(lstm_out, op)
        if self.critic == "v":
            return self.state_value_head(lstm_out).squeeze(-1)  # [...]
        q = self.q_values(lstm_out) if op_values is None else op_values  # [..., 6]
        return (op_probs.detach() * q).sum(-1)  # [...]; illegal ops have probability exactly 0

    # ------------------------------------------------------------------------------------------------------------
    # heads, masks, distributions

    def _distribution(self, lstm_out: torch.Tensor, masks: Mapping[str, torch.Tensor] | None) -> MaskedCategorical:
        """All eight heads as one MaskedCategorical over the packed `[B, T, 8, 13]` layout."""
        return self._masked(self._head_logits(lstm_out), masks)

    def _head_logits(self, lstm_out: torch.Tensor) -> torch.Tensor:
        """Every head's logits, padded and packed: `[B, T, H] -> [B, T, 8, 13]`."""
        K = self.max_head_size
        return torch.stack(
            [F.pad(self.heads[name](lstm_out), (0, K - k)) for name, k in self.head_sizes.items()], dim=-2
        )  # [B, T, 8, 13]

    def _masked(self, logits: torch.Tensor, masks: Mapping[str, torch.Tensor] | None) -> MaskedCategorical:
        """`logits [B, T, 8, 13]` under the per-head masks `{head: bool [B, T, k]}`."""
        return MaskedCategorical(logits, self._pack_masks(masks, logits.shape[:-2]), row_names=HEAD_NAMES)

    def _pack_masks(self, masks: Mapping[str, torch.Tensor] | None, batch_shape: torch.Size) -> torch.Tensor:
        """`{head: bool [B, T, k]}` (a missing head = all legal) -> `[B, T, 8, 13]` bool."""
        packed = self._head_entries.expand(*batch_shape, *self._head_entries.shape)  # [B, T, 8, 13]
        if not masks:
            return packed
        unknown = set(masks) - set(HEAD_NAMES) - {OP_SLOT_KEY}
        if unknown:
            raise ValueError(f"masks: unknown heads {sorted(unknown)}; expected keys from {HEAD_NAMES}")
        packed = packed.clone()
        for i, (name, k) in enumerate(self.head_sizes.items()):
            mask = masks.get(name)  # the op-conditioned table (OP_SLOT_KEY), if present, is get_action's alone
            if mask is None:
                continue
            if mask.dtype != torch.bool:
                raise ValueError(f"masks[{name!r}] must be bool, got {mask.dtype}")
            if tuple(mask.shape) != (*batch_shape, k):
                raise ValueError(f"masks[{name!r}] has shape {tuple(mask.shape)}, expected {(*batch_shape, k)}")
            packed[..., i, :k] = mask
        return packed

    def _pack_actions(self, actions: Mapping[str, torch.Tensor] | torch.Tensor, batch_shape: torch.Size) -> torch.Tensor:
        """`{head: int64 [B, T]}` or the joint `[B, T, 8]` -> `[B, T, 8]`."""
        if isinstance(actions, torch.Tensor):
            if actions.dtype != torch.int64 or tuple(actions.shape) != (*batch_shape, len(HEAD_NAMES)):
                raise ValueError(f"actions must be int64 {(*batch_shape, len(HEAD_NAMES))} (one column per head), "
                                 f"got {actions.dtype} {tuple(actions.shape)}")
            return actions
        missing = [name for name in HEAD_NAMES if name not in actions]
        if missing:
            raise ValueError(f"actions: missing heads {missing}")
        for name in HEAD_NAMES:
            a = actions[name]
            if a.dtype != torch.int64 or tuple(a.shape) != tuple(batch_shape):
                raise ValueError(
                    f"actions[{name!r}] must be int64 {tuple(batch_shape)}, got {a.dtype} {tuple(a.shape)}"
                )
        return torch.stack([actions[name] for name in HEAD_NAMES], dim=-1)  # [B, T, 8]

    # ------------------------------------------------------------------------------------------------------------
    # the three entry points

    def forward(
        self,
        state: torch.Tensor,
        blueprint_indices: torch.Tensor,
        hidden: Hidden | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> ForwardOutput:
        """Rollout-style pass over a sequence: sample an op, return Q(s, sampled op) and everything else.

        Args:
            state: `[B, T, D]` float. blueprint_indices: `[B, T, S]` int64 (-1 = empty slot).
            hidden: (h, c), each `[1, B, H]`, or None for zeros. masks: `{head: bool [B, T, k]}`.
        Returns:
            ForwardOutput: masked logits `[B, T, k]` per head, `value [B, T]` for `sampled_op [B, T]`,
            `op_values [B, T, 6]`, `hidden`.
        """
        lstm_out, hidden = self.encode(state, blueprint_indices, hidden)  # [B, T, H]
        dist = self._distribution(lstm_out, masks)  # [B, T, 8, 13]
        op_probs = dist.probs[..., OP, :NUM_OPS]  # [B, T, 6]
        sampled_op = dist.sample()[..., OP]  # [B, T]; the same draw get_action makes
        op_values = self.q_values(lstm_out)  # [B, T, 6]
        value = self._baseline(lstm_out, sampled_op, op_probs, op_values)  # [B, T]
        logits = {
            f"{name}_logits": dist.masked_logits[..., i, :k] for i, (name, k) in enumerate(self.head_sizes.items())
        }
        return ForwardOutput(**logits, value=value, sampled_op=sampled_op, op_values=op_values, hidden=hidden)

    @torch.no_grad()
    def get_action(
        self,
        state: torch.Tensor,
        blueprint_indices: torch.Tensor,
        hidden: Hidden | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
        deterministic: bool = False,
    ) -> GetActionResult:
        """One rollout step for B worlds, without building a graph.

        Args:
            state: `[B, D]` or `[B, 1, D]`. blueprint_indices: `[B, S]` or `[B, 1, S]` int64.
            hidden: (h, c), each `[1, B, H]`, or None for zeros. masks: `{head: bool [B, k] or [B, 1, k]}`.
            deterministic: argmax every head (the bootstrap); otherwise one sample per head.
        Returns:
            GetActionResult with `actions` / `log_probs` (`[B]` per head), `value [B]` = the baseline for
            `actions["op"]` (recomputed for the argmax op when deterministic), `sampled_op [B]` (the same tensor as
            `actions["op"]`), `op_values [B, 6]`, `hidden`.
        """
        state, blueprint_indices = self._one_step(state, "state"), self._one_step(blueprint_indices, "blueprint_indices")
        op_slot = masks.get(OP_SLOT_KEY) if masks else None  # [B, 6, S]: conditional masks (None: independent)
        if masks:
            masks = {name: self._one_step(m, f"masks[{name!r}]") for name, m in masks.items() if name != OP_SLOT_KEY}
        lstm_out, hidden = self.encode(state, blueprint_indices, hidden)  # [B, 1, H]
        logits = self._head_logits(lstm_out)  # [B, 1, 8, 13]
        dist = self._masked(logits, masks)
        chosen = dist.mode() if deterministic else dist.sample()  # [B, 1, 8]
        if op_slot is not None:  # op first, then every other head with the slot mask of the op just drawn
            op = chosen[..., OP]  # [B, 1]
            masks = {**(masks or {}), "slot": self._slot_mask_for(op_slot, op)}  # slot: [B, 1, S]
            dist = self._masked(logits, masks)  # the op row is unchanged, so the op's log-prob is too
            chosen = dist.mode() if deterministic else dist.sample()  # [B, 1, 8]
            chosen[..., OP] = op  # keep the op the slot mask was chosen for
        log_probs = dist.log_probs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)  # [B, 1, 8]
        op = chosen[..., OP]  # [B, 1]
        op_values = self.q_values(lstm_out)  # [B, 1, 6]
        value = self._baseline(lstm_out, op, dist.probs[..., OP, :NUM_OPS], op_values)  # [B, 1]
        joint_actions, joint_log_probs = chosen[:, 0], log_probs[:, 0]  # [B, 8] each
        actions = unpack_heads(joint_actions)  # [B] each
        return GetActionResult(
            actions=actions,
            log_probs=unpack_heads(joint_log_probs),
            value=value[:, 0],
            sampled_op=actions["op"],
            op_values=op_values[:, 0],
            hidden=hidden,
            joint_actions=joint_actions,
            joint_log_probs=joint_log_probs,
            masks={name: m[:, 0] for name, m in masks.items()} if masks else None,
        )

    def _slot_mask_for(self, op_slot: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
        """The conditional slot mask of the chosen op: `op_slot [B, 6, S]`, `op [B, 1]` -> `[B, 1, S]`."""
        B, _, S = op_slot.shape
        if tuple(op_slot.shape) != (B, NUM_OPS, self.num_slots) or op_slot.dtype != torch.bool:
            raise ValueError(f"masks[{OP_SLOT_KEY!r}] must be bool [B, {NUM_OPS}, {self.num_slots}], got "
                             f"{op_slot.dtype} {tuple(op_slot.shape)}")
        return op_slot.gather(1, op.unsqueeze(-1).expand(B, 1, S))  # [B, 1, S]

    def evaluate_actions(
        self,
        state: torch.Tensor,
        blueprint_indices: torch.Tensor,
        actions: Mapping[str, torch.Tensor] | torch.Tensor,
        hidden: Hidden | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
        value_op: torch.Tensor | None = None,
    ) -> EvaluateOutput:
        """PPO-update pass: log-probs and entropies of stored actions, the baseline for the STORED op.

        Args:
            state: `[B, T, D]`. blueprint_indices: `[B, T, S]` int64, the ones the policy saw.
            actions: `{head: int64 [B, T]}` for every head in HEAD_NAMES, or the joint `[B, T, 8]` (columns in
                HEAD_NAMES order), legal under `masks`.
            hidden: (h, c) at the start of the sequences, or None for zeros. masks: `{head: bool [B, T, k]}`, the
                masks each head was sampled under.
            value_op: `[B, T]` int64, the op `value` and `q_value` are conditioned on; default the stored op. The
                trainer passes the EXECUTED op, which differs from the stored one only where an action could not
                execute as requested (it ran as WAIT): Q(s, op) is then fitted on the op that really ran.
        Returns:
            EvaluateOutput(log_probs {head: [B, T]}, value [B, T], entropy {head: [B, T]}, hidden,
            q_value [B, T] = Q(s, value_op) on detached features: add it as an auxiliary loss in critic "v").
        """
        lstm_out, hidden = self.encode(state, blueprint_indices, hidden)  # [B, T, H]
        dist = self._distribution(lstm_out, masks)  # [B, T, 8, 13]
        joint = self._pack_actions(actions, lstm_out.shape[:-1])  # [B, T, 8]
        log_probs = dist.log_prob(joint)  # [B, T, 8]
        entropy = dist.entropy()  # [B, T, 8]
        op = joint[..., OP] if value_op is None else value_op  # [B, T]
        value = self._baseline(lstm_out, op, dist.probs[..., OP, :NUM_OPS])  # [B, T]
        q_value = self._compute_value(lstm_out.detach(), op)  # [B, T]
        return EvaluateOutput(
            log_probs=unpack_heads(log_probs),
            value=value,
            entropy=unpack_heads(entropy),
            hidden=hidden,
            q_value=q_value,
        )

    @torch.no_grad()
    def get_value(
        self,
        state: torch.Tensor,
        blueprint_indices: torch.Tensor,
        hidden: Hidden | None,
        op: torch.Tensor,
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Debug only (the bootstrap uses get_action(deterministic=True)): the baseline for a given op, no graph.

        `state [B, D]` with `op [B]` -> `[B]`, or `state [B, T, D]` with `op [B, T]` -> `[B, T]`. `masks` matter only
        in critic "q_marginal" (they restrict pi(op|s)).
        """
        single = state.dim() == 2
        if single:
            state, blueprint_indices, op = state.unsqueeze(1), blueprint_indices.unsqueeze(1), op.unsqueeze(1)
            masks = {name: m.unsqueeze(1) for name, m in masks.items()} if masks else masks
        lstm_out, _ = self.encode(state, blueprint_indices, hidden)  # [B, T, H]
        op_probs = self._distribution(lstm_out, masks).probs[..., OP, :NUM_OPS]  # [B, T, 6]
        value = self._baseline(lstm_out, op, op_probs)  # [B, T]
        return value[:, 0] if single else value

    # ------------------------------------------------------------------------------------------------------------
    # input checks (shape and dtype only: no host sync)

    def _one_step(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """`[B, n]` -> `[B, 1, n]`; `[B, 1, n]` passes; anything else is an error (get_action takes one step)."""
        if x.dim() == 2:
            return x.unsqueeze(1)
        if x.dim() == 3 and x.shape[1] == 1:
            return x
        raise ValueError(f"get_action: {what} must be [B, n] or [B, 1, n], got shape {tuple(x.shape)}")

    def _check_inputs(self, state: torch.Tensor, blueprint_indices: torch.Tensor, hidden: Hidden | None) -> None:
        if state.dim() != 3 or state.shape[-1] != self.state_dim:
            raise ValueError(f"state must be [B, T, {self.state_dim}], got shape {tuple(state.shape)}")
        weight_dtype = self.feature_net[0].weight.dtype
        if state.dtype != weight_dtype:
            raise ValueError(f"state must be a {weight_dtype} tensor like the weights, got {state.dtype}")
        B, T = state.shape[:2]
        if tuple(blueprint_indices.shape) != (B, T, self.num_slots):
            raise ValueError(
                f"blueprint_indices must be [B, T, {self.num_slots}] = {(B, T, self.num_slots)}, "
                f"got shape {tuple(blueprint_indices.shape)}"
            )
        if hidden is not None:
            expected = (1, B, self.lstm_hidden_dim)
            if len(hidden) != 2 or any(tuple(t.shape) != expected for t in hidden):
                shapes = [tuple(t.shape) for t in hidden]
                raise ValueError(f"hidden must be (h, c), each {expected}, got shapes {shapes}")
