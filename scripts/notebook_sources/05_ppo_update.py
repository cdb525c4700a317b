# %% [markdown]
# # 05 · The PPO update (Phase 4, Step 5)
#
# **What you will learn**
#
# - how the update re-runs each stored episode **with the stored joint action and the stored blueprint indices**
#   (`evaluate_actions`, and the update's own `evaluate_relevant`), and why the first pass must reproduce the
#   rollout exactly (every ratio equal to 1);
# - what breaks that check: indices the policy never saw, or an observation the policy never saw;
# - per-head advantages from the one head-relevance table: a head is credited only on the steps where it mattered
#   for the op the world executed;
# - the approximate KL `(r − 1) − log r`, checked **before** each optimizer step;
# - one full update on a real rollout, and the metrics it reports;
# - the loss of the update's first minibatch written out from its definition (per-head clipped surrogates, the
#   entropy bonus, the clipped value loss) and checked against `PPOUpdater` to 1e-6;
# - the illegal fraction of the two mask modes in real training: 0 with conditional masks, a large share with
#   Phase 4's independent ones, whose illegal actions the update credits as the WAIT they ran as.
#
# **Modules explained:** [esper_lab/rl/ppo.py](../esper_lab/rl/ppo.py) (`PPOUpdater`),
# [esper_lab/rl/advantages.py](../esper_lab/rl/advantages.py) (`per_head_advantages`),
# [esper_lab/actions.py](../esper_lab/actions.py) (`HEAD_RELEVANCE`, `causal_masks`), the `Agent`'s
# `evaluate_actions` in [esper_lab/agent.py](../esper_lab/agent.py) and, for the rollout,
# [esper_lab/rl/trainer.py](../esper_lab/rl/trainer.py) and [esper_lab/rl/rollout.py](../esper_lab/rl/rollout.py).
# Seed documents: the addendum's Step 5. Esper's Phase 4 update re-evaluated each stored episode as one sequence from
# its initial hidden state and checked the approximate KL before the optimizer step (commit e3f72b3).

# %%
import os

SIZE = os.environ.get("ESPER_LAB_NB_SIZE", "full")  # "ci" under `make test`, "full" for the committed outputs
assert SIZE in ("ci", "full"), SIZE

import torch
from IPython.display import Markdown, display

from nb_helpers import by_size, markdown_table, setup

setup(seed=0, threads=2)
print("notebook size:", SIZE)

# %% [markdown]
# ## 1. A real rollout to update on
#
# The trainer collects one episode in every world (notebook 03 walks through it) and leaves it in its buffer. At
# `full` size this is the `demo` preset (4 worlds × 30 epochs, the Phase 4 network); at `ci` size the `tiny` preset.

# %%
from esper_lab.config import preset
from esper_lab.rl.trainer import Trainer

cfg = preset(by_size(SIZE, ci="tiny", full="demo"), seed=0)
trainer = Trainer(cfg)  # no run directory: nothing is written
rollout = trainer.collect()
batch = trainer.buffer.batched()
agent, net = trainer.agent, trainer.agent.network
E, T = batch.num_envs, batch.num_steps
print(f"{E} worlds × {T} steps, network {cfg.policy.feature_dim}/{cfg.policy.lstm_hidden_dim}, critic {net.critic}, "
      f"masks {cfg.policy.masks}")
print("episode returns:", [round(x, 2) for x in rollout.telemetry.episode_returns.tolist()])
print("stored joint actions", list(batch.actions.shape), "| log-probs", list(batch.log_probs.shape))

# %% [markdown]
# ## 2. `evaluate_actions` with the stored actions and the stored indices: every ratio is 1
#
# The update calls, for a minibatch of whole episodes,
#
# ```python
# out = agent.evaluate_actions(mb.obs, mb.blueprint_indices, mb.actions, masks=mb.masks, hidden=mb.initial_hidden,
#                              value_op=mb.executed_ops)
# ratio[head] = exp(out.log_probs[head] - mb.log_probs[..., HEAD_INDEX[head]])
# ```
#
# (the addendum's Step 5: `blueprint_indices` from the buffer batch). `mb.actions` is the stored joint action
# `[e, T, 8]`, `mb.masks` the masks each head was sampled under, and the value is conditioned on the op the world
# **executed**, the op the stored value was computed for. (It differs from the requested op only where an action
# could not run as asked and ran as WAIT; with the default conditional masks every sampled action executes, so
# here the two are the same.) Before any optimizer step the weights are the ones that acted, so replaying the
# stored inputs must give back the stored log-probs and values: every ratio is exactly 1 and `out.value` is the
# stored Q(s, op). This is the cheapest end-to-end test of Steps 3 to 5: a wrong obs, wrong indices, a wrong
# hidden state or a wrong op anywhere on the way shows up here.

