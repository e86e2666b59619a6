"""The Kafka edge of replays, diffs and exports: read topics by time range, produce into a sandbox only.

Reading: ``offsets_for_times`` gives, per partition, the first offset whose record timestamp is >= from
and the first >= to; the range is every offset in between (a late record with an older timestamp that
sits inside the range is included, as the live worker saw it). Each partition is read in offset order by
one assigned consumer (no group, no commits) and handed out as a separate iterator for the merge.

Writing: :class:`SandboxProducer` refuses any topic outside the sandbox prefix and any namespace that is
the live one or the source, so a replay cannot write to live topics whatever the core returns.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from schemas.topics import LIVE_NAMESPACE, topic
from streams.replay_merge import Item

TIMEOUT_S = 30.0
POLL_S = 0.05  # short: consume() waits this long for a full batch
BATCH = 5000
PAUSE_ABOVE = 100_000  # records buffered for one partition before it is paused (bounded memory)


class ReplayError(RuntimeError):
    """A replay, diff or export that cannot run (bad range, unknown topic, refused namespace)."""


def consumer(bootstrap: str, **extra: Any) -> Consumer:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"noc-replay-{uuid.uuid4().hex[:8]}",  # never committed: offsets are assigned explicitly
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "socket.timeout.ms": 30_000,
        "fetch.max.bytes": 52_428_800,
        "queued.max.messages.kbytes": 262_144,
    }
    conf.update(extra)
    return Consumer(conf)


def partitions_of(c: Consumer, name: str) -> list[int]:
    meta = c.list_topics(name, timeout=TIMEOUT_S).topics.get(name)
    if meta is None or meta.error is not None or not meta.partitions:
        raise ReplayError(f"topic {name} does not exist")
    return sorted(meta.partitions)


@dataclass(frozen=True, slots=True)
class Span:
    """Offsets [start, end) of one partition."""

    topic: str  # catalogue short name
    name: str  # full topic name
    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)


def offset_range(c: Consumer, short: str, name: str, from_ms: int | None, to_ms: int | None) -> list[Span]:
    """Per partition, the offsets of records timestamped in [from_ms, to_ms) (None: topic start / end)."""
    parts = partitions_of(c, name)
    spans = []
    for p in parts:
        low, high = c.get_watermark_offsets(TopicPartition(name, p), timeout=TIMEOUT_S, cached=False)
        start, end = low, high
        if from_ms is not None:
            start = _offset_for(c, name, p, from_ms, high)
        if to_ms is not None:
            end = _offset_for(c, name, p, to_ms, high)
        spans.append(Span(short, name, p, max(start, low), max(end, max(start, low))))
    return spans


def _offset_for(c: Consumer, name: str, p: int, ts: int, high: int) -> int:
    (tp,) = c.offsets_for_times([TopicPartition(name, p, ts)], timeout=TIMEOUT_S)
    if tp.error is not None:
        raise ReplayError(f"offsets_for_times {name}[{p}]: {tp.error}")
    return high if tp.offset < 0 else int(tp.offset)  # -1: no record at or after ts


@dataclass
class PartitionReader:
    """Reads many partition spans with one consumer; each span is consumed through its own iterator."""

    bootstrap: str
    spans: Sequence[Span]
    on_record: Callable[[], None] | None = None  # progress hook, once per record read
    _c: Consumer | None = None
    _buf: dict[tuple[str, int], deque[Item]] = field(default_factory=dict)
    _next: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset expected per partition
    _paused: set[tuple[str, int]] = field(default_factory=set)
    _by_name: dict[str, str] = field(default_factory=dict)

    def __enter__(self) -> PartitionReader:
        todo = [s for s in self.spans if s.count > 0]
        self._c = consumer(self.bootstrap)
        for s in todo:
            self._buf[(s.name, s.partition)] = deque()
            self._next[(s.name, s.partition)] = s.start
            self._by_name[s.name] = s.topic
        if todo:
            self._c.assign([TopicPartition(s.name, s.partition, s.start) for s in todo])
        return self

    def __exit__(self, *exc: object) -> None:
        if self._c is not None:
            self._c.close()
            self._c = None

    def iterators(self) -> list[Iterator[Item]]:
        return [self._iter(s) for s in self.spans if s.count > 0]

    def _iter(self, span: Span) -> Iterator[Item]:
        tp = (span.name, span.partition)
        buf = self._buf[tp]
        while True:
            while not buf:
                if self._next[tp] >= span.end:
                    return
                self._fill(tp)
            item = buf.popleft()
            if item.offset >= span.end:
                return
            yield item
            if tp in self._paused and len(buf) < PAUSE_ABOVE // 4:
                assert self._c is not None
                self._c.resume([TopicPartition(*tp)])
                self._paused.discard(tp)

    def _fill(self, want: tuple[str, int]) -> None:
        """Consume one batch; records go to their partition's buffer. Stalls are errors, not hangs."""
        c = self._c
        assert c is not None
        if want in self._paused:
            c.resume([TopicPartition(*want)])
            self._paused.discard(want)
        idle = 0.0
        while True:
            msgs: list[Message] = c.consume(BATCH, timeout=POLL_S)
            got = False
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                name, p, off = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
                tp = (name, p)
                if tp not in self._buf or off < self._next[tp]:
                    continue
                self._next[tp] = off + 1
                ts = m.timestamp()[1]
                self._buf[tp].append(Item(self._by_name[name], p, off, int(ts), m.key(), m.value()))
                if self.on_record is not None:
                    self.on_record()
                got = True
                if len(self._buf[tp]) > PAUSE_ABOVE and tp != want and tp not in self._paused:
                    c.pause([TopicPartition(*tp)])
                    self._paused.add(tp)
            if self._buf[want] or self._next[want] >= _end_of(self.spans, want):
                return
            if not got:
                # Compaction (or transaction markers) can leave the last offsets of a span empty.
                (pos,) = c.position([TopicPartition(*want)])
                if pos.offset >= _end_of(self.spans, want):
                    self._next[want] = _end_of(self.spans, want)
                    return
            idle = 0.0 if got else idle + POLL_S
            if idle >= TIMEOUT_S:
                raise ReplayError(f"no records from {want[0]}[{want[1]}] for {TIMEOUT_S:.0f}s "
                                  f"(expected offsets up to {_end_of(self.spans, want)})")


