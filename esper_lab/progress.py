"""A dependency-free progress line for long work: one carriage-return line on a terminal, a line per step elsewhere."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ProgressLine:
    """`update(record)` after each PPO update; shows updates done, SPS, return, accuracy and time left."""

    def __init__(self, total: int, *, start: int = 0, stream: TextIO | None = None, every: int = 1):
        self.total, self.done, self.stream, self.every = total, start, stream or sys.stderr, every
        self.t0, self.start = time.perf_counter(), start
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, record: dict[str, Any]) -> None:
        self.done = int(record.get("update", self.done + 1))
        if not self.tty and self.done % self.every and self.done != self.total:
            return
        elapsed = time.perf_counter() - self.t0
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"SPS {record.get('sps', float('nan')):.0f}  return {record.get('episode_return', float('nan')):+.2f}  "
                f"val_acc {record.get('val_acc', float('nan')):.1f}  eta {eta:.0f}s")
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
