# %% [markdown]
# # 01 · Policy Network V2 (Phase 4, Step 1)
#
# **What you will learn**
#
# - how `FactoredRecurrentActorCritic` is put together: blueprint embedding → feature net → LSTM → eight masked
#   policy heads, plus a critic conditioned on the op, Q(s, op);
# - where its 3.6 M parameters live, and why the plan's "~2.1M" is the LSTM alone;
# - what `_compute_value(lstm_out, op)` computes and how the three entry points (`forward`, `evaluate_actions`,
#   `get_action`) use it;
# - the three output types and their shapes;
# - the addendum's TypedDict-or-NamedTuple question, settled the way the addendum asks: by measuring `torch.compile`;
# - how Q(s, op) moves when you put other blueprints in the slots (an interactive panel).
#
# **Modules explained:** [esper_lab/policy/network.py](../esper_lab/policy/network.py) (the network and its output
# types) and [esper_lab/policy/distributions.py](../esper_lab/policy/distributions.py) (`MaskedCategorical`).
# Seed documents: the Phase 4 plan, sections 4a to 4f, and the addendum's Step 1.

# %%
import os

SIZE = os.environ.get("ESPER_LAB_NB_SIZE", "full")  # "ci" under `make test`, "full" for the committed outputs
assert SIZE in ("ci", "full"), SIZE

import torch
from IPython.display import Markdown, display

from nb_helpers import setup

setup(seed=0, threads=2)  # torch.set_num_threads(2) and every seed, so the checked numbers are stable
print("notebook size:", SIZE)

# %% [markdown]
# ## 1. Build the network
#
# The observation is Obs V3: 121 numbers per world (notebook 00). The network also takes the blueprint index of
# each of the 3 slots (-1 for an empty slot), embeds each one as a learned 4-vector, and concatenates the 12
# embedding numbers to the observation before the feature net. Everything after the LSTM reads the same
# `lstm_out` vector of 512 numbers.

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.actions import HEAD_NAMES, NUM_OPS, LifecycleOp
from esper_lab.features import OBS_DIM
from esper_lab.policy.network import FactoredRecurrentActorCritic

net = FactoredRecurrentActorCritic(state_dim=OBS_DIM, num_slots=3)  # Phase 4 sizes: 512 / 512 / 256
print(net)

# %% [markdown]
# ## 2. Where the parameters are, and what "~2.1M" counted
#
# The plan wrote "Params: ~2.1M" next to its validation snippet. Counting module by module shows that figure is
# the LSTM alone: a one-layer LSTM of width 512 on a 512-wide input has 4 gates × 512 × (512 + 512) weights plus two
# bias vectors of 4 × 512, which is 2,101,248. The whole network is about 3.6 M.

# %%
# NBVAL_CHECK_OUTPUT
from nb_helpers import bar_figure, lstm_parameter_count, markdown_table, parameter_breakdown

top = parameter_breakdown(net, depth=1)
heads = {k: v for k, v in parameter_breakdown(net, depth=2).items() if k.startswith("heads.")}
total = sum(p.numel() for p in net.parameters())
rows = [{"module": k, "parameters": f"{v:,}", "share": f"{100 * v / total:.1f}%"} for k, v in top.items()]
rows += [{"module": "  " + k, "parameters": f"{v:,}", "share": f"{100 * v / total:.1f}%"} for k, v in heads.items()]
rows.append({"module": "**total**", "parameters": f"**{total:,}**", "share": "100%"})
display(Markdown(markdown_table(rows)))

