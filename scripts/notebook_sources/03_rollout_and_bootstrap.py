# %% [markdown]
# # 03 · Rollout and bootstrap (Phase 4, Step 3)
#
# **What you will learn**
#
# - how E worlds are stepped together and how one batched `get_action` call per step drives them all, with the
#   joint action `[E, 8]` it returns;
# - where `blueprint_indices_batch` comes from: `batch_obs_to_features` reads each world's slot reports and returns
#   it next to the observation, -1 for an empty slot;
# - the bootstrap at truncation: the value of the **post-action** state, from its own features and blueprint
#   indices, with the **carried** hidden state, through `get_action(deterministic=True)` (`Agent.bootstrap`); and
#   what the two classic mistakes (a reset hidden state, pre-action features) would have stored instead;
# - the whole path of `blueprint_indices` in one diagram, from the features to the buffer and the PPO update, and
#   through the bootstrap, each arrow checked on a real rollout and update;
# - the addendum's pitfall 1, calling `get_action` without blueprint indices, as the clear error it raises.
#
# **Modules explained:** [esper_lab/rl/rollout.py](../esper_lab/rl/rollout.py) (`collect`, the loop
# `Trainer.collect` runs), [esper_lab/agent.py](../esper_lab/agent.py) (`Agent.observe`, `act`, `bootstrap`),
# [esper_lab/env/vector.py](../esper_lab/env/vector.py) (`VectorEnv`),
# [esper_lab/features.py](../esper_lab/features.py) (`batch_obs_to_features`) and
# [esper_lab/policy/normalize.py](../esper_lab/policy/normalize.py) (the frozen observation normaliser). Seed
# documents: the addendum's Step 3 (both call sites) and "Common pitfalls" 1; Esper commit f1702fd (the bootstrap
# value is taken after the epoch's lifecycle tick).

# %%
import os

SIZE = os.environ.get("ESPER_LAB_NB_SIZE", "full")  # "ci" under `make test`, "full" for the committed outputs
assert SIZE in ("ci", "full"), SIZE

import torch
from IPython.display import Markdown, display

from nb_helpers import by_size, expect_error, markdown_table, setup

setup(seed=0, threads=2)
print("notebook size:", SIZE)

# %% [markdown]
# ## 1. E worlds, one batch of features
#
# `VectorEnv` steps E independent worlds (each its own host network training on digits, with three seed slots) and
# hands back one report per world. `batch_obs_to_features` turns the E reports into the two tensors the policy
# takes. This is the addendum's Location 1 input:
#
# ```python
# states_batch, blueprint_indices_batch = batch_obs_to_features(reports)   # [E, 121] float32, [E, 3] int64
# ```

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.config import preset
from esper_lab.env.vector import VectorEnv
from esper_lab.features import OBS_DIM, batch_obs_to_features

E = 4
world = preset(by_size(SIZE, ci="tiny", full="demo")).world
envs = VectorEnv(world, E, seed=0)
reports = envs.reset([100, 101, 102, 103])
states_batch, blueprint_indices_batch = batch_obs_to_features(reports)
print("states_batch           ", list(states_batch.shape), states_batch.dtype)
print("blueprint_indices_batch", list(blueprint_indices_batch.shape), blueprint_indices_batch.dtype)
print("at reset every slot is empty:", blueprint_indices_batch.tolist())
assert states_batch.shape == (E, OBS_DIM) and blueprint_indices_batch.dtype == torch.int64
assert blueprint_indices_batch.eq(-1).all()

# %% [markdown]
# ## 2. A vectorised rollout, step by step
#
# The loop below is what `rollout.collect` (called by `Trainer.collect`) does, written out for one episode per
# world (`collect` adds the buffer and the telemetry). Per step: features of every world → the agent's observation
# normaliser (statistics **frozen** during the rollout) → one batched `get_action` with the legal-action masks and
# the hidden state → `VectorEnv.step` on the joint action `[E, 8]`. `agent.observe` does the first two,
# `agent.act` all three (it is what `collect` calls); here they are written as two lines to keep Location 1 in
# sight. The hidden state is carried from step to step and never reset before the bootstrap.

# %%
from esper_lab.actions import HEAD_INDEX, HEAD_NAMES, LifecycleOp
from esper_lab.agent import Agent

torch.manual_seed(1)
policy = Agent.from_config(preset(by_size(SIZE, ci="tiny", full="demo")).policy)  # network + obs normaliser
T = world.max_epochs