# %%
from esper_lab.actions import HEAD_INDEX, HEAD_NAMES, causal_masks

stored_op = batch.actions[..., HEAD_INDEX["op"]]  # [E, T], the op column of the joint action
assert cfg.policy.masks == "conditional" and rollout.telemetry.illegal == 0  # every sampled action executed ...
assert torch.equal(batch.executed_ops, stored_op)  # ... so the executed op is the stored one
out = agent.evaluate_actions(batch.obs, batch.blueprint_indices, batch.actions, masks=batch.masks,
                             hidden=batch.initial_hidden, value_op=batch.executed_ops)
ratios = {h: (out.log_probs[h] - batch.log_probs[..., HEAD_INDEX[h]]).exp() for h in HEAD_NAMES}
max_dev = max((r - 1).abs().max().item() for r in ratios.values())
print(f"max |ratio − 1| over all heads and steps: {max_dev:.2e}")
print(f"max |value − stored value|: {(out.value - batch.values).abs().max().item():.2e}")
assert max_dev < 1e-4
assert torch.allclose(out.value, batch.values, atol=1e-5)
q_executed_op = batch.op_values.gather(-1, batch.executed_ops.unsqueeze(-1)).squeeze(-1)
assert torch.allclose(out.value, q_executed_op, atol=1e-5)  # critic q_op: value = Q(s, the executed op)

# %% [markdown]
# `evaluate_actions` runs every head on every step, which is what a reader wants to look at. The update itself calls
# `agent.evaluate_relevant` ([esper_lab/policy/relevant.py](../esper_lab/policy/relevant.py)): the same trunk pass,
# then each head only on the steps where it mattered for the executed op (in a rollout of mostly WAIT, the
# 3-layer blueprint head runs on the few GERMINATE steps, not on all of them), flattened over the valid steps. Where
# a head mattered, its numbers are the ones above.

# %%
from esper_lab.rl.ppo import relevance

relevant = relevance(batch.executed_ops, batch.valid)  # [E, T, 8]
fast = agent.evaluate_relevant(batch.obs, batch.blueprint_indices, batch.actions, relevant, batch.valid,
                               batch.executed_ops, masks=batch.masks, hidden=batch.initial_hidden)
full = torch.stack([out.log_probs[h] for h in HEAD_NAMES], -1)[batch.valid]  # [N, 8]
assert torch.allclose(fast.log_probs[fast.relevant], full[fast.relevant], atol=1e-5)
assert torch.allclose(fast.value, out.value[batch.valid], atol=1e-5)
share = relevant.float().mean((0, 1))  # [8] the share of steps where each head mattered
print("steps where each head mattered:", {h: f"{share[HEAD_INDEX[h]]:.0%}" for h in HEAD_NAMES})

# %% [markdown]
# What the check catches. Re-run the same episodes with blueprint indices the policy never saw (every slot "empty"),
# or with the raw observation instead of the normalised one the policy acted on (the bug Esper fixed in c183555b):
# the ratios move away from 1 although no weight changed, and PPO would treat that drift as a policy change.

# %%
wrong_idx = torch.full_like(batch.blueprint_indices, -1)
out_idx = agent.evaluate_actions(batch.obs, wrong_idx, batch.actions, masks=batch.masks, hidden=batch.initial_hidden,
                                 value_op=batch.executed_ops)
raw_obs = rollout.raw_obs.reshape(T, E, -1).transpose(0, 1)  # the un-normalised features, [E, T, D]
agent.obs_norm.update(rollout.raw_obs)  # what the trainer does just before the update: now normalised != raw
renormalised = agent.obs_norm.normalize(raw_obs)
out_obs = agent.evaluate_actions(renormalised, batch.blueprint_indices, batch.actions, masks=batch.masks,
                                 hidden=batch.initial_hidden, value_op=batch.executed_ops)
rows = []
for label, o in (("stored obs + stored indices", out), ("indices all -1", out_idx),
                 ("obs re-normalised with updated statistics", out_obs)):
    dev = max((o.log_probs[h] - batch.log_probs[..., HEAD_INDEX[h]]).exp().sub(1).abs().max().item() for h in HEAD_NAMES)
    rows.append({"replayed with": label, "max |ratio − 1|": f"{dev:.2e}",
                 "max |value − stored|": f"{(o.value - batch.values).abs().max().item():.2e}"})
