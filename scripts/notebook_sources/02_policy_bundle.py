# %% [markdown]
# # 02 · The wrapper: `Agent` (Phase 4, Step 2)
#
# **What you will learn**
#
# - what the wrapper adds to the network: Esper's `LSTMPolicyBundle` (`lstm_bundle.py`) is, in this lab,
#   `esper_lab.agent.Agent`. Its four network methods take `blueprint_indices` right after the features (the
#   addendum's Step 2) and add no maths; on top it owns the observation normaliser and has `observe`, `act` and
#   `bootstrap`, the three calls the rollout makes;
# - stochastic and deterministic `get_action`: what each returns (one action per head, and the same action as one
#   joint `[B, 8]` tensor), and the invariants they keep (`sampled_op is actions["op"]`; deterministic = argmax of
#   every head with Q recomputed for the argmax op);
# - the op-conditioned masks on one real world state (which slots each op may use), and how often a sampled action
#   cannot execute with conditional masks (never) and with Phase 4's independent ones;
# - the bug the first Phase 4 commit shipped: the value's op and the action's op sampled **separately**. We write
#   the buggy and the fixed `get_action` out in a few lines each, check the fixed one against the package, measure
#   how often the two ops differ and how wrong the stored value becomes, and put it next to the single-sample path
#   the lab uses.
#
# **Modules explained:** [esper_lab/agent.py](../esper_lab/agent.py) (the wrapper) and
# [esper_lab/policy/network.py](../esper_lab/policy/network.py) (`get_action`); the legal-action masks come from
# [esper_lab/actions.py](../esper_lab/actions.py), the normaliser from
# [esper_lab/policy/normalize.py](../esper_lab/policy/normalize.py). Seed documents: the addendum's Step 2 and its
# validation snippet "After Step 2"; Esper commit 0872525b (the fix of the op/value mismatch).

# %%
import os

SIZE = os.environ.get("ESPER_LAB_NB_SIZE", "full")  # "ci" under `make test`, "full" for the committed outputs
assert SIZE in ("ci", "full"), SIZE

import inspect

import torch
from IPython.display import Markdown, display

from nb_helpers import by_size, setup

setup(seed=0, threads=2)
print("notebook size:", SIZE)

# %% [markdown]
# ## 1. The wrapper and its argument order
#
# Everything in the lab that acts with or trains the policy goes through an `Agent`: the rollout, its bootstrap,
# the PPO update, the probes and a checkpoint under evaluation. Its four network methods all take
# `(features, blueprint_indices, ...)`: the addendum's Step 2 is exactly "add `blueprint_indices` to these four
# methods" of Esper's bundle. They forward to the network and add no maths, so every invariant of notebook 01
# holds here. The one other thing they fix is the order of the optional arguments: `get_action`, `forward` and
# `evaluate_actions` take `masks` before `hidden` (the network itself takes `hidden` first), one order for every
# caller.

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.agent import Agent
from esper_lab.config import preset
from esper_lab.features import OBS_DIM

agent = Agent.from_config(preset("demo").policy)  # the Phase 4 sizes, critic "q_op", state_dim = OBS_DIM
for method in ("get_action", "forward", "evaluate_actions", "get_value"):
    params = list(inspect.signature(getattr(agent, method)).parameters)
    net_params = list(inspect.signature(getattr(agent.network, method)).parameters)
    print(f"{method:17s}({', '.join(params)})")
    print(f"{'  network':17s}({', '.join(net_params)})")
    assert params[:2] == ["features", "blueprint_indices"], params
    assert net_params[:2] == ["state", "blueprint_indices"], net_params
print("critic:", agent.critic, "| recurrent:", agent.is_recurrent, "| normaliser:", type(agent.obs_norm).__name__,
      tuple(agent.obs_norm.shape))

# %% [markdown]
# The addendum's validation snippet "After Step 2", adapted to these names (an empty mask dict means "all legal"):

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
features = torch.randn(2, OBS_DIM)
bp_idx = torch.randint(0, 13, (2, 3))
masks = {}  # Empty masks for test

result = agent.get_action(features, bp_idx, masks)
print(f"Action result value shape: {tuple(result.value.shape)}")
print("✓ Wrapper works")
assert result.value.shape == (2,)

# %% [markdown]
# ## 2. Real masks for a few worlds
#
# `get_action` takes the legal-action masks of each world. We build them with the same function the environment
# uses, `actions.compute_action_masks`, for four worlds in different situations: all slots empty; a seed training
# in slot r0c0; a seed holding in r0c1; and a world where every slot is full and no seed can be acted on, so WAIT
# is the only legal op. Besides one mask per head, it returns `masks["op_slot"]` (`actions.OP_SLOT_KEY`), `[6, S]`:
# the slots each op can execute on. With that table `get_action` samples the op first and then the slot among the
# slots where that op can run (the lab's default, `policy.masks = "conditional"`), so every sampled action
# executes; without it (`"independent"`, Phase 4 as shipped) the slot is drawn from every enabled slot.

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.actions import HEAD_NAMES, NUM_OPS, OP_SLOT_KEY, LifecycleOp, SeedStage, SlotView, compute_action_masks