lstm = lstm_parameter_count(512, 512)
assert top["lstm"] == lstm == 2_101_248, top["lstm"]          # the plan's "~2.1M"
assert total == sum(top.values())
assert top["blueprint_embedding"] == 14 * 4                    # 13 blueprints + the learned null row, 4 dims each
assert heads["heads.blueprint"] == 512 * 512 + 512 + 512 * 256 + 256 + 256 * 13 + 13   # the 3-layer head
assert top["value_head"] == (512 + NUM_OPS) * 256 + 256 + 256 + 1                     # (512 + 6) -> 256 -> 1
# With the Phase 4 addendum's 114-dim observation, 7 fewer inputs to the feature net's Linear(., 512): the size of
# Esper's Phase 4 network with a 114-dim state and the blueprint embedding (commit 0872525b), 3,625,314 parameters.
assert total - 7 * 512 == 3_625_314
print(f"total {total:,}; the LSTM alone {lstm:,} = {100 * lstm / total:.0f}% of it")

# %%
bar_figure(list(top), list(top.values()), "Parameters per module (log scale)", "parameters", log_y=True,
           text=[f"{v:,}" for v in top.values()])

# %% [markdown]
# ## 3. The op-conditioned critic: `_compute_value(lstm_out, op)`
#
# Phase 4's critic does not score a state, it scores a state *and the op about to be taken*:
#
# ```python
# def _compute_value(self, lstm_out, op):
#     one_hot = F.one_hot(op, NUM_OPS)                        # [..., 6]
#     return self.value_head(cat(lstm_out, one_hot)).squeeze(-1)   # Q(s, op), [...]
# ```
#
# One helper, three callers, and the rule the first Phase 4 commit broke (notebook 02): the op that conditions the
# value must be the op that is acted on.
#
# | caller | op it conditions on |
# |---|---|
# | `forward()` (rollout-style pass) | the op it samples from the masked op logits, returned as `sampled_op` |
# | `get_action()` (one rollout step) | stochastic: that same sampled op, which *is* `actions["op"]`; deterministic: the argmax op, with Q recomputed for it |
# | `evaluate_actions()` (PPO update) | the **stored** op `actions["op"]`, or `value_op` when given: the update passes the op the world executed, which is the stored op unless the action could not run as requested |
#
# `q_values(lstm_out)` computes Q for all six ops in one pass (the first layer is linear in the one-hot, so each op
# only adds its own column of weights); the network returns it as `op_values` for telemetry and the dashboard.

# %%
torch.manual_seed(1)
B, T, S = 2, 5, 3
state = torch.randn(B, T, OBS_DIM)
bp_idx = torch.randint(-1, 13, (B, T, S))  # -1 = empty slot

lstm_out, _ = net.encode(state, bp_idx)  # the shared trunk: [B, T, 512]
q_each_op = torch.stack([net._compute_value(lstm_out, torch.full((B, T), int(op))) for op in LifecycleOp], dim=-1)
q_all = net.q_values(lstm_out)  # [B, T, 6] in one pass
assert torch.allclose(q_each_op, q_all, atol=1e-5)

out = net(state, bp_idx)  # samples an op per step, returns Q(s, that op)
assert torch.allclose(out.value, net._compute_value(lstm_out, out.sampled_op), atol=1e-6)
assert torch.allclose(out.value, q_all.gather(-1, out.sampled_op.unsqueeze(-1)).squeeze(-1), atol=1e-5)
print("sampled ops of world 0:", [LifecycleOp(int(o)).name for o in out.sampled_op[0]])
print("Q(s, sampled op)      :", [round(v, 4) for v in out.value[0].tolist()])

# %%
from nb_helpers import heatmap_figure

heatmap_figure(q_all[0].tolist(), [op.name for op in LifecycleOp], [f"world 0, step {t}" for t in range(T)],
               "Q(s, op) of a fresh network: one row per state, one column per op", zmid=0.0, fmt="+.3f")

