# %% [markdown]
# # 04 · The rollout buffer and GAE (Phase 4, Step 4)
#
# **What you will learn**
#
# - the buffer's schema: one row per world, `[num_envs, steps, ...]`, holding exactly what the policy saw and
#   returned, `blueprint_indices` included;
# - what `reset()` and `add()` store: once per rollout the hidden state the rows start from, then per step the
#   normalised observation, the joint action `[E, 8]` and its per-head log-probs, the masks each head was sampled
#   under and the op the world executed; and how `batched()` hands the PPO update whole episodes with their initial
#   hidden state;
# - GAE with truncation, worked by hand on a small example and checked against `compute_gae`, with a terminal and a
#   truncated episode side by side and two worlds kept apart; what γ and λ do (sliders), and the two ends of λ:
#   λ = 1 gives discounted returns minus values, λ = 0 one-step TD errors;
# - the advantages of a real rollout, world by world and step by step, next to the ops the worlds executed;
# - the addendum's pitfall 2, a buffer that forgets `blueprint_indices`, shown as the clear error it raises.
#
# **Modules explained:** [esper_lab/rl/buffer.py](../esper_lab/rl/buffer.py) (`RolloutBuffer`, `RolloutBatch`)
# and [esper_lab/rl/advantages.py](../esper_lab/rl/advantages.py) (`compute_gae`). Seed documents: the addendum's
# Step 4 and "Common pitfalls" 2. Esper's buffer keeps each world's episode in its own row (`[num_envs, steps, ...]`),
# so GAE never runs across two worlds.

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
# ## 1. The schema
#
# The buffer is pre-allocated for one rollout: `num_envs` rows of `max_steps` steps. Each row is one world's
# contiguous episode, so GAE never mixes worlds (Esper's "P0 fix") and the PPO update can replay a row as one LSTM
# sequence. The LSTM state is **not** stored per step: only the state each row starts from, `initial_hidden`, set
# by `reset(initial_hidden)` at the start of the rollout; the update re-runs whole rows, so the LSTM recomputes
# every later state itself. The actions and their log-probs are stored joint, `[E, T, 8]` with columns in
# `HEAD_NAMES` order (`actions[..., HEAD_INDEX["op"]]` is the op). A small buffer (2 worlds, 5 steps, a 64-wide
# LSTM) is enough to see every field:

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.features import OBS_DIM
from esper_lab.rl.buffer import RolloutBuffer

E, T, S, H = 2, 5, 3, 64
buffer = RolloutBuffer(num_envs=E, max_steps=T, obs_dim=OBS_DIM, num_slots=S, lstm_hidden_dim=H)


def describe(x):
    if isinstance(x, dict):
        first = next(iter(x.values()))
        return (f"{{{len(x)} heads}} each {list(first.shape[:-1]) + ['k']} {str(first.dtype).replace('torch.', '')}, "
                f"k = {', '.join(str(v.shape[-1]) for v in x.values())}")
    return f"{list(x.shape)} {str(x.dtype).replace('torch.', '')}"


fields = ["obs", "blueprint_indices", "actions", "log_probs", "values", "op_values", "executed_ops", "rewards",
          "dones", "truncated", "bootstrap_values", "masks"]
rows = [{"field": f, "shape and dtype": describe(getattr(buffer, f))} for f in fields]
rows.append({"field": "initial_hidden", "shape and dtype": f"set by reset(): (h0, c0), each "
             f"{[buffer.lstm_layers, E, H]} float32"})
display(Markdown(markdown_table(rows)))
assert buffer.blueprint_indices.shape == (E, T, S) and buffer.blueprint_indices.dtype == torch.int64
assert buffer.actions.shape == buffer.log_probs.shape == (E, T, 8) and buffer.initial_hidden is None

# %% [markdown]
# ## 2. `reset()`, then `add()`: one step for every world
#
# We drive a small agent on made-up observations with real legal-action masks (a world with every slot empty:
# only WAIT and GERMINATE are legal) and store each step as `rollout.collect` does. First `reset(initial_hidden)`
# with the state the rows start from; then, per step, the observation the policy saw, the indices it saw, what
# `get_action` returned (the joint action and log-probs, the value, Q of every op), the op the world executed, the
# reward, and the masks each head was sampled under (`result.masks`: with the default conditional masks the slot
# mask is the one of the op just drawn). The hidden state is carried from step to step but not stored. Every
# argument of `add` is keyword-only and required.

