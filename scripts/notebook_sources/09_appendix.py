# %% [markdown]
# # 09 · Appendix: the heavy cells
#
# Two measurements take minutes at full size, so they live here rather than in the step notebooks:
#
# - **`torch.compile` and the output type** (the benchmark behind [01_network_v2](01_network_v2.ipynb)'s section 5):
#   the addendum's TypedDict-or-NamedTuple question, measured the way the addendum asks, and what compiling can
#   and cannot speed up in this network on this CPU;
# - **the whole test suite** (the criterion "All existing tests pass" of
#   [06_tests_and_validation](06_tests_and_validation.ipynb)), run from a cell.
#
# **What you will learn**
#
# - how to time a compiled function fairly: compile once, warm up, interleave the variants, compare medians with
#   the noise floor of two identical runs;
# - how to see what `torch.compile` did with a network: how many graphs it made, where it broke them and why
#   (`torch._dynamo.explain`);
# - where the time of one forward + backward pass goes here, and what that leaves for a compiler to win.
#
# At `ci` size (what `make test` runs) the benchmark compiles a small network with the cheap `eager` backend (it
# checks that everything compiles; its timings mean nothing) and the suite is a handful of tests. The committed
# outputs come from the `full` run: the Phase 4 network under the default `inductor` backend, and all of `tests/`.
#
# **Modules measured:** [esper_lab/policy/network.py](../esper_lab/policy/network.py) and the suite in
# [tests/](../tests/). Public sources: PyTorch's
# [Dynamo core concepts](https://docs.pytorch.org/docs/stable/compile/programming_model.dynamo_core_concepts.html)
# (graphs, graph breaks, guards) and
# [torch.compile troubleshooting](https://docs.pytorch.org/docs/stable/torch.compiler_troubleshooting.html).

# %%
import os

SIZE = os.environ.get("ESPER_LAB_NB_SIZE", "full")  # "ci" under `make test`, "full" for the committed outputs
assert SIZE in ("ci", "full"), SIZE

import torch
from IPython.display import Markdown, display

from nb_helpers import setup

setup(seed=0, threads=2)  # torch.set_num_threads(2) and every seed
print("notebook size:", SIZE)

# %% [markdown]
# ## 1. TypedDict or NamedTuple? Measure `torch.compile`
#
# The addendum says: keep Esper's `TypedDict` for the forward output unless a `torch.compile` benchmark shows a
# training speedup above 5% for the `NamedTuple` the plan proposed. So we measure exactly that: the same network,
# its output returned either as the `ForwardOutput` NamedTuple or converted to a `TypedDict` with the same keys,
# each compiled, timed on a forward + backward pass (what a training step pays), the variants interleaved (A, B,
# A, B, ...) so that machine noise hits them alike. The two eager variants do identical tensor work, so the gap
# between them is the noise floor of the measurement.

# %%
# NBVAL_IGNORE_OUTPUT
import logging
import statistics
import time
from typing import TypedDict

from esper_lab.actions import HEAD_NAMES
from esper_lab.features import OBS_DIM
from esper_lab.policy.network import FactoredRecurrentActorCritic, ForwardOutput
from nb_helpers import markdown_table

torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)  # graph-break notices are expected below

if SIZE == "full":  # the Phase 4 network (512 / 512 / 256) under the default backend
    bench_net, backend, repeats, (Bc, Tc) = FactoredRecurrentActorCritic(OBS_DIM, num_slots=3), "inductor", 12, (4, 30)
else:  # ci: a small network and the cheap `eager` backend: everything compiles, nothing is timed
    bench_net = FactoredRecurrentActorCritic(OBS_DIM, feature_dim=32, lstm_hidden_dim=32)
    backend, repeats, (Bc, Tc) = "eager", 0, (2, 8)

ForwardDict = TypedDict("ForwardDict", {name: object for name in ForwardOutput._fields})


def as_namedtuple(s, b):
    return bench_net(s, b)  # ForwardOutput


