"""Work-around for a Faust commit stall after a rebalance: duplicate offsets in the consumer's acked list.

Observed with faust-streaming 0.15.3 / aiokafka 0.14 (tests/integration/test_worker_recovery.py, two workers,
one SIGKILLed): the survivor processes the partitions it took over to their end, but their committed offset
advances by ONE offset per commit interval (1 s), i.e. thousands of seconds for a backlog. Mechanism, from
faust/tables/recovery.py and faust/transport/consumer.py:

1. On recovery, Faust resumes the stream partitions and then awaits ``Consumer.perform_seek()``; flow is
   already active (it was resumed for the changelog restore), so while the seek awaits the broker the fetcher
   keeps delivering records of those partitions, which the agent processes and acks.
2. ``perform_seek`` then resets ``_read_offset[tp]`` to the committed offset ``c``. The drain loop continues
   over records it fetched before the seek (offset ``n`` far above ``c``) and records a *gap* ``c+1 .. n-1``
   (``_drain_messages`` -> ``_add_gap``): offsets that were delivered and acked.
3. ``_new_offset`` appends the gap's offsets to ``_acked[tp]`` without checking ``_acked_index`` (which only
   guards ``ack()``), so every one of them is in the list twice. ``consecutive_numbers`` over
   ``[c, c, c+1, c+1, ...]`` yields runs of one or two, and each commit moves the offset by one.

The same bogus gap also loses records: records delivered during the seek but still in the stream queue are
dropped when recovery resumes flow control (the queue is cleared), their re-fetched copies are dropped by the
drain loop (below the read offset it just moved past), and the gap makes them count as acked.

The fixes:

* ``perform_seek`` stops the consumer flow before seeking (the in-flight fetch batch is abandoned at its next
  record, as on a rebalance), so nothing is delivered between the seek and the resume that follows it: every
  caller (recovery, and ``getmany`` when flow is already stopped) resumes flow after the seek. No bogus gap;
  records are re-read from the committed offset (the pipeline skips those at or below its offset marker).
* Belt and braces: before Faust computes the offset to commit, duplicate offsets are dropped from
  ``_acked[tp]`` (the set of committable offsets is unchanged; only the double counting goes). Each repair is
  logged as a warning and reported to the listeners (the worker counts it in
  ``noc_worker_duplicate_acks_repaired_total``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP

log = logging.getLogger("streams.faust_acks")

Listener = Callable[[TP, int], None]  # (topic partition, duplicates dropped)
_listeners: list[Listener] = []
_original: Callable[[Any, TP], int | None] | None = None
_original_seek: Callable[[Any], Awaitable[None]] | None = None


def _dedupe_acked(consumer: Any, tp: TP) -> int:
    """Remove duplicate offsets from the consumer's acked list of ``tp`` (kept sorted); how many were dropped."""
    acked: list[int] | None = consumer._acked.get(tp)
    if not acked:
        return 0
    unique = sorted(set(acked))
    dropped = len(acked) - len(unique)
    if dropped:
        acked[:] = unique
    return dropped


def _new_offset(self: Any, tp: TP) -> int | None:
    dropped = _dedupe_acked(self, tp)
    if dropped:
        log.warning("Faust acked list of %s held %d duplicate offsets (a bogus fetch gap after a rebalance seek); "
                    "removed them so the commit can advance (committed %s)", tp, dropped,
                    self._committed_offset.get(tp))
        for listener in list(_listeners):
            listener(tp, dropped)
    assert _original is not None
    return _original(self, tp)


async def _perform_seek(self: Any) -> None:
    was_active = self.flow_active
    self.stop_flow()  # the callers resume flow after the seek
    try:
        assert _original_seek is not None
        await _original_seek(self)
    except BaseException:
        if was_active:
            self.resume_flow()
        raise


def install(listener: Listener | None = None) -> None:
    """Patch Faust's Consumer (once per process) and register ``listener`` for repairs."""
    global _original, _original_seek
    if _original is None:
        _original = Consumer._new_offset
        Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    if _original_seek is None:
        _original_seek = Consumer.perform_seek
        Consumer.perform_seek = _perform_seek  # type: ignore[method-assign]
    if listener is not None:
        _listeners.append(listener)