display(Markdown(markdown_table(rows)))
uses_slots = bool((batch.blueprint_indices >= 0).any())
if uses_slots:
    assert (out_idx.value - batch.values).abs().max().item() > 1e-4
assert (out_obs.value - batch.values).abs().max().item() > 1e-4

# %% [markdown]
# (The buffer stored the obs normalised with the statistics frozen during the rollout; the trainer updates the
# normaliser only after the rollout, so `batch.obs` stays what the policy saw.)
#
# ## 3. Per-head advantages from the head-relevance table
#
# A step's advantage says how much better the whole action turned out than the baseline. But an action has eight
# heads, and for most ops most heads did nothing: the blueprint choice of a WAIT step changed nothing in the world.
# Crediting it anyway adds pure noise to that head's gradient. So each head gets `advantage × relevant(head, op)`,
# with relevance read from the one table in `actions.py` (notebook 00 draws it) for the op the world executed
# (`batch.executed_ops`: an action that ran as WAIT credits only its op head), and each head's loss is averaged
# only over its relevant steps.

# %%
from esper_lab.rl.advantages import compute_gae, per_head_advantages

adv, ret = compute_gae(batch.rewards, batch.values, batch.dones, batch.truncated, batch.bootstrap_values,
                       cfg.gamma, cfg.ppo.gae_lambda)  # [E, T]; cfg.gamma is world.reward.gamma, the one discount
head_adv = per_head_advantages(adv, batch.executed_ops)
relevant = causal_masks(batch.executed_ops)
rows = [{"head": h, "relevant steps": f"{int(relevant[h].sum())} / {E * T}",
         "share": f"{100 * relevant[h].float().mean().item():.0f}%",
         "mean |advantage| where relevant": round(adv.abs()[relevant[h]].mean().item(), 3) if relevant[h].any() else "-"}
        for h in HEAD_NAMES]
display(Markdown(markdown_table(rows)))
assert torch.equal(head_adv["op"], adv)  # the op head matters for every op
for h in HEAD_NAMES:
    assert torch.equal(head_adv[h], adv * relevant[h]) and head_adv[h][~relevant[h]].eq(0).all()

# %%
from esper_lab.actions import LifecycleOp

counts = torch.bincount(batch.executed_ops.flatten(), minlength=len(LifecycleOp))
print("ops executed in this rollout:", {op.name: int(counts[op]) for op in LifecycleOp})
assert torch.equal(counts, rollout.telemetry.op_counts)  # the rollout's telemetry counted the same (none illegal)

# %% [markdown]
# ## 4. Approximate KL, checked before the step
#
# After each minibatch's forward pass, and **before** its optimizer step, the update estimates how far the policy
# has moved from the one that collected the data, per head `KL ≈ mean((r − 1) − log r)` over the head's relevant
# steps (non-negative for every sample, unbiased, low variance). Above 1.5 × `target_kl` the update stops and that
# step never happens. Esper first checked it *after* `optimizer.step()`, so with one epoch the check could never
# prevent anything; commit e3f72b3 moved it before the step, so `target_kl` works even with one epoch.
#
# On the first minibatch every ratio is 1, so the estimate is exactly 0:

# %%
kl_terms = {h: ((ratios[h] - 1) - ratios[h].log())[relevant[h]] for h in HEAD_NAMES}
kl_first = sum(t.sum() for t in kl_terms.values()) / sum(t.numel() for t in kl_terms.values())
print(f"approximate KL before any step: {kl_first.item():.2e}")
assert abs(kl_first.item()) < 1e-6

# %% [markdown]
# With an absurdly small `target_kl`, the first minibatch still steps (its KL is 0) and the second one stops the
# update before its step: one optimizer step in total, although K epochs × minibatches were planned.

# %%
# NBVAL_CHECK_OUTPUT
import copy
import dataclasses

from esper_lab.agent import Agent
from esper_lab.rl.ppo import PPOUpdater

strict_agent = Agent(copy.deepcopy(net))  # a copy: the real update below starts from the weights that acted
strict = PPOUpdater(strict_agent, dataclasses.replace(cfg.ppo, target_kl=1e-9, epochs=2, minibatches=1), cfg.gamma)
m = strict.update(trainer.buffer)
print("planned steps:", 2 * 1, "| optimizer steps taken:", m["optimizer_steps"], "| early stopped:", m["early_stopped"])
assert m["early_stopped"] and m["optimizer_steps"] == 1

