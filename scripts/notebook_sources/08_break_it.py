# %% [markdown]
# # 08 · Break it: each Phase 4 pitfall, put back in and caught by its test
#
# **What you will learn**
#
# - the five mistakes that Phase 4 made, or that a re-implementation of it easily makes: the value and the action
#   taken from two different op samples; a bootstrap with the pre-action blueprint indices or a reset hidden state;
#   a buffer that never stores the blueprint indices; raw observations in the update; `-inf` as the masked logit;
# - for each one, the smallest patch that puts it back into the real package (`pytest`'s `MonkeyPatch`, and
#   `nb_helpers.spy_on` where the patch needs to see a call), and why it breaks learning;
# - which test of `tests/` guards against it: we run those tests in this kernel with `pytest.main` while the patch is
#   active and watch them fail (red), then run the same tests on the restored code and watch them pass (green).
#
# **Modules broken (and restored):** [esper_lab/policy/network.py](../esper_lab/policy/network.py)
# (`get_action`), [esper_lab/agent.py](../esper_lab/agent.py) (`bootstrap`, `act`),
# [esper_lab/rl/buffer.py](../esper_lab/rl/buffer.py) (`RolloutBuffer`) and
# [esper_lab/policy/distributions.py](../esper_lab/policy/distributions.py) (`MaskedCategorical`). The tests run are
# in [tests/](../tests/). Esper commits: 97d9ba3f and its fix 0872525b (the op/value mismatch), 6032dc53 (the hidden
# state no longer reset before the bootstrap), c183555b (the buffer stores the normalised observation).

# %%
import os

SIZE = os.environ.get("ESPER_LAB_NB_SIZE", "full")  # "ci" under `make test`, "full" for the committed outputs
assert SIZE in ("ci", "full"), SIZE

import contextlib
import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from IPython.display import Markdown, display

from nb_helpers import markdown_table, setup, spy_on

setup(seed=0, threads=2)
print("notebook size:", SIZE)  # the same tests run at either size

# %% [markdown]
# ## 1. How a pitfall is put back, and how its tests are run
#
# Each section follows the same four steps:
#
# 1. a patch replaces one function or constant of the package, inside `pytest.MonkeyPatch.context()`, which puts the
#    original back when the `with` block ends, even on an error;
# 2. inside the block, `run_tests` runs the guarding tests of `tests/` in this kernel, so they see the patched
#    package. The run must fail: pytest's exit code 1, and every test we chose must have failed;
# 3. after the block, the same tests run on the restored package: exit code 0;
# 4. both runs are recorded for the summary table in section 7.
#
# `run_tests` drops the test modules from `sys.modules` first, so every run imports them fresh (a test module that
# did `from esper_lab.x import f` binds `f` at import). The patches below replace class attributes (`Agent.bootstrap`)
# or module globals read at call time (`distributions.MASKED_LOGIT_VALUE`), so the tests see them either way. The
# recorder plugin keeps each test's outcome and the type of the exception a failing test raised.

# %%
REPO = Path("..").resolve()  # the notebooks run in notebooks/
TESTS = REPO / "tests"


class Outcomes:
    """A pytest plugin: the outcome of each test that ran and, for a failed one, the type of what it raised."""

    def __init__(self) -> None:
        self.outcome: dict[str, str] = {}  # node id -> "passed" | "failed" | "skipped"
        self.error: dict[str, str] = {}  # node id -> exception type name, failed tests only

    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> None:
        if call.excinfo is not None and call.when == "call":
            self.error[item.nodeid] = call.excinfo.typename

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":  # a setup error counts as a failure
            self.outcome[report.nodeid] = report.outcome


@dataclasses.dataclass
class TestRun:
    """One `pytest.main` run: its exit code and what each test did."""

    exit_code: int  # 0: all passed, 1: some failed (pytest.ExitCode)
    outcome: dict[str, str]
    error: dict[str, str]

    @property
    def failed(self) -> list[str]:
        return [node for node, outcome in self.outcome.items() if outcome == "failed"]


