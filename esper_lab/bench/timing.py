"""The one timing helper of every benchmark: median and IQR over repeats after warm-up, progress lines on stderr."""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable

Log = Callable[[str], None]


def summarize(samples: list[float]) -> dict[str, Any]:
    """`{median, q1, q3, iqr, samples}` of `samples` (quartiles by the inclusive method; one sample: q1 = q3)."""
    if not samples:
        raise ValueError("summarize: no samples")
    if len(samples) == 1:
        q1 = q3 = samples[0]
    else:
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return {"median": statistics.median(samples), "q1": q1, "q3": q3, "iqr": q3 - q1, "samples": list(samples)}


def measure(fn: Callable[[], Any], *, repeats: int, warmup: int = 1, scale: float = 1.0) -> dict[str, Any]:
    """Call `fn` `warmup` times untimed, then `repeats` times timed; each sample is seconds x `scale`
    (e.g. `1e6 / steps` for microseconds per step). Returns `summarize(samples)`."""
    if repeats < 1:
        raise ValueError(f"measure: repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * scale)
    return summarize(samples)


class Progress:
    """`Progress("compare")("A H=512 n=8 ours")` writes `[compare    12.3s] A H=512 n=8 ours` to stderr (elapsed
    since creation)."""

    def __init__(self, label: str = "bench", stream=None, enabled: bool = True):
        self.t0, self.label, self.stream, self.enabled = time.perf_counter(), label, stream or sys.stderr, enabled

    def __call__(self, message: str) -> None:
        if self.enabled:
            self.stream.write(f"[{self.label} {time.perf_counter() - self.t0:7.1f}s] {message}\n")
            self.stream.flush()


def quiet(message: str) -> None:
    """A `Log` that drops everything (the default for library calls)."""