# %% [markdown]
# At initialisation the six values of a state differ only through the op's own column of first-layer weights, so
# they are close together; whether training spreads them apart (`q_spread`) is one of notebook 07's questions.
#
# ## 4. The output types
#
# `forward()` returns a `ForwardOutput`, `evaluate_actions()` an `EvaluateOutput` (its first four fields are
# Phase 4's 4-tuple `(log_probs, value, entropy, hidden)`), `get_action()` a frozen `GetActionResult` dataclass,
# whose action and log-probs come both per head (`{head: [B]}`) and joint (`[B, 8]`, columns in `HEAD_NAMES`
# order: what the worlds step on and the buffer stores). Shapes for 2 worlds × 5 steps:

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.policy.network import EvaluateOutput, ForwardOutput, GetActionResult


def shape_of(x):
    if isinstance(x, torch.Tensor):
        return f"{list(x.shape)} {str(x.dtype).replace('torch.', '')}"
    if isinstance(x, tuple):
        return "(" + ", ".join(shape_of(v) for v in x) + ")"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {shape_of(v)}" for k, v in list(x.items())[:2]) + ", ...}" 
    return type(x).__name__


assert isinstance(out, ForwardOutput)
print("ForwardOutput (forward)")
for name in ForwardOutput._fields:
    print(f"  {name:20s} {shape_of(getattr(out, name))}")

actions = {f"{h}": getattr(out, f"{h}_logits").argmax(-1) for h in HEAD_NAMES if h != "op"}
actions["op"] = out.sampled_op  # the STORED op
ev = net.evaluate_actions(state, bp_idx, actions)
assert isinstance(ev, EvaluateOutput)
print("EvaluateOutput (evaluate_actions)")
for name in EvaluateOutput._fields:
    print(f"  {name:20s} {shape_of(getattr(ev, name))}")

res = net.get_action(state[:, 0], bp_idx[:, 0])
assert isinstance(res, GetActionResult)
print("GetActionResult (get_action, one step)")
for name in ("actions", "log_probs", "value", "sampled_op", "op_values", "hidden", "joint_actions", "joint_log_probs"):
    print(f"  {name:20s} {shape_of(getattr(res, name))}")

# %%
# The addendum's stored-op consistency: the value evaluate_actions computes for the stored op equals the value
# forward() returned for the op it sampled (same weights, same inputs, same op).
assert torch.allclose(ev.value, out.value, atol=1e-5)
assert set(ev.log_probs) == set(ev.entropy) == set(HEAD_NAMES)
assert all(0.0 <= e.min().item() and e.max().item() <= 1.0 for e in ev.entropy.values())  # normalised entropy
assert res.sampled_op is res.actions["op"]  # one op sample for the action and the value
assert torch.equal(res.joint_actions, torch.stack([res.actions[h] for h in HEAD_NAMES], dim=-1))  # [B, 8]
print("max |evaluate_actions value - forward value| =", (ev.value - out.value).abs().max().item())

# %% [markdown]
# ## 5. TypedDict or NamedTuple? Measure `torch.compile`
#
# The addendum says: keep Esper's `TypedDict` for the forward output unless a `torch.compile` benchmark shows a
# training speedup above 5% for the `NamedTuple` the plan proposed. So we measure exactly that: the same network,
# its output returned either as the `ForwardOutput` NamedTuple or converted to a `TypedDict` with the same keys,
# each compiled, timed on a forward + backward pass (what a training step pays), A and B interleaved so that
# machine noise hits both equally.
#
# At `ci` size this runs the cheap `eager` dynamo backend on a small network (it checks that both compile); the
# committed outputs come from the `full` run, which compiles the Phase 4 network with the default `inductor`
# backend.

# %%
# NBVAL_IGNORE_OUTPUT
import logging
import statistics
import time
from typing import TypedDict

torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)  # graph-break notices are expected below

if SIZE == "full":
    bench_net, backend, repeats, (Bc, Tc) = net, "inductor", 12, (4, 30)
else:
    # ci: check that both variants compile, on a small network with the cheap `eager` backend; no timing
    bench_net, backend, repeats, (Bc, Tc) = FactoredRecurrentActorCritic(OBS_DIM, feature_dim=32, lstm_hidden_dim=32), "eager", 0, (2, 8)

