"""Back-pressure for the input loop: read a partition's sparse inputs before running ahead on its activity.

The pipeline holds a partition's clock at the watermark of a sparse input (attendance, alerts, audit-findings)
that has unread records (:meth:`streams.core.pipeline.Pipeline._advance`), and every activity record read
meanwhile waits in memory, decoded (~1.7 KB each), until that input catches up. librdkafka fetches partitions in
its own order: over the 10,000-person backlog it sometimes delivered whole activity partitions (~40k records
each) before the sparse partitions of the same number, and the worker held up to ~195k pending records, over
400 MB, at once (peak RSS 580-620 MB instead of ~250).

So, per partition ``p``: once ``hold`` activity records of ``p`` were read while a sparse input of ``p`` had not
reached its end, the activity of ``p`` is paused until every sparse input of ``p`` has; on a new assignment it
starts paused (read ahead by a batch and the prefetch, the startup alone still piled up ~50k records). "Reached
its end" is librdkafka's partition-EOF event at an offset no lower than the end offset it knows for that
partition (an empty or caught-up partition reports it within a fetch). Live, a sparse record is followed by its
EOF within a fetch, long before ``hold`` activity records, so nothing pauses; over a backlog, the sparse inputs
are read first (what :func:`streams.testkit.reference_outputs` calls a backlog replay). Pausing drops
librdkafka's prefetched records of that partition; resuming fetches from the last record handed to the loop, so
nothing is skipped or repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from streams.core.pipeline import SPARSE

HOLD = 2_000  # activity records per partition read ahead of a lagging sparse input before pausing (~3.4 MB)


class SparseFirst:
    """Which activity partitions to pause. ``end_of(short, p)``: the end offset librdkafka knows for a sparse
    input partition (None: not fetched yet); ``pause(p)`` / ``resume(p)`` act on the activity partition ``p``."""

    def __init__(self, end_of: Callable[[str, int], int | None], pause: Callable[[int], None],
                 resume: Callable[[int], None], hold: int = HOLD) -> None:
        self.end_of = end_of
        self.pause = pause
        self.resume = resume
        self.hold = hold
        self.eof: dict[tuple[str, int], int] = {}  # (sparse short name, partition) -> offset of its last EOF
        self.held: dict[int, int] = {}  # activity records read since the sparse inputs of p were all at their end
        self.paused: set[int] = set()

    def start(self, partitions: Iterable[int]) -> None:
        """A new assignment (partitions just assigned): no activity until the sparse inputs reached their ends."""
        for p in sorted(partitions):
            if p not in self.paused:
                self.paused.add(p)
                self.pause(p)

    def caught_up(self, p: int) -> bool:
        for short in SPARSE:
            at = self.eof.get((short, p))
            end = self.end_of(short, p)
            if at is None or end is None or at < end:
                return False
        return True

    def at_end(self, short: str, p: int, offset: int) -> None:
        """librdkafka reached the end (``offset``) of an input partition."""
        if short not in SPARSE:
            return
        self.eof[(short, p)] = offset
        if p in self.paused and self.caught_up(p):
            self.paused.discard(p)
            self.held[p] = 0
            self.resume(p)

    def after_batch(self, partitions: Iterable[int], activity: Mapping[int, int]) -> None:
        """``activity``: activity records of the batch just processed, by partition."""
        for p in partitions:
            if self.caught_up(p):
                self.held[p] = 0
                if p in self.paused:
                    self.paused.discard(p)
                    self.resume(p)
                continue
            self.held[p] = self.held.get(p, 0) + activity.get(p, 0)
            if self.held[p] >= self.hold and p not in self.paused:
                self.paused.add(p)
                self.pause(p)

    def release(self) -> None:
        """Before the assignment changes: resume what is paused (no pause outlives the assignment it was made
        for) and forget what was known."""
        for p in sorted(self.paused):
            self.resume(p)
        self.paused.clear()
        self.held.clear()
        self.eof.clear()
