"""The worker's input edge: the person-keyed inputs read in batches by librdkafka, handed to the pipeline.

Faust delivers one record at a time through its Stream/Event machinery (about 70 µs of CPU per record here,
a no-op agent topped out near 12k records/s), which capped the worker far below the plain-consumer ceiling.
So the four co-partitioned inputs (attendance, activity, alerts, audit-findings) are read by one
confluent-kafka consumer in its own group ``<ns>.noc-worker-pipeline``, in one thread of the worker
process, and the batches go straight to :meth:`Pipeline.process`. Faust still runs the rest of the worker
(tickets, the site stage, their tables) in the same process.

* **Co-partitioning.** The ``range`` assignor gives each member the same partition numbers of every input
  (all four topics have the same partition count), which is what the per-partition state needs.
* **State.** One dict (``"<p>|..."`` keys -> orjson bytes), written through to the compacted changelog
  ``<ns>.noc-worker-pipeline-changelog`` partition ``p`` by the librdkafka producer. On assignment, the
  partitions this process does not already hold are restored from their changelog partitions (read to the
  end) before any of their records is processed; partitions no longer assigned are dropped.
* **At-least-once, in this order per batch:** outputs produced and acknowledged, state changes (offset
  marker last) produced and acknowledged, then the input offsets committed (synchronously). A crash
  anywhere redelivers from the last commit; the offset marker skips what the restored state already holds.
* **Batches** close at ``batch_size`` records or ``batch_within_s`` after their first record; their outputs
  go out at once. The state is flushed (and the offsets committed) every ``flush_every_s`` seconds or
  ``flush_records`` records, whichever comes first: a key changed by many batches is written once, which
  was most of the worker's cost (about 24 µs per state write against ~5 µs per consumed record).
* On revocation the batch in hand is finished and committed first; on a lost assignment (session timeout)
  it is dropped uncommitted: another member redoes it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from schemas.topics import PERSON_PARTITIONS, topic
from streams.clock_align import ClockAlign, Pauses
from streams.core.pipeline import INPUT_STEMS, SPARSE, Incoming, Pipeline, Result
from streams.gc_policy import FREEZER
from streams.sparse_first import SparseFirst

log = logging.getLogger("streams.inputs")

TIMEOUT_S = 10.0
TICK_S = 1.0  # move clocks held by a sparse input that caught up, at most this often while idle


def _malloc_trim() -> Callable[[], None]:
    """glibc keeps freed batch memory in its per-thread arenas (the process then sits at ~350 MB after a
    backlog with ~80 MB of live Python objects); ``malloc_trim`` hands it back. A no-op elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None

    def release() -> None:
        trim(0)

    return release


release_free_memory = _malloc_trim()


def pipeline_group(namespace: str) -> str:
    return f"{namespace}.noc-worker-pipeline"


def changelog_topic(namespace: str) -> str:
    return f"{namespace}.noc-worker-pipeline-changelog"


def ensure_topic(bootstrap: str, name: str, partitions: int, config: dict[str, str]) -> None:
    """Create a worker-owned topic if missing (before anything is produced to it); a concurrent worker creating
    it first is fine."""
    from confluent_kafka.admin import NewTopic

    from infra.topics_admin import admin

    client = admin(bootstrap)
    if name in client.list_topics(timeout=TIMEOUT_S).topics:
        return
    futs = client.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)],
                                request_timeout=TIMEOUT_S)
    for fut in futs.values():
        try:
            fut.result(timeout=TIMEOUT_S)
        except KafkaException as exc:  # only "already exists" (a concurrent worker) is tolerated
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def ensure_changelog(bootstrap: str, name: str, partitions: int = PERSON_PARTITIONS) -> None:
    """A compacted state changelog, one partition per input partition."""
    ensure_topic(bootstrap, name, partitions, {"cleanup.policy": "compact"})


NO_LEADER_YET = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART)


