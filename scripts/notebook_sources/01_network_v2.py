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
# - the addendum's TypedDict-or-NamedTuple question, and where it is measured (`torch.compile`, in the appendix,
#   notebook 09);
# - how Q(s, op) moves when you put other blueprints in the slots (an interactive panel), and how little it moves
#   on a fresh network;
# - `MaskedCategorical` from scratch: the finite −1e4 fill for illegal actions and the normalised entropy;
# - the initial scales from scratch: orthogonal weights whose singular values all equal their gain, and why a fresh
#   policy head is almost uniform.
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
# ## 5. TypedDict or NamedTuple?
#
# The addendum says: keep Esper's `TypedDict` for the forward output unless a `torch.compile` benchmark shows a
# training speedup above 5% for the `NamedTuple` the plan proposed. That benchmark takes minutes at full size, so
# it lives in the appendix, [09_appendix.ipynb](09_appendix.ipynb), section 1. What it shows: the container is a
# Python-level wrapper around the same tensors, and the two variants compile into the same graphs with the same
# operations and give identical numbers (asserted there), so the compiled code does the same work and any timing
# gap between them is noise, set there beside the gap between two identical eager runs. By the addendum's rule,
# Esper keeps its TypedDict and spares its 30+ call sites the churn. esper_lab has no legacy call sites, so that
# reason does not exist here, and the lab follows the plan's section 4d: `NamedTuple`s give attribute access
# (`out.value`), immutability, and an `EvaluateOutput` whose first four fields unpack like Phase 4's 4-tuple. The
# appendix also measures what compiling this network can and cannot speed up on this CPU (section 2 there).

# %% [markdown]
# ## 6. Interactive: Q(s, op) as the slots change
#
# Pick a blueprint (or empty) for each slot and watch the critic's value of each op for one fixed observation.
# The panel's numbers come from `nb_helpers.op_values_for_blueprints`, which the test suite checks.
#
# On this fresh network the bars barely move. Putting CONV_LIGHT in r0c0 (the panel's starting choice) moves no
# Q(s, op) by more than 0.001 from its value with every slot empty; over all 14³ = 2,744 ways to fill the three
# slots the largest move is about 0.02, while the same six values vary with a standard deviation of about 0.7
# across random observations (the second cell below measures all three). A fresh critic's Q hardly depends on the
# blueprints: each slot adds 4 embedding numbers drawn from N(0, 0.02) beside 121 observation features. Whether
# training makes them matter is a question for a trained network; notebook 07 follows the embedding table over a
# training run.

# %%
# NBVAL_IGNORE_OUTPUT
from esper_lab.actions import BlueprintAction
from nb_helpers import blueprint_value_panel

torch.manual_seed(5)
one_obs = torch.randn(OBS_DIM)
from esper_lab.plots.ops import op_value_bars

panel = blueprint_value_panel(net, one_obs, initial=[int(BlueprintAction.CONV_LIGHT), -1, -1])
display(panel)
# the panel's picture lives in a widget, which GitHub and HTML exports cannot draw: the same bars as a plain figure
op_value_bars(panel.refresh(), title="Q(s, op) of the fresh critic with CONV_LIGHT in slot r0c0")

# %%
from nb_helpers import op_values_for_blueprints

empty = op_values_for_blueprints(net, one_obs, [-1, -1, -1])
conv = op_values_for_blueprints(net, one_obs, [int(BlueprintAction.CONV_LIGHT), -1, -1])
heavy = op_values_for_blueprints(net, one_obs, [int(BlueprintAction.CONV_HEAVY), -1, -1])
assert empty.shape == (NUM_OPS,)
assert not torch.allclose(empty, conv) and not torch.allclose(conv, heavy)  # the embedding reaches the critic
print("max |ΔQ| empty → CONV_LIGHT in slot r0c0:", round((conv - empty).abs().max().item(), 5))
assert (conv - empty).abs().max().item() < 1e-3

# Every way to fill the three slots (14 choices each), in one batch: how far can the panel's bars move?
from nb_helpers import SLOT_CHOICES

