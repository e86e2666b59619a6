"""The person stage of a replay, in this process or in one child process per partition group.

The pipeline's state is per partition, so partitions can be replayed apart: each group of partitions reads
its own input spans from Kafka, cuts them into event-time steps (:mod:`streams.replay_buckets`) and runs every
lane's pipeline over them, partition by partition. What comes out is a stream of :class:`Step` in bucket order;
:class:`PersonStage` merges the groups' streams into one, parts sorted by partition, which is exactly what one
process reading every partition yields. The site stage, the tickets and the producer stay in the parent.

Child processes are started fresh (``spawn``: forking a process that has threads, Kafka clients' among them,
is unsafe; forked children hung in a test process that had run replays before). They get the lanes' pipelines
and stores pickled, with the reference data and models already loaded in them, so every process runs the same
configuration over the same reference data. A child sends its steps through a bounded queue (the parent's pace
holds it back); a child that fails sends its traceback, and one that dies without a word is noticed while the
parent waits for it. The parent ends its children on the way out. (A program that starts replays with more
than one process needs the usual ``if __name__ == "__main__":`` guard, as with any ``spawn``.) The children
import the code from disk when they start: a checkout edited while a replay runs mixes two versions of the
core in one replay (seen in a benchmark: fraud scores differed after a features change landed mid-run).
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import queue
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.core.pipeline import DictStore, Incoming, Pipeline
from streams.core.types import Out
from streams.replay_buckets import aligned, bucketed
from streams.replay_io import PartitionReader, ReplayError, Span
from streams.replay_merge import Item, merge

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ["FINAL", "Part", "PersonStage", "Step", "group_steps", "run_steps"]

FINAL = 1 << 62  # the bucket of the end-of-input tick, after every real bucket
QUEUE_STEPS = 16  # steps a child may have sent ahead of the parent
WAIT_S = 1.0  # how long the parent waits on a child's queue before checking the child is alive


@dataclass(slots=True)
class Part:
    """One partition's share of a step: per lane, the outputs and the clock it moved (None: not moved)."""

    partition: int
    lanes: list[tuple[list[Out], int | None]]


@dataclass(slots=True)
class Step:
    bucket: int
    counts: Counter[str] = field(default_factory=Counter)  # input records by topic short name
    max_ts: int | None = None  # the largest record timestamp in the step
    parts: list[Part] = field(default_factory=list)  # ascending partition

    def absorb(self, other: Step) -> None:
        self.counts.update(other.counts)
        if other.max_ts is not None and (self.max_ts is None or other.max_ts > self.max_ts):
            self.max_ts = other.max_ts
        self.parts = sorted(self.parts + other.parts, key=lambda p: p.partition)


Lanes = Sequence[tuple[Pipeline, DictStore]]


def group_steps(bootstrap: str, spans: Sequence[Span], partitions: Sequence[int], lanes: Lanes, width_ms: int,
                source: str, highwater: Mapping[tuple[str, int], int | None]) -> Iterator[Step]:
    """The steps of one partition group: its ``spans`` read, bucketed and run through every lane; then the
    end-of-input tick of its ``partitions`` (bucket :data:`FINAL`)."""
    with PartitionReader(bootstrap, spans) as reader:
        yield from run_steps(reader.iterators(), partitions, lanes, width_ms, source, highwater)


def run_steps(streams: Sequence[Iterable[Item]], partitions: Sequence[int], lanes: Lanes, width_ms: int,
              source: str, highwater: Mapping[tuple[str, int], int | None]) -> Iterator[Step]:
    """:func:`group_steps` on given streams (one per topic partition, each in offset order)."""
    for k, runs in aligned([bucketed(it, width_ms) for it in streams]):
        by_p: dict[int, list[list[Item]]] = {}
        step = Step(k)
        for run in runs:
            by_p.setdefault(run[0].partition, []).append(run)
        for p in sorted(by_p):
            batch = [Incoming(i.topic, i.partition, i.offset, i.key, i.value, i.timestamp)
                     for i in merge(by_p[p])]
            for inc in batch:
                step.counts[inc.topic] += 1
                if step.max_ts is None or inc.timestamp > step.max_ts:
                    step.max_ts = inc.timestamp
            part = Part(p, [])
            for pipeline, store in lanes:
                res = pipeline.process(store, batch, source, highwater)
                res.commit()
                part.lanes.append((res.outs, res.clocks.get(p)))
            step.parts.append(part)
        yield step
    final = Step(FINAL)
    for p in sorted(partitions):
        part = Part(p, [])
        for pipeline, store in lanes:
            res = pipeline.tick(store, [p], highwater)
            res.commit()
            part.lanes.append((res.outs, res.clocks.get(p)))
        final.parts.append(part)
    yield final


