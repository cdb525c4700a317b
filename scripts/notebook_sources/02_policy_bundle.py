# %% [markdown]
# # 02 · The policy bundle (Phase 4, Step 2)
#
# **What you will learn**
#
# - what `LSTMPolicyBundle` adds to the network (the trainer's argument order: `blueprint_indices` right after the
#   features, in all four methods) and what it deliberately does not add (any maths);
# - stochastic and deterministic `get_action`: what each returns, and the invariants they keep
#   (`sampled_op is actions["op"]`; deterministic = argmax of every head with Q recomputed for the argmax op);
# - the bug the first Phase 4 commit shipped: the value's op and the action's op sampled **separately**. We rebuild
#   it, measure how often the two ops differ and how wrong the stored value becomes, and put it next to the
#   single-sample path the lab uses.
#
# **Modules explained:** [esper_lab/policy/bundle.py](../esper_lab/policy/bundle.py) (the wrapper) and
# [esper_lab/policy/network.py](../esper_lab/policy/network.py) (`get_action`); the legal-action masks come from
# [esper_lab/actions.py](../esper_lab/actions.py). Seed documents: the addendum's Step 2 and its validation snippet
# "After Step 2"; esper_facts 5c.1 (the op/value mismatch).

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
# The trainer never calls the network directly. It calls the bundle, whose four methods all take
# `(features, blueprint_indices, ...)`: the addendum's Step 2 is exactly "add `blueprint_indices` to these four
# methods". The bundle forwards to the network and adds no maths, so every invariant of notebook 01 holds here.

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.config import preset
from esper_lab.features import OBS_DIM
from esper_lab.policy.bundle import LSTMPolicyBundle

bundle = LSTMPolicyBundle.from_config(OBS_DIM, preset("demo").policy)  # the Phase 4 sizes, critic "q_op"
for method in ("get_action", "forward", "evaluate_actions", "get_value"):
    params = list(inspect.signature(getattr(bundle, method)).parameters)
    print(f"{method:17s}({', '.join(params)})")
    assert params[:2] == ["features", "blueprint_indices"], params
print("critic:", bundle.critic, "| recurrent:", bundle.is_recurrent)

# %% [markdown]
# The addendum's validation snippet "After Step 2", adapted to these names (an empty mask dict means "all legal"):

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
features = torch.randn(2, OBS_DIM)
bp_idx = torch.randint(0, 13, (2, 3))
masks = {}  # Empty masks for test

result = bundle.get_action(features, bp_idx, masks)
print(f"Action result value shape: {tuple(result.value.shape)}")
print("✓ Wrapper works")
assert result.value.shape == (2,)

# %% [markdown]
# ## 2. Real masks for a few worlds
#
# `get_action` takes the legal-action masks of each world. We build them with the same function the environment
# uses, `actions.compute_action_masks`, for four worlds in different situations: all slots empty; a seed training
# in slot r0c0; a seed holding in r0c1; and a world where every slot is full and no seed can be acted on, so WAIT
# is the only legal op.

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.actions import HEAD_NAMES, NUM_OPS, AlphaMode, LifecycleOp, SeedStage, SlotView, compute_action_masks

worlds = {
    "all empty": [SlotView(None), SlotView(None), SlotView(None)],
    "training in r0c0": [SlotView(SeedStage.TRAINING, seed_age=3), SlotView(None), SlotView(None)],
    "holding in r0c1": [SlotView(None), SlotView(SeedStage.HOLDING, seed_age=9), SlotView(None)],
    "only WAIT legal": [SlotView(SeedStage.FOSSILIZED)] * 3,
}
per_world = [compute_action_masks(views) for views in worlds.values()]
masks = {h: torch.stack([m[h] for m in per_world]) for h in HEAD_NAMES}  # {head: [4, k]}
for name, m in zip(worlds, per_world):
    print(f"{name:17s} legal ops: {[op.name for op in LifecycleOp if m['op'][op]]}")
assert masks["op"][3].tolist() == [True, False, False, False, False, False]

# %% [markdown]
# ## 3. Stochastic `get_action`
#
# One call per rollout step for all worlds: it returns one action per head, the per-head log-probabilities (what
# PPO stores as the old log-probs), the value, `sampled_op` and Q for every op, plus the new LSTM state. The one
# rule: **`actions["op"]` is `sampled_op`**, the op the value was computed for.

# %%
torch.manual_seed(1)
B = len(worlds)
features = torch.randn(B, OBS_DIM)
bp_idx = torch.tensor([[-1, -1, -1], [3, -1, -1], [-1, 5, -1], [1, 2, 7]])  # matches the worlds above
hidden = bundle.initial_hidden(B)

res = bundle.get_action(features, bp_idx, masks, hidden)
assert res.sampled_op is res.actions["op"]  # literally the same tensor
q_acted = res.op_values.gather(1, res.actions["op"].unsqueeze(1)).squeeze(1)
assert torch.allclose(res.value, q_acted, atol=1e-5)  # value = Q(s, the op acted on) (q_values rounds differently)
for h in HEAD_NAMES:  # every sampled action is legal under its world's mask
    assert masks[h].gather(1, res.actions[h].unsqueeze(1)).all(), h
    assert (res.log_probs[h] <= 0).all()
