# %% [markdown]
# # 04 · The rollout buffer and GAE (Phase 4, Step 4)
#
# **What you will learn**
#
# - the buffer's schema: one row per world, `[num_envs, steps, ...]`, holding exactly what the policy saw and
#   returned, `blueprint_indices` included;
# - what `add()` stores for one step (the **pre-step** hidden state, the normalised observation) and how
#   `batched()` hands the PPO update whole episodes with their initial hidden state;
# - GAE with truncation, worked by hand on a small example and checked against `compute_gae`, with a terminal and a
#   truncated episode side by side and two worlds kept apart;
# - the addendum's pitfall 2, a buffer that forgets `blueprint_indices`, shown as the clear error it raises.
#
# **Modules explained:** [esper_lab/rl/buffer.py](../esper_lab/rl/buffer.py) (`RolloutBuffer`, `RolloutBatch`)
# and [esper_lab/rl/advantages.py](../esper_lab/rl/advantages.py) (`compute_gae`). Seed documents: the addendum's
# Step 4 and "Common pitfalls" 2; esper_facts section 6.

# %%
import os

SIZE = os.environ.get("ESPER_LAB_NB_SIZE", "full")  # "ci" under `make test`, "full" for the committed outputs
assert SIZE in ("ci", "full"), SIZE

import torch
from IPython.display import Markdown, display

from nb_helpers import expect_error, markdown_table, setup

setup(seed=0, threads=2)
print("notebook size:", SIZE)

# %% [markdown]
# ## 1. The schema
#
# The buffer is pre-allocated for one rollout: `num_envs` rows of `max_steps` steps. Each row is one world's
# contiguous episode, so GAE never mixes worlds (Esper's "P0 fix") and the PPO update can replay a row as one LSTM
# sequence. A small buffer (2 worlds, 5 steps, a 64-wide LSTM) is enough to see every field:

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.features import OBS_DIM
from esper_lab.rl.buffer import RolloutBuffer

E, T, S, H = 2, 5, 3, 64
buffer = RolloutBuffer(num_envs=E, max_steps=T, obs_dim=OBS_DIM, num_slots=S, lstm_hidden_dim=H)


def describe(x):
    if isinstance(x, dict):
        first = next(iter(x.values()))
        return f"{{8 heads}} each {list(first.shape)} {str(first.dtype).replace('torch.', '')}"
    return f"{list(x.shape)} {str(x.dtype).replace('torch.', '')}"


fields = ["obs", "blueprint_indices", "actions", "log_probs", "values", "op_values", "rewards", "dones",
          "truncated", "bootstrap_values", "masks", "hidden_h", "hidden_c"]
display(Markdown(markdown_table([{"field": f, "shape and dtype": describe(getattr(buffer, f))} for f in fields])))
assert buffer.blueprint_indices.shape == (E, T, S) and buffer.blueprint_indices.dtype == torch.int64

# %% [markdown]
# ## 2. `add()`: one step for every world
#
# We drive a small policy on made-up observations with real legal-action masks (a world with every slot empty:
# only WAIT and GERMINATE are legal) and store each step exactly as the trainer does: the observation the policy
# saw, the indices it saw, what `get_action` returned, the reward, and the hidden state **fed into** the step.
# Every argument is keyword-only and required.

# %%
from esper_lab.actions import HEAD_NAMES, SlotView, compute_action_masks
from esper_lab.policy.bundle import LSTMPolicyBundle

torch.manual_seed(1)
policy = LSTMPolicyBundle(OBS_DIM, S, feature_dim=64, lstm_hidden_dim=H)
one_world = compute_action_masks([SlotView(None)] * S)
masks = {h: m.expand(E, -1).clone() for h, m in one_world.items()}  # {head: [E, k]}
obs_seq = torch.randn(T, E, OBS_DIM)  # stands in for normalised Obs V3 features
idx_seq = torch.full((T, E, S), -1, dtype=torch.int64)  # every slot empty
rewards = torch.tensor([[0.1, 0.0, 0.3, 0.0, 1.0], [0.0, 0.2, 0.0, -0.1, 0.5]])  # [E, T]

hidden = policy.initial_hidden(E)
hiddens = []
for t in range(T):
    res = policy.get_action(obs_seq[t], idx_seq[t], masks, hidden)
    buffer.add(obs=obs_seq[t], blueprint_indices=idx_seq[t], actions=res.actions, log_probs=res.log_probs,
               value=res.value, op_values=res.op_values, reward=rewards[:, t], done=torch.full((E,), t == T - 1),
               truncated=torch.full((E,), t == T - 1), masks=masks, hidden=hidden)
    hiddens.append(hidden)
    hidden = res.hidden  # carried to the next step