def run_tests(node_ids: list[str]) -> TestRun:
    """Run `node_ids` (paths relative to the repository root) with pytest in this kernel, test modules imported anew."""
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(TESTS)):
            del sys.modules[name]
    recorder = Outcomes()
    with contextlib.chdir(REPO):
        code = pytest.main([*node_ids, "-q", "--color=yes", "--tb=short", "-o", "addopts=", "-p", "no:cacheprovider"],
                           plugins=[recorder])
    return TestRun(int(code), recorder.outcome, recorder.error)


RESULTS: list[dict] = []  # one row per pitfall: its tests and both runs


def record(pitfall: str, node_ids: list[str], red: TestRun, green: TestRun) -> None:
    """Check the red and the green run of one pitfall's tests and keep them for the summary."""
    assert red.exit_code == pytest.ExitCode.TESTS_FAILED and sorted(red.failed) == sorted(node_ids), red
    assert green.exit_code == pytest.ExitCode.OK and set(green.outcome.values()) == {"passed"}, green
    assert sorted(green.outcome) == sorted(node_ids)  # the same tests ran both times
    RESULTS.append(dict(pitfall=pitfall, tests=node_ids, red=red, green=green))

# %% [markdown]
# ## 2. The value of one op sample, the action of another (Esper 97d9ba3f, fixed in 0872525b)
#
# In the first Phase 4 commit, `get_action()` called `forward()`, which sampled an op and returned Q(s, that op) as
# the value; then `get_action()` drew the action's op **again** (a second sample, or the argmax in deterministic
# mode). The buffer then stores Q(s, op #1) next to the action op #2, while the update fits Q(s, op #2): every
# advantage `r + γV' − V` is measured against the value of an action that was not taken, and the bootstrap is
# Q(s', a sampled op) where the argmax op was meant. Esper measured the two ops differing on 75 to 86% of steps and
# twice the TD-error variance (the fix's commit message, 0872525b; notebook 02 measures it here).
#
# The patch wraps the lab's `get_action` so that it keeps its own action but returns the value of a fresh
# `forward()` pass, as 97d9ba3f did. Only the `q_op` critic conditions the value on the op, so the guarding tests are
# run in their `q_op` parametrisation: one checks that the value is Q(s, acted op), the other that the update's
# re-evaluation reproduces the stored values.

# %%
from esper_lab.actions import OP_SLOT_KEY
from esper_lab.policy.network import FactoredRecurrentActorCritic

single_sample_get_action = FactoredRecurrentActorCritic.get_action  # the lab's: one draw for the op and its value


@torch.no_grad()
def double_sample_get_action(self, state, blueprint_indices, hidden=None, masks=None, deterministic=False):
    """97d9ba3f: the action from get_action's own draw (or argmax), the value from forward()'s separate draw."""
    result = single_sample_get_action(self, state, blueprint_indices, hidden, masks, deterministic)
    step = lambda x: self._one_step(x, "input")  # noqa: E731, [B, n] -> [B, 1, n]
    step_masks = {k: step(m) for k, m in masks.items() if k != OP_SLOT_KEY} if masks else None
    other_op_value = self(step(state), step(blueprint_indices), hidden, step_masks).value[:, 0]  # [B]
    return dataclasses.replace(result, value=other_op_value)


DOUBLE_SAMPLE_TESTS = [
    "tests/test_network.py::test_sampled_op_is_the_acted_op_and_the_value_is_for_it[q_op]",
    "tests/test_network.py::test_rollout_log_probs_and_values_are_reproduced_by_evaluate_actions[q_op]",
]
with pytest.MonkeyPatch.context() as mp:
    mp.setattr(FactoredRecurrentActorCritic, "get_action", double_sample_get_action)
    red_double = run_tests(DOUBLE_SAMPLE_TESTS)
assert red_double.exit_code == pytest.ExitCode.TESTS_FAILED

# %% [markdown]
# Both tests fail on an assertion about the value. Leaving the `with` block put the lab's `get_action` back; the
# same tests now pass:

# %%
assert FactoredRecurrentActorCritic.get_action is single_sample_get_action
green_double = run_tests(DOUBLE_SAMPLE_TESTS)
assert green_double.exit_code == pytest.ExitCode.OK
record("value and action from two op samples", DOUBLE_SAMPLE_TESTS, red_double, green_double)

