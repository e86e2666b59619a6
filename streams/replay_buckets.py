"""How a replay cuts its input into steps that do not depend on which partitions a process reads.

A replay feeds the pipeline in steps (one ``Pipeline.process`` call per partition per step), and the order of
its outputs follows the steps. For ``noc replay --procs N`` to produce the same bytes as one process, a step
must be defined per partition, without looking at the other partitions. So a step is an event-time bucket:

* each stream (one topic partition, read in offset order) carries a running maximum of its records'
  effective time (:func:`streams.replay_merge.sort_key`'s first element: the record timestamp less the lead of
  the held-back topics); a record belongs to bucket ``running_max // width``. Buckets are monotone along a
  stream, so a stream is cut into consecutive runs and nothing is reordered inside it (a late record stays
  where it was, in the bucket of the records around it);
* step ``k`` of partition ``p`` is the bucket-``k`` runs of p's streams, merged as :func:`merge` merges
  (each run in its order; between runs by head sort key);
* steps run in bucket order; within a step, partitions in ascending order (as ``Pipeline.process`` does).

The width is chosen from the whole range before anything is read (:func:`width_for`), so every process uses
the same one. Pure: no Kafka here.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence

from streams.replay_merge import Item, sort_key

__all__ = ["TARGET_RECORDS", "aligned", "assign_groups", "bucketed", "width_for"]

TARGET_RECORDS = 2000  # aimed-at records per step, all partitions together (the pipeline call's batch size)
MIN_WIDTH_MS = 1000
MAX_WIDTH_MS = 3_600_000


def width_for(range_ms: int, records: int) -> int:
    """A bucket width (whole seconds, 1 s to 1 h) giving about ``TARGET_RECORDS`` records per step on average."""
    if records <= 0:
        return MAX_WIDTH_MS
    w = range_ms * TARGET_RECORDS // records
    w = -(-w // 1000) * 1000
    return max(MIN_WIDTH_MS, min(MAX_WIDTH_MS, w))


def bucketed(items: Iterable[Item], width_ms: int) -> Iterator[tuple[int, list[Item]]]:
    """One stream cut into ``(bucket, records)`` runs, buckets strictly increasing (see the module doc)."""
    run: int | None = None
    k_cur = 0
    cur: list[Item] = []
    for it in items:
        t = sort_key(it)[0]
        if run is None or t > run:
            run = t
        k = run // width_ms
        if cur and k != k_cur:
            yield k_cur, cur
            cur = []
        k_cur = k
        cur.append(it)
    if cur:
        yield k_cur, cur


def aligned(streams: Sequence[Iterable[tuple[int, list[Item]]]]) -> Iterator[tuple[int, list[list[Item]]]]:
    """Bucket by bucket over many bucketed streams: ``(k, the runs of bucket k)``, in ascending k; runs in the
    order of ``streams``. Reads each stream only as far as the bucket being assembled (one run ahead)."""
    heap: list[tuple[int, int, list[Item], Iterator[tuple[int, list[Item]]]]] = []
    for i, s in enumerate(streams):
        it = iter(s)
        first = next(it, None)
        if first is not None:
            heap.append((first[0], i, first[1], it))
    heapq.heapify(heap)
    while heap:
        k = heap[0][0]
        runs: list[tuple[int, list[Item]]] = []
        while heap and heap[0][0] == k:
            _, i, run, it = heapq.heappop(heap)
            runs.append((i, run))
            nxt = next(it, None)
            if nxt is not None:
                heapq.heappush(heap, (nxt[0], i, nxt[1], it))
        runs.sort(key=lambda r: r[0])
        yield k, [r for _, r in runs]


def assign_groups(counts: dict[int, int], groups: int) -> list[list[int]]:
    """Partitions into at most ``groups`` non-empty groups of similar record counts (largest first to the
    lightest group, then the one with fewer partitions). Each group is sorted."""
    n = max(1, min(groups, len(counts)))
    out: list[list[int]] = [[] for _ in range(n)]
    load = [0] * n
    for p in sorted(counts, key=lambda p: (-counts[p], p)):
        g = min(range(n), key=lambda i: (load[i], len(out[i]), i))
        out[g].append(p)
        load[g] += counts[p]
    return [sorted(g) for g in out if g]