worlds = {
    "all empty": [SlotView(None), SlotView(None), SlotView(None)],
    "training in r0c0": [SlotView(SeedStage.TRAINING, seed_age=3), SlotView(None), SlotView(None)],
    "holding in r0c1": [SlotView(None), SlotView(SeedStage.HOLDING, seed_age=9), SlotView(None)],
    "only WAIT legal": [SlotView(SeedStage.FOSSILIZED)] * 3,
}
per_world = [compute_action_masks(views) for views in worlds.values()]
masks = {k: torch.stack([m[k] for m in per_world]) for k in per_world[0]}  # {head: [4, k]}, op_slot: [4, 6, 3]
for name, m in zip(worlds, per_world):
    print(f"{name:17s} legal ops: {[op.name for op in LifecycleOp if m['op'][op]]}")
assert masks["op"][3].tolist() == [True, False, False, False, False, False]
assert masks[OP_SLOT_KEY].shape == (4, NUM_OPS, 3) and torch.equal(masks[OP_SLOT_KEY].any(-1), masks["op"])
print("slots PRUNE can execute on, per world:", masks[OP_SLOT_KEY][:, LifecycleOp.PRUNE].int().tolist())

# %% [markdown]
# ## 3. Stochastic `get_action`
#
# One call per rollout step for all worlds: it returns one action per head, the per-head log-probabilities (what
# PPO stores as the old log-probs), the value, `sampled_op` and Q for every op, plus the new LSTM state. The actions
# and log-probs come twice: as dicts `{head: [B]}` and as one joint `[B, 8]` tensor each (`joint_actions`,
# `joint_log_probs`, columns in `HEAD_NAMES` order; `actions[h]` is a view of column `HEAD_INDEX[h]`). The joint
# form is what the worlds step on and what the buffer stores. `masks` are the masks each head was sampled under
# (the slot's is the row of the op drawn), what the buffer stores for the update. The one rule: **`actions["op"]`
# is `sampled_op`**, the op the value was computed for.

# %%
from esper_lab.actions import HEAD_INDEX, unpack_heads
from nb_helpers import markdown_table

torch.manual_seed(1)
B = len(worlds)
features = torch.randn(B, OBS_DIM)
bp_idx = torch.tensor([[-1, -1, -1], [3, -1, -1], [-1, 5, -1], [1, 2, 7]])  # matches the worlds above
hidden = agent.initial_hidden(B)

res = agent.get_action(features, bp_idx, masks, hidden)
assert res.sampled_op is res.actions["op"]  # literally the same tensor
assert res.joint_actions.shape == res.joint_log_probs.shape == (B, len(HEAD_NAMES))
assert res.joint_actions.dtype == torch.int64
for h in HEAD_NAMES:  # the dicts are the columns of the joint tensors
    assert torch.equal(res.actions[h], res.joint_actions[:, HEAD_INDEX[h]])
    assert torch.equal(res.log_probs[h], res.joint_log_probs[:, HEAD_INDEX[h]])
assert all(torch.equal(v, res.actions[h]) for h, v in unpack_heads(res.joint_actions).items())
q_acted = res.op_values.gather(1, res.actions["op"].unsqueeze(1)).squeeze(1)
assert torch.allclose(res.value, q_acted, atol=1e-5)  # value = Q(s, the op acted on) (q_values rounds differently)
for h in HEAD_NAMES:  # every sampled action is legal under its world's mask
    assert masks[h].gather(1, res.actions[h].unsqueeze(1)).all(), h
    assert (res.log_probs[h] <= 0).all()
rows_b = torch.arange(B)
assert masks[OP_SLOT_KEY][rows_b, res.actions["op"], res.actions["slot"]].all()  # the op can run in its slot
assert torch.equal(res.masks["slot"], masks[OP_SLOT_KEY][rows_b, res.actions["op"]])  # sampled under that row
assert res.actions["op"][3].item() == LifecycleOp.WAIT  # the only legal op is chosen
assert not res.value.requires_grad and res.hidden[0].shape == (1, B, 512)
display(Markdown("`joint_actions` (one row per world, one column per head):\n\n" + markdown_table(
    [{"world": name, **dict(zip(HEAD_NAMES, res.joint_actions[i].tolist())),
      "= op": LifecycleOp(int(res.actions["op"][i])).name, "value": round(res.value[i].item(), 4),
      "log π(op)": round(res.log_probs["op"][i].item(), 3)} for i, name in enumerate(worlds)])))

# %% [markdown]
# ## 4. Deterministic `get_action` (the bootstrap)
#
# At the end of a rollout the agent's `bootstrap` asks for the value of the post-action state with
# `deterministic=True` (section 5, and notebook 03). Every head then takes the argmax of its masked logits, and the
# value is **recomputed** for the argmax op: not Q of some op sampled inside `forward()`.

# %%
det = agent.get_action(features, bp_idx, masks, hidden, deterministic=True)
# argmax of every head's logits under the masks it was chosen under (the slot's: the row of the argmax op)
fwd = agent.forward(features.unsqueeze(1), bp_idx.unsqueeze(1), {h: m.unsqueeze(1) for h, m in det.masks.items()},
                    hidden)