# %% [markdown]
# ## 5. One update
#
# Now the real thing, with the preset's settings: K epochs over minibatches of whole episodes, clipped per-head
# surrogates, the value loss (clipped around the stored values), the entropy bonus with the Phase 5 per-head
# multipliers, gradient clipping. `update()` returns one metrics record.

# %%
from nb_helpers import spy_on

before = {n: p.detach().clone() for n, p in net.named_parameters()}
acting = Agent(copy.deepcopy(net))  # the weights that collected the rollout, for section 6
with spy_on(trainer.updater, "_minibatch_losses") as minibatch_calls:  # records each minibatch's loss terms
    metrics = trainer.updater.update(trainer.buffer)
shown = ["policy_loss", "value_loss", "entropy_loss", "approx_kl", "clip_fraction", "explained_variance",
         "advantage_mean", "advantage_std", "grad_norm_total", "q_spread", "q_variance", "epochs_completed",
         "optimizer_steps", "early_stopped", "ratio_first"]
display(Markdown(markdown_table([{"metric": k, "value": metrics[k]} for k in shown])))

# %%
import math

assert metrics["ratio_first"] < 1e-4  # the first evaluation reproduced the rollout
assert metrics["optimizer_steps"] >= 1 and metrics["epochs_completed"] <= cfg.ppo.epochs
assert all(math.isfinite(metrics[k]) for k in ("policy_loss", "value_loss", "entropy_loss", "approx_kl", "grad_norm_total"))
if metrics["early_stopped"]:
    assert metrics["optimizer_steps"] < cfg.ppo.epochs * cfg.ppo.minibatches
moved = [n for n, p in net.named_parameters() if not torch.equal(p, before[n])]
assert "value_head.0.weight" in moved and "heads.op.2.weight" in moved
print(f"{len(moved)} of {len(before)} parameter tensors changed")

# %% [markdown]
# After the update the same episodes give ratios spread around 1 and a non-negative approximate KL. Neither the
# clipped surrogate nor the KL stop keeps a ratio inside the clip range [1 − ε, 1 + ε] (ε = `ppo.clip_ratio`): the
# clip only removes the gradient that would push a ratio further out in the direction its advantage favours (other
# steps' gradients move the shared weights anyway), and the KL stop ends the update only when a minibatch's
# approximate KL, an average over its steps, exceeds 1.5 × `target_kl`. So the share inside is measured, per head,
# over the steps where the head mattered:

# %%
from nb_helpers import box_figure

eps = cfg.ppo.clip_ratio
after = agent.evaluate_actions(batch.obs, batch.blueprint_indices, batch.actions, masks=batch.masks,
                               hidden=batch.initial_hidden, value_op=batch.executed_ops)
ratios_after = {h: (after.log_probs[h] - batch.log_probs[..., HEAD_INDEX[h]]).exp()[relevant[h]] for h in HEAD_NAMES}
kl_after = sum(((r - 1) - r.log()).sum() for r in ratios_after.values()) / sum(r.numel() for r in ratios_after.values())
inside = {h: ((r - 1).abs() <= eps).float().mean().item() for h, r in ratios_after.items() if r.numel()}
display(Markdown(markdown_table([
    {"head": h, "steps where it mattered": r.numel(), "min ratio": round(r.min().item(), 4),
     "max ratio": round(r.max().item(), 4), f"inside [{1 - eps:g}, {1 + eps:g}]": f"{100 * inside[h]:.1f}%"}
    for h, r in ratios_after.items() if r.numel()])))
pooled = sum(((r - 1).abs() <= eps).sum().item() for r in ratios_after.values()) / sum(r.numel() for r in ratios_after.values())
display(Markdown(f"**Measured:** {100 * pooled:.1f}% of all (head, step) ratios lie inside [{1 - eps:g}, {1 + eps:g}]; "
                 f"per head between {100 * min(inside.values()):.1f}% ({min(inside, key=inside.get)}) and "
                 f"{100 * max(inside.values()):.1f}%. Approximate KL after the update: {kl_after.item():.2e}."))
assert kl_after.item() >= 0 and all(0.0 <= v <= 1.0 for v in inside.values())
box_figure({h: r.tolist() for h, r in ratios_after.items() if r.numel()},
           "Per-head ratio π_new / π_old on the steps where the head mattered", "ratio", hlines=(1 - eps, 1.0, 1 + eps))