ForwardDict = TypedDict("ForwardDict", {name: object for name in ForwardOutput._fields})


def as_namedtuple(s, b):
    return bench_net(s, b)  # ForwardOutput


def as_typeddict(s, b):
    o = bench_net(s, b)
    return ForwardDict(**{name: getattr(o, name) for name in ForwardOutput._fields})


def training_loss(o):
    get = o.__getitem__ if isinstance(o, dict) else lambda k: getattr(o, k)
    return get("value").pow(2).mean() + sum(get(f"{h}_logits").logsumexp(-1).mean() for h in HEAD_NAMES)


torch.manual_seed(2)
s_c, b_c = torch.randn(Bc, Tc, OBS_DIM), torch.randint(-1, 13, (Bc, Tc, 3))
graphs, graph_count, compiled, compile_seconds = {}, {}, {}, {}
for name, fn in (("NamedTuple", as_namedtuple), ("TypedDict", as_typeddict)):
    torch._dynamo.reset()
    graphs[name] = 0

    def counting_backend(gm, example_inputs, name=name):  # counts the graphs dynamo hands to the backend
        graphs[name] += 1
        return torch._dynamo.lookup_backend(backend)(gm, example_inputs)

    compiled[name] = torch.compile(fn, backend=counting_backend)
    t0 = time.perf_counter()
    training_loss(compiled[name](s_c, b_c)).backward()  # first call compiles (forward and backward graphs)
    compile_seconds[name] = time.perf_counter() - t0
    graph_count[name] = graphs[name]  # graphs of a from-scratch compile (the reset above cleared every cache)


def train_step_ms(fn):
    bench_net.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    t0 = time.perf_counter()
    training_loss(fn(s_c, b_c)).backward()
    return (time.perf_counter() - t0) * 1e3


variants = {"NamedTuple eager": as_namedtuple, "TypedDict eager": as_typeddict,
            "NamedTuple compiled": compiled["NamedTuple"], "TypedDict compiled": compiled["TypedDict"]}
medians = {}
if repeats:
    for fn in variants.values():
        train_step_ms(fn)  # warm-up (and a recompile of the variant whose cache the second reset cleared)
    times = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved: A, B, A, B, ...
        for name, fn in variants.items():
            times[name].append(train_step_ms(fn))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}  # the least disturbed run: shown, but one lucky run decides it
    rows = [{"variant": k, "median ms": round(medians[k], 1), "best ms": round(best[k], 1)} for k in variants]
    display(Markdown(f"forward + backward, backend `{backend}`, batch {Bc} × {Tc} steps, {repeats} interleaved "
                     f"repeats\n\n" + markdown_table(rows)))
print("graphs dynamo compiled:", graph_count, " first-call (compile) seconds:",
      {k: round(v, 1) for k, v in compile_seconds.items()})

# %%
# Both output types give identical numbers, and dynamo splits the network into the same number of graphs for both:
# the graph breaks come from the input validation's host syncs (`if bool(bad.any())`), not from the output container.
torch.manual_seed(4)
o_nt = as_namedtuple(s_c, b_c)
torch.manual_seed(4)
o_td = as_typeddict(s_c, b_c)
assert all(torch.equal(getattr(o_nt, k), o_td[k]) for k in ForwardOutput._fields if k != "hidden")
assert graph_count["NamedTuple"] == graph_count["TypedDict"] > 1
if medians:
    # The two eager variants do identical tensor work, so their gap is the noise floor of this measurement.
    noise = abs(medians["TypedDict eager"] / medians["NamedTuple eager"] - 1.0)
    speedup = medians["TypedDict compiled"] / medians["NamedTuple compiled"] - 1.0  # > 0: NamedTuple faster
    clears_bar = speedup > 0.05 and speedup > 2 * noise
    display(Markdown(
        f"**Measured (medians):** compiled NamedTuple vs compiled TypedDict: {100 * speedup:+.1f}% (positive = NamedTuple "
        f"faster); the noise floor (eager vs eager, identical work): {100 * noise:.1f}%. "
        + ("The difference clears the addendum's 5% bar and the noise." if clears_bar else
           "That is not a speedup the addendum would accept: it needs more than 5%, reproducibly, above the noise.")))