for h in HEAD_NAMES:
    assert torch.equal(det.actions[h], getattr(fwd, f"{h}_logits")[:, 0].argmax(-1)), h
assert det.sampled_op is det.actions["op"]
assert torch.allclose(det.value, det.op_values.gather(1, det.actions["op"].unsqueeze(1)).squeeze(1), atol=1e-5)
again = agent.get_action(features, bp_idx, masks, hidden, deterministic=True)
assert torch.equal(again.joint_actions, det.joint_actions) and torch.equal(again.value, det.value)
assert det.actions["op"][3].item() == LifecycleOp.WAIT
# get_value (debug only) agrees with the deterministic value for the argmax op:
assert torch.allclose(agent.get_value(features, bp_idx, hidden, det.actions["op"], masks), det.value, atol=1e-6)
print("deterministic ops:", [LifecycleOp(int(o)).name for o in det.actions["op"]])

# %% [markdown]
# ## 5. What the agent adds: the normaliser, `observe`, `act` and `bootstrap`
#
# Esper's bundle took features that the trainer had already normalised. The lab's agent owns the observation
# normaliser (`agent.obs_norm`, a `RunningMeanStd`), so that "features → normalise → policy → new hidden state" is
# written once, in three calls:
#
# - `observe(reports)` → `Observation(raw, obs, blueprint_indices)`: the features of E world reports
#   (`batch_obs_to_features`: `raw [E, 121]` and `blueprint_indices [E, 3]`), and `obs`, the same features
#   normalised with the current statistics;
# - `act(reports, masks, hidden)` = `observe`, then `get_action(obs, blueprint_indices, masks, hidden)`; it returns
#   both what was seen and what was chosen, so the rollout stores exactly the `obs` and `blueprint_indices` the
#   policy acted on, next to `joint_actions`;
# - `bootstrap(reports, masks, hidden)` = the value of `act(..., deterministic=True)`: Q(s', argmax op) of the
#   post-action reports with the carried hidden state (notebook 03).
#
# None of the three updates the normaliser: it is **frozen** while the agent acts, and the trainer calls
# `obs_norm.update` once per rollout, just before the PPO update. Two real worlds of the `tiny` preset, played for
# one episode and then reset:

# %%
from esper_lab.env.vector import VectorEnv
from esper_lab.features import batch_obs_to_features

envs = VectorEnv(preset("tiny").world, 2, seed=0)
world_reports = envs.reset([100, 101])
world_masks = envs.masks()  # {head: [2, k]}

fresh = agent.observe(world_reports)  # a normaliser that has seen nothing only clips
raw, idx = batch_obs_to_features(world_reports)
assert torch.equal(fresh.raw, raw) and torch.equal(fresh.blueprint_indices, idx)
assert agent.obs_norm.count == 0 and torch.equal(fresh.obs, raw.clamp(-10, 10))

# One short episode of both worlds, as the rollout plays it; then the update the trainer makes between rollouts.
hidden_t, episode_raw = agent.initial_hidden(2), []
for t in range(envs.cfg.max_epochs):
    seen_t, step_t = agent.act(world_reports, envs.masks(), hidden_t)
    episode_raw.append(seen_t.raw)
    hidden_t = step_t.hidden
    world_reports, *_ = envs.step(step_t.joint_actions)
assert agent.obs_norm.count == 0  # acting never updates the statistics
agent.obs_norm.update(torch.cat(episode_raw))  # [2 × T, D] raw features
stats = agent.obs_norm.state_dict()

world_reports = envs.reset([100, 101])  # the same two worlds again
seen = agent.observe(world_reports)
assert torch.equal(seen.raw, fresh.raw) and torch.equal(seen.obs, agent.obs_norm.normalize(raw))
assert not torch.equal(seen.obs, fresh.obs)  # same reports, new statistics: a different policy input

h0 = agent.initial_hidden(2)
torch.manual_seed(6)
seen_act, step = agent.act(world_reports, world_masks, h0)
torch.manual_seed(6)
by_hand = agent.get_action(seen.obs, seen.blueprint_indices, world_masks, h0)  # the same call, written out
assert torch.equal(seen_act.obs, seen.obs) and torch.equal(step.joint_actions, by_hand.joint_actions)
assert torch.equal(step.value, by_hand.value)

post_reports, reward, terminated, truncated, infos = envs.step(step.joint_actions)  # the worlds take [E, 8]
boot = agent.bootstrap(post_reports, envs.masks(), step.hidden)  # [E]
post = agent.observe(post_reports)
by_hand = agent.get_action(post.obs, post.blueprint_indices, envs.masks(), step.hidden, deterministic=True)
assert torch.equal(boot, by_hand.value)
assert agent.obs_norm.count == stats["count"] and torch.equal(agent.obs_norm.mean, stats["mean"])  # still frozen
print("raw features, world 0, first 6:       ", [round(x, 3) for x in seen.raw[0, :6].tolist()])
print("normalised (policy input), first 6:   ", [round(x, 3) for x in seen.obs[0, :6].tolist()])
print("act -> joint_actions:", step.joint_actions.tolist())
print("bootstrap values of the post-action states:", [round(v, 4) for v in boot.tolist()])