# %% [markdown]
# ## 6. The first minibatch's loss, from scratch
#
# The spy above recorded what `update()` computed for every minibatch it evaluated (`PPOUpdater._minibatch_losses`,
# which builds the loss terms from one `evaluate_relevant` pass). The first minibatch was evaluated before any
# optimizer step, with the weights that acted (kept above as `acting`). Here is its loss written out from the
# definitions, on the same minibatch of whole episodes, with the network used only through `evaluate_actions`
# (every head on every step, section 2):
#
# - advantages A: GAE, normalised once over every valid step of the whole batch (not per minibatch);
# - per head h and step t: ratio r = exp(log π_new − log π_old) (the log-ratio clamped to ±20), clipped surrogate
#   min(r·A, clip(r, 1 − ε, 1 + ε)·A), averaged over the steps where h mattered for the executed op (the
#   head-relevance table); policy loss = −Σ_h of those means;
# - entropy loss = −Σ_h c_h · (mean normalised entropy of h over the same steps), c_h the Phase 5 per-head
#   multipliers `ENTROPY_COEF_PER_HEAD`;
# - value loss = ½ · mean over valid steps of max((V − R)², (V_clip − R)²), V_clip = V_old + clip(V − V_old, ±c)
#   with c = `ppo.value_clip` (the plain ½ · mean (V − R)² when `ppo.clip_value` is off), R the GAE returns;
# - total = policy + `value_coef` · value + `entropy_coef` · entropy (critic `q_op` has no auxiliary Q loss).

# %%
from esper_lab.rl.ppo import ENTROPY_COEF_PER_HEAD, LOG_RATIO_CLAMP