def as_typeddict(s, b):
    o = bench_net(s, b)
    return ForwardDict(**{name: getattr(o, name) for name in ForwardOutput._fields})


def training_loss(o):
    get = o.__getitem__ if isinstance(o, dict) else lambda k: getattr(o, k)
    return get("value").pow(2).mean() + sum(get(f"{h}_logits").logsumexp(-1).mean() for h in HEAD_NAMES)


def train_step_ms(fn, s, b):
    """One forward + backward pass of `fn` on (s [B, T, D], b [B, T, 3]), in milliseconds."""
    bench_net.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    t0 = time.perf_counter()
    training_loss(fn(s, b)).backward()
    return (time.perf_counter() - t0) * 1e3


def interleaved_medians(thunks, repeats):
    """Median and best milliseconds of each `name: thunk` over `repeats` interleaved rounds, after one warm-up each."""
    for thunk in thunks.values():
        thunk()  # warm-up (and the compile of a variant seen for the first time)
    times = {name: [] for name in thunks}
    for _ in range(repeats):
        for name, thunk in thunks.items():
            times[name].append(thunk())
    return {name: statistics.median(ts) for name, ts in times.items()}, {name: min(ts) for name, ts in times.items()}


torch.manual_seed(2)
s_c, b_c = torch.randn(Bc, Tc, OBS_DIM), torch.randint(-1, 13, (Bc, Tc, 3))
handed, graph_ops, graph_count, compiled, compile_seconds = {}, {}, {}, {}, {}
for name, fn in (("NamedTuple", as_namedtuple), ("TypedDict", as_typeddict)):
    torch._dynamo.reset()
    handed[name] = []  # the operations of each graph dynamo hands to the backend (a later recompile appends more)

    def counting_backend(gm, example_inputs, name=name):
        calls = ("call_function", "call_method", "call_module")
        handed[name].append([str(n.target) for n in gm.graph.nodes if n.op in calls])
        return torch._dynamo.lookup_backend(backend)(gm, example_inputs)

    compiled[name] = torch.compile(fn, backend=counting_backend)
    t0 = time.perf_counter()
    training_loss(compiled[name](s_c, b_c)).backward()  # first call compiles (forward and backward graphs)
    compile_seconds[name] = time.perf_counter() - t0
    graph_ops[name] = list(handed[name])  # the graphs of a from-scratch compile (the reset cleared every cache)
    graph_count[name] = len(graph_ops[name])

variants = {"NamedTuple eager": as_namedtuple, "TypedDict eager": as_typeddict,
            "NamedTuple compiled": compiled["NamedTuple"], "TypedDict compiled": compiled["TypedDict"]}
medians = {}
if repeats:
    medians, best = interleaved_medians({k: (lambda fn=fn: train_step_ms(fn, s_c, b_c)) for k, fn in variants.items()},
                                        repeats)
    rows = [{"variant": k, "median ms": round(medians[k], 1), "best ms": round(best[k], 1)} for k in variants]
    display(Markdown(f"forward + backward, backend `{backend}`, batch {Bc} × {Tc} steps, {repeats} interleaved "
                     f"repeats\n\n" + markdown_table(rows)))
print("graphs dynamo compiled:", graph_count, " first-call (compile) seconds:",
      {k: round(v, 1) for k, v in compile_seconds.items()})
print("operations per graph:", {k: [len(ops) for ops in v] for k, v in graph_ops.items()})

