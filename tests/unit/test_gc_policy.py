"""The worker's collector policy: frozen state is not re-walked; the periodic sweep still frees frozen cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.gc_policy import FreezeAfterFlush


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_install_sets_thresholds_and_freezes() -> None:
    gc.unfreeze()
    FreezeAfterFlush().install()
    assert gc.get_threshold() == (100_000, 50, 100)
    assert gc.get_freeze_count() > 0


def test_frozen_cycle_waits_for_the_sweep() -> None:
    policy = FreezeAfterFlush(sweep_every_s=3600)
    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    policy.flushed()  # the cycle is frozen while still referenced
    del a, b
    gc.collect()
    assert alive() is not None, "a frozen cycle is not collected before the sweep"
    policy.sweep_every_s = 0
    policy.flushed()  # due: unfreeze, collect, freeze again
    assert alive() is None
    assert gc.get_freeze_count() > 0


def test_gateway_freezes_on_a_timer() -> None:
    import asyncio

    from gateway.gc_pauses import keep_gc_pauses_short

    async def run() -> None:
        gc.unfreeze()
        task = asyncio.create_task(keep_gc_pauses_short(freeze_every_s=0.0, sweep_every_s=3600))
        for _ in range(3):
            await asyncio.sleep(0)  # the task freezes at start and after each (zero) sleep
        assert gc.get_freeze_count() > 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
