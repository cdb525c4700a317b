"""Paired comparisons: the mean difference of two policies on the same episode seeds, with a Student-t interval.

Pairing by episode seed removes what the episodes share (the initial host, the data order): the interval is on the
per-episode differences d_i = a_i - b_i, mean(d) ± t(1 - (1 - level) / 2, n - 1) * sd(d) / sqrt(n), sd with n - 1.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Sequence

LEVEL = 0.95  # the confidence level of every interval the lab reports
NO_INTERVAL = "fewer than 2 episodes: no interval"


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (scipy, which scikit-learn brings)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


@dataclass(frozen=True)
class Interval:
    """The mean of `n` values with its two-sided `level` t interval; `low` / `high` are None (and `note` says why)
    when there is no interval."""

    n: int
    mean: float
    std: float | None  # sample standard deviation (n - 1); None when n < 2
    low: float | None
    high: float | None
    level: float = LEVEL
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean of `values` and its t interval. One value: no interval. Zero spread: the interval is the mean."""
    n = len(values)
    if n == 0:
        raise ValueError("t_interval of no values")
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(n, mean, None, None, None, level, NO_INTERVAL)
    std = statistics.stdev(values)
    half = t_quantile(1 - (1 - level) / 2, n - 1) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half, level)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean of a_i - b_i with its t interval; `a` and `b` are the same episodes in the same order."""
    if len(a) != len(b):
        raise ValueError(f"paired values differ in length: {len(a)} and {len(b)}")
    return t_interval([x - y for x, y in zip(a, b)], level)
