"""glibc malloc thresholds for torch on CPU, set where they work: in the environment before the process starts.

By default glibc hands each allocation above a moving threshold (128 KiB at first) to `mmap` and returns it to the
kernel on `free`. oneDNN's LSTM and the autograd engine allocate weight-sized buffers on every call, so with the
defaults the process maps and unmaps megabytes per call and pays a page fault for every 4 KiB page it touches again
(about 65,000 minor faults per PPO update at H = 512). Raising the mmap threshold to 32 MiB and the trim threshold to
4 GiB keeps those buffers in the heap for reuse (a few hundred faults per update).

The thresholds must be in `GLIBC_TUNABLES` when the process starts. Setting the same values at run time with
`mallopt`, after Python and torch have started (what this module did before), is worse than leaving glibc's
defaults: measured in fresh processes it raised the page faults of a PPO update from about 65,000 to 110,000 and made
the update and the bare trunk slower than the defaults (docs/performance.md, "What was wrong before"; we measured the
effect, not its mechanism inside glibc). So:

- `main()` of the CLI calls `reexec_with_tuned_malloc()`: when the variable is missing it re-executes the same
  command once with it set (same PID, same arguments). Every `esper-lab` command, the dashboard's Streamlit server and
  the trainers it starts, forked `process` workers and Ray workers (which inherit the environment) run tuned.
- `tuned_environ()` is the environment to start any other process with (the benchmark's fresh processes, `make test`
  through `python -m esper_lab.malloc`, which prints the value).
- `ESPER_LAB_MALLOC=default` keeps glibc's defaults everywhere (for before/after measurements).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 4 * 1024**3
TUNABLES = f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"
GLIBC_VAR = "GLIBC_TUNABLES"
ENV_VAR = "ESPER_LAB_MALLOC"
"""'default' keeps glibc's defaults; anything else (or unset) asks for the tuned thresholds."""
_REEXEC_MARK = "ESPER_LAB_MALLOC_REEXEC"  # set on the one re-execution, so a loader that drops the variable cannot loop


def is_glibc() -> bool:
    """Whether this Python runs on glibc (the only C library that reads GLIBC_TUNABLES)."""
    return platform.libc_ver()[0] == "glibc"


def malloc_setting(environ: Mapping[str, str] = os.environ) -> str:
    """What a process started with `environ` runs under: 'tuned' (both thresholds in GLIBC_TUNABLES), 'default'
    (glibc's own), or 'unavailable' (not glibc). Called on `os.environ`, it describes this process, as long as
    nothing changed the variable since it started (this package never does, except through `reexec`)."""
    if not is_glibc():
        return "unavailable"
    tunables = environ.get(GLIBC_VAR, "").split(":")
    return "tuned" if all(t in tunables for t in TUNABLES.split(":")) else "default"


def tuned_environ(environ: Mapping[str, str] = os.environ, setting: str = "tuned") -> dict[str, str]:
    """A copy of `environ` for a new process under `setting`: 'tuned' adds the thresholds to GLIBC_TUNABLES (other
    tunables kept), 'default' removes them. ESPER_LAB_MALLOC=default in `environ` turns 'tuned' into 'default'."""
    if setting not in ("tuned", "default"):
        raise ValueError(f"malloc setting must be 'tuned' or 'default', got {setting!r}")
    env = dict(environ)
    ours = TUNABLES.split(":")
    names = {t.split("=")[0] for t in ours}
    kept = [t for t in env.get(GLIBC_VAR, "").split(":") if t and t.split("=")[0] not in names]
    if setting == "tuned" and env.get(ENV_VAR) != "default":
        kept += ours
    if kept:
        env[GLIBC_VAR] = ":".join(kept)
    else:
        env.pop(GLIBC_VAR, None)
    return env


def reexec_with_tuned_malloc() -> None:
    """Re-execute this command once with the thresholds in GLIBC_TUNABLES, unless they are already there, glibc is
    not the C library, ESPER_LAB_MALLOC=default, or this process is already the re-execution. Does not return when
    it re-executes (`os.execve`: same PID, same arguments, `sys.orig_argv`)."""
    if (not is_glibc() or os.environ.get(ENV_VAR) == "default" or os.environ.get(_REEXEC_MARK)
            or malloc_setting() == "tuned"):
        return
    env = tuned_environ()
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


if __name__ == "__main__":  # `GLIBC_TUNABLES=$(python -m esper_lab.malloc) cmd`: the Makefile's way to start tuned
    print(tuned_environ().get(GLIBC_VAR, ""))