# %%
# Both output types give identical numbers, and dynamo cuts both into the same graphs with the same operations.
torch.manual_seed(4)
o_nt = as_namedtuple(s_c, b_c)
torch.manual_seed(4)
o_td = as_typeddict(s_c, b_c)
assert all(torch.equal(getattr(o_nt, k), o_td[k]) for k in ForwardOutput._fields if k != "hidden")
assert graph_ops["NamedTuple"] == graph_ops["TypedDict"] and graph_count["NamedTuple"] > 1
if medians:
    # The two eager variants do identical tensor work, so their gap is the noise floor of this measurement.
    noise = abs(medians["TypedDict eager"] / medians["NamedTuple eager"] - 1.0)
    speedup = medians["TypedDict compiled"] / medians["NamedTuple compiled"] - 1.0  # > 0: NamedTuple faster
    clears_bar = speedup > 0.05 and speedup > 2 * noise
    display(Markdown(
        f"**Measured (medians, backend `{backend}`):** compiled NamedTuple vs compiled TypedDict: "
        f"{100 * speedup:+.1f}% (positive = NamedTuple faster); the noise floor (eager vs eager, identical work): {100 * noise:.1f}%. "
        + ("The difference clears the addendum's 5% bar and twice the noise." if clears_bar else
           "That is not a speedup the addendum would accept: it needs more than 5%, reproducibly, above the noise.")))

# %% [markdown]
# **Reading the measurement.** The container is a Python-level wrapper around the same tensors: dynamo flattens a
# NamedTuple and a dict alike, so both variants compile into the same graphs with the same number of operations
# in each (the assertion above) and the compiled code does identical work. Any gap between the two
# compiled rows is therefore noise, and the eager pair, which does exactly the same work twice, shows how large
# noise gets on this shared 2-core machine. The addendum's rule, applied to Esper, says *keep the TypedDict* unless
# the NamedTuple clears 5% reproducibly above that noise: its 30+ call sites would pay migration churn for it.
#
# esper_lab has no legacy call sites, so the reason to keep a TypedDict does not exist here, and the lab follows
# the plan's section 4d: `NamedTuple`s give attribute access (`out.value`), immutability, and an `EvaluateOutput`
# whose first four fields unpack like Phase 4's 4-tuple.
#
# ## 2. What compiling can and cannot speed up here
#
# Compare the compiled rows of the table above with the eager rows. Three measurements show where the time of a
# step goes and what `torch.compile` can and cannot touch (at `full` size; at `ci` size only the first):
#
# 1. **What dynamo made of the network**: `torch._dynamo.explain` runs the same compilation and reports each
#    graph, each *graph break* and its reason. At a graph break dynamo ends the graph so far, runs the code it
#    cannot trace in ordinary Python, and starts a new graph after it; every graph is compiled on its own, and
#    each carries *guards*, the conditions under which it is valid, checked when it is called (PyTorch's "Dynamo
#    core concepts").
# 2. **How much of a step is the LSTM**: the recurrent layer alone, forward + backward, against the whole
#    network's step, both eager.
# 3. **A call with little work in it**: one world and one step, eager against compiled. The smaller the batch,
#    the larger the share of a step's time that does not grow with the work: Python and the dispatcher around
#    every operation in eager mode; guard checks, graph boundaries and the eager code between graphs when
#    compiled.

# %%
# NBVAL_IGNORE_OUTPUT
from collections import Counter
from pathlib import Path

ex = torch._dynamo.explain(as_namedtuple)(s_c, b_c)  # resets dynamo's caches, then compiles with its own backend


def break_site(reason):
    """'file:line `code`' where dynamo broke the graph (the innermost frame of the user's stack)."""
    frame = reason.user_stack[-1] if reason.user_stack else None
    return f"{Path(frame.filename).name}:{frame.lineno} `{(frame.line or '').strip()[:60]}`" if frame else "?"


sites = Counter((r.reason.strip().splitlines()[0][:80], break_site(r)) for r in ex.break_reasons)
rows = [{"reason (first line)": reason, "where": site, "times": n} for (reason, site), n in sites.most_common()]
display(Markdown(f"`torch._dynamo.explain`, forward pass, batch {Bc} × {Tc}: **{ex.graph_count} graphs holding "
                 f"{ex.op_count} operations** (per graph: {[len(ops) for ops in ex.ops_per_graph]}), **"
                 f"{len(ex.break_reasons)} graph breaks**:\n\n" + markdown_table(rows)))