# %%
from esper_lab.actions import HEAD_INDEX, HEAD_NAMES, SlotView, compute_action_masks
from esper_lab.agent import Agent
from esper_lab.policy.network import FactoredRecurrentActorCritic

torch.manual_seed(1)
policy = Agent(FactoredRecurrentActorCritic(OBS_DIM, S, feature_dim=64, lstm_hidden_dim=H))
one_world = compute_action_masks([SlotView(None)] * S)  # the eight heads, plus the op -> slot table
masks = {k: m.expand(E, *m.shape).clone() for k, m in one_world.items()}  # {head: [E, k]}, op_slot: [E, 6, S]
obs_seq = torch.randn(T, E, OBS_DIM)  # stands in for normalised Obs V3 features
idx_seq = torch.full((T, E, S), -1, dtype=torch.int64)  # every slot empty
rewards = torch.tensor([[0.1, 0.0, 0.3, 0.0, 1.0], [0.0, 0.2, 0.0, -0.1, 0.5]])  # [E, T]

hidden = policy.initial_hidden(E)
buffer.reset(hidden)  # the state every row starts from: (h0, c0), each [1, E, H]
hiddens, results = [hidden], []
for t in range(T):
    res = policy.get_action(obs_seq[t], idx_seq[t], masks, hidden)
    executed = res.actions["op"]  # no world here: the op drawn is the op executed (collect reads it from the infos)
    buffer.add(obs=obs_seq[t], blueprint_indices=idx_seq[t], actions=res.joint_actions,
               log_probs=res.joint_log_probs, value=res.value, op_values=res.op_values, executed_op=executed,
               reward=rewards[:, t], done=torch.full((E,), t == T - 1), truncated=torch.full((E,), t == T - 1),
               masks=res.masks)
    hidden = res.hidden  # carried to the next step, never stored
    hiddens.append(hidden)
    results.append(res)
buffer.set_bootstrap(torch.tensor([0.7, -0.2]))  # V(post-action state) of each world's truncated last step
print("steps stored:", len(buffer), "| full:", buffer.full)
print("joint actions of world 0, one row per step (" + ", ".join(HEAD_NAMES) + "):")
print(buffer.actions[0].tolist())

# %%
assert len(buffer) == T and buffer.full
assert torch.equal(buffer.obs[:, 2], obs_seq[2])  # row = world, column = step
for t, res in enumerate(results):  # the joint tensors, exactly as get_action returned them
    assert torch.equal(buffer.actions[:, t], res.joint_actions)
    assert torch.equal(buffer.log_probs[:, t], res.joint_log_probs)
    assert torch.equal(buffer.actions[:, t, HEAD_INDEX["op"]], res.actions["op"])
h0, c0 = buffer.initial_hidden
assert torch.equal(h0, torch.zeros(1, E, H)) and torch.equal(c0, torch.zeros(1, E, H))  # rows start from zero
# No later state is stored: re-running the first t steps of every row from (h0, c0) gives back the state step t
# was fed (the LSTM over a sequence and step by step agree to float rounding).
for t in range(1, T + 1):
    prefix = policy.evaluate_actions(buffer.obs[:, :t], buffer.blueprint_indices[:, :t], buffer.actions[:, :t],
                                     {h: m[:, :t] for h, m in buffer.masks.items()}, buffer.initial_hidden)
    assert torch.allclose(prefix.hidden[0], hiddens[t][0], atol=1e-5)
    assert torch.allclose(prefix.hidden[1], hiddens[t][1], atol=1e-5)
assert buffer.bootstrap_values[:, -1].tolist() == [0.699999988079071, -0.20000000298023224]
assert buffer.bootstrap_values[:, :-1].eq(0).all()

# %% [markdown]
# Past capacity, `add()` refuses with an error that names the capacity (a silent overwrite would corrupt the
# episode the PPO update replays):

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.rl.buffer import BufferFullError