choices = torch.tensor([value for _, value in SLOT_CHOICES])  # [14]: -1 (empty) and the 13 blueprints
fillings = torch.cartesian_prod(choices, choices, choices)  # [2744, 3]
q_fillings = net.get_action(one_obs.repeat(len(fillings), 1), fillings, deterministic=True).op_values  # [2744, 6]
at_conv = int(((fillings == torch.tensor([int(BlueprintAction.CONV_LIGHT), -1, -1])).all(-1)).nonzero())
assert torch.allclose(q_fillings[at_conv], conv, atol=1e-6)  # the batch gives the panel's numbers
largest_move = (q_fillings - empty).abs().max().item()
torch.manual_seed(11)
q_observations = net.get_action(torch.randn(256, OBS_DIM), torch.full((256, 3), -1), deterministic=True).op_values
obs_std = q_observations.std(0).mean().item()  # std of Q(s, op) over 256 random observations, mean over the ops
print(f"largest |ΔQ| over all {len(fillings)} fillings and 6 ops: {largest_move:.4f}; "
      f"std of Q over 256 random observations (slots empty): {obs_std:.3f}")
assert largest_move < 0.1 * obs_std  # the blueprints move Q far less than the observation does

# %% [markdown]
# ### The same panel on a trained critic
#
# A fresh critic has had no reason to care which blueprint sits where. A trained one has. The repository ships a
# small trained checkpoint, [notebooks/data/panel_checkpoint.pt](data/panel_checkpoint.pt) (0.9 MB): this network's
# architecture at 64 wide instead of 512, so that it fits in the repository, trained for 150 updates on the `demo`
# world with the q_op critic and the default reward by
# [scripts/panel_checkpoint.py](../scripts/panel_checkpoint.py). `load_agent` reads it weights-only. The state is a
# real one: a world of `demo` after the trained policy has played 12 epochs of it, observed and normalised as the
# agent observes it. Change the dropdowns and the bars move by tenths, not thousandths.

# %%
# NBVAL_IGNORE_OUTPUT
from pathlib import Path

from esper_lab.agent import AgentPolicy, load_agent
from esper_lab.env.vector import VectorEnv

trained, trained_cfg = load_agent(Path("data") / "panel_checkpoint.pt")
assert trained_cfg.policy.critic == "q_op" and trained_cfg.policy.lstm_hidden_dim == 64
world = VectorEnv(trained_cfg.world, 1, seed=0)
reports, player = world.reset([5_000_000]), AgentPolicy(trained, deterministic=True)
player.reset(1)
for _ in range(12):  # the trained policy plays 12 epochs of an episode no training run saw
    reports, *_ = world.step(player.act(reports, world.masks()))
seen = trained.observe(reports)  # normalised features [1, D] and the slots' blueprint indices [1, 3]
trained_state = seen.obs[0]  # [D]
slot_names = {value: name for name, value in SLOT_CHOICES}
print("slots after 12 epochs:", [slot_names[i] for i in seen.blueprint_indices[0].tolist()])
trained_panel = blueprint_value_panel(trained.network, trained_state, initial=seen.blueprint_indices[0].tolist())
display(trained_panel)
# the panel's picture lives in a widget, which GitHub and HTML exports cannot draw: the same bars as a plain figure
op_value_bars(trained_panel.refresh(), title="Q(s, op) of the trained critic with the slots as they are")

# %%
trained_q = trained.network.get_action(trained_state.repeat(len(fillings), 1), fillings,
                                       deterministic=True).op_values  # [2744, 6]
trained_empty = op_values_for_blueprints(trained.network, trained_state, [-1, -1, -1])  # [6]
assert torch.allclose(trained_q[0], trained_empty, atol=1e-5)  # filling 0 is (empty, empty, empty)
trained_move = (trained_q - trained_empty).abs().max().item()
print(f"largest |ΔQ| over all {len(fillings)} fillings: trained {trained_move:.3f}, fresh {largest_move:.4f} "
      f"({trained_move / largest_move:.0f}x)")
assert trained_move > largest_move  # training taught the critic to look at the blueprints

# %% [markdown]
# ## 7. `MaskedCategorical` from scratch: the −1e4 fill and the normalised entropy
#
# Every head samples from a `MaskedCategorical`
# ([esper_lab/policy/distributions.py](../esper_lab/policy/distributions.py)). Two of its choices, re-derived:
#
# - An illegal action's logit is replaced by −1e4 (`actions.MASKED_LOGIT_VALUE`), not by −inf. In fp32,
#   exp(−1e4 − logsumexp) underflows to exactly 0, so the illegal action's probability is exactly 0 either way; but
#   its log-probability stays finite, so the entropy's term p · log p is 0 · (−1e4 − …) = 0, where −inf would give
#   0 · (−inf) = NaN.
# - The entropy is normalised: H(p) / ln n, with n the number of legal actions. It lies in [0, 1] whatever the
#   head's size, and it is 0 (not 0/0) when one action is legal, so an entropy bonus cannot push on a head that has
#   no choice.
#
# Below, by hand, on the real heads of this network under the masks `compute_action_masks` (the environment's own
# function) gives four worlds, the same four as in notebook 02: all slots empty; a seed training in r0c0; a seed
# holding in r0c1; every slot fossilized, so WAIT is the only legal op.