def _end_of(spans: Sequence[Span], tp: tuple[str, int]) -> int:
    for s in spans:
        if (s.name, s.partition) == tp:
            return s.end
    return 0


def read_spans(bootstrap: str, spans: Sequence[Span]) -> Iterator[Item]:
    """All records of the spans, partition after partition (each in offset order)."""
    with PartitionReader(bootstrap, spans) as r:
        for it in r.iterators():
            yield from it


def end_offsets(bootstrap: str, names: Sequence[str]) -> dict[tuple[str, int], int]:
    """High watermarks of every partition of ``names`` (used by the no-write-to-live check)."""
    c = consumer(bootstrap)
    try:
        out = {}
        for name in names:
            for p in partitions_of(c, name):
                out[(name, p)] = c.get_watermark_offsets(TopicPartition(name, p), timeout=TIMEOUT_S, cached=False)[1]
        return out
    finally:
        c.close()


# -- writing -------------------------------------------------------------------------------------------


def live_namespaces() -> set[str]:
    """``noc`` and whatever NOC_NAMESPACE names as live on this machine."""
    from infra.config import settings

    return {LIVE_NAMESPACE, settings().namespace}


def check_sandbox(namespace: str, source: str) -> None:
    """Refuse a sandbox that is a live namespace or the one being replayed."""
    if not namespace or "." in namespace:
        raise ReplayError(f"bad namespace {namespace!r}: a non-empty name without dots")
    if namespace in live_namespaces():
        raise ReplayError(f"refusing to replay into {namespace!r}: that is the live namespace; "
                          "pick a sandbox name, e.g. --namespace whatif1")
    if namespace == source:
        raise ReplayError(f"refusing to replay {source!r} into itself: the sandbox must be another namespace")


def guard_topic(name: str, namespace: str) -> None:
    """Raise unless ``name`` is a topic of the sandbox ``namespace`` (and not of a live one)."""
    if not name.startswith(namespace + ".") or any(name.startswith(live + ".") for live in live_namespaces()):
        raise ReplayError(f"replay refused to write to {name!r}: only {namespace}.* topics are allowed")


class SandboxProducer:
    """A producer that can only write to ``<namespace>.*`` topics (the guard every replay write goes through)."""

    def __init__(self, bootstrap: str, namespace: str, source: str, *, flush_timeout_s: float = 60.0) -> None:
        check_sandbox(namespace, source)
        self.namespace = namespace
        self.prefix = namespace + "."
        self.flush_timeout_s = flush_timeout_s
        self.topics_written: set[str] = set()
        self.errors: list[str] = []
        self.produced = 0
        self._p = Producer({
            "bootstrap.servers": bootstrap, "client.id": f"noc-replay-{namespace}", "acks": "all",
            "enable.idempotence": True, "compression.type": "lz4", "linger.ms": 20,
            "batch.num.messages": 100_000, "queue.buffering.max.messages": 1_000_000,
            "message.timeout.ms": 120_000, "socket.timeout.ms": 30_000,
            "error_cb": self._on_error,
        })

    def _on_error(self, err: KafkaError) -> None:
        self.errors.append(f"client: {err}")

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and len(self.errors) < 20:
            self.errors.append(f"delivery to {msg.topic()}: {err}")

    def name(self, short: str) -> str:
        """The sandbox topic for a catalogue short name; refuses anything outside the sandbox."""
        name = topic(short, self.namespace)
        self.guard(name)
        return name

    def guard(self, name: str) -> None:
        guard_topic(name, self.namespace)

    def produce(self, name: str, key: bytes | None, value: bytes, timestamp: int) -> None:
        self.guard(name)
        self.topics_written.add(name)
        while True:
            try:
                self._p.produce(name, value, key, timestamp=timestamp, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._p.poll(0.05)
        self.produced += 1
        if self.produced % 4096 == 0:
            self._p.poll(0)

    def flush(self) -> None:
        left = self._p.flush(self.flush_timeout_s)
        if left or self.errors:
            raise ReplayError(f"replay output not fully delivered: {left} queued; errors: {self.errors[:5]}")
