"""The worker's input edge: the person-keyed inputs read in batches by librdkafka, handed to the pipeline.

Faust delivers one record at a time through its Stream/Event machinery (about 70 µs of CPU per record here,
a no-op agent topped out near 12k records/s), which capped the worker far below the plain-consumer ceiling.
So the four co-partitioned inputs (attendance, activity, alerts, audit-findings) are read by one
confluent-kafka consumer in its own group ``<ns>.noc-worker-pipeline``, in one thread of the worker
process, and the batches go straight to :meth:`Pipeline.process` (the loop itself, the changelog-backed store
and the commit cadence are :mod:`streams.batch_loop`). Faust still runs the tickets agent in the same process.

* **Co-partitioning.** The ``range`` assignor gives each member the same partition numbers of every input
  (all four topics have the same partition count), which is what the per-partition state needs.
* **State.** One dict (``"<p>|..."`` keys -> orjson bytes), written through to the compacted changelog
  ``<ns>.noc-worker-pipeline-changelog`` partition ``p`` by the librdkafka producer. On assignment, the
  partitions this process does not already hold are restored from their changelog partitions (read to the
  end) before any of their records is processed; partitions no longer assigned are dropped.
* **At-least-once, in this order per flush:** every output produced since the last flush acknowledged, state
  changes (offset marker last) produced and acknowledged, then the input offsets committed (synchronously). A
  crash anywhere redelivers from the last commit; the offset marker skips what the restored state already holds.
* **Batches** close at ``batch_size`` records or ``batch_within_s`` after their first record; their outputs
  are sent at once (not waited for). The state is flushed (and the offsets committed) every ``flush_every_s`` seconds or
  ``flush_records`` records, whichever comes first: a key changed by many batches is written once, which
  was most of the worker's cost (about 24 µs per state write against ~5 µs per consumed record).
* On revocation the batch in hand is finished and committed first; on a lost assignment (session timeout)
  it is dropped uncommitted: another member redoes it.
* **Memory.** A partition's activity is paused while its sparse inputs have unread records
  (:mod:`streams.sparse_first`): what waits for the partition clock waits decoded in memory.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import TopicPartition

from schemas.topics import topic
from streams.batch_loop import BatchLoop, ensure_changelog
from streams.core.pipeline import INPUT_STEMS, SPARSE, Incoming, Pipeline, Result
from streams.sparse_first import SparseFirst

log = logging.getLogger("streams.inputs")


def pipeline_group(namespace: str) -> str:
    return f"{namespace}.noc-worker-pipeline"


def changelog_topic(namespace: str) -> str:
    return f"{namespace}.noc-worker-pipeline-changelog"

class InputLoop(BatchLoop):
    """The person-keyed inputs into the pipeline."""

    name = "pipeline"
    partition_eof = True  # the sparse inputs' ends, for SparseFirst
    # ~24k records, two batches: over the bench, 2 MB was 5-10% slower, 8 MB slower still and 10-20 MB larger.
    prefetch_kbytes = 4_096

    def __init__(self, *, bootstrap: str, namespace: str, pipeline: Pipeline, sink: Any,
                 deliver: Callable[[Result], None], count: Callable[[Result, float], None],
                 flush: Callable[[], None], on_error: Callable[[BaseException], None], batch_size: int = 5_000,
                 batch_within_s: float = 0.2, flush_every_s: float = 2.0, flush_records: int = 50_000,
                 lag: Callable[[str, int, int], None] | None = None) -> None:
        self.namespace = namespace
        self.pipeline = pipeline
        self.deliver = deliver  # produce a result's outputs (and site forwards) and wait for them
        self._flush = flush  # write the pipeline's state changes and wait for them
        self.count = count
        self.short_of = {topic(short, namespace): short for short in INPUT_STEMS}
        self.activity = topic("activity", namespace)
        ensure_changelog(bootstrap, changelog_topic(namespace))
        super().__init__(bootstrap=bootstrap, topics=self.short_of, group=pipeline_group(namespace),
                         changelog=changelog_topic(namespace), sink=sink, on_error=on_error, batch_size=batch_size,
                         batch_within_s=batch_within_s, flush_every_s=flush_every_s, flush_records=flush_records,
                         lag=lag)
        # Activity waits for the sparse inputs of its partition (streams.sparse_first: memory, not order).
        self.flow = SparseFirst(lambda short, p: self.cached_end(topic(short, namespace), p),
                                lambda p: self.consumer.pause([TopicPartition(self.activity, p)]),
                                lambda p: self.consumer.resume([TopicPartition(self.activity, p)]))

    def highwaters(self, partitions: Iterable[int]) -> dict[tuple[str, int], int | None]:
        """End offsets librdkafka knows from its fetches for the sparse inputs (None: not fetched yet)."""
        return {(short, p): self.cached_end(topic(short, self.namespace), p) for short in SPARSE for p in partitions}

    def empty_activity_partitions(self) -> list[int]:
        """Assigned partitions whose activity topic holds no record at all (known end offset 0)."""
        return sorted(p for p in self.assigned if self.cached_end(self.activity, p) == 0)

    def handle(self, batch: list[Any]) -> None:
        t0 = time.perf_counter()
        short_of = self.short_of
        incs = [Incoming(short_of[m.topic()], m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
                for m in batch]
        parts = {inc.partition for inc in incs}
        result = self.pipeline.process(self.store, incs, self.namespace, self.highwaters(parts))
        self.deliver(result)
        self.count(result, time.perf_counter() - t0)
        activity: Counter[int] = Counter(inc.partition for inc in incs if inc.topic == "activity")
        self.flow.after_batch(self.assigned, activity)

    def at_end(self, name: str, partition: int, offset: int) -> None:
        short = self.short_of.get(name)
        if short is not None:
            self.flow.at_end(short, partition, offset)

    def release(self) -> None:
        self.flow.release()

    def took(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)  # assigned here, so activity can be paused before its first fetch
        self.flow.start(self.assigned)

    def flush(self) -> None:
        self._flush()

    def forget(self, partitions: set[int] | None) -> None:
        self.pipeline.forget_partitions(partitions)

    def idle(self) -> None:
        """Move partition clocks held by a sparse input that has since caught up (no new records needed)."""
        if not self.assigned:
            return
        result = self.pipeline.tick(self.store, self.assigned, self.highwaters(self.assigned))
        self.deliver(result)
        self.count(result, 0.0)