reports = envs.reset([100, 101, 102, 103])
hidden = policy.initial_hidden(E)
seen_idx, ops, rewards = [], [], []
for t in range(T):
    seen = policy.observe(reports)  # Location 1: batch_obs_to_features(reports), then the frozen normaliser
    obs, bp_idx = seen.obs, seen.blueprint_indices  # [E, D] normalised, [E, S]
    masks = envs.masks()  # {head: [E, k]}, op_slot: [E, 6, S]
    result = policy.get_action(obs, bp_idx, masks, hidden)
    reports, reward, terminated, truncated, infos = envs.step(result.joint_actions)  # [E, 8], HEAD_NAMES order
    hidden = result.hidden  # carried, never reset inside the episode
    seen_idx.append(bp_idx)
    ops.append(result.joint_actions[:, HEAD_INDEX["op"]])  # the op column (= result.actions["op"])
    rewards.append(reward)

seen_idx, ops = torch.stack(seen_idx), torch.stack(ops)  # [T, E, S], [T, E]
print(f"{T} steps × {E} worlds; truncated at the end: {truncated.tolist()}")
print("last step's joint actions (columns " + ", ".join(HEAD_NAMES) + "):", result.joint_actions.tolist())
print("ops taken:", {op.name: int((ops == op).sum()) for op in LifecycleOp})
assert truncated.all() and not terminated.any()  # episodes end by the time limit only
assert policy.obs_norm.count == 0  # frozen: acting never updates the normaliser

# %% [markdown]
# Where `blueprint_indices_batch` comes from, step by step: a slot's index appears the step after a GERMINATE put a
# seed there, stays while the seed lives (training, blending, holding, fossilized, and while a pruned seed is
# embargoed) and goes back to -1 when the slot is empty again.

# %%
from nb_helpers import blueprint_timeline_figure

germinated = (ops == LifecycleOp.GERMINATE)
assert seen_idx[0].eq(-1).all()  # nothing before the first action
if germinated[:-1].any():
    assert (seen_idx[1:] >= 0).any()  # some germination shows up in the next step's indices
blueprint_timeline_figure(seen_idx, title="blueprint_indices_batch seen by the policy")

# %% [markdown]
# ## 3. The bootstrap at truncation
#
# After the last step the episode is cut by the time limit, not finished: the state the last action led to still
# has a value, and GAE needs it (notebook 04). The addendum's Location 2:
#
# ```python
# post_action_features, post_blueprint_indices = batch_obs_to_features(post_action_reports)
# bootstrap_result = policy.get_action(normalise(post_action_features), post_blueprint_indices,
#                                      masks=post_masks, hidden=carried_hidden, deterministic=True)
# ```
#
# In the lab these two lines are `agent.bootstrap(post_action_reports, post_masks, carried_hidden)`, which returns
# `bootstrap_result.value`.
#
# Three things must be right: the features and indices are those of the **post-action** state (the reports the last
# `step` returned: Esper once took them before the epoch's lifecycle tick, fixed in commit f1702fd), the hidden
# state is the **carried** one (it carries across the whole episode into the bootstrap and is not reset at done),
# and the value is Q(s', argmax op) recomputed for that op.

# %%
post = policy.observe(reports)  # the reports the LAST step returned
post_obs, post_idx = post.obs, post.blueprint_indices
post_masks = envs.masks()
boot = policy.get_action(post_obs, post_idx, post_masks, hidden, deterministic=True)
assert torch.allclose(boot.value, boot.op_values.gather(1, boot.actions["op"].unsqueeze(1)).squeeze(1), atol=1e-5)
assert torch.equal(policy.bootstrap(reports, post_masks, hidden), boot.value)  # the agent's one-call version

# The two classic mistakes, for comparison:
zero_hidden = policy.get_action(post_obs, post_idx, post_masks, policy.initial_hidden(E),
                                deterministic=True)  # the hidden state reset instead of carried
pre_action = policy.get_action(obs, bp_idx, masks, hidden,
                               deterministic=True)  # the last step's pre-action features (before f1702fd)
rows = [{"world": e, "bootstrap (correct)": round(boot.value[e].item(), 4),
         "hidden reset to zero": round(zero_hidden.value[e].item(), 4),
         "pre-action features": round(pre_action.value[e].item(), 4),
         "post-action indices": post_idx[e].tolist()} for e in range(E)]
display(Markdown(markdown_table(rows)))
assert not torch.allclose(boot.value, zero_hidden.value)
assert not torch.allclose(boot.value, pre_action.value)

# %% [markdown]
# ## 4. The trainer does exactly this
#
# `Trainer.collect()` runs the same loop (`rollout.collect`, with `agent.act`), fills the buffer and stores
# `agent.bootstrap(...)` with `set_bootstrap`. We check its stored bootstrap independently: the buffer keeps only
# the hidden state each row started from, so replaying the stored episode through `evaluate_actions` from it gives
# the hidden state carried out of the last step; the post-action state is what the last env step returned.
# Recomputing the bootstrap from those must give the stored value.