assert res.actions["op"][3].item() == LifecycleOp.WAIT  # the only legal op is chosen
assert not res.value.requires_grad and res.hidden[0].shape == (1, B, 512)
display(Markdown("\n".join(
    f"- **{name}**: op `{LifecycleOp(int(res.actions['op'][i])).name}`, value {res.value[i].item():+.4f}, "
    f"log π(op) {res.log_probs['op'][i].item():.3f}" for i, name in enumerate(worlds))))

# %% [markdown]
# ## 4. Deterministic `get_action` (the bootstrap)
#
# At the end of a rollout the trainer asks for the value of the post-action state with `deterministic=True`
# (notebook 03). Every head then takes the argmax of its masked logits, and the value is **recomputed** for the
# argmax op: not Q of some op sampled inside `forward()`.

# %%
det = bundle.get_action(features, bp_idx, masks, hidden, deterministic=True)
fwd = bundle.forward(features.unsqueeze(1), bp_idx.unsqueeze(1), {h: m.unsqueeze(1) for h, m in masks.items()}, hidden)
for h in HEAD_NAMES:
    assert torch.equal(det.actions[h], getattr(fwd, f"{h}_logits")[:, 0].argmax(-1)), h
assert det.sampled_op is det.actions["op"]
assert torch.allclose(det.value, det.op_values.gather(1, det.actions["op"].unsqueeze(1)).squeeze(1), atol=1e-5)
again = bundle.get_action(features, bp_idx, masks, hidden, deterministic=True)
assert all(torch.equal(again.actions[h], det.actions[h]) for h in HEAD_NAMES) and torch.equal(again.value, det.value)
assert det.actions["op"][3].item() == LifecycleOp.WAIT
# get_value (debug only) agrees with the deterministic value for the argmax op:
assert torch.allclose(bundle.get_value(features, bp_idx, hidden, det.actions["op"], masks), det.value, atol=1e-6)
print("deterministic ops:", [LifecycleOp(int(o)).name for o in det.actions["op"]])

# %% [markdown]
# ## 5. The op/value mismatch of the first Phase 4 commit
#
# As shipped in Esper's commit 97d9ba3f, `get_action()` called `forward()`, which sampled op #1 and returned
# Q(s, op #1) as the value; then `get_action()` picked the action's op #2 **again**, from the same logits: a second
# independent sample, or the argmax in deterministic mode. The stored value and the stored action then describe two
# different ops. Esper measured the two ops differing on **75 to 86%** of steps, a bootstrap bias of 8 to 16 units
# per episode and twice the TD-error variance (esper_facts 5c.1); the fix (0872525b) reuses forward's op.
#
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
taught = copy.deepcopy(bundle.network)
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
# The stochastic mismatch adds noise but little bias on average (both ops come from the same distribution); the
# deterministic one is a bias: the bootstrap stored E over a sampled op instead of Q of the argmax op the policy
# would take, on every truncated episode. In both cases `evaluate_actions` later trains the critic on the stored
# op while GAE used the value of another op, the "GAE mismatch" the plan warned about.
#
# ## 6. `state_dict` round trip
#
# The trainer checkpoints the bundle through `state_dict()`; a new bundle loaded from it acts identically
# (the embedding's null index is a buffer, so it travels too).

# %%
clone = LSTMPolicyBundle.from_config(OBS_DIM, preset("demo").policy)
clone.load_state_dict(bundle.state_dict())
a = bundle.get_action(features, bp_idx, masks, hidden, deterministic=True)
b = clone.get_action(features, bp_idx, masks, hidden, deterministic=True)
assert all(torch.equal(a.actions[h], b.actions[h]) for h in HEAD_NAMES) and torch.equal(a.value, b.value)
assert "blueprint_embedding._null_idx" in bundle.state_dict()
print("round trip: identical actions and values")

# %% [markdown]
# ## Recap
#
# - `LSTMPolicyBundle` is the trainer's view of the network: `get_action`, `forward`, `evaluate_actions` and
#   `get_value` all take `(features, blueprint_indices, ...)`, and it adds no maths of its own.
# - Stochastic `get_action`: one sample per head; `actions["op"]` **is** `sampled_op`, and `value` = Q(s, that op).
# - Deterministic `get_action` (the bootstrap): argmax per head and Q recomputed for the argmax op.
# - Sampling the op twice, as the first Phase 4 commit did, makes the stored value describe another op on most steps
#   (about 1 − 1/k with k legal ops and an uncertain policy) and biases the bootstrap; one sample removes the error
#   exactly.
#
# Next: [03_rollout_and_bootstrap.ipynb](03_rollout_and_bootstrap.ipynb) runs the bundle inside a vectorised rollout.
