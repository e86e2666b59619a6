"""Keeps CPython's full garbage collections from pausing the event loop for hundreds of milliseconds.

Measured on the fan-out benchmark (1,000 clients): each full (generation 2) collection walked every tracked
object of the process (imports, 1,000 connections' state) and paused the loop 100-300 ms, several times a
minute, which was the whole tail of the WebSocket latency and of REST p99. Long-lived objects need not be
walked again and again: every ``freeze_every_s`` the objects alive then are moved to the permanent generation
(``gc.freeze()``, O(1)), so a full collection only walks what was created since. Reference counting still frees
frozen objects; only *cyclic* garbage among them (e.g. a connection open at a freeze and closed later) waits
for the sweep that unfreezes and collects everything once every ``sweep_every_s`` (one pause at a known rate).
"""

from __future__ import annotations

import asyncio
import gc

from streams.gc_policy import FreezeAfterFlush


async def keep_gc_pauses_short(freeze_every_s: float = 10.0, sweep_every_s: float = 600.0) -> None:
    """Freeze what is alive every ``freeze_every_s``; sweep every ``sweep_every_s`` (the worker's policy,
    :mod:`streams.gc_policy`, on a timer instead of after state flushes; the collector thresholds stay)."""
    gc.freeze()  # start-up state: modules, the app, the pool
    policy = FreezeAfterFlush(sweep_every_s)
    while True:
        await asyncio.sleep(freeze_every_s)
        policy.flushed()
