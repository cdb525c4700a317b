# %% [markdown]
# # 00 · A tour of the morphogenetic world
#
# Before the policy network of Phase 4 makes sense, its world has to. This notebook recaps what Phases 1 to 3 of
# Esper's "Tamiyo Next" built, on esper_lab's small re-creation.
#
# **What you will learn**
#
# - the task and the **host**: a deliberately weak CNN learning 8×8 digits, with three injection points (slots);
# - the **blueprints**: the seed modules that can be grafted into a slot, and their sizes;
# - the seed **lifecycle**, as a picture, and what each stage means for the host;
# - the eight **action heads**, and which of them matter for which op (the head-relevance table);
# - the **legal-action masks** and how they change over an episode, and, in an explorer, the op → slot masks for
#   any slot contents you choose;
# - the **Obs V3** layout, 121 = 24 + 7 + 3 × 30, and the **blueprint indices** that travel next to it;
# - the **blueprint embedding** that turns those indices into vectors (Phase 3).
#
# **Modules explained:** [esper_lab/env/data.py](../esper_lab/env/data.py),
# [esper_lab/env/host.py](../esper_lab/env/host.py), [esper_lab/env/blueprints.py](../esper_lab/env/blueprints.py),
# [esper_lab/env/slot.py](../esper_lab/env/slot.py), [esper_lab/env/morpho_env.py](../esper_lab/env/morpho_env.py),
# [esper_lab/actions.py](../esper_lab/actions.py), [esper_lab/features.py](../esper_lab/features.py) and
# `BlueprintEmbedding` in [esper_lab/policy/network.py](../esper_lab/policy/network.py).

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
# ## 1. The task and the host
#
# The task is scikit-learn's bundled digits: 1,797 grey 8×8 images, 10 classes, split once (stratified 80/20) and
# held as tensors. The host is a three-block CNN. The default `impaired` host is only 4 channels wide: it learns,
# but leaves accuracy on the table, so that a good seed in the right place can raise validation accuracy by
# several points within one episode (Esper's `cifar_impaired`). One env step is one host epoch.

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.env.data import load_digits_data
from esper_lab.env.host import HOST_WIDTHS, host_param_count, make_host

data = load_digits_data()
print("train", list(data.x_train.shape), "| validation", list(data.x_val.shape), "| classes", int(data.y_train.max()) + 1)
host = make_host("impaired")
for slot_id in host.slot_ids:
    print(f"injection point {slot_id}: activation [C, H, W] = {list(host.injection_shape(slot_id))}")
print({kind: host_param_count(kind) for kind in HOST_WIDTHS}, "parameters (impaired vs strong host)")
assert data.x_train.shape[1:] == (1, 8, 8) and len(host.slot_ids) == 3

# %% [markdown]
# ## 2. Blueprints
#
# A seed is a small residual module, `seed(x) = x + residual(x)`, started close to the identity. There are 13
# blueprint ids (the action head's size, shared with Esper's transformer worlds); the 7 CNN blueprints are legal
# here, and NOOP plus the 5 transformer blueprints are always masked. Their sizes at the impaired host's width:

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.actions import CNN_BLUEPRINTS, NUM_BLUEPRINTS, BlueprintAction
from esper_lab.env.blueprints import blueprint_param_table
from nb_helpers import bar_figure

width = HOST_WIDTHS["impaired"]
table = blueprint_param_table(width)
print(f"{NUM_BLUEPRINTS} blueprint ids; legal in this CNN world: {[bp.name for bp in CNN_BLUEPRINTS]}")
display(Markdown(markdown_table([{"blueprint": k, "index": int(BlueprintAction[k.upper()]), "parameters": v}
                                 for k, v in table.items()])))
assert len(table) == 7 and len(set(table.values())) == 7  # distinct sizes

# %%
bar_figure(list(table), list(table.values()), f"Seed parameters per blueprint (host width {width}, log scale)",
           "parameters", log_y=True, text=[str(v) for v in table.values()])