buffer.set_bootstrap(torch.tensor([0.7, -0.2]))  # V(post-action state) of each world's truncated last step
print("steps stored:", len(buffer), "| full:", buffer.full)

# %%
assert len(buffer) == T and buffer.full
assert torch.equal(buffer.obs[:, 2], obs_seq[2])  # row = world, column = step
assert torch.equal(buffer.hidden_h[:, 0, 0], torch.zeros(E, H))  # step 0 was fed the zero state
for t in range(1, T):  # step t stores the state fed INTO it, i.e. what step t-1 returned
    assert torch.equal(buffer.hidden_h[:, t, 0], hiddens[t][0][0])
assert buffer.bootstrap_values[:, -1].tolist() == [0.699999988079071, -0.20000000298023224]
assert buffer.bootstrap_values[:, :-1].eq(0).all()

# %% [markdown]
# Past capacity, `add()` refuses with an error that names the capacity (a silent overwrite would corrupt the
# episode the PPO update replays):

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.rl.buffer import BufferFullError

step = dict(obs=obs_seq[0], blueprint_indices=idx_seq[0], actions=res.actions, log_probs=res.log_probs,
            value=res.value, op_values=res.op_values, reward=rewards[:, 0], done=torch.zeros(E, dtype=torch.bool),
            truncated=torch.zeros(E, dtype=torch.bool), masks=masks, hidden=hidden)
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
# exact inputs, including the blueprint indices. This is the property the PPO update relies on (notebook 05):

# %%
ev = policy.evaluate_actions(batch.obs, batch.blueprint_indices, batch.actions, batch.masks, batch.initial_hidden)
for h in HEAD_NAMES:
    assert torch.allclose(ev.log_probs[h], batch.log_probs[h], atol=1e-5), h
assert torch.allclose(ev.value, batch.values, atol=1e-5)
print("max |replayed − stored| log-prob:", max((ev.log_probs[h] - batch.log_probs[h]).abs().max().item() for h in HEAD_NAMES))

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
# The worked example of esper_facts section 6 (γ = 0.9, λ = 0.5): two episodes in one row, the first ending in a
# true terminal at step 1, the second truncated at step 3 with a bootstrap value of 4.

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
display(Markdown(markdown_table(rows[::-1])))

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
# And on the buffer we filled above (γ = 0.995, λ = 0.98, the lab's defaults), every row ends truncated and
# bootstraps from what `set_bootstrap` stored:

# %%
adv_b, ret_b = compute_gae(batch.rewards, batch.values, batch.dones, batch.truncated, batch.bootstrap_values,
                           0.995, 0.98)
assert adv_b.shape == (E, T) and torch.allclose(ret_b, adv_b + batch.values)
last_delta = batch.rewards[:, -1] + 0.995 * batch.bootstrap_values[:, -1] - batch.values[:, -1]
assert torch.allclose(adv_b[:, -1], last_delta)  # the truncated last step: δ with the bootstrap, nothing after
print("advantages per world:", [[round(a, 3) for a in row] for row in adv_b.tolist()])

# %% [markdown]
# ## 5. Pitfall 2: a buffer that does not store `blueprint_indices`
#
# In the addendum's words: *"Buffer doesn't store blueprint indices. Symptom: KeyError in PPO update when trying to
# retrieve blueprint_indices."* The symptom arrives far from the cause: the rollout runs fine, and only the update,
# one whole rollout later, finds the field missing. Here the buffer checks its schema at `add()` time and names the
# missing field, so the mistake surfaces on the line that makes it:

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.rl.buffer import BufferSchemaError

fresh = RolloutBuffer(num_envs=E, max_steps=T, obs_dim=OBS_DIM, num_slots=S, lstm_hidden_dim=H)
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
err = expect_error(lambda: fresh.add(**{**step, "masks": {h: m for h, m in masks.items() if h != "style"}}), BufferSchemaError)
print(type(err).__name__, "->", err)
assert len(fresh) == 0

# %% [markdown]
# ## Recap
#
# - `RolloutBuffer` holds `[num_envs, steps, ...]` rows: normalised obs, `blueprint_indices`, 8 actions, 8 per-head
#   log-probs, value, `op_values`, reward, done / truncated, the bootstrap value, 8 masks and the **pre-step** hidden.
# - `batched()` gives the update whole episodes plus each row's initial hidden state; replaying a row reproduces the
#   stored log-probs and values.
# - GAE: a true terminal bootstraps from 0, a truncation from V(post-action state); the λ-chain is cut at both;
#   rows never mix. The worked example gives A = [1.0625, 0.75, 11.8575, 4.85].
# - A missing or mis-shaped field (pitfall 2) is a `BufferSchemaError` naming it at `add()` time, not a `KeyError`
#   one rollout later.
#
# Next: [05_ppo_update.ipynb](05_ppo_update.ipynb) turns a filled buffer into one PPO update.