# %% [markdown]
# ## 3. The bootstrap: pre-action blueprint indices, or a reset hidden state
#
# Every episode here ends by the time limit, so the last step of every buffer row is bootstrapped from V(s') of the
# state the last action led to (notebook 03). Two ways to get s' wrong:
#
# - **Pre-action blueprint indices.** If the last action germinated a seed, s' has a blueprint in that slot; indices
#   taken before the action still say "empty". The critic then values a state that never existed (post-action
#   features, pre-action slot contents), and the error lands in the last advantage of exactly the rows whose last
#   action changed a slot.
# - **A reset hidden state.** The LSTM state carries the episode's history; set back to zero, the bootstrap values s'
#   as if the episode had just begun. That biases GAE on every truncated row, which here is every row (Esper's bug
#   B11-DRL-01, fixed in 6032dc53).
#
# The guarding test is `test_bootstrap_uses_post_action_indices_and_carried_hidden` (tests/test_trainer.py): it runs a
# real `Trainer.collect()` and spies on every `get_action` call, the bootstrap's included.
#
# First form: `Agent.bootstrap` takes the post-action features but the indices of the last step the policy acted on.
# `nb_helpers.spy_on(Agent, "act")` records every `act` call, so the patch can read the last one's `Observation`.

# %%
from esper_lab.agent import Agent

lab_bootstrap, lab_act = Agent.bootstrap, Agent.act
BOOTSTRAP_TESTS = ["tests/test_trainer.py::test_bootstrap_uses_post_action_indices_and_carried_hidden"]

with spy_on(Agent, "act") as acts, pytest.MonkeyPatch.context() as mp:

    def bootstrap_with_pre_action_indices(self, reports, masks, hidden):
        post = self.observe(reports)  # the post-action features ...
        pre_action_indices = acts[-1].result[0].blueprint_indices  # ... with the last step's pre-action indices
        return self.get_action(post.obs, pre_action_indices, masks, hidden, deterministic=True).value

    mp.setattr(Agent, "bootstrap", bootstrap_with_pre_action_indices)
    red_indices = run_tests(BOOTSTRAP_TESTS)
assert red_indices.exit_code == pytest.ExitCode.TESTS_FAILED
assert acts  # the spy saw the rollout's steps

# %% [markdown]
# In the red output, the indices the bootstrap got (first tensor) and the post-action ones (second) differ in the
# slots the last action changed: in the test's seeded rollout, a seed germinated on the last step.
#
# Second form: `Agent.bootstrap` with the right reports, but from a zero hidden state instead of the carried one.


# %%
def bootstrap_from_a_reset_hidden_state(self, reports, masks, hidden):
    return lab_bootstrap(self, reports, masks, self.initial_hidden(len(reports)))  # the carried `hidden` is dropped


with pytest.MonkeyPatch.context() as mp:
    mp.setattr(Agent, "bootstrap", bootstrap_from_a_reset_hidden_state)
    red_hidden = run_tests(BOOTSTRAP_TESTS)
assert red_hidden.exit_code == pytest.ExitCode.TESTS_FAILED

# %% [markdown]
# Both forms restored, the test passes (one green run for the two red ones):

# %%
assert Agent.bootstrap is lab_bootstrap and Agent.act is lab_act  # the patch and the spy are gone
green_bootstrap = run_tests(BOOTSTRAP_TESTS)
assert green_bootstrap.exit_code == pytest.ExitCode.OK
record("bootstrap with pre-action blueprint indices", BOOTSTRAP_TESTS, red_indices, green_bootstrap)
record("bootstrap from a reset hidden state", BOOTSTRAP_TESTS, red_hidden, green_bootstrap)