# %% [markdown]
# ## 3. The seed lifecycle
#
# A slot holds at most one seed. A germinated seed first trains **straight-through** (the host's output is
# unchanged, the seed already gets gradient), then blends in as its alpha ramps up, holds, and is either
# **fossilized** (kept for good) or **pruned**, after which the slot is embargoed for 5 epochs and resets to empty.
# The seed's input is always detached (gradient isolation): the host never trains through a seed.

# %%
from esper_lab.actions import VALID_TRANSITIONS, SeedStage
from nb_helpers import lifecycle_figure

assert VALID_TRANSITIONS[SeedStage.FOSSILIZED] == frozenset()  # fossilized is final
assert all(SeedStage.PRUNED in VALID_TRANSITIONS[s] for s in
           (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING))
lifecycle_figure()

# %% [markdown]
# ## 4. The action: eight heads, one op
#
# Each step the policy picks one value per head. The **op** says what happens; the other seven heads are its
# arguments, and which of them matter depends on the op. This head-relevance table (the "causal masks") is defined
# once, in `actions.HEAD_RELEVANCE`, and everything that needs it derives from it: per-head advantages, the PPO
# loss masks, the entropy terms (notebook 05).

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.actions import HEAD_NAMES, HEAD_RELEVANCE, HEAD_SIZES, LifecycleOp

print("heads (HEAD_NAMES order):", ", ".join(f"{h} ({HEAD_SIZES[h]})" for h in HEAD_NAMES))
for op in LifecycleOp:
    print(f"{op.name:17s} -> {sorted(HEAD_RELEVANCE[op], key=HEAD_NAMES.index)}")
assert all("op" in heads for heads in HEAD_RELEVANCE.values()) and HEAD_RELEVANCE[LifecycleOp.WAIT] == {"op"}

# %%
from nb_helpers import head_relevance_figure

head_relevance_figure()

# %% [markdown]
# ## 5. One episode, and its legal-action masks
#
# Masks forbid only what is impossible, never what is merely unwise: GERMINATE needs an empty slot, ADVANCE a seed
# that can advance, FOSSILIZE a holding seed, and so on. The op mask is optimistic (legal if *some* slot allows the
# op). We play one episode of the `demo` world with the heuristic baseline (the lab's version of Esper's rule-based
# `HeuristicTamiyo`) and record, at every step, the op mask, the op chosen and each slot's stage.

# %%
from esper_lab.config import preset
from esper_lab.env.morpho_env import SUMMARY_KEY
from esper_lab.env.vector import VectorEnv
from esper_lab.features import batch_obs_to_features
from esper_lab.policy.baselines import HeuristicPolicy

world = preset("demo").world
if SIZE == "ci":
    world.max_epochs = 12  # a shorter episode; the story is the same
env = VectorEnv(world, 1, seed=0)
policy = HeuristicPolicy()
reports = env.reset([7])
policy.reset(1)
op_masks, chosen, stages, accs, observations, indices, seen_reports = [], [], [], [], [], [], []
for t in range(world.max_epochs):
    masks = env.masks()  # {head: [1, k]}
    seen_reports.append(reports[0])  # the WorldReport the policy acts on
    obs, idx = batch_obs_to_features(reports)
    observations.append(obs[0])
    indices.append(idx[0])
    actions = policy.act(reports, masks)  # [1, 8]
    op = int(actions[0, HEAD_NAMES.index("op")])
    assert masks["op"][0, op]  # the heuristic only picks legal ops
    op_masks.append(masks["op"][0])
    chosen.append(op)
    stages.append([None if s is None else s.stage.name for s in reports[0].slots])
    reports, reward, terminated, truncated, infos = env.step(actions)
    assert not infos[0]["illegal"]
    accs.append(infos[0]["val_acc"])
summary = infos[0][SUMMARY_KEY]  # the world's episode summary, on the last step's info
print(f"{world.max_epochs} epochs: final validation accuracy {summary['final_val_acc']:.1f}%, "
      f"{summary['germinated']} seeds germinated, {summary['fossilized']} fossilized, {summary['pruned']} pruned")

