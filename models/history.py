"""Training history from Kafka: a bounded replay of the input topics by timestamp range.

Reference topics (compacted: the latest version of each site, person, shift) are read whole and put
first, so every event sees the reference data a live worker would have now. Time-ranged topics are read
from ``offsets_for_times(start)`` up to the end offsets taken when the replay starts, decoded once, kept
when their event time falls in ``[start_ms, end_ms)`` (tickets: any time after ``start_ms``, as a
resolution may come later), and merged into one event-time order. Byte-identical copies of a record
(redelivery, a simulation produced twice) are read once: a duplicated punch would otherwise be featurized
twice and look like a second punch.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from models.progress import ProgressFn, no_progress

# short topic name -> (stem, time field, kept from start_ms only (no upper bound))
RANGED = {
    "attendance": ("attendance_event", "occurred_at", False),
    "activity": ("activity_signal", "occurred_at", False),
    "labels": ("label", "occurred_at", False),
    "fraud-scores": ("fraud_score", "occurred_at", False),
    "tickets": ("ticket", "occurred_at", True),
}
REFERENCE = {"ref.sites": "site", "ref.people": "person", "ref.shifts": "shift"}
# At equal event times, activity is applied before a punch (it happened "up to" that instant).
_RANK = {"site": 0, "person": 0, "shift": 0, "activity_signal": 1, "attendance_event": 2}


class HistoryError(ValueError):
    """The history cannot be read as asked (e.g. the namespace has no attendance topic)."""


@dataclass(slots=True)
class ReplayStats:
    read: int = 0
    kept: int = 0
    undecodable: int = 0
    duplicates: int = 0  # byte-identical redeliveries (at-least-once producers, a simulation run twice)
    # Per time-ranged topic (short name): the latest, over its partitions, of the event time of the first
    # record read — where that topic's history really starts when retention has deleted older records.
    starts: dict[str, int] = field(default_factory=dict)


def replay(bootstrap: str, namespace: str, start_ms: int, end_ms: int, tenant: int | None = None,
           progress: ProgressFn = no_progress, stats: ReplayStats | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Read the history into a list of ``(stem, record)`` in event-time order (reference data first)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from schemas.serde import DecodeError, store
    from schemas.topics import topic

    st = stats if stats is not None else ReplayStats()
    serde = store()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"noc-train-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "enable.partition.eof": True})
    try:
        meta = consumer.list_topics(timeout=15)
        assignments: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        stems: dict[str, tuple[str, str, bool, bool]] = {}  # topic -> (stem, time field, open-ended, reference)
        shorts: dict[str, str] = {}
        for short, (stem, tfield, open_end) in RANGED.items():
            stems[topic(short, namespace)] = (stem, tfield, open_end, False)
            shorts[topic(short, namespace)] = short
        for short, stem in REFERENCE.items():
            stems[topic(short, namespace)] = (stem, "updated_at", True, True)
        if topic("attendance", namespace) not in meta.topics:
            raise HistoryError(f"no topic {topic('attendance', namespace)!r} on {bootstrap}: is the namespace right? "
                               f"(`noc topics list --namespace {namespace}`; `noc topics apply` then `noc simulate` "
                               "create and fill one)")
        for name, (_stem, _tf, _oe, is_ref) in stems.items():
            if name not in meta.topics:
                continue
            parts = [TopicPartition(name, p, start_ms) for p in meta.topics[name].partitions]
            starts = parts if not is_ref else [TopicPartition(name, p.partition, 0) for p in parts]
            if not is_ref:
                starts = consumer.offsets_for_times(parts, timeout=15)
            for tp in starts:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, tp.partition), timeout=15)
                begin = low if is_ref or tp.offset < 0 else tp.offset
                if tp.offset < 0 and not is_ref:
                    begin = high  # nothing at or after start_ms
                if begin < high:
                    assignments.append(TopicPartition(name, tp.partition, begin))
                    ends[(name, tp.partition)] = high
        total = sum(ends[(tp.topic, tp.partition)] - tp.offset for tp in assignments)
        refs: list[tuple[int, int, int, str, dict[str, Any]]] = []
        events: list[tuple[int, int, int, str, dict[str, Any]]] = []
        if assignments:
            consumer.assign(assignments)
        remaining = dict(ends)
        seen: set[bytes] = set()  # digests of the time-ranged records kept: a redelivery is byte-identical
        first: dict[tuple[str, int], int] = {}  # (topic, partition) -> event time of its first record read
        for tp in assignments:
            if tp.offset >= ends[(tp.topic, tp.partition)]:
                remaining.pop((tp.topic, tp.partition))
        while remaining:
            for msg in consumer.consume(num_messages=2000, timeout=1.0):
                name, part, off, err = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0), msg.error()
                key = (name, part)
                if err is not None:
                    # End of a partition: done even if the last offsets were compaction gaps or markers —
                    # but only once the reported position reaches the end taken at the start (an early EOF
                    # from a not yet up-to-date fetch must not cut the history short).
                    if err.code() == KafkaError._PARTITION_EOF and key in remaining and off >= remaining[key]:
                        remaining.pop(key)
                    continue
                if key not in remaining:
                    continue
                if off + 1 >= remaining[key]:
                    remaining.pop(key)
                st.read += 1
                stem, tfield, open_end, is_ref = stems[name]
                value = msg.value() or b""
                if not is_ref:
                    digest = hashlib.blake2b(value, digest_size=16).digest()
                    if digest in seen:
                        st.duplicates += 1
                        continue
                    seen.add(digest)
                try:
                    _, rec = serde.decode(value, expected=stem)
                except DecodeError:
                    st.undecodable += 1
                    continue
                t = int(rec[tfield])
                if not is_ref and key not in first:
                    first[key] = t
                if tenant is not None and rec.get("tenant_id") != tenant:
                    continue
                if is_ref:
                    refs.append((t, 0, st.read, stem, rec))
                elif start_ms <= t and (open_end or t < end_ms):
                    events.append((t, _RANK.get(stem, 3), st.read, stem, rec))
                if st.read % 5000 == 0:
                    progress("reading history from Kafka", st.read, total)
        progress("reading history from Kafka", st.read, st.read)
    finally:
        consumer.close()
    for (name, _part), t0 in first.items():
        short = shorts[name]
        st.starts[short] = max(st.starts.get(short, t0), t0)
    refs.sort(key=lambda e: e[:3])
    events.sort(key=lambda e: e[:3])
    st.kept = len(refs) + len(events)
    return [(e[3], e[4]) for e in refs] + [(e[3], e[4]) for e in events]