# %% [markdown]
# ## 4. A buffer that never stores the blueprint indices
#
# Notebook 04 showed the loud version: a step without `blueprint_indices` is a `BufferSchemaError` at `add()`. The
# quiet version passes that check: the field is given, but never written. The buffer's `[E, T, S]` index tensor then
# keeps the zeros it was allocated with, so the update re-runs every episode as if every slot held blueprint 0
# (`NOOP`), including the slots that were empty. The network re-evaluated on inputs it never saw gives log-probs and
# values that differ from the stored ones before any weight has changed: PPO's ratios are not 1 on the first
# minibatch, so clipping and the KL early stop react to an artefact, and the critic is fitted to slot contents that
# never existed.
#
# The patch: `RolloutBuffer._put` (the one writer behind `add`) skips the blueprint indices. Two tests catch it: the
# buffer's own layout test (its first step stores -1, every slot empty) and the PPO test that fills a buffer from
# `get_action` step by step and replays it (the stored log-probs and values must come back exactly, and the update's
# first ratio must be 1).

# %%
from esper_lab.rl.buffer import RolloutBuffer

lab_put = RolloutBuffer._put


def put_everything_but_the_indices(self, name, store, t, x, shape):
    if name != "blueprint_indices":  # the indices are checked by add() but never written
        lab_put(self, name, store, t, x, shape)


BUFFER_TESTS = [
    "tests/test_buffer.py::test_batched_layout_is_per_env_rows",
    "tests/test_ppo.py::test_first_evaluation_reproduces_the_stored_rollout[q_op]",
]
with pytest.MonkeyPatch.context() as mp:
    mp.setattr(RolloutBuffer, "_put", put_everything_but_the_indices)
    red_buffer = run_tests(BUFFER_TESTS)
assert red_buffer.exit_code == pytest.ExitCode.TESTS_FAILED

# %%
assert RolloutBuffer._put is lab_put
green_buffer = run_tests(BUFFER_TESTS)
assert green_buffer.exit_code == pytest.ExitCode.OK
record("buffer never stores blueprint indices", BUFFER_TESTS, red_buffer, green_buffer)

# %% [markdown]
# ## 5. Raw observations in the update (Esper c183555b)
#
# The policy acts on the observation normalised with the running statistics frozen for the rollout; the update must
# re-run it on exactly that input. Esper's buffer stored the raw features instead, so the update evaluated the policy
# on inputs of another scale (the raw x instead of clip((x − mean) / std)): the ratios move away from 1
# although no weight changed, and the KL and the clipping measure the normalisation gap rather than the policy change.
#
# The patch: `Agent.act` still acts on the normalised observation, but hands the rollout an `Observation` whose
# `obs` is the raw one, which the rollout then stores. The trainer's tests catch it twice: the buffer must hold the
# normalised observation of the first step, and the replay must reproduce the stored log-probs.

# %%
def act_but_store_raw(self, reports, masks, hidden, deterministic=False):
    seen, step = lab_act(self, reports, masks, hidden, deterministic)  # the policy acts on the normalised obs ...
    return dataclasses.replace(seen, obs=seen.raw), step  # ... the rollout stores the raw one


RAW_OBS_TESTS = [
    "tests/test_trainer.py::test_buffer_holds_the_normalised_obs_the_policy_saw",
    "tests/test_trainer.py::test_rollout_replay_reproduces_stored_log_probs_and_values",
]
with pytest.MonkeyPatch.context() as mp:
    mp.setattr(Agent, "act", act_but_store_raw)
    red_raw = run_tests(RAW_OBS_TESTS)
assert red_raw.exit_code == pytest.ExitCode.TESTS_FAILED

# %%
assert Agent.act is lab_act
green_raw = run_tests(RAW_OBS_TESTS)
assert green_raw.exit_code == pytest.ExitCode.OK
record("raw observations in the update", RAW_OBS_TESTS, red_raw, green_raw)

