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
import logging
import time

log = logging.getLogger("nocstream.gateway.gc")


async def keep_gc_pauses_short(freeze_every_s: float = 10.0, sweep_every_s: float = 600.0) -> None:
    gc.freeze()  # start-up state: modules, the app, the pool
    last_sweep = time.monotonic()
    while True:
        await asyncio.sleep(freeze_every_s)
        if time.monotonic() - last_sweep >= sweep_every_s:
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            last_sweep = time.monotonic()
            log.info("gc sweep: %d unreachable objects, %.0f ms", found, (time.perf_counter() - started) * 1000)
        gc.freeze()
