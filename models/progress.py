"""A tiny progress display for long jobs (stderr; redraws in place on a terminal, prints lines otherwise)."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class ProgressFn(Protocol):
    def __call__(self, stage: str, done: int, total: int | None = None) -> None: ...


def no_progress(stage: str, done: int, total: int | None = None) -> None:
    """Progress sink that shows nothing (tests, library use)."""


class Progress:
    """``progress(stage, done, total)``: redraws at most every ``interval`` seconds, and on completion."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.25) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if self.tty else max(interval, 2.0)
        self._stage = ""
        self._started = 0.0
        self._shown = 0.0

    def __call__(self, stage: str, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if stage != self._stage:
            if self._stage and self.tty:
                self.stream.write("\n")
            self._stage, self._started, self._shown = stage, now, 0.0
        finished = total is not None and done >= total
        if not finished and now - self._shown < self.interval:
            return
        self._shown = now
        elapsed = now - self._started
        rate = f" {done / elapsed:,.0f}/s" if elapsed > 0.05 and done else ""
        if total:
            line = f"{stage}: {done:,}/{total:,} ({100 * done / total:.0f}%){rate} {elapsed:.1f}s"
        else:
            line = f"{stage}: {done:,}{rate} {elapsed:.1f}s"
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if finished else ""))
            if finished:
                self._stage = ""
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