# %% [markdown]
# **Reading the measurement.** The container is a Python-level wrapper around the same tensors: dynamo flattens a
# NamedTuple and a dict alike, so both variants compile into the same graphs with the same breaks and the compiled
# code does identical work. On this shared 2-core machine timings move from run to run in either direction, by
# several percent when it is quiet and by far more when other jobs share it; the eager pair above, which does
# exactly the same work twice, shows how much. The addendum's rule, applied to Esper, therefore says *keep the
# TypedDict*: its 30+ call sites would have paid migration churn for a difference the measurement cannot tell from
# noise.
#
# esper_lab has no legacy call sites, so the reason to keep a TypedDict does not exist here, and the lab follows
# the plan's section 4d: `NamedTuple`s give attribute access (`out.value`), immutability, and an `EvaluateOutput`
# whose first four fields unpack like Phase 4's 4-tuple. The speed question is settled: it is not a reason either way.
#
# ## 6. Interactive: Q(s, op) as the slots change
#
# Pick a blueprint (or empty) for each slot and watch the critic's value of each op for one fixed observation.
# The panel's numbers come from `nb_helpers.op_values_for_blueprints`, which the test suite checks.
# (On a fresh network the bars move only a little: the embedding is initialised at N(0, 0.02). Try it on a
# trained checkpoint from notebook 07 to see larger moves.)

# %%
# NBVAL_IGNORE_OUTPUT
from esper_lab.actions import BlueprintAction
from nb_helpers import blueprint_value_panel

torch.manual_seed(5)
one_obs = torch.randn(OBS_DIM)
panel = blueprint_value_panel(net, one_obs, initial=[int(BlueprintAction.CONV_LIGHT), -1, -1])
panel

# %%
from nb_helpers import op_values_for_blueprints

empty = op_values_for_blueprints(net, one_obs, [-1, -1, -1])
conv = op_values_for_blueprints(net, one_obs, [int(BlueprintAction.CONV_LIGHT), -1, -1])
heavy = op_values_for_blueprints(net, one_obs, [int(BlueprintAction.CONV_HEAVY), -1, -1])
assert empty.shape == (NUM_OPS,)
assert not torch.allclose(empty, conv) and not torch.allclose(conv, heavy)  # the embedding reaches the critic
print("max |ΔQ| empty → CONV_LIGHT in slot r0c0:", round((conv - empty).abs().max().item(), 5))

# %% [markdown]
# ## Recap
#
# - The network is `embedding(bp_idx) ++ obs → Linear+LN+ReLU → LSTM(512)+LN → 8 heads` plus the critic
#   `value_head(cat(lstm_out, one_hot(op)))`; 3,628,898 parameters for the 121-dim observation, of which the LSTM
#   alone is the plan's "~2.1M" (2,101,248).
# - `_compute_value(lstm_out, op)` is the one place Q(s, op) is computed; `forward` conditions it on the op it
#   samples, `get_action` on the op it acts with (argmax when deterministic), `evaluate_actions` on the stored
#   (executed) op.
# - The outputs are NamedTuples (and a frozen dataclass for `get_action`); measured under `torch.compile`, the
#   container makes no speed difference, so the addendum's 5% bar is not what decides it.
# - Blueprint embeddings feed the trunk, so what sits in the slots moves every head and the critic.
#
# Next: [02_policy_bundle.ipynb](02_policy_bundle.ipynb) wraps the network in the `Agent` that the rollout and the
# update call, and shows what goes wrong when the action and the value use two different op samples.
