"""Keeps CPython's cyclic garbage collector from re-walking the worker's long-lived state.

Measured on the in-process core over the 10,000-person bench world: with the default collector, about a third
of the core's CPU went to collections (each allocation-triggered collection of an older generation walks the state of
every person; a profile shows it as time on whichever line allocated). The state is flushed every couple of
seconds; after each flush the objects alive then are moved to the permanent generation (``gc.freeze()``,
O(1)), so later collections only walk what was created since. Reference counting still frees frozen objects;
only *cyclic* garbage among them waits for the sweep that unfreezes and collects everything, once every
``sweep_every_s`` (one pause at a known rate, logged).

The young generation is also collected less often (every 100,000 net allocations instead of 700, the older ones
at 50 and 100): the batch loops allocate in bursts of tens of thousands of short-lived acyclic objects
(messages, records, outputs) that reference counting frees anyway. The measurements behind these settings are
in docs/decisions.md.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

log = logging.getLogger("streams.gc")


class FreezeAfterFlush:
    """Call :meth:`flushed` after each state flush (from any thread)."""

    def __init__(self, sweep_every_s: float = 600.0) -> None:
        self.sweep_every_s = sweep_every_s
        self.last_sweep = time.monotonic()
        self.lock = threading.Lock()

    def install(self) -> None:
        """At start-up (idempotent): the thresholds above, and freeze what is alive (imports, reference data)."""
        with self.lock:
            gc.set_threshold(100_000, 50, 100)
            gc.freeze()

    def flushed(self) -> None:
        with self.lock:
            if time.monotonic() - self.last_sweep >= self.sweep_every_s:
                started = time.perf_counter()
                gc.unfreeze()
                found = gc.collect()
                self.last_sweep = time.monotonic()
                log.info("gc sweep: %d unreachable objects, %.0f ms", found, (time.perf_counter() - started) * 1000)
            gc.freeze()


FREEZER = FreezeAfterFlush()