def watermarks(c: Any, tp: TopicPartition, timeout_s: float = 30.0) -> tuple[int, int]:
    """(low, high) offsets of a partition, retrying retriable errors: a changelog the worker has just created may
    have no leader yet (a fresh site-stage process died on NOT_LEADER_FOR_PARTITION here)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = c.get_watermark_offsets(tp, timeout=TIMEOUT_S)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, KafkaError) or err.code() not in NO_LEADER_YET or time.monotonic() > deadline:
                raise
            log.info("%s[%d]: %s; retrying", tp.topic, tp.partition, err.str())
            time.sleep(0.2)  # back-off between metadata retries


class ChangelogStore:
    """The pipeline's :class:`Store`: a dict of orjson bytes, each write also sent to the changelog."""

    def __init__(self, send: Callable[[str, bytes | None, bytes | None, int], None], changelog: str) -> None:
        self.data: dict[str, bytes] = {}
        self.send = send
        self.changelog = changelog

    def get(self, key: str) -> Any:
        raw = self.data.get(key)
        return None if raw is None else orjson.loads(raw)

    def put(self, partition: int, key: str, value: Any) -> None:
        v = orjson.dumps(value)
        # orjson's bytes keep its whole output buffer (~8 KB even for a 1 KB value); keep a right-sized copy.
        self.data[key] = bytes(memoryview(v))
        self.send(self.changelog, key.encode(), v, partition)

    def delete(self, partition: int, key: str) -> None:
        self.data.pop(key, None)
        self.send(self.changelog, key.encode(), None, partition)

    def keys(self) -> Iterable[str]:
        return list(self.data)

    def drop(self, partitions: Iterable[int]) -> None:
        prefixes = tuple(f"{p}|" for p in partitions)
        if prefixes:
            for key in [k for k in self.data if k.startswith(prefixes)]:
                del self.data[key]

    def restore(self, bootstrap: str, partitions: list[int]) -> int:
        """Load the latest value of every key of these changelog partitions (read to their end offsets)."""
        if not partitions:
            return 0
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{self.changelog}.restore",
                      "enable.auto.commit": False, "enable.partition.eof": False,
                      "queued.max.messages.kbytes": 8_192, "fetch.max.bytes": 8_388_608,
                      "socket.timeout.ms": 10_000})
        try:
            ends: dict[int, int] = {}
            tps = []
            for p in partitions:
                low, high = watermarks(c, TopicPartition(self.changelog, p))
                if high > low:
                    ends[p] = high
                    tps.append(TopicPartition(self.changelog, p, OFFSET_BEGINNING))
            n = 0
            c.assign(tps)
            deadline = time.monotonic() + 600
            while ends:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"changelog restore of {sorted(ends)} did not reach its end in 600 s")
                for m in c.consume(10_000, timeout=1.0):
                    err = m.error()
                    if err is not None:
                        raise KafkaException(err)
                    key = m.key()
                    if key is not None:
                        value = m.value()
                        if value is None:
                            self.data.pop(key.decode(), None)
                        else:
                            self.data[key.decode()] = value
                        n += 1
                    q, off = m.partition(), m.offset()
                    if q in ends and off is not None and off + 1 >= ends[q]:
                        del ends[q]
            return n
        finally:
            c.close()