# %% [markdown]
# ## 6. Conditional masks on one real state
#
# Section 2 built masks for made-up slots. Here is one state a real world reached: we play a `demo` world with the
# heuristic baseline (`HeuristicPolicy`) while the agent watches (`act` carries its hidden state; the heuristic
# picks the actions), and keep the first state with the most different slots and the most legal ops.

# %%
from esper_lab.actions import OP_NAMES, is_op_legal_for_slot
from esper_lab.policy.baselines import HeuristicPolicy

real_env = VectorEnv(preset("demo").world, 1, seed=0)  # one world, in this process
heuristic = HeuristicPolicy()
heuristic.reset(1)
real_reports, real_hidden = real_env.reset([100]), agent.initial_hidden(1)
states = []  # (reports, masks, the agent's hidden state before this step), one per step
for t in range(real_env.cfg.max_epochs):
    real_masks = real_env.masks()
    states.append((real_reports, real_masks, real_hidden))
    real_hidden = agent.act(real_reports, real_masks, real_hidden)[1].hidden
    if t + 1 < real_env.cfg.max_epochs:  # the last step ends the episode; its state is already kept
        real_reports, *_ = real_env.step(heuristic.act(real_reports, real_masks))


def richness(state):
    """(distinct slot stages, an empty slot counting as one; legal ops) of one kept state."""
    reports, masks, _ = state
    return len({None if s is None else s.stage for s in reports[0].slots}), int(masks["op"].sum())


pick = max(range(len(states)), key=lambda i: richness(states[i]))  # the first of the richest states
real_reports, real_masks, real_hidden = states[pick]
report = real_reports[0]
op_slot = real_masks[OP_SLOT_KEY][0]  # [6, S]: which slots each op can execute on
slot_names = [f"r0c{s} ({'empty' if seed is None else seed.stage.name})" for s, seed in enumerate(report.slots)]
enabled = real_masks["slot"][0]  # [S]: the unconditional slot mask, what "independent" samples the slot under


def slot_set(row):
    return "{" + ", ".join(f"r0c{s}" for s in row.nonzero().flatten().tolist()) + "}" if row.any() else "(op masked)"


display(Markdown(f"Epoch {report.epoch} of episode seed 100, heuristic play; slots: {', '.join(slot_names)}\n\n"
                 + markdown_table([
                     {"op": OP_NAMES[op], **{name: "✓" if op_slot[op, s] else "·" for s, name in enumerate(slot_names)},
                      "op mask": bool(real_masks["op"][0, op]),
                      "slot head sampled under, conditional": slot_set(op_slot[op]),
                      "independent": slot_set(enabled) if real_masks["op"][0, op] else "(op masked)"}
                     for op in range(NUM_OPS)])))

# The table is the world's own execution rule: one definition for masks and execution.
can_germinate = report.max_seeds is None or report.seeds_germinated < report.max_seeds
for op in LifecycleOp:
    for s, view in enumerate(report.slot_views()):
        legal = is_op_legal_for_slot(op, view, can_germinate=can_germinate)
        assert bool(op_slot[op, s]) == legal == report.can_execute(op, s), (op.name, s)
assert torch.equal(real_masks["op"][0], op_slot.any(-1))  # an op is legal exactly when some slot allows it
assert torch.equal(op_slot[LifecycleOp.WAIT], enabled)  # WAIT's slot does not matter: every enabled slot
n_stages, n_ops = richness(states[pick])
assert n_stages >= 2 and n_ops >= 3  # a state where the op decides which slots are possible
assert len({tuple(row.tolist()) for row in op_slot[real_masks["op"][0]]}) >= 2  # legal ops differ in their slots

# %% [markdown]
# Now sample many actions on that state from the same weights in both modes (`Agent(network, obs_norm, masks=...)`;
# `policy.masks` in a config does the same through `Agent.from_config`). With `"conditional"` the slot head is
# sampled under the row of the op just drawn, so every sampled action can execute. With `"independent"` it is
# sampled under every enabled slot, whatever the op, and the fraction that cannot execute (and would run as WAIT)
# is Σ_op π(op) · (1 − π(slot head picks a slot where op can run)), computed below from the same logits. Both
# modes sample with the same seed, so they draw the same ops: only the slot head's mask differs.

# %%
from esper_lab.actions import head_masks

N = by_size(SIZE, ci=1_000, full=4_000)
seen_real = agent.observe(real_reports)
obs_n, idx_n = seen_real.obs.repeat(N, 1), seen_real.blueprint_indices.repeat(N, 1)  # the one state, N times
masks_n = {k: m.repeat(N, *[1] * (m.dim() - 1)) for k, m in real_masks.items()}
hidden_n = tuple(h.repeat(1, N, 1) for h in real_hidden)
modes = {"conditional": agent, "independent": Agent(agent.network, agent.obs_norm, masks="independent")}
assert agent.masks == "conditional"

with torch.no_grad():  # the policy's distributions on this state (heads factored: the slot head ignores the op)
    out = agent.forward(seen_real.obs[:, None], seen_real.blueprint_indices[:, None],
                        {h: m[:, None] for h, m in head_masks(real_masks).items()}, real_hidden)