# %%
from esper_lab.actions import MASKED_LOGIT_VALUE, SeedStage, SlotView, compute_action_masks
from esper_lab.policy.distributions import MaskedCategorical

worlds = {
    "all empty": [SlotView(None)] * 3,
    "training in r0c0": [SlotView(SeedStage.TRAINING, seed_age=3), SlotView(None), SlotView(None)],
    "holding in r0c1": [SlotView(None), SlotView(SeedStage.HOLDING, seed_age=9), SlotView(None)],
    "only WAIT legal": [SlotView(SeedStage.FOSSILIZED)] * 3,
}
world_masks = [compute_action_masks(views) for views in worlds.values()]
head_mask = {h: torch.stack([m[h] for m in world_masks]) for h in HEAD_NAMES}  # {head: [4, k]} bool
torch.manual_seed(6)
with torch.no_grad():
    h4 = net.encode(torch.randn(4, 1, OBS_DIM), torch.full((4, 1, 3), -1))[0][:, 0]  # [4, 512], one state per world


def masked_by_hand(logits, mask):
    """(filled logits, log-probs, normalised entropy) of `logits [B, k]` under `mask [B, k]`, from the definitions."""
    filled = torch.where(mask, logits, torch.full_like(logits, MASKED_LOGIT_VALUE))  # [B, k]
    log_p = filled - filled.logsumexp(-1, keepdim=True)  # [B, k]
    p = log_p.exp()  # [B, k]; exactly 0 where illegal
    entropy = -(p * log_p).sum(-1)  # [B] nats; an illegal action adds 0 · (finite) = 0
    legal = mask.sum(-1)  # [B]
    normalised = (entropy / legal.clamp_min(2).float().log()).clamp(0, 1)  # rounding can give 1 + 1e-7
    return filled, log_p, torch.where(legal > 1, normalised, torch.zeros_like(normalised))


rows = []
for h in HEAD_NAMES:
    with torch.no_grad():
        logits = net.heads[h](h4)  # [4, k], the real head
    for scale in (1.0, 300.0):  # the fresh network's small logits, and the same logits made large
        mask = head_mask[h]
        dist = MaskedCategorical(scale * logits, mask)
        filled, log_p, entropy = masked_by_hand(scale * logits, mask)
        assert torch.equal(filled, dist.masked_logits)
        assert torch.allclose(log_p[mask], dist.log_probs[mask], atol=1e-5)  # legal: the same log-softmax
        assert (log_p[~mask] < -9_000).all() and (dist.log_probs[~mask] < -9_000).all()  # illegal: finite, ~ -1e4
        assert (dist.probs[~mask] == 0).all()  # exactly 0
        assert torch.allclose(entropy, dist.entropy(), atol=1e-6), (h, scale)
    rows.append({"head": h, **{name: f"{e:.6f} ({int(n)} legal)" for name, n, e in
                               zip(worlds, head_mask[h].sum(-1), MaskedCategorical(logits, head_mask[h]).entropy())}})
display(Markdown("Normalised entropy of each head of the fresh network, per world:\n\n" + markdown_table(rows)))

# With -inf as the fill the probabilities are the same, but wherever a row has an illegal action its entropy has a
# 0 · (-inf) term, which is NaN:
nan_worlds = {}
for h in HEAD_NAMES:
    logits, mask = net.heads[h](h4).detach(), head_mask[h]  # [4, k]
    with_inf = logits.masked_fill(~mask, float("-inf"))
    assert torch.allclose(with_inf.softmax(-1), MaskedCategorical(logits, mask).probs)
    entropy_inf = -(with_inf.softmax(-1) * with_inf.log_softmax(-1)).sum(-1)  # [4]
    assert torch.equal(entropy_inf.isnan(), (~mask).any(-1))  # NaN exactly for the rows with an illegal action
    nan_worlds[h] = int(entropy_inf.isnan().sum())
assert 0 < sum(nan_worlds.values()) < 4 * len(HEAD_NAMES)
print("worlds (of 4) whose entropy is NaN with a -inf fill, per head:", nan_worlds)