# %%
from nb_helpers import mask_timeline_figure

mask_timeline_figure(torch.stack(op_masks), chosen, "Legal ops (blue) and the heuristic's choice (x) at each epoch")

# %%
from esper_lab.plots.seeds import stage_segments, swimlane

swimlane(stage_segments(stages, host.slot_ids), lanes=host.slot_ids, title="Stage of each slot over the episode")

# %% [markdown]
# ## 6. The masks up close: an explorer
#
# The masks come from each world's report: `VectorEnv.masks()` asks every world for `World.action_masks()`, which
# is `WorldReport.action_masks()` on the world's current report, which calls `actions.compute_action_masks` on what
# each slot holds. The result has the eight head masks and one more entry, `masks["op_slot"]`, a `[6, 3]` table:
# for each op, the slots where it can execute (`actions.is_op_legal_for_slot`, the same rule the world executes
# by). The op mask is that table's OR over slots. With conditional masks (the lab's default) the policy draws the
# op first, then the slot among that op's row.
#
# Below, the episode's last report is copied with chosen slot states (stage and alpha mode) and asked for its
# masks. Each occupied slot is a copy of a real slot report from the episode with the stage and alpha mode
# replaced; nothing else changes, so the numbers are those the world would compute. One configuration first, as a
# plain figure: a HOLDING seed in `r0c0`, a BLENDING seed still ramping alpha up in `r0c1`, `r0c2` empty.

# %%
from esper_lab.actions import MIN_PRUNE_AGE, OP_SLOT_KEY, AlphaMode, check_op_slot_masks
from nb_helpers import masks_figure, report_with_slots

final_report = reports[0]  # the world after the episode's last step
env_masks = env.masks()  # {head: [1, k]}, op_slot: [1, 6, 3]
assert all(torch.equal(env_masks[k][0], m) for k, m in final_report.action_masks().items())  # the same computation
template = next((s for r in seen_reports for s in r.slots if s is not None), None)  # a real seed's slot report
assert template is not None, "the heuristic germinated no seed in this episode"
assert template.seed_age >= MIN_PRUNE_AGE and final_report.max_seeds is None  # PRUNE is not blocked by age here

default_slots = [(SeedStage.HOLDING, AlphaMode.HOLD), (SeedStage.BLENDING, AlphaMode.UP), (None, AlphaMode.HOLD)]
explored = report_with_slots(final_report, default_slots, template)
masks = explored.action_masks()
expected = {"WAIT": [1, 1, 1], "GERMINATE": [0, 0, 1], "SET_ALPHA_TARGET": [1, 0, 0], "PRUNE": [1, 0, 0],
            "FOSSILIZE": [1, 0, 0], "ADVANCE": [0, 1, 0]}  # op -> its slots r0c0, r0c1, r0c2
assert masks[OP_SLOT_KEY].to(torch.int64).tolist() == [expected[op.name] for op in LifecycleOp]
assert masks["op"].all()  # every op is legal in some slot
assert masks["style"].all() and masks["alpha_target"].all()  # open: GERMINATE and SET_ALPHA_TARGET are legal
assert masks["blueprint"].nonzero().flatten().tolist() == sorted(int(bp) for bp in CNN_BLUEPRINTS)
masks_figure(masks, host.slot_ids, "HOLDING seed in r0c0, BLENDING seed ramping up in r0c1, r0c2 empty")

# %% [markdown]
# Every op is legal, but not in the same slots. SET_ALPHA_TARGET, PRUNE and FOSSILIZE can act only on the HOLDING
# seed in `r0c0`; the BLENDING seed can ADVANCE (the mask allows it; the gate then waits until alpha holds at a
# target of 1) but can be neither pruned nor retargeted while its alpha moves; GERMINATE needs the empty `r0c2`.
# On the right, the blueprint head allows the 7 CNN blueprints only, and the style and alpha-target heads are
# open because GERMINATE and SET_ALPHA_TARGET are legal (when neither is, `compute_action_masks` pins each to one
# choice).
#
# The same rules, checked on every combination of slot contents (empty or one of the 8 stages a slot can report,
# in each of the three slots), with the three slots in each alpha mode in turn, through the world report's own
# `action_masks()` and `can_execute`:

# %%
import itertools

from nb_helpers import REPORTED_STAGES

checked = 0
for mode, stages3 in itertools.product(AlphaMode, itertools.product((None, *REPORTED_STAGES), repeat=3)):
    combo = [(stage, mode) for stage in stages3]
    r = report_with_slots(final_report, combo, template)
    m = r.action_masks()
    op_slot = m[OP_SLOT_KEY]  # [6, 3]
    assert torch.equal(m["op"], op_slot.any(-1))  # legal exactly when some slot allows it
    assert op_slot[LifecycleOp.WAIT].all()  # WAIT is always legal, in any slot
    assert op_slot[LifecycleOp.FOSSILIZE].tolist() == [st == SeedStage.HOLDING for st, _ in combo]
    assert op_slot[LifecycleOp.GERMINATE].tolist() == [st is None for st, _ in combo]
    assert all(op_slot[op, s] == r.can_execute(op, s) for op in LifecycleOp for s in range(3))
    check_op_slot_masks({k: v.unsqueeze(0) for k, v in m.items()}, step=0)  # the rollout's own consistency check
    checked += 1
print(f"{checked} slot configurations checked")
assert checked == (len(REPORTED_STAGES) + 1) ** 3 * len(AlphaMode)

# %% [markdown]
# Now try it: pick a stage and an alpha mode for each slot (the figure redraws in a live notebook; a static export
# such as GitHub shows the default above instead).

# %%
# NBVAL_IGNORE_OUTPUT
from nb_helpers import mask_explorer

explorer = mask_explorer(final_report, template, initial=default_slots)
explorer

# %% [markdown]
# ## 7. Obs V3: what the policy sees
#
# Each world becomes 121 numbers, every one in [-1, 1]: 24 base features (progress, losses, accuracies and their
# histories, parameter and slot usage, stage counts), 7 action-feedback features (did the last action succeed,
# which op was it) and 30 per slot (is a seed there, its stage one-hot, alpha and the alpha schedule, its
# counterfactual contribution, gradient health, time in stage). An empty slot is all zeros. The layout is derived
# from the feature-name lists in `features.py`, defined once:

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.features import (ACTION_FEEDBACK_SIZE, BASE_FEATURE_SIZE, OBS_DIM, SLOT_FEATURE_NAMES, SLOT_FEATURE_SIZE,
                                SLOTS_OFFSET, feature_names)

print(f"OBS_DIM = {OBS_DIM} = {BASE_FEATURE_SIZE} base + {ACTION_FEEDBACK_SIZE} action feedback + 3 × {SLOT_FEATURE_SIZE} per slot")
print("per-slot features:", ", ".join(SLOT_FEATURE_NAMES))
assert OBS_DIM == 121 == BASE_FEATURE_SIZE + ACTION_FEEDBACK_SIZE + 3 * SLOT_FEATURE_SIZE
assert len(feature_names()) == OBS_DIM

# %%
from nb_helpers import obs_layout_figure

t_show = max(i for i, idx in enumerate(indices) if (idx >= 0).any()) if any((i >= 0).any() for i in indices) else 0
segments = [("base", 0, BASE_FEATURE_SIZE), ("action feedback", BASE_FEATURE_SIZE, SLOTS_OFFSET)]
segments += [(f"slot r0c{s}", SLOTS_OFFSET + s * SLOT_FEATURE_SIZE, SLOTS_OFFSET + (s + 1) * SLOT_FEATURE_SIZE) for s in range(3)]
obs_show = observations[t_show]
assert obs_show.shape == (OBS_DIM,) and obs_show.abs().max() <= 1.0
for s in range(3):  # an empty slot is all zeros, an occupied one has is_active = 1
    block = obs_show[SLOTS_OFFSET + s * SLOT_FEATURE_SIZE: SLOTS_OFFSET + (s + 1) * SLOT_FEATURE_SIZE]
    assert (block.abs().sum() == 0) == (indices[t_show][s].item() == -1)