pi_op = torch.softmax(out.op_logits[0, 0].float(), -1)  # [6]
pi_slot = torch.softmax(out.slot_logits[0, 0].float(), -1)  # [S], under the enabled-slot mask
expected_independent = (pi_op * (1 - (pi_slot * op_slot).sum(-1))).sum().item()

rows, illegal, ops_drawn = [], {}, {}
for mode, mode_agent in modes.items():
    torch.manual_seed(7)
    res = mode_agent.get_action(obs_n, idx_n, masks_n, hidden_n)
    op, slot = res.actions["op"], res.actions["slot"]
    ops_drawn[mode] = op
    executes = op_slot[op, slot]  # [N]: can_execute(op, slot), checked cell by cell above
    assert real_masks["blueprint"][0][res.actions["blueprint"]].all()  # a GERMINATE's blueprint is always legal
    illegal[mode] = 1 - executes.float().mean().item()
    for o in op.unique().tolist():  # the mask the slot head was sampled under, per sampled op
        under = res.masks["slot"][op == o]
        assert (under == (op_slot[o] if mode == "conditional" else enabled)).all(), (mode, OP_NAMES[o])
    rows.append({"mode": mode, "sampled actions": N,
                 "ops sampled": ", ".join(f"{OP_NAMES[o]} {int((op == o).sum())}" for o in op.unique().tolist()),
                 "cannot execute": f"{int((~executes).sum())} ({100 * illegal[mode]:.1f}%)",
                 "expected": "0 by construction" if mode == "conditional" else f"{100 * expected_independent:.1f}%"})
display(Markdown(markdown_table(rows)))
assert illegal["conditional"] == 0.0
assert torch.equal(ops_drawn["conditional"], ops_drawn["independent"])
se = (expected_independent * (1 - expected_independent) / N) ** 0.5
assert abs(illegal["independent"] - expected_independent) < 5 * se + 1e-3, (illegal, expected_independent)
assert illegal["independent"] > 0

# %% [markdown]
# ## 7. The op/value mismatch of the first Phase 4 commit
#
# As shipped in Esper's commit 97d9ba3f, `get_action()` called `forward()`, which sampled op #1 and returned
# Q(s, op #1) as the value; then `get_action()` picked the action's op #2 **again**, from the same logits: a second
# independent sample, or the argmax in deterministic mode. Whenever the two differ, the stored value describes one op
# and the stored action another. Esper measured the two ops differing on **75 to 86%** of steps, a bootstrap bias
# of 8 to 16 units per episode and twice the TD-error variance (the fix's commit message, 0872525b); the fix reuses
# forward's op.
#
# Both versions, written out on the output of the network's `forward()` (`out`, a `ForwardOutput` over `[B, T]`
# steps: the masked logits, `sampled_op`, `value` = Q(s, sampled_op) and `op_values` = Q(s, every op)). Only the op
# and the value are shown; the other heads do not take part in the bug.

# %%
def get_action_97d9ba3f(out, deterministic=False):
    """Esper 97d9ba3f: the value is Q(s, forward's op #1); the action's op #2 is chosen again."""
    if deterministic:
        op = out.op_logits.argmax(-1)  # [B, T] op #2: the argmax
    else:  # op #2: a second draw from the same logits, independent of forward's (97d9ba3f used a Categorical)
        probs = torch.softmax(out.op_logits, dim=-1)  # [B, T, 6]; masked ops get probability 0
        op = torch.multinomial(probs.flatten(0, -2), 1).view(probs.shape[:-1])  # [B, T]
    return op, out.value  # out.value is Q(s, out.sampled_op), whatever op is


def get_action_0872525b(out, deterministic=False):
    """Esper 0872525b: one op serves the action and the value."""
    if deterministic:
        op = out.op_logits.argmax(-1)  # [B, T]
        return op, out.op_values.gather(-1, op.unsqueeze(-1)).squeeze(-1)  # Q(s, argmax op), recomputed
    return out.sampled_op, out.value  # forward's own sample, and Q(s, that op)

# %% [markdown]
# The fixed version is what the package's `get_action` does. With the same random seed, `forward()` and
# `get_action` draw the same op (both draw every head in one exponential race over the packed `[B, 1, 8, 13]`
# logits, and the conditional slot mask does not touch the op row), so the snippet and the package must agree
# exactly, stochastic and deterministic, on the four worlds of section 3 repeated 64 times:

# %%
import math