# %%
from nb_helpers import spy_on
from esper_lab.rl.trainer import Trainer

import esper_lab.agent

cfg = preset(by_size(SIZE, ci="tiny", full="demo"), seed=0)
trainer = Trainer(cfg)
with (spy_on(trainer.envs, "step") as steps, spy_on(trainer.agent, "get_action") as acts,
      spy_on(esper_lab.agent, "batch_obs_to_features") as featurised):  # what Agent.observe calls
    trainer.collect()
batch = trainer.buffer.batched()
replay = trainer.agent.evaluate_actions(batch.obs, batch.blueprint_indices, batch.actions, batch.masks,
                                         batch.initial_hidden)  # batch.actions: the joint [E, T, 8]
carried = replay.hidden  # the hidden state after the last stored step
last_reports = steps[-1].result[0]  # what the last env step returned: the post-action state
p_obs, p_idx = batch_obs_to_features(last_reports)
check = trainer.agent.get_action(trainer.agent.obs_norm.normalize(p_obs), p_idx, trainer.envs.masks(), carried,
                                 deterministic=True)
print("stored bootstrap    :", [round(v, 4) for v in batch.bootstrap_values[:, -1].tolist()])
print("recomputed bootstrap:", [round(v, 4) for v in check.value.tolist()])
assert torch.allclose(batch.bootstrap_values[:, -1], check.value, atol=1e-4)
assert batch.truncated[:, -1].all()

# %% [markdown]
# ## 5. The path of `blueprint_indices`, in one picture
#
# Every arrow below is a call the trainer of section 4 made (its spies recorded them) or one the PPO update below
# makes. Left, at each step t: the reports the environment returned become features and indices
# (`batch_obs_to_features`, inside `agent.observe`), `get_action` acts on them (inside `agent.act`), and
# `buffer.add` stores the same indices. Right, once after the last step: the post-action reports become their own
# features and indices, and `agent.bootstrap` runs `get_action(deterministic=True)` on them with the hidden state
# carried out of the last step; `set_bootstrap` stores the value. Bottom, the PPO update: GAE reads the bootstrap
# values, and `evaluate_relevant` re-runs the stored rows with their stored indices.

# %%
from esper_lab.rl.buffer import RolloutBuffer
from nb_helpers import FlowNode, flow_figure

STEP, BOOT, UPDATE = "#deebf7", "#fdebd0", "#e5f5e0"  # each step (left), the bootstrap (right), the update
nodes = {
    "reports": FlowNode(0, 5.0, "<b>envs.step</b> returns reports<br>(one WorldReport per world)", STEP),
    "features": FlowNode(0, 3.8, "<b>batch_obs_to_features</b>(reports)<br>in agent.observe: indices [E, 3]", STEP),
    "act": FlowNode(0, 2.6, "<b>agent.get_action</b>(obs, blueprint_indices,<br>masks, hidden), in agent.act", STEP),
    "buffer": FlowNode(0, 1.4, "<b>buffer.add</b>(..., blueprint_indices=...)<br>stored as [E, T, 3]", STEP),
    "post": FlowNode(4, 5.0, "the <b>last envs.step</b> returns<br>the post-action reports", BOOT),
    "post_features": FlowNode(4, 3.8, "<b>batch_obs_to_features</b>(post reports)<br>post-action indices [E, 3]", BOOT),
    "boot": FlowNode(4, 2.6, "<b>agent.bootstrap</b>: get_action(...,<br>carried hidden, deterministic=True)", BOOT),
    "set_boot": FlowNode(4, 1.4, "<b>buffer.set_bootstrap</b>(value [E])<br>V(post-action state)", BOOT),
    "batched": FlowNode(0, 0.2, "<b>buffer.batched().rows(...)</b><br>mb.blueprint_indices [e, T, 3]", UPDATE),
    "gae": FlowNode(4, 0.2, "<b>compute_gae</b>(..., bootstrap_values)<br>advantages [E, T]", UPDATE),
    "evaluate": FlowNode(2, -1.0, "<b>agent.evaluate_relevant</b>(mb.obs,<br>mb.blueprint_indices, ...)", UPDATE),
}
edges = [
    ("reports", "features", ""), ("features", "act", "indices"), ("act", "buffer", "the same indices"),
    ("post", "post_features", ""), ("post_features", "boot", "indices"), ("boot", "set_boot", "value"),
    ("act", "boot", "carried hidden"), ("buffer", "batched", ""), ("set_boot", "gae", ""),
    ("batched", "evaluate", "stored indices"), ("gae", "evaluate", "advantages"),
]
# Each box names a real function or method:
for fn in (Agent.observe, Agent.act, Agent.get_action, Agent.bootstrap, Agent.evaluate_relevant, RolloutBuffer.add,
           RolloutBuffer.set_bootstrap, RolloutBuffer.batched, batch_obs_to_features):
    assert callable(fn)