step = dict(obs=obs_seq[0], blueprint_indices=idx_seq[0], actions=res.joint_actions, log_probs=res.joint_log_probs,
            value=res.value, op_values=res.op_values, executed_op=res.actions["op"], reward=rewards[:, 0],
            done=torch.zeros(E, dtype=torch.bool), truncated=torch.zeros(E, dtype=torch.bool), masks=res.masks)
err = expect_error(lambda: buffer.add(**step), BufferFullError)
print(type(err).__name__, "->", err)

# %% [markdown]
# ## 3. `batched()`: whole episodes for the update
#
# The update receives a `RolloutBatch` of `[E, T, ...]` tensors plus `initial_hidden = (h0, c0)`, each
# `[layers, E, H]`: the state each row's sequence starts from. `rows(index)` selects whole episodes, which is how
# the update builds minibatches without ever cutting a sequence.

# %%
# NBVAL_CHECK_OUTPUT
batch = buffer.batched()
print("obs", list(batch.obs.shape), "| blueprint_indices", list(batch.blueprint_indices.shape),
      "| valid", list(batch.valid.shape))
print("initial_hidden", [list(x.shape) for x in batch.initial_hidden])
mini = batch.rows(torch.tensor([1]))
print("rows([1]):", "obs", list(mini.obs.shape), "| initial_hidden", [list(x.shape) for x in mini.initial_hidden])
assert torch.equal(mini.obs[0], batch.obs[1]) and torch.equal(mini.initial_hidden[0][:, 0], batch.initial_hidden[0][:, 1])

# %% [markdown]
# Replaying a row from its initial hidden state reproduces what the rollout stored, because the buffer kept the
# exact inputs: the observation, the blueprint indices, the joint action and the masks each head was sampled under.
# This is the property the PPO update relies on (notebook 05):

# %%
ev = policy.evaluate_actions(batch.obs, batch.blueprint_indices, batch.actions, batch.masks, batch.initial_hidden)
for h in HEAD_NAMES:
    assert torch.allclose(ev.log_probs[h], batch.log_probs[..., HEAD_INDEX[h]], atol=1e-5), h
assert torch.allclose(ev.value, batch.values, atol=1e-5)
print("max |replayed − stored| log-prob:",
      max((ev.log_probs[h] - batch.log_probs[..., HEAD_INDEX[h]]).abs().max().item() for h in HEAD_NAMES))

# %% [markdown]
# ## 4. GAE with truncation, by hand
#
# For each step, the TD error is `δ_t = r_t + γ · next_t − V_t` and the advantage accumulates backwards,
# `A_t = δ_t + γλ · A_{t+1}`, with the chain cut at the end of an episode. What `next_t` is decides everything:
#
# | after step t | next_t | chain |
# |---|---|---|
# | the episode goes on | V_{t+1} | continues |
# | a **true terminal** (done, not truncated) | 0 | cut |
# | a **truncation** (the time limit) | the bootstrap, V(post-action state) | cut |
#
# A worked example (γ = 0.9, λ = 0.5): two episodes in one row, the first ending in a true terminal at step 1, the
# second truncated at step 3 with a bootstrap value of 4.

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.rl.advantages import compute_gae

gamma, lam = 0.9, 0.5
r = [1.0, 1.0, 10.0, 2.0]
V = [0.5, 0.25, 1.0, 0.75]
done = [False, True, False, True]
trunc = [False, False, False, True]
boot = [0.0, 0.0, 0.0, 4.0]

rows, A_next = [], 0.0
for t in reversed(range(4)):  # the recursion, written out
    if trunc[t]:
        nxt, why = boot[t], "bootstrap (truncated)"
    elif done[t]:
        nxt, why = 0.0, "0 (terminal)"
    else:
        nxt, why = V[t + 1], f"V[{t + 1}]"
    delta = r[t] + gamma * nxt - V[t]
    A = delta + (0.0 if done[t] or trunc[t] else gamma * lam * A_next)
    rows.append({"t": t, "r": r[t], "V": V[t], "next": f"{nxt:g} = {why}", "δ": round(delta, 4), "A": round(A, 4)})
    A_next = A
shown = [{**row, "δ": f"{row['δ']:g}", "A": f"{row['A']:g}"} for row in rows[::-1]]  # exact: 1.0625, not 1.062
display(Markdown(markdown_table(shown)))