obs_layout_figure(segments, obs_show.tolist(), f"Obs V3 of the episode above at epoch {t_show} "
                  f"(slots: {[BlueprintAction(i).name if i >= 0 else 'empty' for i in indices[t_show].tolist()]})")

# %% [markdown]
# ## 8. Blueprint indices and the blueprint embedding
#
# Next to the 121 numbers travel the **blueprint indices**, one integer per slot: the `BlueprintAction` value of the
# seed in the slot, -1 when it is empty (Phase 2 made `batch_obs_to_features` return them as a second tensor).
# Phase 3's `BlueprintEmbedding` turns each index into a learned 4-vector: 13 rows for the blueprints and a 14th,
# learned, "null" row for -1. Phase 4 (notebook 01) concatenates the 3 × 4 embedding numbers to the observation.

# %%
# NBVAL_CHECK_OUTPUT
from esper_lab.policy.network import BlueprintEmbedding

emb = BlueprintEmbedding(num_blueprints=13, embed_dim=4)
idx = torch.tensor([[-1, int(BlueprintAction.CONV_LIGHT), -1]])  # [B=1, S=3]
vectors = emb(idx)  # [1, 3, 4]
print("indices", idx.tolist(), "-> embedding", list(vectors.shape), "| table", list(emb.embedding.weight.shape))
assert torch.equal(vectors[0, 0], emb.embedding.weight[13])  # -1 reads the null row
assert torch.equal(vectors[0, 1], emb.embedding.weight[int(BlueprintAction.CONV_LIGHT)])
assert emb.embedding.weight[13].abs().sum() > 0  # the null row is learned, not a zero pad
err = None
try:
    emb(torch.tensor([[-2, 0, 13]]))
except ValueError as e:
    err = e
print("ValueError:", err)

# %% [markdown]
# ## Recap
#
# - The world: a weak digits CNN (the host) training one epoch per env step, with three slots `r0c0`, `r0c1`, `r0c2`.
# - Seeds of 7 CNN blueprints (13 ids in all) live through DORMANT → GERMINATED → TRAINING → BLENDING → HOLDING →
#   FOSSILIZED, or get PRUNED → EMBARGOED → RESETTING → empty.
# - An action is 8 heads; `HEAD_RELEVANCE` says which heads each op uses, once for the whole lab.
# - Masks forbid only the impossible; the op mask is optimistic across slots: an op is legal exactly when its row
#   of `masks["op_slot"]` allows some slot, and every world computes them from its own report.
# - Obs V3 is 121 = 24 + 7 + 3 × 30 numbers; the blueprint indices (-1 = empty) come with it and feed a learned
#   embedding with a null row.
#
# Next: [01_network_v2.ipynb](01_network_v2.ipynb) builds the Phase 4 network on top of these inputs.
#
# ## Exercises
#
# Each exercise is a small piece of code. Write your answer in a new cell and pass it to the `check_...`
# function below; it raises `AssertionError` with a hint when the answer is wrong. The solutions are in the last
# section (their code is collapsed: click to show it).
#
# **1. Masks by the rules.** The slots hold: a HOLDING seed in `r0c0` (alpha holding), an EMBARGOED seed in `r0c1`,
# a TRAINING seed in `r0c2` (alpha holding; the seed is old enough to prune). Read `is_op_legal_for_slot` in
# [esper_lab/actions.py](../esper_lab/actions.py) and write, without computing masks, a dict from the name of
# every legal op to the list of slot ids it can execute on.
#
# **2. Find a feature.** Which index of the 121-number observation holds slot `r0c1`'s `alpha`? Compute it from
# `SLOTS_OFFSET`, `SLOT_FEATURE_SIZE` and `SLOT_FEATURE_NAMES` (imported in section 7).
#
# **3. The heads of a PRUNE.** From `HEAD_RELEVANCE_TABLE` (a `[6, 8]` bool tensor in `esper_lab.actions`: row =
# op, column = head in `HEAD_NAMES` order), list the heads whose choice matters for a PRUNE step, in `HEAD_NAMES`
# order. These are the heads whose log-probs the PPO update counts on that step (notebook 05).

