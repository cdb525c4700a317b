"""glibc malloc settings for torch on CPU: one call, `tune_malloc()`, made by every entry point that trains.

By default glibc hands each allocation above a moving threshold (128 KiB at first) to `mmap` and returns it to the
kernel on `free`. oneDNN's LSTM allocates weight-sized scratch buffers on every call, so with the default the process
maps and unmaps megabytes per call and pays a page fault for every 4 KiB page it touches again. On this project's
2-core VM that turns a 25 ms LSTM forward+backward into an occasional 0.4-1.3 s one (docs/performance.md).
Raising the mmap threshold to 32 MiB and the trim threshold to 4 GiB keeps those buffers in the heap for reuse; it is
the same as starting Python with
`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296`, done at run time with
`mallopt`. Set `ESPER_LAB_MALLOC=default` to keep glibc's defaults (for before/after measurements).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 4 * 1024**3
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
ENV_VAR = "ESPER_LAB_MALLOC"
GLIBC_TUNABLES_LINE = f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"

_state = {"setting": None}


def tune_malloc() -> str:
    """Apply the thresholds once per process (forked workers inherit them). Returns `malloc_setting()`."""
    if _state["setting"] is None:
        _state["setting"] = _apply()
    return _state["setting"]


def malloc_setting() -> str:
    """'tuned' (set here or by GLIBC_TUNABLES), 'default', or 'unavailable' (not glibc)."""
    if _state["setting"] is not None:
        return _state["setting"]
    return "tuned" if "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "") else "default"


def _apply() -> str:
    if os.environ.get(ENV_VAR, "tuned") == "default":
        return malloc_setting()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "unavailable"
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return "tuned" if ok else "unavailable"