N_rep = 64
feats_r, idx_r = features.repeat(N_rep, 1), bp_idx.repeat(N_rep, 1)  # [4 × 64, D], [4 × 64, S]
masks_r = {k: m.repeat(N_rep, *[1] * (m.dim() - 1)) for k, m in masks.items()}  # op_slot included
hidden_r = agent.initial_hidden(4 * N_rep)
for deterministic in (False, True):
    torch.manual_seed(8)
    with torch.no_grad():  # get_action builds no graph either, so the LSTM runs the same kernel
        out_r = agent.forward(feats_r[:, None], idx_r[:, None], {h: m[:, None] for h, m in head_masks(masks_r).items()},
                              hidden_r)  # ForwardOutput over [4 × 64, 1] steps
    op_r, value_r = get_action_0872525b(out_r, deterministic)
    torch.manual_seed(8)
    res_r = agent.get_action(feats_r, idx_r, masks_r, hidden_r, deterministic=deterministic)
    assert torch.equal(op_r[:, 0], res_r.actions["op"]) and torch.equal(value_r[:, 0], res_r.value), deterministic
    buggy_op, buggy_value = get_action_97d9ba3f(out_r, deterministic)
    print(f"deterministic={deterministic}: the fixed snippet equals get_action on all {len(op_r)} steps; the 97d9ba3f "
          f"snippet's value is for another op on {(buggy_op != out_r.sampled_op).float().mean().item():.0%} of them")

# %% [markdown]
# To see it here we need a critic whose values depend on the op, as a trained one does. `teach_op_values` fits
# only the value head of a copy of the network to fixed per-op targets for a few Adam steps (the policy heads are
# untouched, so the op policy stays the near-uniform one of a fresh network). Then
# `nb_helpers.op_value_mismatch` runs a rollout-style pass both ways and compares the stored value with
# Q(s, acted op), the value `evaluate_actions` will later condition on.

# %%
import copy

from nb_helpers import op_value_mismatch, teach_op_values

torch.manual_seed(2)
n_seq, T = by_size(SIZE, ci=8, full=32), 30
seq_state = torch.randn(n_seq, T, OBS_DIM)
seq_idx = torch.randint(-1, 13, (n_seq, T, 3))
taught = copy.deepcopy(agent.network)
op_targets = [0.0, 1.0, -0.5, -1.0, 0.8, 0.3]  # WAIT, GERMINATE, SET_ALPHA_TARGET, PRUNE, FOSSILIZE, ADVANCE
mse = teach_op_values(taught, seq_state, seq_idx, op_targets, steps=200, lr=1e-3)
assert mse < 0.05, mse
print(f"critic fitted to the per-op targets, MSE {mse:.4f}")

# %%
from nb_helpers import markdown_table

reports = {}
for label, kwargs in {
    "stochastic, double sample (97d9ba3f)": dict(double_sample=True),
    "stochastic, one sample (lab)": dict(double_sample=False),
    "deterministic bootstrap, sample vs argmax (97d9ba3f)": dict(double_sample=True, deterministic=True),
    "deterministic bootstrap, argmax + recompute (lab)": dict(double_sample=False, deterministic=True),
}.items():
    torch.manual_seed(3)
    reports[label] = op_value_mismatch(taught, seq_state, seq_idx, double_sample=kwargs["double_sample"],
                                       deterministic=kwargs.get("deterministic", False))
rows = [{"path": k, "steps": r.steps, "ops differ": f"{100 * r.mismatch_rate:.1f}%",
         "expected if buggy": f"{100 * r.expected_mismatch_rate:.1f}%",
         "mean |value − Q(s, acted op)|": round(r.mean_abs_value_error, 4),
         "mean (value − Q(s, acted op))": round(r.mean_value_error, 4)} for k, r in reports.items()]
display(Markdown(markdown_table(rows)))

# %%
# The 97d9ba3f snippet above, run with each buggy row's seed, measures exactly what op_value_mismatch reports.
for label, deterministic in (("stochastic, double sample (97d9ba3f)", False),
                             ("deterministic bootstrap, sample vs argmax (97d9ba3f)", True)):
    torch.manual_seed(3)
    with torch.no_grad():
        out_seq = taught(seq_state, seq_idx)  # forward: op #1 and Q(s, op #1), [n_seq, T]
    acted_op, stored_value = get_action_97d9ba3f(out_seq, deterministic)
    q_acted = out_seq.op_values.gather(-1, acted_op.unsqueeze(-1)).squeeze(-1)  # [n_seq, T] Q(s, the op acted on)
    assert (acted_op != out_seq.sampled_op).float().mean().item() == reports[label].mismatch_rate
    assert math.isclose((stored_value - q_acted).abs().mean().item(), reports[label].mean_abs_value_error, rel_tol=1e-6)
    assert math.isclose((stored_value - q_acted).mean().item(), reports[label].mean_value_error, rel_tol=1e-5,
                        abs_tol=1e-7)
print("the 97d9ba3f snippet reproduces both buggy rows of the table")

# %%
buggy, fixed = reports["stochastic, double sample (97d9ba3f)"], reports["stochastic, one sample (lab)"]
boot_buggy = reports["deterministic bootstrap, sample vs argmax (97d9ba3f)"]
boot_fixed = reports["deterministic bootstrap, argmax + recompute (lab)"]
assert fixed.mismatch_rate == 0.0 and fixed.mean_abs_value_error == 0.0
assert boot_fixed.mismatch_rate == 0.0 and boot_fixed.mean_abs_value_error == 0.0
# With six legal ops and a near-uniform op head, two independent draws disagree about 5/6 of the time:
assert abs(buggy.mismatch_rate - buggy.expected_mismatch_rate) < 0.1 and buggy.mismatch_rate > 0.7
assert buggy.mean_abs_value_error > 0.3  # a value error of the order of the per-op differences, on most steps
assert boot_buggy.mismatch_rate > 0.7
print(f"double sampling: the ops differ on {100 * buggy.mismatch_rate:.0f}% of steps "
      f"(Esper measured 75-86%); the stored value is off by {buggy.mean_abs_value_error:.2f} on average")