adv, ret = compute_gae(torch.tensor(r), torch.tensor(V), torch.tensor(done), torch.tensor(trunc), torch.tensor(boot),
                       gamma, lam)
print("compute_gae advantages:", [round(a, 4) for a in adv.tolist()])
print("returns = A + V       :", [round(x, 4) for x in ret.tolist()])
assert torch.allclose(adv, torch.tensor([1.0625, 0.75, 11.8575, 4.85]))
assert torch.allclose(adv, torch.tensor([row["A"] for row in rows[::-1]]), atol=1e-4)

# %% [markdown]
# The same last episode treated as a true terminal instead of a truncation loses the bootstrap: the last step's
# advantage drops by γ · 4 = 3.6 and the drop propagates backwards with factor γλ. Two worlds stacked as rows of one
# `[2, T]` tensor get exactly the advantages they get alone: nothing leaks across rows.

# %%
terminal_end = compute_gae(torch.tensor(r), torch.tensor(V), torch.tensor(done),
                           torch.tensor([False, False, False, False]), torch.tensor(boot), gamma, lam)[0]
assert abs((adv - terminal_end)[3].item() - gamma * 4.0) < 1e-5
assert abs((adv - terminal_end)[2].item() - gamma * lam * gamma * 4.0) < 1e-5
assert torch.equal(adv[:2], terminal_end[:2])  # the first episode is untouched

other = dict(r=[0.0, 2.0, 0.0, 1.0], V=[0.1, 0.2, 0.3, 0.4])
two_adv, _ = compute_gae(torch.tensor([r, other["r"]]), torch.tensor([V, other["V"]]),
                         torch.tensor([done, [False] * 3 + [True]]), torch.tensor([trunc, [False] * 3 + [True]]),
                         torch.tensor([boot, [0.0, 0.0, 0.0, -1.0]]), gamma, lam)
alone = compute_gae(torch.tensor(other["r"]), torch.tensor(other["V"]), torch.tensor([False] * 3 + [True]),
                    torch.tensor([False] * 3 + [True]), torch.tensor([0.0, 0.0, 0.0, -1.0]), gamma, lam)[0]
assert torch.equal(two_adv[0], adv) and torch.equal(two_adv[1], alone)

from nb_helpers import series_figure

series_figure({"last step truncated (bootstrap 4)": adv.tolist(), "last step a true terminal": terminal_end.tolist()},
              "GAE advantages of the worked example", "step t", "advantage A_t")

# %% [markdown]
# And on the buffer we filled above (the lab's defaults: γ = `world.reward.gamma` = 0.995, the one discount the
# reward shaping and PPO share, and λ = `ppo.gae_lambda` = 0.98), every row ends truncated and bootstraps from what
# `set_bootstrap` stored:

# %%
from esper_lab.config import PPOConfig, RewardConfig

gamma_lab, lam_lab = RewardConfig().gamma, PPOConfig().gae_lambda
assert (gamma_lab, lam_lab) == (0.995, 0.98)
adv_b, ret_b = compute_gae(batch.rewards, batch.values, batch.dones, batch.truncated, batch.bootstrap_values,
                           gamma_lab, lam_lab)
assert adv_b.shape == (E, T) and torch.allclose(ret_b, adv_b + batch.values)
last_delta = batch.rewards[:, -1] + gamma_lab * batch.bootstrap_values[:, -1] - batch.values[:, -1]
assert torch.allclose(adv_b[:, -1], last_delta)  # the truncated last step: δ with the bootstrap, nothing after
print("advantages per world:", [[round(a, 3) for a in row] for row in adv_b.tolist()])

# %% [markdown]
# ### γ and λ
#
# γ discounts rewards; λ weighs how far each advantage looks ahead before it trusts the critic. At the two ends of λ
# GAE is something familiar: λ = 1 gives the discounted return to the episode's end (plus the discounted bootstrap
# after a truncation) minus the value, the Monte Carlo advantage; λ = 0 gives the one-step TD error δ_t, which
# trusts the critic after one step. Both, on the worked example at the lab's γ, against `compute_gae`, and the
# advantages at the lab's γ and λ:

# %%
from nb_helpers import gae_figure

ex = {k: torch.tensor(x) for k, x in dict(r=r, V=V, done=done, trunc=trunc, boot=boot).items()}  # the example, [4]