flow_figure(nodes, edges, "How blueprint_indices flow: each step (blue), the bootstrap (orange), the PPO update "
            "(green)", box_size=(3.2, 0.75), height=640)

# %% [markdown]
# Each arrow, checked on the trainer's rollout of section 4 and on one PPO update of its buffer:

# %%
from esper_lab.rl import ppo

T_run = cfg.world.max_epochs
assert len(featurised) == len(acts) == T_run + 1  # T steps, then the bootstrap
for t in range(T_run):
    seen_t = featurised[t].result[1]  # the indices batch_obs_to_features returned at step t
    assert torch.equal(acts[t].arg("blueprint_indices"), seen_t)  # features -> get_action
    assert torch.equal(batch.blueprint_indices[:, t], seen_t)  # get_action -> buffer.add (the same values)
    assert not acts[t].arg("deterministic")
assert featurised[-1].arg("reports") is last_reports  # the bootstrap read the post-action reports...
assert acts[-1].arg("deterministic") and torch.equal(acts[-1].arg("blueprint_indices"), p_idx)  # ...and their indices
assert all(torch.equal(a, b) for a, b in zip(acts[-1].arg("hidden"), acts[-2].result.hidden))  # carried hidden

with spy_on(ppo, "compute_gae") as gae_calls, spy_on(trainer.agent, "evaluate_relevant") as evals:
    trainer.updater.update(trainer.buffer)
assert torch.equal(gae_calls[0].arg("bootstrap_values"), batch.bootstrap_values)  # set_bootstrap -> compute_gae
for call in evals:  # each minibatch re-runs whole stored rows with their stored indices
    for row in call.arg("blueprint_indices"):
        assert any(torch.equal(row, stored) for stored in batch.blueprint_indices)
assert len(evals) >= cfg.ppo.minibatches  # at least one whole epoch (a KL early stop comes after a pass)
first_epoch = evals[:cfg.ppo.minibatches]  # the first epoch's passes
print(f"{len(acts)} get_action calls; {len(evals)} evaluate_relevant calls, of "
      f"{[call.arg('blueprint_indices').shape[0] for call in first_epoch]} rows in the first epoch")
assert sum(call.arg("blueprint_indices").shape[0] for call in first_epoch) == cfg.num_envs  # every row, once

# %% [markdown]
# ## 6. Pitfall 1: forgetting the blueprint indices
#
# In the addendum's words: *"Bootstrap uses old features without blueprint indices. Symptom: `TypeError: forward()
# missing required argument: 'blueprint_indices'`."* Because `blueprint_indices` is a required positional
# parameter right after the features (no default, no silent fallback to "all empty"), a call site that was not
# updated cannot run by accident; it fails on its first call with an error that names the missing argument:

# %%
# NBVAL_CHECK_OUTPUT
features = post_obs
err = expect_error(lambda: policy.get_action(features, masks=post_masks, hidden=hidden, deterministic=True), TypeError)
print(f"{type(err).__name__}: {err}")
assert "blueprint_indices" in str(err)

err = expect_error(lambda: policy.forward(features.unsqueeze(1), masks=None, hidden=None), TypeError)
print(f"{type(err).__name__}: {err}")
assert "blueprint_indices" in str(err)

# %% [markdown]
# (`act` and `bootstrap` cannot forget them at all: they take the reports and extract the features and the indices
# together.) Indices of the wrong shape or type are rejected with a message too (for example the float tensor a
# hand-built batch might produce, or one index per world instead of one per slot):

# %%
# NBVAL_CHECK_OUTPUT
err = expect_error(lambda: policy.get_action(features, post_idx.float(), post_masks, hidden), ValueError)
print(f"{type(err).__name__}: {err}")
err = expect_error(lambda: policy.get_action(features, post_idx[:, 0], post_masks, hidden), ValueError)
print(f"{type(err).__name__}: {err}")