# %% [markdown]
# How often the two samples disagree depends on how many ops are legal and how peaked the op head is. With a
# near-uniform op head and k legal ops, two independent draws differ with probability 1 − 1/k; Esper's worlds had
# several legal ops on most steps and a still-uncertain op head, hence 75 to 86%. Measured for k = 1 … 6:

# %%
from nb_helpers import series_figure

rates, expected = [], []
for k in range(1, NUM_OPS + 1):
    op_mask = torch.zeros(n_seq, T, NUM_OPS, dtype=torch.bool)
    op_mask[..., :k] = True
    torch.manual_seed(4)
    r = op_value_mismatch(taught, seq_state, seq_idx, {"op": op_mask}, double_sample=True)
    rates.append(r.mismatch_rate)
    expected.append(r.expected_mismatch_rate)
assert rates[0] == 0.0  # one legal op: nothing to disagree about
assert all(abs(a - b) < 0.1 for a, b in zip(rates, expected))
series_figure({"measured (double sample)": rates, "1 − Σ π(op)²": expected, "lab (one sample)": [0.0] * NUM_OPS},
              "How often the value's op and the action's op differ", "legal ops", "fraction of steps",
              x=list(range(1, NUM_OPS + 1)))

# %% [markdown]
# The stochastic mismatch is noise without bias: the value's op and the action's op are two independent draws from
# the same distribution, so Q(s, op #1) − Q(s, op #2) averages to 0 over draws. The deterministic one is a bias: on
# every truncated episode the bootstrap stored Q(s, a sampled op), whose average over draws is
# Σ_op π(op) · Q(s, op), instead of Q(s, argmax op), the value of the op the policy would take. In both cases GAE
# used the value of one op while `evaluate_actions` later fits the critic on the stored op, the "GAE mismatch" the
# plan warned about.
#
# ## 8. Checkpoints
#
# The trainer saves the agent with `checkpoint_state()`: `{"policy": network state_dict, "obs_norm": normaliser
# state}`. A new agent loaded from it acts identically on the same reports: same normalised observation, same
# actions, same values (the embedding's null index is a buffer of the network, so it travels too).

# %%
clone = Agent.from_config(preset("demo").policy)
ckpt = agent.checkpoint_state()
assert set(ckpt) == {"policy", "obs_norm"} and "blueprint_embedding._null_idx" in ckpt["policy"]
clone.load_checkpoint_state(ckpt)
a = agent.get_action(features, bp_idx, masks, hidden, deterministic=True)
b = clone.get_action(features, bp_idx, masks, hidden, deterministic=True)
assert torch.equal(a.joint_actions, b.joint_actions) and torch.equal(a.value, b.value)
seen_a, act_a = agent.act(world_reports, world_masks, h0, deterministic=True)
seen_b, act_b = clone.act(world_reports, world_masks, h0, deterministic=True)
assert torch.equal(seen_a.obs, seen_b.obs)  # the normaliser travelled with the weights
assert torch.equal(act_a.joint_actions, act_b.joint_actions) and torch.equal(act_a.value, act_b.value)
print("round trip: identical observations, actions and values")

# %% [markdown]
# ## Exercises
#
# Each is a few lines of code; its `check_...` function asserts your answer and then measures the same thing with
# `nb_helpers.op_value_mismatch` on the taught network. The Solutions section at the end holds worked answers
# (collapsed: expand a cell once you have tried).
#
# The state below is one step of section 7's sequences, with three legal ops; `pi_ex` is the taught network's op
# distribution there and `q_ex` its Q(s, op) for every op.
#
# 1. **Predict the mismatch rate** of the 97d9ba3f stochastic path on this state: how often do the value's op and
#    the action's op differ? Pass a number to `check_mismatch_rate`.
# 2. **Predict the bootstrap's mismatch rate**: how often does forward's sampled op differ from the argmax op the
#    97d9ba3f deterministic path acts with? Pass it to `check_bootstrap_mismatch_rate`.
# 3. **Predict the bootstrap's bias**: the average over draws of (stored value − Q(s, argmax op)) on this state,
#    from `pi_ex` and `q_ex`. Pass it to `check_bootstrap_bias`.

# %%
N_ex = by_size(SIZE, ci=500, full=4_000)  # draws per measurement in the checks
ex_state, ex_idx = seq_state[:1, :1], seq_idx[:1, :1]  # [1, 1, D], [1, 1, S]
ex_masks = {"op": torch.tensor([True, True, False, True, False, False]).view(1, 1, NUM_OPS)}  # 3 legal ops
with torch.no_grad():
    out_ex = taught(ex_state, ex_idx, masks=ex_masks)
pi_ex, q_ex = torch.softmax(out_ex.op_logits[0, 0], -1), out_ex.op_values[0, 0]  # [6] each
display(Markdown(markdown_table([{"op": OP_NAMES[o], "pi_ex": round(pi_ex[o].item(), 5),
                                  "q_ex": round(q_ex[o].item(), 5)} for o in range(NUM_OPS)])))


