"""Deterministic merge of many partition streams into the one sequence a replay feeds the core.

Why this order: the live worker reads each partition in offset order (Kafka guarantees nothing across
partitions). A replay keeps exactly that per-partition order — a late record stays where it was in its
partition, so the core sees it as late just as the worker did — and only decides *between* partitions,
by the head records' (event time, topic rank, partition, offset). That choice is total and stable, so two
replays of the same range feed the core the same sequence, byte for byte.

Event time here is the Kafka record timestamp (the producers stamp records with their event time), less a
fixed lead for the topics the pipeline holds back until its activity clock passes them (attendance, alerts,
findings): feeding those a little early is what the pipeline is built for, and it guarantees that a
held-back record is never fed after the clock has passed it, which is the one condition under which the
pipeline's output would depend on how topics interleave.

Pure: no Kafka here. The Kafka edge hands in one iterator of :class:`Item` per (topic, partition).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

# Reference data first at equal times (a site must be known before events about it), then the inputs in the
# order the pipeline depends on them: activity before attendance (features read recent activity), then the
# evidence topics, then tickets and labels. Unknown topics sort after all of these, by name.
TOPIC_RANK: dict[str, int] = {
    "ref.sites": 0, "ref.people": 1, "ref.shifts": 2, "model-events": 3,
    "activity": 10, "attendance": 11, "alerts": 12, "audit-findings": 13, "tickets": 14, "labels": 15,
}


@dataclass(frozen=True, slots=True)
class Item:
    """One Kafka record as read: catalogue short name, partition, offset, record timestamp (ms), key, value."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


# Topics the pipeline holds back until the activity clock passes their event time. Feeding them this much
# earlier than their timestamp is harmless (they wait in the pipeline's pending buffer) and makes sure a
# record delivered late in its partition still reaches the pipeline before the clock passes it — the
# condition under which the pipeline's output is independent of how topics interleave (see
# streams/core/pipeline.py). 30 minutes covers the simulator's worst delivery delay (15 minutes) twice.
HOLD_LEAD_MS = 30 * 60_000
LEAD_MS: dict[str, int] = {"attendance": HOLD_LEAD_MS, "alerts": HOLD_LEAD_MS, "audit-findings": HOLD_LEAD_MS}


def rank(short: str) -> int:
    return TOPIC_RANK.get(short, 100)


def sort_key(item: Item) -> tuple[int, int, str, int, int]:
    """(effective time, topic rank, topic, partition, offset): effective time is the record timestamp,
    less the lead of held-back topics."""
    return (item.timestamp - LEAD_MS.get(item.topic, 0), rank(item.topic), item.topic, item.partition, item.offset)


def merge(streams: Sequence[Iterable[Item]]) -> Iterator[Item]:
    """K-way merge: each stream stays in its own order; between streams the smallest head (by
    :func:`sort_key`) goes first. Deterministic whatever the order of ``streams``."""
    heap: list[tuple[tuple[int, int, str, int, int], int, Item, Iterator[Item]]] = []
    for i, s in enumerate(streams):
        it = iter(s)
        first = next(it, None)
        if first is not None:
            heap.append((sort_key(first), i, first, it))
    heapq.heapify(heap)
    while heap:
        _, i, item, it = heap[0]
        yield item
        nxt = next(it, None)
        if nxt is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (sort_key(nxt), i, nxt, it))