# %%
assert ex.graph_count == graph_count["NamedTuple"]  # the same graphs the benchmark's backend was handed
in_graphs = [str(op) for ops in ex.ops_per_graph for op in ops]
assert not any("lstm" in op.lower() or "rnn" in op.lower() for op in in_graphs)  # the LSTM runs outside every graph
at_onednn = [r for r in ex.break_reasons if r.user_stack and "onednn(" in (r.user_stack[-1].line or "")]
host_syncs = [r for r in ex.break_reasons if "Tensor.item()" in r.reason]
assert at_onednn and host_syncs
print(f"{len(host_syncs)} breaks at a host sync (`bool(tensor)`), {len(at_onednn)} at the `with onednn(...)` block "
      f"around the LSTM; no LSTM operation in any of the {ex.graph_count} graphs")

# %%
# NBVAL_IGNORE_OUTPUT
from esper_lab.policy.network import onednn
from nb_helpers import bar_figure

lstm_in = torch.randn(Bc, Tc, bench_net.lstm.input_size, requires_grad=True)  # what the feature net hands the LSTM


def lstm_step_ms():
    """The LSTM alone, forward + backward, on the benchmark's batch (oneDNN on, as `encode` runs a sequence)."""
    bench_net.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    with onednn(True):
        out, _ = bench_net.lstm(lstm_in, bench_net.initial_hidden(Bc))  # [B, T, H]
    out.pow(2).mean().backward()
    return (time.perf_counter() - t0) * 1e3


if repeats:  # full size only: one more compile, for the [1, 1] shapes
    torch._dynamo.reset()
    one_step = torch.compile(as_namedtuple, backend=backend, dynamic=False)
    s_1, b_1 = torch.randn(1, 1, OBS_DIM), torch.randint(-1, 13, (1, 1, 3))
    timed = {
        f"whole network, eager, {Bc} × {Tc}": lambda: train_step_ms(as_namedtuple, s_c, b_c),
        f"LSTM alone, eager, {Bc} × {Tc}": lstm_step_ms,
        "whole network, eager, 1 × 1": lambda: train_step_ms(as_namedtuple, s_1, b_1),
        "whole network, compiled, 1 × 1": lambda: train_step_ms(one_step, s_1, b_1),
    }
    step_medians, _ = interleaved_medians(timed, repeats)
    display(Markdown(f"forward + backward, backend `{backend}`, medians of {repeats} interleaved repeats\n\n"
                     + markdown_table([{"what": k, "median ms": round(v, 2)} for k, v in step_medians.items()])))
    lstm_share = step_medians[f"LSTM alone, eager, {Bc} × {Tc}"] / step_medians[f"whole network, eager, {Bc} × {Tc}"]
    tiny_eager = step_medians["whole network, eager, 1 × 1"]
    tiny_compiled = step_medians["whole network, compiled, 1 × 1"]
    compiled_vs_eager = medians["NamedTuple compiled"] / medians["NamedTuple eager"] - 1.0
    tiny_share = tiny_eager / step_medians[f"whole network, eager, {Bc} × {Tc}"]
    display(Markdown(
        f"**Measured (backend `{backend}`, medians):** compiled against eager, NamedTuple, batch {Bc} × {Tc}: "
        f"{100 * compiled_vs_eager:+.1f}% time (negative = compiled faster), "
        f"{'beyond' if abs(compiled_vs_eager) > 2 * noise else 'within'} twice the noise floor of {100 * noise:.1f}%. "
        f"The LSTM alone takes {100 * lstm_share:.0f}% of an eager step at that batch, and it runs outside every "
        f"graph, compiled or not. One world and one step, {Bc * Tc} times fewer rows, costs "
        f"{100 * tiny_share:.0f}% of that eager step (time proportional to the rows would be "
        f"{100 / (Bc * Tc):.1f}%); there a compiled call costs {tiny_compiled:.1f} ms against {tiny_eager:.1f} ms "
        f"eager."))
    labels = [f"{k}, {Bc} × {Tc}" for k in variants] + ["NamedTuple eager, 1 × 1", "NamedTuple compiled, 1 × 1"]
    values = [medians[k] for k in variants] + [tiny_eager, tiny_compiled]
    display(bar_figure(labels, values, title=f"Forward + backward, median ms (backend {backend})", yaxis_title="ms",
                       text=[f"{v:.1f}" for v in values]))