# %% [markdown]
# ## 8. The initial scales, from scratch
#
# `_init_weights` gives every `Linear` an orthogonal weight with gain √2 and a zero bias, the last layer of each
# policy head gain 0.01, the critic's last layer gain 1.0, the LSTM's weights gain 1.0 and its forget-gate bias 1
# (PPO's usual initialisation, "The 37 Implementation Details of PPO", core detail 2 and the first LSTM detail,
# https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/; that post keeps the LSTM biases at 0,
# the forget-gate bias 1 is Esper's Phase 4 network's).
# An orthogonal W of gain g has W Wᵀ = g² I (Wᵀ W for a tall W), so **every
# singular value of W equals g**: W scales every input direction it keeps by exactly g.

# %%
import math

gains = {f"{name}.weight": math.sqrt(2) for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
gains.update({f"heads.{h}.{len(net.heads[h]) - 1}.weight": 0.01 for h in HEAD_NAMES})  # policy outputs
gains[f"value_head.{len(net.value_head) - 1}.weight"] = 1.0  # critic output
gains.update({"lstm.weight_ih_l0": 1.0, "lstm.weight_hh_l0": 1.0})
params = dict(net.named_parameters())
rows = []
for name, gain in gains.items():
    sv = torch.linalg.svdvals(params[name].detach())  # [min(out, in)]
    assert torch.allclose(sv, torch.full_like(sv, gain), rtol=1e-4), (name, sv.min().item(), sv.max().item())
    rows.append({"weight": name, "shape": list(params[name].shape), "gain": round(gain, 4),
                 "smallest singular value": round(sv.min().item(), 6), "largest": round(sv.max().item(), 6)})
display(Markdown(markdown_table(rows)))
H = net.lstm_hidden_dim
assert (net.lstm.bias_ih_l0[H:2 * H] == 1).all() and (net.lstm.bias_ih_l0[:H] == 0).all()  # gates i, f, g, o
assert (net.lstm.bias_hh_l0 == 0).all() and all((m.bias == 0).all() for m in net.modules() if isinstance(m, torch.nn.Linear))

# %% [markdown]
# What gain 0.01 does to a policy head. Its last layer has no bias and every singular value 0.01, so its logits z
# are at most 0.01 × the norm of the vector h it reads: small. For small logits a softmax is almost uniform, and a
# second-order expansion gives how close: H(softmax z) = ln k − ½ Var(z) + O(z³) (Var over the k entries), so the
# normalised entropy is 1 − Var(z) / (2 ln k). Checked on the 13-way blueprint head over 32 random states:

# %%
torch.manual_seed(7)
with torch.no_grad():
    lstm_32 = net.encode(torch.randn(8, 4, OBS_DIM), torch.randint(-1, 13, (8, 4, 3)))[0]  # [8, 4, 512]
    h_bp = net.heads["blueprint"][:-1](lstm_32)  # [8, 4, 256]: what the last layer reads
    z = net.heads["blueprint"][-1](h_bp)  # [8, 4, 13]
assert (z.norm(dim=-1) <= 0.01 * h_bp.norm(dim=-1) * (1 + 1e-4)).all()  # ||z|| <= 0.01 ||h||
k = z.shape[-1]
z64 = z.double()
exact = -(z64.softmax(-1) * z64.log_softmax(-1)).sum(-1) / math.log(k)  # [8, 4], float64
predicted = 1 - z64.var(-1, correction=0) / (2 * math.log(k))  # [8, 4]
package = MaskedCategorical(z).entropy()  # [8, 4], what the PPO entropy bonus sees (fp32)
assert torch.allclose(package.double(), exact, atol=1e-6)
assert torch.allclose(1 - predicted, 1 - exact, rtol=0.05)  # the distance from uniform, to 5%
print(f"blueprint-head logits: |z| up to {z.abs().max().item():.4f}; normalised entropy between "
      f"{exact.min().item():.6f} and {exact.max().item():.6f} (1 = uniform); 1 - entropy: measured "
      f"{(1 - exact).mean().item():.2e}, predicted {(1 - predicted).mean().item():.2e} (means over the 32 states)")

# %% [markdown]
# ## Exercises
#
# Each is a few lines of code; its `check_...` function asserts your answer against the package. The Solutions
# section at the end holds worked answers (collapsed: expand a cell once you have tried).
#
# 1. **Normalised entropy by hand.** The op head gives the logits `ex_logits` below in the world "training in
#    r0c0" (its op mask is `head_mask["op"][1]`). Compute the normalised entropy with plain `math` (no torch
#    distribution) and pass the number to `check_normalised_entropy`.
# 2. **Count a critic.** How many parameters does `value_head` have in a network with `lstm_hidden_dim=128`
#    (layers `(H + 6) → H/2 → 1`)? Pass the number to `check_value_head_parameters`.
# 3. **Bound a head's logits.** `h_ex` is the 256-vector the op head's last layer reads on one state. Without running
#    that layer, give the largest norm its 6 logits can have on this fresh network, and pass it to
#    `check_logit_bound`.

# %%
ex_logits = torch.tensor([1.0, 0.0, 2.0, -1.0, 0.5, 0.0])  # one logit per op
with torch.no_grad():
    h_ex = net.heads["op"][:-1](h4[1])  # [256]


def check_normalised_entropy(value):
    """Exercise 1: against MaskedCategorical on the real op mask of 'training in r0c0'."""
    expected = MaskedCategorical(ex_logits, head_mask["op"][1]).entropy().item()
    assert abs(value - expected) < 1e-5, expected
    print(f"correct: {expected:.6f}")


def check_value_head_parameters(count):
    """Exercise 2: against a real network of that width."""
    small = FactoredRecurrentActorCritic(OBS_DIM, feature_dim=128, lstm_hidden_dim=128)
    expected = sum(p.numel() for p in small.value_head.parameters())
    assert count == expected, expected
    print(f"correct: {expected:,}")


def check_logit_bound(bound):
    """Exercise 3: 0.01 ||h_ex||, and the real logits stay within it."""
    expected = 0.01 * h_ex.norm().item()
    assert math.isclose(bound, expected, rel_tol=1e-4), expected
    logits_norm = net.heads["op"][-1](h_ex).norm().item()
    assert logits_norm <= bound * (1 + 1e-4)
    print(f"correct: {expected:.4f}; the real logits have norm {logits_norm:.4f}")

# %% [markdown]
# ## Recap
#
# - The network is `embedding(bp_idx) ++ obs → Linear+LN+ReLU → LSTM(512)+LN → 8 heads` plus the critic
#   `value_head(cat(lstm_out, one_hot(op)))`; 3,628,898 parameters for the 121-dim observation, of which the LSTM
#   alone is the plan's "~2.1M" (2,101,248).
# - `_compute_value(lstm_out, op)` is the one place Q(s, op) is computed; `forward` conditions it on the op it
#   samples, `get_action` on the op it acts with (argmax when deterministic), `evaluate_actions` on the stored
#   (executed) op.
# - The outputs are NamedTuples (and a frozen dataclass for `get_action`); under `torch.compile` both containers
#   compile into the same graphs (notebook 09 asserts it and times them), so the addendum's 5% bar is not what
#   decides it.
# - Blueprint embeddings feed the trunk, so what sits in the slots moves every head and the critic; on a fresh
#   network by very little (Q(s, op) by about 0.02 at most over every filling of the slots, against a standard
#   deviation of about 0.7 over observations).
# - `MaskedCategorical` fills illegal logits with −1e4: their probability is exactly 0 and their log-probability
#   finite, so the entropy has no 0 · (−inf) = NaN; its entropy is normalised by ln(number of legal actions).
# - Orthogonal init makes every singular value of a weight equal its gain; gain 0.01 on the policy heads' last
#   layers makes a fresh policy almost uniform (normalised entropy 1 − Var(z) / (2 ln k)).
#
# Next: [02_policy_bundle.ipynb](02_policy_bundle.ipynb) wraps the network in the `Agent` that the rollout and the
# update call, and shows what goes wrong when the action and the value use two different op samples.

# %% [markdown]
# ## Solutions

# %% jupyter={"source_hidden": true}
# Exercise 1. Legal ops in that world: WAIT, GERMINATE, PRUNE, ADVANCE (indices 0, 1, 3, 5). Softmax over their
# logits only, entropy in nats, divided by ln 4.
legal = [i for i in range(NUM_OPS) if head_mask["op"][1, i]]
z_legal = [ex_logits[i].item() for i in legal]
norm = sum(math.exp(v) for v in z_legal)
p_legal = [math.exp(v) / norm for v in z_legal]
check_normalised_entropy(-sum(p * math.log(p) for p in p_legal) / math.log(len(legal)))

# %% jupyter={"source_hidden": true}
# Exercise 2. First layer (H + 6) x H/2 weights + H/2 biases, second layer H/2 weights + 1 bias.
H_ex = 128
check_value_head_parameters((H_ex + NUM_OPS) * (H_ex // 2) + H_ex // 2 + H_ex // 2 + 1)

# %% jupyter={"source_hidden": true}
# Exercise 3. The last layer has no bias and every singular value 0.01, so ||W h|| <= 0.01 ||h||.
check_logit_bound(0.01 * h_ex.norm().item())