def measured_on_ex(deterministic):
    """op_value_mismatch (97d9ba3f) on the exercise state, N_ex independent rows."""
    torch.manual_seed(9)
    return op_value_mismatch(taught, ex_state.repeat(N_ex, 1, 1), ex_idx.repeat(N_ex, 1, 1),
                             {"op": ex_masks["op"].repeat(N_ex, 1, 1)}, double_sample=True,
                             deterministic=deterministic)


def check_rate(rate, expected, deterministic):
    """`rate` is `expected`, which op_value_mismatch predicts too and N_ex draws measure (within 5 binomial s.d.)."""
    assert abs(rate - expected) < 1e-4, expected
    r = measured_on_ex(deterministic=deterministic)
    assert abs(r.expected_mismatch_rate - expected) < 1e-4
    assert abs(r.mismatch_rate - expected) < 5 * (expected * (1 - expected) / N_ex) ** 0.5, r.mismatch_rate
    print(f"correct: {expected:.4f}; measured on {N_ex} draws: {r.mismatch_rate:.4f}")


def check_mismatch_rate(rate):
    """Exercise 1: two independent draws from pi_ex differ with probability 1 - sum_op pi(op)^2."""
    check_rate(rate, 1 - pi_ex.pow(2).sum().item(), deterministic=False)


def check_bootstrap_mismatch_rate(rate):
    """Exercise 2: a draw from pi_ex differs from the argmax op with probability 1 - pi(argmax)."""
    check_rate(rate, 1 - pi_ex.max().item(), deterministic=True)


def check_bootstrap_bias(bias):
    """Exercise 3: E_op~pi [Q(s, op)] - Q(s, argmax op)."""
    error = q_ex - q_ex[pi_ex.argmax()]  # [6] stored value - Q(s, argmax op), per sampled op
    expected = (pi_ex * error).sum().item()
    assert abs(bias - expected) < 1e-4, expected
    r = measured_on_ex(deterministic=True)
    spread = ((pi_ex * error.pow(2)).sum().item() - expected ** 2) ** 0.5  # std of one row's error
    assert abs(r.mean_value_error - expected) < 5 * spread / N_ex ** 0.5 + 1e-6, r.mean_value_error
    print(f"correct: {expected:+.4f}; measured on {N_ex} draws: {r.mean_value_error:+.4f}")

# %% [markdown]
# ## Recap
#
# - `Agent` is the lab's `LSTMPolicyBundle`: `get_action`, `forward`, `evaluate_actions` and `get_value` all take
#   `(features, blueprint_indices, ...)` and forward to the network with no maths of their own.
# - It also owns the observation normaliser, frozen while it acts, and writes "observe, normalise, act, carry the
#   hidden state" once: `observe`, `act` and `bootstrap` are what the rollout calls.
# - Stochastic `get_action`: one sample per head, returned per head and as the joint `[B, 8]` action;
#   `actions["op"]` **is** `sampled_op`, and `value` = Q(s, that op).
# - Deterministic `get_action` (the bootstrap): argmax per head and Q recomputed for the argmax op.
# - Written out, the fix is two lines on `forward()`'s output: act with `out.sampled_op` and store `out.value`
#   (deterministic: the argmax op and Q of it); the snippet equals the package's `get_action` exactly.
# - `masks["op_slot"]` says which slots each op can execute on, by the world's own rule. Conditional masks (the
#   default) sample the slot under the row of the sampled op, so no sampled action is illegal; independent masks
#   (Phase 4 as shipped) sample it under every enabled slot, and on a real state about half the actions could not
#   execute.
# - Sampling the op twice, as the first Phase 4 commit did, makes the stored value describe another op on most steps
#   (about 1 − 1/k with k legal ops and an uncertain policy) and biases the bootstrap; one sample removes the error
#   exactly.
#
# Next: [03_rollout_and_bootstrap.ipynb](03_rollout_and_bootstrap.ipynb) runs the agent inside a vectorised rollout.

# %% [markdown]
# ## Solutions

# %% jupyter={"source_hidden": true}
# Exercise 1. The value's op and the action's op are two independent draws: they agree with probability
# sum_op pi(op)^2 (both draw op, for each op), so they differ with probability 1 - sum_op pi(op)^2.
check_mismatch_rate(1 - (pi_ex ** 2).sum().item())

# %% jupyter={"source_hidden": true}
# Exercise 2. The action is the argmax op a*, fixed; the value's op is one draw, equal to a* with probability pi(a*).
check_bootstrap_mismatch_rate(1 - pi_ex.max().item())

# %% jupyter={"source_hidden": true}
# Exercise 3. The stored value is Q(s, op) for a drawn op, so its average is sum_op pi(op) Q(s, op); the right value
# is Q(s, a*). With a near-uniform op head the bias is the mean of Q over the legal ops minus Q of the argmax op.
a_star = int(pi_ex.argmax())
check_bootstrap_bias((pi_ex * q_ex).sum().item() - q_ex[a_star].item())