def discounted_returns(g):
    """G_t = r_t + g * G_{t+1} inside an episode; at its end, r_t + g * (bootstrap if truncated, else 0)."""
    G, out = 0.0, [0.0] * len(r)
    for t in reversed(range(len(r))):
        after = (boot[t] if trunc[t] else 0.0) if (done[t] or trunc[t]) else G
        G = r[t] + g * after
        out[t] = G
    return torch.tensor(out)


def td_errors(g):
    """δ_t = r_t + g * next_t - V_t, with next_t as in the table above."""
    nxt = [boot[t] if trunc[t] else 0.0 if done[t] else V[t + 1] for t in range(len(r))]
    return torch.tensor([r[t] + g * nxt[t] - V[t] for t in range(len(r))])


def gae_at(g, lam_):
    """compute_gae on the worked example: (advantages [4], returns [4])."""
    return compute_gae(ex["r"], ex["V"], ex["done"], ex["trunc"], ex["boot"], g, lam_)


adv_mc, adv_td = gae_at(gamma_lab, 1.0)[0], gae_at(gamma_lab, 0.0)[0]
assert torch.allclose(adv_mc, discounted_returns(gamma_lab) - ex["V"], atol=1e-5)  # λ = 1: Monte Carlo
assert torch.allclose(adv_td, td_errors(gamma_lab), atol=1e-6)  # λ = 0: one-step TD errors
adv_lab_ex, ret_lab_ex = gae_at(gamma_lab, lam_lab)
print("λ = 1:", [round(a, 4) for a in adv_mc.tolist()], "| λ = 0:", [round(a, 4) for a in adv_td.tolist()],
      f"| λ = {lam_lab}:", [round(a, 4) for a in adv_lab_ex.tolist()])
gae_figure(adv_lab_ex, ret_lab_ex, ex["V"], f"The worked example at the lab's γ = {gamma_lab}, λ = {lam_lab}")

# %% [markdown]
# Move the sliders to recompute `compute_gae` on the same example (in a live notebook; a static export such as
# GitHub shows the figure above instead). The cell first drives the sliders itself and checks the panel against the
# two ends of λ, then leaves them at the lab's values.

# %%
# NBVAL_IGNORE_OUTPUT
from nb_helpers import gae_panel

panel = gae_panel(ex["r"], ex["V"], ex["done"], ex["trunc"], ex["boot"], gamma_lab, lam_lab)
panel.lam.value = 1.0  # fires the observer, which recomputes and redraws
assert torch.allclose(panel.refresh()[0], discounted_returns(gamma_lab) - ex["V"], atol=1e-5)
panel.gamma.value, panel.lam.value = 0.9, 0.0
assert torch.allclose(panel.refresh()[0], td_errors(0.9), atol=1e-6)
panel.gamma.value, panel.lam.value = gamma_lab, lam_lab
assert torch.equal(panel.refresh()[0], adv_lab_ex)
panel

# %% [markdown]
# ## 5. The advantages of a real rollout
#
# The buffer above was filled with made-up observations. Here the trainer plays one real rollout
# (`Trainer.collect`, the `tiny` preset at CI size, `demo` otherwise) and `compute_gae` runs on what it stored,
# with the run's γ and λ: exactly the advantages its PPO update starts from (the update then normalises them).
# Each row is one world's episode; the letters mark the op each world executed at that step.

# %%
from esper_lab.actions import LifecycleOp
from esper_lab.config import preset
from esper_lab.rl import ppo
from esper_lab.rl.trainer import Trainer
from nb_helpers import advantage_heatmap, spy_on

cfg = preset(by_size(SIZE, ci="tiny", full="demo"), seed=0)
trainer = Trainer(cfg)
trainer.collect()
real = trainer.buffer.batched()
adv_real, ret_real = compute_gae(real.rewards, real.values, real.dones, real.truncated, real.bootstrap_values,
                                 cfg.gamma, cfg.ppo.gae_lambda)  # [E, T] each
with spy_on(ppo, "compute_gae") as gae_calls:
    trainer.updater.update(real)
