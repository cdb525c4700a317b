"""esper_lab.malloc: the thresholds go into GLIBC_TUNABLES before a process starts, the CLI re-executes itself once to
get them, and they do what they are for (far fewer page faults in an LSTM's forward + backward)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

from esper_lab import malloc

glibc_only = pytest.mark.skipif(not malloc.is_glibc(), reason="GLIBC_TUNABLES is glibc's")


def test_tuned_environ_adds_the_thresholds_and_keeps_other_tunables():
    env = malloc.tuned_environ({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0", "X": "1"})
    assert env["X"] == "1"
    parts = env["GLIBC_TUNABLES"].split(":")
    assert parts[0] == "glibc.malloc.tcache_count=0"
    assert "glibc.malloc.mmap_threshold=33554432" in parts and "glibc.malloc.trim_threshold=4294967296" in parts
    assert malloc.tuned_environ(env)["GLIBC_TUNABLES"] == env["GLIBC_TUNABLES"]  # idempotent: no duplicates


def test_default_removes_only_the_thresholds_and_the_opt_out_wins():
    tuned = malloc.tuned_environ({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"})
    assert malloc.tuned_environ(tuned, "default")["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0"
    assert "GLIBC_TUNABLES" not in malloc.tuned_environ(malloc.tuned_environ({}), "default")
    assert "GLIBC_TUNABLES" not in malloc.tuned_environ({malloc.ENV_VAR: "default"})
    with pytest.raises(ValueError, match="'tuned' or 'default'"):
        malloc.tuned_environ({}, "fast")


@glibc_only
def test_setting_is_read_from_the_environment():
    assert malloc.malloc_setting({}) == "default"
    assert malloc.malloc_setting({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432"}) == "default"  # half
    assert malloc.malloc_setting(malloc.tuned_environ({})) == "tuned"


def _run(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


REPORT = ("import os, json; from esper_lab import malloc; malloc.reexec_with_tuned_malloc(); "
          "print(json.dumps([os.getpid(), malloc.malloc_setting(), os.environ.get('GLIBC_TUNABLES')]))")


@glibc_only
def test_reexec_starts_the_same_command_again_with_the_thresholds():
    env = malloc.tuned_environ(os.environ, "default")
    env.pop(malloc.ENV_VAR, None)
    _, setting, tunables = json.loads(_run(REPORT, env))
    assert setting == "tuned" and tunables == malloc.TUNABLES


@glibc_only
def test_reexec_is_skipped_on_request():
    env = malloc.tuned_environ(os.environ, "default")
    env[malloc.ENV_VAR] = "default"
    _, setting, tunables = json.loads(_run(REPORT, env))
    assert (setting, tunables) == ("default", None)


def test_module_prints_the_value_for_the_makefile():
    env = malloc.tuned_environ(os.environ, "default")
    env.pop(malloc.ENV_VAR, None)
    assert _run("import runpy; runpy.run_module('esper_lab.malloc', run_name='__main__')", env) == (
        malloc.TUNABLES if malloc.is_glibc() else "")


FAULTS = """
import resource, torch
torch.manual_seed(0); torch.set_num_threads(1)
lstm = torch.nn.LSTM(256, 256, batch_first=True)
x = torch.randn(8, 32, 256)
def step():
    lstm(x)[0].sum().backward()
for _ in range(3): step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5): step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@glibc_only
def test_the_thresholds_stop_the_page_faults_of_an_lstm_backward():
    """What the setting is for: with glibc's defaults each LSTM forward + backward maps fresh pages for its buffers
    and faults on every one; with the thresholds the buffers stay in the heap."""
    default = malloc.tuned_environ(os.environ, "default")
    default.pop(malloc.ENV_VAR, None)
    # medians of 3 fresh processes each: one process's count varies with the machine (measured 1,894 to 9,977 with
    # the defaults, 0 to 290 with the thresholds), and one low default count once failed the 10x
    faults_default = statistics.median(int(_run(FAULTS, default)) for _ in range(3))
    faults_tuned = statistics.median(int(_run(FAULTS, malloc.tuned_environ(default))) for _ in range(3))
    assert faults_tuned * 10 < faults_default, (faults_tuned, faults_default)
