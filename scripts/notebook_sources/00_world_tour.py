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
# - the **legal-action masks** and how they change over an episode;
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
op_masks, chosen, stages, accs, observations, indices = [], [], [], [], [], []
for t in range(world.max_epochs):
    masks = env.masks()  # {head: [1, k]}
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
# ## 6. Obs V3: what the policy sees
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
# ## 7. Blueprint indices and the blueprint embedding
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
# - Masks forbid only the impossible; the op mask is optimistic across slots.
# - Obs V3 is 121 = 24 + 7 + 3 × 30 numbers; the blueprint indices (-1 = empty) come with it and feed a learned
#   embedding with a null row.
#
# Next: [01_network_v2.ipynb](01_network_v2.ipynb) builds the Phase 4 network on top of these inputs.