trainer.close()
assert torch.equal(gae_calls[0].result[0], adv_real)  # the update's own advantages
assert real.truncated[:, -1].all() and torch.allclose(ret_real, adv_real + real.values)
ops_real = real.executed_ops  # [E, T]
print("executed ops:", {op.name: int((ops_real == op).sum()) for op in LifecycleOp})
advantage_heatmap(adv_real, ops_real, f"GAE advantages of one rollout ({cfg.num_envs} worlds × "
                  f"{cfg.world.max_epochs} steps; γ = {cfg.gamma}, λ = {cfg.ppo.gae_lambda})")

# %% [markdown]
# ## 6. Pitfall 2: a buffer that does not store `blueprint_indices`
#
# In the addendum's words: *"Buffer doesn't store blueprint indices. Symptom: KeyError in PPO update when trying to
# retrieve blueprint_indices."* The symptom arrives far from the cause: the rollout runs fine, and only the update,
# one whole rollout later, finds the field missing. Here the buffer checks its schema at `add()` time and names the
# missing field, so the mistake surfaces on the line that makes it:

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.rl.buffer import BufferSchemaError

fresh = RolloutBuffer(num_envs=E, max_steps=T, obs_dim=OBS_DIM, num_slots=S, lstm_hidden_dim=H)
fresh.reset(policy.initial_hidden(E))
without_indices = {k: v for k, v in step.items() if k != "blueprint_indices"}
err = expect_error(lambda: fresh.add(**without_indices), BufferSchemaError)
print(type(err).__name__, "->", err)
assert "blueprint_indices" in str(err) and len(fresh) == 0  # nothing was half-written

# %% [markdown]
# A subtler version of the same mistake: storing the indices with the wrong shape (one index per world instead of
# one per slot), or leaving out a head's mask:

# %%
# NBVAL_CHECK_OUTPUT
err = expect_error(lambda: fresh.add(**{**step, "blueprint_indices": torch.zeros(E, dtype=torch.int64)}), BufferSchemaError)
print(type(err).__name__, "->", err)
err = expect_error(lambda: fresh.add(**{**step, "masks": {h: m for h, m in res.masks.items() if h != "style"}}), BufferSchemaError)
print(type(err).__name__, "->", err)
assert len(fresh) == 0

# %% [markdown]
# And the newest way to get it wrong: adding steps without first saying which hidden state the rows start from.
# The update could not re-run them, so `add` refuses until `reset(initial_hidden)` has been called:

# %%
# NBVAL_CHECK_OUTPUT
unreset = RolloutBuffer(num_envs=E, max_steps=T, obs_dim=OBS_DIM, num_slots=S, lstm_hidden_dim=H)
err = expect_error(lambda: unreset.add(**step), BufferSchemaError)
print(type(err).__name__, "->", err)
assert "reset(initial_hidden)" in str(err) and len(unreset) == 0

# %% [markdown]
# ## Recap
#
# - `RolloutBuffer` holds `[num_envs, steps, ...]` rows: normalised obs, `blueprint_indices`, the joint action and
#   its per-head log-probs (`[E, T, 8]` each), value, `op_values`, the executed op, reward, done / truncated, the
#   bootstrap value and the 8 masks each head was sampled under; of the LSTM state, only the **initial** one, given
#   to `reset()`.
# - `batched()` gives the update whole episodes plus each row's initial hidden state; re-running a row from it
#   reproduces the stored log-probs and values, and every later hidden state.
# - GAE: a true terminal bootstraps from 0, a truncation from V(post-action state); the λ-chain is cut at both;
#   rows never mix. The worked example gives A = [1.0625, 0.75, 11.8575, 4.85]. At λ = 1 the advantages are
#   discounted returns minus values, at λ = 0 one-step TD errors.
# - A missing or mis-shaped field (pitfall 2) is a `BufferSchemaError` naming it at `add()` time, not a `KeyError`
#   one rollout later.
#
# Next: [05_ppo_update.ipynb](05_ppo_update.ipynb) turns a filled buffer into one PPO update.
#
# ## Exercises
#
# Write each answer in a new cell and pass it to its `check_...` function below, which raises `AssertionError` with
# a hint when the answer is wrong. Solutions are in the last section (their code is collapsed).
#
# **1. GAE by hand.** One episode of three steps, truncated at its last step: rewards `[1.0, 0.0, 2.0]`, values
# `[0.5, 0.4, 0.3]`, bootstrap value 1.0 after the last step, γ = 0.9, λ = 0.8. Write the backward recursion
# yourself (no `compute_gae`) and give the three advantages as a list.
#
# **2. Break-even bootstrap.** In the worked example of section 4 (γ = 0.9), which bootstrap value after the last
# step makes that step's advantage exactly 0?
#
# **3. The blueprint head's share.** The PPO update gives each head the advantage only on the steps where the head
# mattered for the executed op (`HEAD_RELEVANCE`, notebook 00). Without calling `per_head_advantages`, compute
# from `adv_real` and `ops_real` (section 5) the `[E, T]` advantages the `blueprint` head receives.