# %% [markdown]
# ## 6. `-inf` as the masked logit
#
# `MaskedCategorical` gives an illegal action the finite logit `MASKED_LOGIT_VALUE` (-1e4). With `-inf` instead, an
# illegal action's log-probability is `-inf` and its probability 0, so the entropy's term p·log p is 0·(−inf) = NaN.
# The forward pass hides it (those terms are replaced by 0 before the sum), the backward pass does not: the
# gradient of p·log p with respect to p is log p = −inf, times the zero gradient arriving there, is NaN, and the
# softmax spreads that NaN to every legal logit of the row. The packed `[B, T, 8, 13]` layout pads every head
# narrower than 13 with illegal entries, so every step has such rows: one optimizer step turns the weights into NaN,
# and the next forward pass stops on non-finite logits.
#
# The patch is one module global, the constant `MaskedCategorical` reads when it masks. The guarding tests: the
# masked logits must be finite, the entropy gradient of a row with a single legal action must be exactly 0, and a
# PPO update on a real rollout must run (here its second minibatch meets the NaN weights the first one left).
#
# First, the mechanism on one row of three actions, the third illegal:

# %%
import esper_lab.policy.distributions as distributions
from esper_lab.policy.distributions import MaskedCategorical


def entropy_gradient(logits: list[float], legal: list[bool]) -> tuple[float, torch.Tensor]:
    """The normalised entropy of one masked row and its gradient with respect to the logits `[k]`."""
    x = torch.tensor([logits], requires_grad=True)  # [1, k]
    entropy = MaskedCategorical(x, torch.tensor([legal])).entropy()  # [1]
    entropy.sum().backward()
    return entropy.item(), x.grad[0]


with pytest.MonkeyPatch.context() as mp:
    mp.setattr(distributions, "MASKED_LOGIT_VALUE", float("-inf"))
    inf_entropy, inf_grad = entropy_gradient([0.5, 2.0, -1.0], [True, True, False])
finite_entropy, finite_grad = entropy_gradient([0.5, 2.0, -1.0], [True, True, False])
print(f"-inf fill: entropy {inf_entropy:.4f}, gradient {inf_grad.tolist()}")
print(f"-1e4 fill: entropy {finite_entropy:.4f}, gradient {[round(g, 4) for g in finite_grad.tolist()]}")
assert abs(inf_entropy - finite_entropy) < 1e-6  # the forward values agree ...
assert inf_grad[:2].isnan().all() and torch.isfinite(finite_grad).all()  # ... the legal logits' gradients do not
assert inf_grad[2] == 0 and finite_grad[2] == 0  # the illegal logit gets no gradient either way

# %% [markdown]
# Now the tests:

# %%
INF_MASK_TESTS = [
    "tests/test_distributions.py::test_masked_logits_are_finite_and_far_below_legal_ones",
    "tests/test_distributions.py::test_single_legal_action_has_log_prob_zero_and_zero_entropy_gradient",
    "tests/test_ppo.py::test_first_evaluation_reproduces_the_stored_rollout[q_op]",
]
lab_fill = distributions.MASKED_LOGIT_VALUE
with pytest.MonkeyPatch.context() as mp:
    mp.setattr(distributions, "MASKED_LOGIT_VALUE", float("-inf"))
    red_inf = run_tests(INF_MASK_TESTS)
assert red_inf.exit_code == pytest.ExitCode.TESTS_FAILED

# %%
assert distributions.MASKED_LOGIT_VALUE == lab_fill == -1e4
green_inf = run_tests(INF_MASK_TESTS)
assert green_inf.exit_code == pytest.ExitCode.OK
record("-inf as the masked logit", INF_MASK_TESTS, red_inf, green_inf)

# %% [markdown]
# ## 7. Summary
#
# One row per pitfall, built from the recorded runs: the tests, what each failing test raised while the pitfall was
# in, and pytest's exit code before (1: tests failed) and after (0: all passed) the restore.

# %%
def short(node_id: str) -> str:
    """`tests/test_x.py::name[param]` -> `test_x::name[param]`."""
    path, name = node_id.split("::", 1)
    return f"{Path(path).stem}::{name}"


rows = [{
    "pitfall": r["pitfall"],
    "guarding tests": "<br>".join(f"`{short(t)}`" for t in r["tests"]),
    "broken: raised": "<br>".join(r["red"].error.get(t, "?") for t in r["tests"]),
    "broken: exit code": f"{r['red'].exit_code} ({len(r['red'].failed)}/{len(r['tests'])} failed)",
    "restored: exit code": f"{r['green'].exit_code} ({list(r['green'].outcome.values()).count('passed')}/"
                           f"{len(r['tests'])} passed)",
} for r in RESULTS]
display(Markdown(markdown_table(rows)))
assert len(RESULTS) == 6  # five pitfalls, the bootstrap's in two forms
assert all(r["red"].exit_code == 1 and r["green"].exit_code == 0 for r in RESULTS)  # every one red, then green