class BatchLoop:
    """Consume topics in batches in a thread of its own: hand each batch to :meth:`handle` (which processes it
    and delivers its outputs), flush the state and commit the offsets on a cadence. Subclasses say what a
    batch, a flush, an idle tick and a lost partition mean."""

    name = "batches"
    partition_eof = False  # True: at_end() hears when librdkafka reaches the end of a partition

    def __init__(self, *, bootstrap: str, topics: Iterable[str], group: str, changelog: str, sink: Any,
                 on_error: Callable[[BaseException], None], batch_size: int = 10_000, batch_within_s: float = 0.2,
                 flush_every_s: float = 2.0, flush_records: int = 50_000,
                 lag: Callable[[str, int, int], None] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topics = sorted(topics)
        self.sink = sink
        self.flush_every_s = flush_every_s
        self.flush_records = flush_records
        self.unflushed = 0  # records processed since the last flush
        self.last_flush = time.monotonic()
        self.uncommitted: dict[tuple[str, int], int] = {}  # next offsets processed but not committed
        self.on_error = on_error
        self.lag = lag
        self.batch_size = batch_size
        self.batch_within_s = batch_within_s
        self.store = ChangelogStore(sink.send, changelog)
        self.assigned: set[int] = set()
        self.batch: list[Any] = []
        self.batch_started = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"noc-{self.name}", daemon=True)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            # A killed worker's partitions move to the survivors after this long.
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 2_000,
            "max.poll.interval.ms": 300_000,
            # Bounded prefetch (the defaults allow 64 MB queued per consumer). librdkafka holds ~5x the payload
            # (per-message ops, decompressed fetch buffers): at 8 MB the pipeline's queue took 45-60 MB of the
            # worker's heap; 2 MB (~12k records, more than a batch) still keeps ahead of the loop.
            "queued.max.messages.kbytes": 2_048,
            "fetch.max.bytes": 2_097_152,
            "socket.timeout.ms": 10_000,
            "enable.partition.eof": self.partition_eof,
        })

    # -- what subclasses define -------------------------------------------------------------------------

    def handle(self, batch: list[Any]) -> None:
        """Process a batch of consumed messages and deliver its outputs (acknowledged)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Write the state changes since the last flush (acknowledged); the offsets are committed after."""
        raise NotImplementedError

    def forget(self, partitions: set[int] | None) -> None:
        """Drop in-memory state derived from these partitions (None: all)."""

    def idle(self) -> None:
        """Called about once a second while no record arrives."""

    def at_end(self, name: str, partition: int, offset: int) -> None:
        """librdkafka reached the end (``offset``) of a partition (only with ``partition_eof``)."""

    def release(self) -> None:
        """The assignment is about to change: undo what was done to the consumer for the old one."""

    def took(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Called last in the assignment callback; librdkafka assigns ``partitions`` after it unless this calls
        ``consumer.assign`` itself (to pause some of them from the start)."""

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        FREEZER.install()
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        self.thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout_s)

    def _run(self) -> None:
        try:
            last_tick = time.monotonic()
            while not self.stopping.is_set():
                msgs = self.consumer.consume(self.batch_size, timeout=0.05)
                now = time.monotonic()
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            name, part, off = m.topic(), m.partition(), m.offset()
                            if name is not None and part is not None and off is not None:
                                self.at_end(name, part, off)
                            continue
                        if err.fatal():
                            raise KafkaException(err)
                        log.warning("%s: consumer error: %s", self.name, err)
                        continue
                    if not self.batch:
                        self.batch_started = now
                    self.batch.append(m)
                full = len(self.batch) >= self.batch_size
                if self.batch and (full or now - self.batch_started >= self.batch_within_s):
                    self._process()
                    last_tick = now
                elif not self.batch and now - last_tick >= TICK_S:
                    self.idle()
                    self._commit()
                    last_tick = now
            if self.batch:
                self._process()
            self._commit()
            self.consumer.close()  # leaves the group: the partitions move at once
        except BaseException as exc:  # the thread's last word: the worker process must stop, not limp on
            log.exception("%s loop failed", self.name)
            self.on_error(exc)

    # -- rebalances (called by librdkafka inside consume(), in this thread) ------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        numbers = {tp.partition for tp in partitions}
        gone, new = self.assigned - numbers, sorted(numbers - self.assigned)
        self.store.drop(gone)
        self.forget(gone | set(new))
        t0 = time.perf_counter()
        n = self.store.restore(self.bootstrap, new)
        self.assigned = numbers
        log.info("%s: partitions %s assigned (%d restored from the changelog: %d records in %.2f s)",
                 self.name, sorted(numbers), len(new), n, time.perf_counter() - t0)
        self.took(consumer, partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if self.batch:
            self._process()  # finish and commit what is in hand while the partitions are still ours
        self._commit()
        self.release()
        log.info("%s: partitions revoked (%d topic partitions)", self.name, len(partitions))

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.warning("%s: assignment lost; dropping an uncommitted batch of %d records", self.name, len(self.batch))
        self.batch.clear()
        self.uncommitted.clear()
        self.unflushed = 0
        self.release()
        self.store.drop(self.assigned)
        self.forget(None)
        self.assigned = set()

    # -- batches -----------------------------------------------------------------------------------------

    def cached_end(self, name: str, p: int) -> int | None:
        """The end offset librdkafka knows from its fetches (None: not fetched yet)."""
        high = self.consumer.get_watermark_offsets(TopicPartition(name, p), cached=True)[1]
        return high if high >= 0 else None

    def _process(self) -> None:
        batch, self.batch = self.batch, []
        offsets = self.uncommitted
        for m in batch:
            offsets[(m.topic(), m.partition())] = m.offset() + 1
        self.handle(batch)
        self.unflushed += len(batch)
        if self.unflushed >= self.flush_records or time.monotonic() - self.last_flush >= self.flush_every_s:
            self._commit()
        if self.lag is not None:
            for (name, p), nxt in offsets.items():
                high = self.cached_end(name, p)
                if high is not None:
                    self.lag(name, p, max(0, high - nxt))

    def _commit(self) -> None:
        """State first (acknowledged), then the offsets of every record it covers."""
        self.flush()
        if self.uncommitted:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(self.uncommitted.items())],
                                 asynchronous=False)
            self.uncommitted = {}
        self.unflushed = 0
        self.last_flush = time.monotonic()
        release_free_memory()
        FREEZER.flushed()


class InputLoop(BatchLoop):
    """The person-keyed inputs into the pipeline."""

    name = "pipeline"
    partition_eof = True  # the sparse inputs' ends, for SparseFirst

    def __init__(self, *, bootstrap: str, namespace: str, pipeline: Pipeline, sink: Any,
                 deliver: Callable[[Result], None], count: Callable[[Result, float], None],
                 flush: Callable[[], None], on_error: Callable[[BaseException], None], batch_size: int = 10_000,
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
        # Activity waits for the sparse inputs of its partition (streams.sparse_first) and for partitions far
        # behind it in event time (streams.clock_align): memory, not order.
        self.pauses = Pauses(lambda p: self.consumer.pause([TopicPartition(self.activity, p)]),
                             lambda p: self.consumer.resume([TopicPartition(self.activity, p)]))
        self.flow = SparseFirst(lambda short, p: self.cached_end(topic(short, namespace), p),
                                lambda p: self.pauses.hold(p, "sparse"), lambda p: self.pauses.free(p, "sparse"))
        self.align = ClockAlign(lambda p: not self.flow.reached_end("activity", p),
                                lambda p: self.pauses.hold(p, "clock"), lambda p: self.pauses.free(p, "clock"))

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
        result = self.pipeline.process(self.store, incs, int(time.time() * 1000), self.namespace,
                                       self.highwaters(parts))
        self.deliver(result)
        self.count(result, time.perf_counter() - t0)
        activity: Counter[int] = Counter(inc.partition for inc in incs if inc.topic == "activity")
        self.flow.after_batch(self.assigned, activity)
        self.align.update(self.assigned, result.clocks)

    def at_end(self, name: str, partition: int, offset: int) -> None:
        short = self.short_of.get(name)
        if short is not None:
            self.flow.at_end(short, partition, offset)
            if short == "activity":
                self.align.update(self.assigned, {})  # no longer behind: whoever waited for it may go on

    def release(self) -> None:
        self.flow.release()
        self.align.release()
        self.pauses.release()

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
        self.align.update(self.assigned, result.clocks)