class PersonStage:
    """Every partition's steps, merged by bucket (:meth:`steps`): one group runs in this process as it is read;
    more groups run in child processes, started by the constructor."""

    def __init__(self, bootstrap: str, spans: Sequence[Span], groups: Sequence[Sequence[int]], lanes: Lanes,
                 width_ms: int, source: str, highwater: Mapping[tuple[str, int], int | None]) -> None:
        self._args = (bootstrap, width_ms, source, highwater)
        self._spans, self._groups, self._lanes = list(spans), [list(g) for g in groups], lanes
        self._procs: list[BaseProcess] = []
        self._queues: list[Any] = []
        if len(self._groups) > 1:
            ctx = mp.get_context("spawn")
            for group in self._groups:
                q = ctx.Queue(QUEUE_STEPS)
                mine = [s for s in self._spans if s.partition in group]
                proc = ctx.Process(target=_child, args=(q, bootstrap, mine, group, lanes, width_ms, source, highwater),
                                   name=f"noc-replay-{'-'.join(map(str, group))}", daemon=True)
                self._queues.append(q)
                self._procs.append(proc)
                proc.start()

    @property
    def processes(self) -> int:
        return max(1, len(self._procs))

    def steps(self) -> Iterator[Step]:
        bootstrap, width_ms, source, highwater = self._args
        if not self._procs:
            group = self._groups[0] if self._groups else []
            yield from group_steps(bootstrap, self._spans, group, self._lanes, width_ms, source, highwater)
            return
        yield from _merge_steps([_received(q, proc) for q, proc in zip(self._queues, self._procs, strict=True)])

    def close(self) -> None:
        """End the children (finished or not) and release their queues."""
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(10)
        for q in self._queues:
            q.close()
        self._procs, self._queues = [], []

    def __enter__(self) -> PersonStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child(q: Any, bootstrap: str, spans: list[Span], partitions: list[int], lanes: Lanes, width_ms: int,
           source: str, highwater: Mapping[tuple[str, int], int | None]) -> None:
    try:
        for step in group_steps(bootstrap, spans, partitions, lanes, width_ms, source, highwater):
            q.put(("step", step))
        q.put(("done", None))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        q.put(("error", traceback.format_exc()))
    q.close()
    q.join_thread()


def _received(q: Any, proc: BaseProcess) -> Iterator[Step]:
    while True:
        try:
            kind, payload = q.get(timeout=WAIT_S)
        except queue.Empty:
            if not proc.is_alive():
                raise ReplayError(f"replay process {proc.name} (pid {proc.pid}) exited with code {proc.exitcode} "
                                  "before finishing its partitions") from None
            continue
        if kind == "step":
            yield payload
        elif kind == "done":
            return
        else:
            raise ReplayError(f"replay process {proc.name} failed:\n{payload}")


def _merge_steps(streams: Sequence[Iterator[Step]]) -> Iterator[Step]:
    """Steps of many groups, one per bucket in ascending order, the groups' parts together by partition."""
    heap: list[tuple[int, int, Step, Iterator[Step]]] = []
    for i, s in enumerate(streams):
        first = next(s, None)
        if first is not None:
            heap.append((first.bucket, i, first, s))
    heapq.heapify(heap)
    while heap:
        k = heap[0][0]
        step = Step(k)
        while heap and heap[0][0] == k:
            _, i, got, s = heapq.heappop(heap)
            step.absorb(got)
            nxt = next(s, None)
            if nxt is not None:
                heapq.heappush(heap, (nxt.bucket, i, nxt, s))
        yield step