# %% [markdown]
# ## Exercises
#
# A new pitfall, not one Esper shipped: a critic that ignores the op. `FactoredRecurrentActorCritic._compute_value`
# is Q(s, op) = `value_head(cat(lstm_out, one_hot(op)))`; patch it so it always uses WAIT's one-hot, whatever op it
# is given, and Q(s, op) silently becomes V(s).
#
# **1. Which test catches it?** Write the patch (a function with `_compute_value`'s signature) and name a test of
# `tests/test_network.py` about the per-op values (`op_values`) that fails under it; `check_caught` runs it red under
# your patch and green after.
#
# **2. And through `forward`?** A test can only catch what it compares against something computed another way.
# `forward` stores Q(s, sampled op) as the value; name the test of `tests/test_network.py` that compares it with
# `_compute_value` and check that it goes red too. Why does it, although it calls the patched function itself?

# %%
from esper_lab.policy.network import FactoredRecurrentActorCritic


def check_caught(patch, node_ids: list[str]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FactoredRecurrentActorCritic, "_compute_value", patch)
        red = run_tests(node_ids)
    green = run_tests(node_ids)
    assert red.exit_code == pytest.ExitCode.TESTS_FAILED and sorted(red.failed) == sorted(node_ids), red
    assert green.exit_code == pytest.ExitCode.OK, green
    print("right: red under the patch, green after:", [short(n) for n in node_ids])


# %% [markdown]
# ## Recap
#
# - **Two op samples** (97d9ba3f): the value was Q(s, op #1), the action op #2. Caught by
#   `test_sampled_op_is_the_acted_op_and_the_value_is_for_it` and by the replay of a rollout through
#   `evaluate_actions`; only the `q_op` critic is affected.
# - **The bootstrap** must use the post-action features *and* indices and the carried hidden state; the trainer's
#   `test_bootstrap_uses_post_action_indices_and_carried_hidden` catches both mistakes.
# - **A buffer that never writes the blueprint indices** replays every episode with blueprint 0 in every slot; the
#   buffer's layout test and the PPO replay test catch it.
# - **Raw observations in the update** (c183555b): the trainer's tests that the buffer holds the normalised
#   observation and that the replay reproduces the stored log-probs catch it.
# - **`-inf` masking** leaves the forward values intact but makes the entropy's gradient NaN on every row with an
#   illegal entry; the distribution's finiteness and gradient tests and the first PPO update catch it.
# - Three of the five (two op samples, unwritten indices, raw observations) are caught by the same check: re-running
#   what the rollout stored must give back the log-probs and values it computed, before any weight has changed.
#
# `make test` runs the same tests, unpatched, with the rest of the suite.
#
# ## Solutions

# %% jupyter={"source_hidden": true}
import torch.nn.functional as F

from esper_lab.actions import NUM_OPS, LifecycleOp


def op_blind_compute_value(self, lstm_out, op):
    """Q(s, op) with the op replaced by WAIT: the critic can no longer tell ops apart."""
    wait = F.one_hot(torch.full_like(op, int(LifecycleOp.WAIT)), NUM_OPS).to(lstm_out.dtype)  # [..., 6]
    return self.value_head(torch.cat([lstm_out, wait], dim=-1)).squeeze(-1)  # [...]


# q_values computes Q for every op from the weights directly, so it disagrees with the patched _compute_value
check_caught(op_blind_compute_value, ["tests/test_network.py::test_op_values_are_q_of_every_op[q_op]"])

# %% jupyter={"source_hidden": true}
# forward's value is gathered from the one-pass q_values, which the patch does not touch, so it no longer equals
# the patched _compute_value of the sampled op
check_caught(op_blind_compute_value, ["tests/test_network.py::test_op_conditioned_value_forward"])