# %%
from esper_lab.actions import HEAD_RELEVANCE
from esper_lab.rl.advantages import per_head_advantages

EX1 = dict(r=[1.0, 0.0, 2.0], V=[0.5, 0.4, 0.3], boot=1.0, gamma=0.9, lam=0.8)


def check_three_steps(advantages):
    """Exercise 1: the three advantages of EX1."""
    end = torch.tensor([False, False, True])
    want = compute_gae(torch.tensor(EX1["r"]), torch.tensor(EX1["V"]), end, end, torch.tensor([0.0, 0.0, EX1["boot"]]),
                       EX1["gamma"], EX1["lam"])[0]
    assert torch.allclose(torch.tensor(advantages, dtype=torch.float32), want, atol=1e-4), (
        f"got {advantages}; the last step bootstraps, the others add γλ times the next advantage")
    print("correct:", [round(a, 4) for a in want.tolist()])


def check_break_even(b):
    """Exercise 2: the bootstrap value that makes the worked example's last advantage 0."""
    last = compute_gae(ex["r"], ex["V"], ex["done"], ex["trunc"], torch.tensor([0.0, 0.0, 0.0, float(b)]), 0.9, 0.5)[0][-1]
    assert abs(last.item()) < 1e-4, f"with bootstrap {b} the last advantage is {last.item():.4f}"
    print(f"correct: bootstrap {b:.4f} gives A_3 = {last.item():.1e}")


def check_blueprint_share(share):
    """Exercise 3: the [E, T] advantages of the blueprint head in the real rollout."""
    want = per_head_advantages(adv_real, ops_real)["blueprint"]
    assert share.shape == want.shape, f"expected {list(want.shape)}, got {list(share.shape)}"
    assert torch.allclose(share, want), "which ops is the blueprint head relevant for?"
    print(f"correct: nonzero on {int((want != 0).sum())} of {want.numel()} steps")


# Your answers, for example:
# check_three_steps([...])
# check_break_even(...)
# check_blueprint_share(...)

# %% [markdown]
# ## Solutions
#
# **1.** Backwards from the last step: δ_2 = r_2 + γ · 1.0 − V_2 (the truncation bootstraps and cuts the chain);
# then A_t = δ_t + γλ · A_{t+1} with δ_t = r_t + γ · V_{t+1} − V_t.

# %% jupyter={"source_hidden": true}
A_next, answer = 0.0, [0.0, 0.0, 0.0]
for t in reversed(range(3)):
    last = t == 2
    delta = EX1["r"][t] + EX1["gamma"] * (EX1["boot"] if last else EX1["V"][t + 1]) - EX1["V"][t]
    answer[t] = delta + (0.0 if last else EX1["gamma"] * EX1["lam"] * A_next)
    A_next = answer[t]
check_three_steps(answer)

# %% [markdown]
# **2.** The last step is truncated, so A_3 = δ_3 = r_3 + γ · b − V_3; it is 0 at b = (V_3 − r_3) / γ.

# %% jupyter={"source_hidden": true}
check_break_even((V[3] - r[3]) / 0.9)

# %% [markdown]
# **3.** The blueprint head matters only when the op is GERMINATE (`HEAD_RELEVANCE`), so its advantage is the
# step's advantage there and 0 elsewhere.

# %% jupyter={"source_hidden": true}
ops_using_blueprint = [op for op in LifecycleOp if "blueprint" in HEAD_RELEVANCE[op]]  # [GERMINATE]
check_blueprint_share(adv_real * torch.isin(ops_real, torch.tensor([int(op) for op in ops_using_blueprint])))