# %% [markdown]
# **Reading the measurements.** A compiler can only speed up what is inside its graphs. The network's largest
# computation, the 512-wide LSTM, is in none of them: dynamo stops at the `with onednn(...)` block that `encode`
# puts around it (a context manager it cannot trace: the `step_unsupported` row of the table), so the LSTM runs
# the same eager oneDNN kernels, compiled or not; without that block `nn.LSTM` would still be left out, since
# dynamo does not trace it unless `torch._dynamo.config.allow_rnn` is set. What the LSTM leaves is cut into small
# graphs at the host syncs (`if bool(tensor.any())`: the input check of `BlueprintEmbedding` and the legal-mask
# check of `MaskedCategorical`, the other rows of the table), and every graph boundary is a return to ordinary
# Python. So at best compiling shaves the part of a step outside the LSTM, and it adds fixed costs of its own
# (the guards of every graph, the boundaries between them); the measured line says how the two came out in this
# run, and the one-step rows set them side by side where there is little arithmetic to hide them. Making
# compilation pay would mean removing those breaks; for the addendum's question that is not needed, because the
# container does not change the compiled work.
#
# ## 3. The whole test suite
#
# Notebook 06 ticks "All existing tests pass" with the test files that guard Phase 4's pieces; here, at `full`
# size, the whole of `tests/` runs in a subprocess from the repository root: unit tests, the dashboard and the
# browser tests (which need Debian's `chromium`). Two things are left out: the notebooks themselves, which
# `make test` runs under nbval (this notebook among them), and `tests/test_notebook_browser.py`, which opens a
# notebook in JupyterLab. At `ci` size, where `make test` runs the whole suite anyway, it runs the addendum's five
# updated seed tests only.

# %%
# NBVAL_IGNORE_OUTPUT
import subprocess
import sys

pytest_cmd = [sys.executable, "-m", "pytest", "-q", "--color=no", "-o", "addopts=", "-p", "no:cacheprovider"]
if SIZE == "full":
    cmd = pytest_cmd + ["tests", "--ignore=tests/test_notebook_browser.py"]
else:
    cmd = pytest_cmd + ["tests/test_network.py", "-x", "-k", "test_forward_pass or test_hidden_state_propagation or "
                        "test_action_masking or test_get_action or test_evaluate_actions"]
t0 = time.perf_counter()
proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd="..")  # from the repository root
summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
print("pytest", " ".join(cmd[len(pytest_cmd):]))
print(summary, f"(wall {time.perf_counter() - t0:.0f} s)")

# %%
assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
assert " passed" in summary and "failed" not in summary, summary

# %% [markdown]
# ## Recap
#
# - The output container does not change what `torch.compile` builds: the NamedTuple and the TypedDict variants
#   compile into the same graphs with the same operations and give identical numbers, so the addendum's 5% bar
#   is a question about noise, and the table sets the gap beside the noise of two identical eager runs.
# - Compiling can only speed up what is inside its graphs. Here the LSTM, the largest computation, is in none of
#   them (dynamo stops at the `with onednn(...)` block around it), and the rest is cut into small graphs at the
#   host syncs; `torch._dynamo.explain` lists each break and where it happens, and the measured line in section 2
#   gives this run's compiled-against-eager figures.
# - The whole test suite passes (full size); notebook 06 ticks its box with the tests that guard Phase 4.