# %% [markdown]
# ## Recap
#
# - `batch_obs_to_features(reports)` returns `(obs [E, 121], blueprint_indices [E, 3])`; an index is the blueprint of
#   the seed in that slot, -1 for an empty slot.
# - One batched `get_action(normalised obs, blueprint_indices, masks, hidden)` per step (`agent.act`) drives E
#   worlds through their joint actions `[E, 8]`; the normaliser is frozen during the rollout; the hidden state is
#   carried and never reset inside the episode.
# - The bootstrap (`agent.bootstrap`) uses the post-action features **and** indices, the carried hidden state and
#   `deterministic=True`; a zero hidden state or pre-action features give a different, wrong value.
# - The indices the policy saw are the indices the buffer stores and the update re-runs (section 5's diagram, each
#   arrow checked on a real rollout and update).
# - Forgetting the indices cannot go unnoticed: it is a `TypeError` that names `blueprint_indices`.
#
# Next: [04_rollout_buffer.ipynb](04_rollout_buffer.ipynb) looks inside the buffer the rollout filled.
#
# ## Exercises
#
# Write each answer in a new cell and pass it to its `check_...` function below, which raises `AssertionError` with
# a hint when the answer is wrong. Solutions are in the last section (their code is collapsed).
#
# **1. Indices by hand.** `exercise_reports` are the reports the last step of section 2 returned (4 worlds). Build
# their blueprint indices yourself, a `[4, 3]` int64 tensor, from each report's `slots` (a slot report is `None`
# for an empty slot and has a `blueprint_index` otherwise), without calling `batch_obs_to_features`.
#
# **2. The bootstrap in two lines.** Write `my_bootstrap(agent, reports, masks, hidden)` returning the `[E]`
# bootstrap values from the addendum's Location 2: features and indices of `reports`, the agent's (frozen)
# observation normaliser `agent.obs_norm.normalize`, then `agent.get_action(..., deterministic=True)`. Do not call
# `agent.bootstrap` or `agent.act`.
#
# **3. Who saw a seed?** From `seen_idx` (`[T, E, S]`, the indices the policy saw in section 2), compute for each
# world the number of steps at which at least one of its slots held a seed: an int64 tensor `[E]`.

# %%
exercise_reports = reports  # the post-action reports of section 2's last step


def check_indices(indices):
    """Exercise 1: `indices [4, 3]` int64 built from exercise_reports."""
    want = batch_obs_to_features(exercise_reports)[1]
    assert indices.dtype == torch.int64 and indices.shape == want.shape, (
        f"expected int64 {list(want.shape)}, got {indices.dtype} {list(indices.shape)}")
    assert torch.equal(indices, want), f"got {indices.tolist()}; an empty slot is -1"
    print("correct:", indices.tolist())


def check_bootstrap(fn):
    """Exercise 2: `fn(agent, reports, masks, hidden)` gives the agent's bootstrap values."""
    mine = fn(policy, reports, post_masks, hidden)
    assert torch.allclose(mine, policy.bootstrap(reports, post_masks, hidden)), (
        "normalised features, the post-action indices, the carried hidden state, deterministic=True?")
    print("correct:", [round(v, 4) for v in mine.tolist()])


def check_seed_steps(counts):
    """Exercise 3: `counts [E]`: steps at which some slot of the world held a seed."""
    want = (seen_idx >= 0).any(-1).sum(0)  # [E]
    assert torch.equal(torch.as_tensor(counts), want), f"got {torch.as_tensor(counts).tolist()}"
    print("correct:", want.tolist(), "of", seen_idx.shape[0], "steps")


# Your answers, for example:
# check_indices(torch.tensor([[...], ...]))
# check_bootstrap(my_bootstrap)
# check_seed_steps(...)

# %% [markdown]
# ## Solutions
#
# **1.** One row per report, one entry per slot: the seed's blueprint index, or -1 (`EMPTY_BLUEPRINT_INDEX`).

# %% jupyter={"source_hidden": true}
from esper_lab.actions import EMPTY_BLUEPRINT_INDEX

check_indices(torch.tensor([[EMPTY_BLUEPRINT_INDEX if slot is None else slot.blueprint_index for slot in r.slots]
                            for r in exercise_reports], dtype=torch.int64))

# %% [markdown]
# **2.** The two lines of Location 2; the value of the deterministic step is Q(s', argmax op).

# %% jupyter={"source_hidden": true}
def my_bootstrap(agent, reports, masks, hidden):
    features, indices = batch_obs_to_features(reports)  # [E, 121], [E, 3]
    return agent.get_action(agent.obs_norm.normalize(features), indices, masks, hidden, deterministic=True).value


check_bootstrap(my_bootstrap)

# %% [markdown]
# **3.** "Some slot holds a seed" is an `any` over the slot axis; counting steps is a sum over the step axis.

# %% jupyter={"source_hidden": true}
check_seed_steps((seen_idx >= 0).any(dim=-1).sum(dim=0))