# %%
from esper_lab.actions import HEAD_RELEVANCE_TABLE

EXERCISE_SLOTS = [(SeedStage.HOLDING, AlphaMode.HOLD), (SeedStage.EMBARGOED, AlphaMode.HOLD),
                  (SeedStage.TRAINING, AlphaMode.HOLD)]


def check_op_slots(answer):
    """Exercise 1: `answer` is {op name: [slot ids]} for every legal op."""
    op_slot = report_with_slots(final_report, EXERCISE_SLOTS, template).action_masks()[OP_SLOT_KEY]  # [6, 3]
    truth = {op.name: [host.slot_ids[s] for s in range(3) if op_slot[op, s]] for op in LifecycleOp if op_slot[op].any()}
    missing, extra = sorted(set(truth) - set(answer)), sorted(set(answer) - set(truth))
    assert not missing and not extra, f"legal ops missing from your answer: {missing}; not legal: {extra}"
    for op, slots in truth.items():
        assert sorted(answer[op]) == slots, f"{op}: you said {sorted(answer[op])}; look again at its rule"
    print("correct:", truth)


def check_alpha_index(index):
    """Exercise 2: `index` is the observation index of slot r0c1's alpha."""
    assert 0 <= index < OBS_DIM, f"an index of the observation is in [0, {OBS_DIM})"
    assert feature_names()[index] == "slot1.alpha", f"index {index} holds {feature_names()[index]!r}"
    print(f"correct: index {index} is {feature_names()[index]}")


def check_prune_heads(heads):
    """Exercise 3: `heads` is the list of heads that matter for PRUNE, in HEAD_NAMES order."""
    truth = [h for h in HEAD_NAMES if h in HEAD_RELEVANCE[LifecycleOp.PRUNE]]
    assert list(heads) == truth, f"got {list(heads)}; compare with HEAD_RELEVANCE_TABLE[LifecycleOp.PRUNE]"
    print("correct:", truth)


# Your answers, for example:
# check_op_slots({"WAIT": ["r0c0", "r0c1", "r0c2"], ...})
# check_alpha_index(...)
# check_prune_heads([...])

# %% [markdown]
# ## Solutions
#
# **1.** WAIT can execute anywhere. The HOLDING seed (alpha holding, old enough) can be retargeted, pruned or
# fossilized; the EMBARGOED seed allows nothing but WAIT; the TRAINING seed can be pruned or advanced. No slot is
# empty, so GERMINATE is not legal at all.

# %% jupyter={"source_hidden": true}
check_op_slots({"WAIT": ["r0c0", "r0c1", "r0c2"], "SET_ALPHA_TARGET": ["r0c0"], "PRUNE": ["r0c0", "r0c2"],
                "FOSSILIZE": ["r0c0"], "ADVANCE": ["r0c2"]})

# %% [markdown]
# **2.** The slot blocks start at `SLOTS_OFFSET` and are `SLOT_FEATURE_SIZE` long; `r0c1` is slot 1.

# %% jupyter={"source_hidden": true}
check_alpha_index(SLOTS_OFFSET + 1 * SLOT_FEATURE_SIZE + SLOT_FEATURE_NAMES.index("alpha"))

# %% [markdown]
# **3.** Row `PRUNE` of the table, read in column order.

# %% jupyter={"source_hidden": true}
check_prune_heads([head for head, matters in zip(HEAD_NAMES, HEAD_RELEVANCE_TABLE[LifecycleOp.PRUNE]) if matters])