def ppo_losses_by_hand(acting_agent, mb, A, R):
    """The PPO loss terms of minibatch `mb` (fields [e, T, ...]) from their definitions; A, R: [e, T]."""
    ppo = cfg.ppo
    mattered = torch.stack([causal_masks(mb.executed_ops)[h] for h in HEAD_NAMES], -1) & mb.valid[..., None]  # [e, T, 8]
    weight = mattered.float()

    def per_head_mean(x):  # [e, T, 8] -> [8]: each head's mean over its steps (0 for a head that never mattered)
        return (x * weight).sum((0, 1)) / weight.sum((0, 1)).clamp_min(1)

    with torch.no_grad():
        ev = acting_agent.evaluate_actions(mb.obs, mb.blueprint_indices, mb.actions, masks=mb.masks,
                                           hidden=mb.initial_hidden, value_op=mb.executed_ops)
    new_log_p = torch.stack([ev.log_probs[h] for h in HEAD_NAMES], -1)  # [e, T, 8]
    ratio = (new_log_p - mb.log_probs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()  # [e, T, 8]
    surrogate = torch.min(ratio * A[..., None], ratio.clamp(1 - ppo.clip_ratio, 1 + ppo.clip_ratio) * A[..., None])
    policy = -per_head_mean(surrogate).sum()
    coef = torch.tensor([ENTROPY_COEF_PER_HEAD[h] for h in HEAD_NAMES])  # [8]
    entropy = -(coef * per_head_mean(torch.stack([ev.entropy[h] for h in HEAD_NAMES], -1))).sum()
    V, V_old, target = ev.value[mb.valid], mb.values[mb.valid], R[mb.valid]  # [N] each
    error = (V - target).pow(2)
    if ppo.clip_value:
        V_clip = V_old + (V - V_old).clamp(-ppo.value_clip, ppo.value_clip)
        error = torch.max(error, (V_clip - target).pow(2))
    value = 0.5 * error.mean()
    clipped = ((ratio - 1).abs() > ppo.clip_ratio) & mattered  # [e, T, 8]
    return {"policy_loss": policy, "value_loss": value, "entropy_loss": entropy,
            "total": policy + ppo.value_coef * value + ppo.entropy_coef * entropy, "clipped": int(clipped.sum())}


def package_total(losses):
    ppo = cfg.ppo
    return (losses["policy_loss"] + ppo.value_coef * losses["value_loss"] + ppo.entropy_coef * losses["entropy_loss"]
            + ppo.q_aux_coef * losses["q_aux_loss"])


first = minibatch_calls[0]  # epoch 0, minibatch 0: evaluated before the first optimizer step
mb, package = first.arg("mb"), first.result[0]
rows_mb = torch.tensor([next(e for e in range(E) if torch.equal(batch.obs[e], o)) for o in mb.obs])  # its worlds
adv_valid = adv[batch.valid]  # section 3's GAE advantages [E, T], the same call update() makes
A_mb = ((adv - adv_valid.mean()) / (adv_valid.std(correction=0) + 1e-8))[rows_mb]  # [e, T]
assert torch.allclose(A_mb, first.arg("advantages"), atol=1e-6) and torch.equal(ret[rows_mb], first.arg("returns"))
mine = ppo_losses_by_hand(acting, mb, A_mb, ret[rows_mb])
package["total"] = package_total(package)
display(Markdown(f"First minibatch: worlds {rows_mb.tolist()}, {int(mb.valid.sum())} steps; (head, step) ratios "
                 f"outside the clip range: {mine['clipped']}\n\n" + markdown_table([
                     {"term": k, "from scratch": f"{mine[k].item():.7f}", "PPOUpdater": f"{package[k].item():.7f}",
                      "|difference|": f"{abs(mine[k].item() - package[k].item()):.1e}"}
                     for k in ("policy_loss", "entropy_loss", "value_loss", "total")])))
for k in ("policy_loss", "entropy_loss", "value_loss", "total"):
    assert abs(mine[k].item() - package[k].item()) < 1e-6, (k, mine[k].item(), package[k].item())
assert mine["clipped"] == 0  # before any step every ratio is 1: the clip cannot bind yet

# %% [markdown]
# On the first minibatch every ratio is 1 (to float rounding), so the clip never binds and the policy loss is just
# −Σ_h (mean advantage over h's steps). The same minibatch again, with the weights the update ended with: the ratios
# have moved away from 1 and some may be outside the clip range, where the clipped branch of the surrogate takes
# over (the caption counts them; at `ci` size the update barely moves the policy and there are none). The
# derivation now uses `agent` (the trained weights); the package side is a direct call of the same
# `_minibatch_losses` with the arguments the update passed it.

# %%
after_mb = trainer.updater._minibatch_losses(*first.args, **first.kwargs)[0]  # the trained weights, same minibatch
after_mb["total"] = package_total(after_mb)
mine_after = ppo_losses_by_hand(agent, mb, A_mb, ret[rows_mb])
display(Markdown(f"Same minibatch, trained weights; (head, step) ratios outside the clip range: "
                 f"{mine_after['clipped']}\n\n" + markdown_table([
                     {"term": k, "from scratch": f"{mine_after[k].item():.7f}",
                      "PPOUpdater": f"{after_mb[k].item():.7f}",
                      "|difference|": f"{abs(mine_after[k].item() - after_mb[k].item()):.1e}"}
                     for k in ("policy_loss", "entropy_loss", "value_loss", "total")])))
for k in ("policy_loss", "entropy_loss", "value_loss", "total"):
    assert abs(mine_after[k].item() - after_mb[k].item()) < 1e-6, (k, mine_after[k].item(), after_mb[k].item())

# %% [markdown]
# ## 7. The two mask modes in training
#
# Everything above ran with the default `policy.masks = "conditional"`: the slot is sampled among the slots where
# the sampled op can execute, so no action is illegal. Phase 4 as shipped, `"independent"`, samples the slot from
# every enabled slot whatever the op; an action that cannot execute runs as WAIT. Every metrics record counts them:
# `illegal_actions` and `illegal_fraction` (illegal actions / env steps). Where an action ran as WAIT, the update
# credits the op the world **executed** (`executed_ops`): the causal masks give only the op head that step's
# advantage, and the critic's Q(s, op) is evaluated and fitted for WAIT, the op that ran. Same preset, same seed, a
# few updates per mode; a spy on the agent's `evaluate_relevant` and on the update's `relevance` (the head-relevance
# table applied to the executed op) records which op the update used.

# %%
import esper_lab.rl.ppo as ppo_module
from esper_lab.plots.compare import overlay

MODE_PRESET, MODE_UPDATES = by_size(SIZE, ci="tiny", full="demo"), by_size(SIZE, ci=2, full=5)
mode_cfg = preset(MODE_PRESET)
steps_per_update = mode_cfg.num_envs * mode_cfg.world.max_epochs
mode_records, ran_as_wait_share = {}, {}
for mode in ("conditional", "independent"):
    mode_trainer = Trainer(preset(MODE_PRESET, seed=0, **{"policy.masks": mode}))  # no run directory
    try:
        with spy_on(mode_trainer.agent, "evaluate_relevant") as evals, spy_on(ppo_module, "relevance") as credits:
            mode_records[mode] = mode_trainer.run(MODE_UPDATES)
    finally:
        mode_trainer.close()
    assert mode_trainer.agent.masks == mode and len(credits) == MODE_UPDATES and len(evals) >= MODE_UPDATES
    requested = torch.cat([c.arg("actions")[..., HEAD_INDEX["op"]].flatten() for c in evals])  # the sampled ops
    executed = torch.cat([c.arg("value_op").flatten() for c in evals])  # what Q(s, op) was evaluated for
    assert all(torch.equal(c.arg("relevant"), ppo_module.relevance(c.arg("value_op"), c.arg("valid")))
               for c in evals)  # the heads credited come from the executed op, too
    ran_as_wait = requested != executed
    assert (executed[ran_as_wait] == LifecycleOp.WAIT).all()  # an action that could not execute ran as WAIT
    ran_as_wait_share[mode] = ran_as_wait.float().mean().item()

display(Markdown("`illegal_fraction` (illegal actions / env steps) per update:\n\n" + markdown_table([
    {"update": u + 1, **{mode: f"{recs[u]['illegal_fraction']:.3f} ({recs[u]['illegal_actions']} / {steps_per_update})"
                         for mode, recs in mode_records.items()}}
    for u in range(MODE_UPDATES)])))
display(Markdown(f"Share of the steps the update re-evaluated where the executed op (WAIT) differs from the sampled "
                 f"one: conditional {ran_as_wait_share['conditional']:.3f}, independent {ran_as_wait_share['independent']:.3f}."))
for mode, recs in mode_records.items():
    assert [r["update"] for r in recs] == list(range(1, MODE_UPDATES + 1))
    assert all(math.isclose(r["illegal_fraction"], r["illegal_actions"] / steps_per_update) for r in recs)
assert all(r["illegal_fraction"] == 0.0 and r["illegal_actions"] == 0 for r in mode_records["conditional"])
assert ran_as_wait_share["conditional"] == 0.0
assert sum(r["illegal_actions"] for r in mode_records["independent"]) > 0 and ran_as_wait_share["independent"] > 0
overlay("illegal_fraction", list(mode_records.items()))

# %% [markdown]
# ## Exercises
#
# Each is a few lines of code; its `check_...` function asserts your answer against the package or this run's
# config. The Solutions section at the end holds worked answers (collapsed: expand a cell once you have tried).
#
# 1. **Clip a ratio by hand.** For the ratios `r_ex` and advantages `A_ex` below, compute the per-step clipped
#    surrogate min(r·A, clip(r, 1 − ε, 1 + ε)·A) with this run's ε (`cfg.ppo.clip_ratio`) as a tensor, and list
#    the steps where it gives no gradient through r. Pass both to `check_surrogate`.
# 2. **Credit one head.** Using only `adv` (section 3), `batch.executed_ops` and `HEAD_RELEVANCE` (from
#    `esper_lab.actions`: each op to the set of heads that matter for it), build the blueprint head's advantages
#    `[E, T]` and pass them to `check_blueprint_advantages`.
# 3. **Clip a value by hand.** For stored values `V_old_ex`, new values `V_ex` and returns `R_ex` below, compute
#    the per-step error the value loss averages, max((V − R)², (V_clip − R)²) with
#    V_clip = V_old + clip(V − V_old, ±`cfg.ppo.value_clip`), and pass it to `check_value_error`.

# %%
from esper_lab.rl.advantages import per_head_advantages

r_ex = torch.tensor([0.5, 0.9, 1.0, 1.3, 1.6])
A_ex = torch.tensor([-1.0, 1.0, 2.0, 1.0, -0.5])
V_old_ex, V_ex, R_ex = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([15.0, -3.0, 1.5]), torch.tensor([20.0, 2.0, 30.0])


def check_surrogate(surrogate, no_gradient_steps):
    """Exercise 1: the clipped surrogate of r_ex, A_ex, and the steps where d(surrogate)/dr is 0 (by autograd)."""
    eps_ = cfg.ppo.clip_ratio
    r = r_ex.clone().requires_grad_()
    expected = torch.min(r * A_ex, r.clamp(1 - eps_, 1 + eps_) * A_ex)  # [5]
    expected.sum().backward()
    assert torch.allclose(torch.as_tensor(surrogate, dtype=torch.float32), expected.detach()), expected
    assert sorted(no_gradient_steps) == r.grad.eq(0).nonzero().flatten().tolist(), r.grad
    print("correct:", [round(v, 3) for v in expected.tolist()], "| no gradient at steps", sorted(no_gradient_steps))


def check_blueprint_advantages(blueprint_adv):
    """Exercise 2: equal to the package's per_head_advantages for the blueprint head."""
    expected = per_head_advantages(adv, batch.executed_ops)["blueprint"]  # [E, T]
    assert blueprint_adv.shape == expected.shape and torch.equal(blueprint_adv, expected)
    print(f"correct: the blueprint head is credited on {int(expected.ne(0).sum())} of {expected.numel()} steps")


def check_value_error(error):
    """Exercise 3: the per-step value error of the update's value loss, with this run's value clipping."""
    c = cfg.ppo.value_clip
    expected = (V_ex - R_ex).pow(2)
    if cfg.ppo.clip_value:
        expected = torch.max(expected, (V_old_ex + (V_ex - V_old_ex).clamp(-c, c) - R_ex).pow(2))
    assert torch.allclose(torch.as_tensor(error, dtype=torch.float32), expected), expected
    print("correct:", expected.tolist())

# %% [markdown]
# ## Recap
#
# - The update replays each stored episode as one sequence from its stored initial hidden state, with the stored
#   (normalised) obs, the stored **blueprint indices**, the stored joint action and the masks it was sampled under,
#   the value conditioned on the **executed op**; before any step every ratio is 1 and the value equals the stored
#   Q(s, op). Wrong indices or a re-normalised obs break that at once.
# - Per-head advantages come from `HEAD_RELEVANCE` and the executed op: the op head always gets the advantage; the
#   others only on the steps where their choice mattered, and their losses average over those steps only.
# - The approximate KL `(r − 1) − log r` is checked before each optimizer step; a step that would overshoot
#   1.5 × `target_kl` never happens.
# - One update reports losses, KL, clip fraction, explained variance, gradient norms and `q_spread`; notebook 07
#   follows them over a whole training run. After it, the share of ratios inside the clip range is a measurement,
#   not a guarantee: the clip removes a gradient, it does not bound the ratio.
# - The first minibatch's loss, written out from the definitions (per-head clipped surrogate over the steps where
#   each head mattered, per-head entropy multipliers, clipped value loss), equals `PPOUpdater`'s to 1e-6, before
#   the first step and again with the trained weights.
# - With conditional masks (the default) every sampled action executes: `illegal_fraction` is 0 on every update.
#   With independent masks a share of the actions run as WAIT, and the update conditions the value and the causal
#   masks on that executed op, not on the sampled one.
#
# Next: [06_tests_and_validation.ipynb](06_tests_and_validation.ipynb) ticks the addendum's success criteria.

# %% [markdown]
# ## Solutions

# %% jupyter={"source_hidden": true}
# Exercise 1. No gradient where the clipped term is the smaller one: A > 0 with r > 1 + ε, or A < 0 with r < 1 − ε.
eps_ex = cfg.ppo.clip_ratio
surrogate_ex = torch.min(r_ex * A_ex, r_ex.clamp(1 - eps_ex, 1 + eps_ex) * A_ex)
flat_steps = [i for i, (r, a) in enumerate(zip(r_ex.tolist(), A_ex.tolist()))
              if (a > 0 and r > 1 + eps_ex) or (a < 0 and r < 1 - eps_ex)]
check_surrogate(surrogate_ex, flat_steps)

# %% jupyter={"source_hidden": true}
# Exercise 2. The head mattered where the executed op's set of heads contains it; elsewhere its advantage is 0.
from esper_lab.actions import HEAD_RELEVANCE

mattered_bp = torch.tensor([["blueprint" in HEAD_RELEVANCE[LifecycleOp(op)] for op in row]
                            for row in batch.executed_ops.tolist()])  # [E, T] bool
check_blueprint_advantages(adv * mattered_bp)

# %% jupyter={"source_hidden": true}
# Exercise 3. Clipping can only raise the error (max): the first step's new value moved 15 from the stored one,
# more than value_clip = 10 allows, so the clipped value 10 is 10 from its target and the error is 100, not 25.
V_clip_ex = V_old_ex + (V_ex - V_old_ex).clamp(-cfg.ppo.value_clip, cfg.ppo.value_clip)
check_value_error(torch.max((V_ex - R_ex).pow(2), (V_clip_ex - R_ex).pow(2)))
