"""Consuming topics in batches on a librdkafka consumer in a thread of its own (:class:`BatchLoop`), with the
state a loop keeps in a dict written through to a compacted changelog and restored from it on assignment
(:class:`ChangelogStore`). The pipeline's input loop (:mod:`streams.input_loop`) and the site stage
(:mod:`streams.site_stage`) are the two loops; this module imports neither's core, so the site stage's process
does not load the pipeline, the scorer and numpy (~14 MB of its RSS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from infra.probes import Heartbeat
from schemas.topics import PERSON_PARTITIONS
from streams.gc_policy import FREEZER

log = logging.getLogger("streams.inputs")

TIMEOUT_S = 10.0
TICK_S = 1.0  # move clocks held by a sparse input that caught up, at most this often while idle


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


LIBC = _libc()  # glibc, loaded once per process (the site stage's process also uses its prctl); None elsewhere


def release_free_memory() -> None:
    """glibc keeps freed batch memory in its per-thread arenas (the process then sat at ~350 MB after a
    backlog with ~80 MB of live Python objects); ``malloc_trim`` hands it back. A no-op without glibc."""
    trim = getattr(LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def ensure_topic(bootstrap: str, name: str, partitions: int, config: dict[str, str]) -> None:
    """Create a worker-owned topic if missing (before anything is produced to it); a concurrent worker creating
    it first is fine."""
    from confluent_kafka.admin import NewTopic

    from infra.topics_admin import admin, cluster_durability

    client = admin(bootstrap)
    if name in client.list_topics(timeout=TIMEOUT_S).topics:
        return
    # Replicated like the catalogue's topics on a cluster (a changelog on one broker stops the worker with it).
    dur = cluster_durability(client)
    futs = client.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=dur.replication_factor,
                                          config={**config, **dur.config})], request_timeout=TIMEOUT_S)
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
# Commit refusals meaning the group has moved on without this member: its session expired (a broker restart, a
# process paused past session.timeout.ms). librdkafka rejoins by itself on the next consume().
FENCED = (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS,
          KafkaError._ASSIGNMENT_LOST)


def error_code(exc: KafkaException) -> int | None:
    """The librdkafka error code a KafkaException carries (None: it carries no KafkaError)."""
    err = exc.args[0] if exc.args else None
    return err.code() if isinstance(err, KafkaError) else None


def fenced(exc: KafkaException) -> bool:
    """True when ``exc`` (from a commit) says this consumer no longer owns its assignment."""
    return error_code(exc) in FENCED


# Commit refusals while the group coordinator moves to another broker (its broker died) or is still loading.
COORDINATOR_MOVING = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                      KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT,
                      KafkaError._TRANSPORT, KafkaError._WAIT_COORD)


def coordinator_moving(exc: KafkaException) -> bool:
    """True when a commit failed only because the coordinator is unreachable for now: retry it later."""
    return error_code(exc) in COORDINATOR_MOVING


def watermarks(c: Any, tp: TopicPartition, timeout_s: float = 30.0) -> tuple[int, int]:
    """(low, high) offsets of a partition, retrying retriable errors: a changelog the worker has just created may
    have no leader yet (a fresh site-stage process died on NOT_LEADER_FOR_PARTITION here)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = c.get_watermark_offsets(tp, timeout=TIMEOUT_S)
            return int(low), int(high)
        except KafkaException as exc:
            if error_code(exc) not in NO_LEADER_YET or time.monotonic() > deadline:
                raise
            log.info("%s[%d]: %s; retrying", tp.topic, tp.partition, exc.args[0].str())
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

    def write_through(self, partition: int, key: str, value: Any) -> None:
        """To the changelog only: the pipeline keeps the decoded state (a second, serialised copy here was ~15 MB
        of the worker's 10,000-people bench)."""
        self.data.pop(key, None)
        self.send(self.changelog, key.encode(), orjson.dumps(value), partition)

    def keep(self, partition: int, key: str, value: Any) -> None:
        self.data[key] = bytes(memoryview(orjson.dumps(value)))

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
    # librdkafka holds several times the queued payload (per-message ops, decompressed fetch buffers): at 8 MB the
    # pipeline's queue took 45-60 MB of the worker's heap; the site stage's smaller records keep 8 MB (measured:
    # less made its process larger, not smaller).
    prefetch_kbytes = 8_192

    def __init__(self, *, bootstrap: str, topics: Iterable[str], group: str, changelog: str, sink: Any,
                 on_error: Callable[[BaseException], None], batch_size: int = 5_000, batch_within_s: float = 0.2,
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
        # Probes (streams.health): the loop beats each time round; ready once an assignment is restored.
        self.heartbeat = Heartbeat()
        self.ready = False
        self.timed: Callable[[str, float], None] | None = None  # ("commit" | "restore", seconds), for metrics
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
            # Bounded prefetch (the defaults allow 64 MB queued per consumer); see prefetch_kbytes.
            "queued.max.messages.kbytes": self.prefetch_kbytes,
            # One fetch response (lz4) decompresses to several times its size and is held until its last message
            # is consumed: smaller responses and a queue of about two batches of messages (librdkafka's default
            # aims at 100,000 messages per partition) took 15-20 MB off the worker's peak at the same events/s.
            "fetch.max.bytes": self.prefetch_kbytes * 512,
            # The broker fills a response partition by partition, in the order asked, up to fetch.max.bytes. At
            # a quarter of it per partition, a response held ~4 partitions and over the backlog librdkafka served
            # some partitions 6-7 s after the others: their clocks held every SITE window back, so the site stage
            # emitted them all in the last seconds (its process grew to 120-145 MB) and finished ~0.5 s after the
            # pipeline. At 1/32 (64 KB for the input loop's 24 partitions) every partition is in every response.
            "max.partition.fetch.bytes": self.prefetch_kbytes * 16,
            "queued.min.messages": 20_000,
            "socket.timeout.ms": 10_000,
            "enable.partition.eof": self.partition_eof,
            # A fetch on partitions at their end waits this long for data (default 500 ms). The input loop holds
            # activity until its sparse inputs report their end, so at every assignment it waited that long; over
            # the bench 100 ms was ~10% more events/s. Idle, it costs 10 empty fetches a second instead of 2.
            "fetch.wait.max.ms": 100,
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
                self.heartbeat.beat()
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
        self.heartbeat.busy = f"restoring partitions {new} from the changelog"
        try:
            n = self.store.restore(self.bootstrap, new)
        finally:
            self.heartbeat.busy = None
        self.assigned = numbers
        self.ready = True
        if new and self.timed is not None:
            self.timed("restore", time.perf_counter() - t0)
        log.info("%s: partitions %s assigned (%d restored from the changelog: %d records in %.2f s)",
                 self.name, sorted(numbers), len(new), n, time.perf_counter() - t0)
        self.took(consumer, partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if self.batch:
            self._process()  # finish and commit what is in hand while the partitions are still ours
        self._commit()
        # Offsets a moving coordinator refused are not carried into the next assignment (the offset marker in the
        # flushed state skips what the next owner is redelivered).
        self.uncommitted.clear()
        self.ready = False
        self.release()
        log.info("%s: partitions revoked (%d topic partitions)", self.name, len(partitions))

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.warning("%s: assignment lost; dropping an uncommitted batch of %d records", self.name, len(self.batch))
        self.ready = False
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
        del batch  # the consumed messages are not needed through the flush below
        if self.unflushed >= self.flush_records or time.monotonic() - self.last_flush >= self.flush_every_s:
            self._commit()
        if self.lag is not None:
            for (name, p), nxt in offsets.items():
                high = self.cached_end(name, p)
                if high is not None:
                    self.lag(name, p, max(0, high - nxt))

    def _commit(self) -> None:
        """State first (acknowledged), then the offsets of every record it covers."""
        t0 = time.perf_counter()
        self.flush()
        if self.uncommitted:
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self.uncommitted.items())]
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                if coordinator_moving(exc):
                    # The group coordinator's broker died or moved (a broker failure on a replicated cluster):
                    # the offsets stay pending and go with the next commit (the idle loop tries every second).
                    log.warning("%s: offsets not committed yet, the group coordinator is moving (%s); retrying",
                                self.name, exc)
                else:
                    if not fenced(exc):
                        raise
                    # Not fatal: the state just flushed holds the offset marker, so whoever owns the partitions
                    # next (this process, once it has rejoined) skips the redelivered records: nothing lost or
                    # doubled.
                    log.warning("%s: offsets not committed, the group no longer knows this member (%s); rejoining, "
                                "the records since the last commit are redelivered and skipped", self.name, exc)
                    self.uncommitted = {}
            else:
                self.uncommitted = {}
            if self.timed is not None:
                self.timed("commit", time.perf_counter() - t0)
        self.unflushed = 0
        self.last_flush = time.monotonic()
        release_free_memory()
        FREEZER.flushed()
