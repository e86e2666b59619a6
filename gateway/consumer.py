"""The Kafka side of the live feed: one consumer thread per gateway process, plus resume read-backs.

The feed consumer uses manual assignment of every partition of ``<namespace>.events`` under a group id of
its own and never commits, so any number of gateway processes run side by side, each seeing every event
and serving its own clients. At start-up it rewinds up to ``warm`` records per partition so the resume ring
is warm after a restart; those records are not broadcast as live and record no latency.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from gateway.hub import FeedEvent
from gateway.metrics import FEED_DEAD_LETTER_ERRORS, FEED_DECODE_ERRORS, GATEWAY_CONSUMER_LAG
from schemas import serde
from schemas.topics import topic

log = logging.getLogger("nocstream.gateway.consumer")
POLL_TIMEOUT_S = 0.1
BATCH = 500
# A feed record larger than this is dead-lettered, not held in rings and queues: the feed's events are small
# (a record of the pipeline as JSON), and the gateway's memory bounds are counted in events as well as bytes.
MAX_EVENT_BYTES = 256 * 1024


def default_group_id() -> str:
    return f"noc-gateway-{socket.gethostname()}-{os.getpid()}"


def to_feed_event(msg: Message, live: bool = True) -> FeedEvent:
    """Decode one record of the events topic; raises serde.DecodeError for bad bytes (or too many of them)."""
    value = msg.value()
    if value is not None and len(value) > MAX_EVENT_BYTES:
        raise serde.DecodeError("MALFORMED", f"{len(value)} bytes is over the feed's {MAX_EVENT_BYTES}-byte limit")
    rec = serde.decode(value, expected="noc_event")
    raw_payload = rec["payload"]
    try:
        payload: Any = orjson.loads(raw_payload)
    except orjson.JSONDecodeError:
        payload = raw_payload  # forwarded as the string it is: the envelope itself was valid
    ts_type, ts = msg.timestamp()
    produced_ms = int(ts) if ts_type != 0 and ts > 0 else int(rec["timestamp"])
    partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
    obj = {"type": rec["type"], "event_id": rec["event_id"], "timestamp": rec["timestamp"],
           "tenant_id": rec["tenant_id"], "site_id": rec["site_id"], "person_id": rec["person_id"],
           "payload": payload, "cursor": f"{partition}:{offset}", "produced_at": produced_ms}
    return FeedEvent(int(rec["tenant_id"]), str(rec["event_id"]), str(rec["type"]), rec["site_id"], rec["person_id"],
                     partition, offset, produced_ms, orjson.dumps(obj), live)


def watermarks(consumer: Consumer, tp: TopicPartition, timeout_s: float = 30.0) -> tuple[int, int]:
    """Low and high offsets; a topic created a moment ago may not have a leader yet, so retry until a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=5)
            return int(low), int(high)
        except KafkaException as exc:
            if not exc.args[0].retriable() and exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class DeadLetters:
    """Undecodable feed records go to ``<namespace>.dead-letters`` with the reason and original bytes."""

    def __init__(self, bootstrap: str, namespace: str) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 10_000, "linger.ms": 50})
        self._topic = topic("dead-letters", namespace)

    def send(self, msg: Message, err: serde.DecodeError) -> None:
        src = msg.topic() or ""
        rec = {"dead_letter_id": f"{src}:{msg.partition()}:{msg.offset()}", "source_topic": src,
               "partition": int(msg.partition() or 0), "offset": int(msg.offset() or 0), "reason": err.reason,
               "detail": err.detail[:1000], "component": "gateway", "key": msg.key(), "value": msg.value(),
               "record_timestamp": int(msg.timestamp()[1])}
        try:
            self._producer.produce(self._topic, key=src.encode(), value=serde.encode("dead_letter", rec))
            self._producer.poll(0)
        except (BufferError, KafkaException) as exc:  # the record stays counted; the consumer must go on
            FEED_DEAD_LETTER_ERRORS.inc()
            log.warning("feed record %s not dead-lettered: %s", rec["dead_letter_id"], exc)

    def close(self) -> None:
        self._producer.flush(5)


class FeedConsumer:
    def __init__(self, bootstrap: str, namespace: str, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[list[FeedEvent]], Any], group_id: str | None = None, warm: int = 2000) -> None:
        self.topic = topic("events", namespace)
        self._bootstrap = bootstrap
        self._namespace = namespace
        self._loop = loop
        self._deliver = deliver
        self.group_id = group_id or default_group_id()
        self._warm = warm
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once partitions are assigned (or the thread failed: see error)
        self.error: BaseException | None = None
        self.partitions: frozenset[int] = frozenset()  # of the events topic, once assigned
        self._thread = threading.Thread(target=self._run, name="noc-gateway-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _assign(self, consumer: Consumer) -> dict[int, int]:
        # A topic created a moment ago may not be in the metadata yet: retry until a deadline.
        deadline = time.monotonic() + 20
        while True:
            md = consumer.list_topics(self.topic, timeout=10)
            parts = md.topics[self.topic].partitions
            if md.topics[self.topic].error is None and parts:
                break
            if time.monotonic() > deadline or self._stop.is_set():
                raise RuntimeError(f"topic {self.topic} is missing: {md.topics[self.topic].error}")
            time.sleep(0.2)
        assignment, live_from = [], {}
        for p in sorted(parts):
            low, high = watermarks(consumer, TopicPartition(self.topic, p))
            live_from[p] = high
            assignment.append(TopicPartition(self.topic, p, max(low, high - self._warm) if self._warm else OFFSET_END))
        consumer.assign(assignment)
        return live_from

    def _run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self._bootstrap, "group.id": self.group_id,
                             "enable.auto.commit": False, "auto.offset.reset": "latest",
                             "fetch.wait.max.ms": 10, "fetch.min.bytes": 1, "socket.timeout.ms": 10_000,
                             "session.timeout.ms": 10_000, "statistics.interval.ms": 5_000,
                             "stats_cb": self._stats})
        dead = DeadLetters(self._bootstrap, self._namespace)
        try:
            live_from = self._assign(consumer)
            self.partitions = frozenset(live_from)
            self.ready.set()
            while not self._stop.is_set():
                # consume(n, timeout) waits for n records or the timeout, which would add up to the timeout to
                # every event's latency: block on poll() for the first record, then drain what is already fetched.
                first = consumer.poll(POLL_TIMEOUT_S)
                if first is None:
                    continue
                msgs = [first, *consumer.consume(BATCH - 1, timeout=0)]
                batch: list[FeedEvent] = []
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("feed consumer error: %s", err)
                        continue
                    try:
                        ev = to_feed_event(msg, live=(msg.offset() or 0) >= live_from.get(msg.partition() or 0, 0))
                    except serde.DecodeError as exc:
                        FEED_DECODE_ERRORS.labels(exc.reason).inc()
                        dead.send(msg, exc)
                        continue
                    batch.append(ev)
                if batch:
                    self._loop.call_soon_threadsafe(self._deliver, batch)
        except BaseException as exc:  # recorded for /health, then re-raised: the thread must not die silently
            self.error = exc
            self.ready.set()  # wakes whoever waits for the start-up; they check ``error``
            log.exception("feed consumer stopped")
            raise
        finally:
            consumer.close()
            dead.close()

    def _stats(self, raw: str) -> None:
        stats = orjson.loads(raw)
        for p, info in stats.get("topics", {}).get(self.topic, {}).get("partitions", {}).items():
            lag = info.get("consumer_lag", -1)
            if p != "-1" and lag is not None and lag >= 0:
                GATEWAY_CONSUMER_LAG.labels(self.topic, p).set(lag)


def read_back(bootstrap: str, topic_name: str, partition: int, start: int, tenant_id: int,
              limit: int, timeout_s: float = 5.0) -> tuple[list[FeedEvent], bool]:
    """Records of ``tenant_id`` from ``start`` up to the current end of one partition (blocking; run in a thread).

    Returns ``(events, complete)``; ``complete`` is False when ``limit`` or the deadline cut the read short.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{default_group_id()}-resume",
                         "enable.auto.commit": False, "socket.timeout.ms": 5_000})
    try:
        tp = TopicPartition(topic_name, partition)
        low, high = watermarks(consumer, tp, timeout_s)
        start = max(start, low)
        if start >= high:
            return [], True
        consumer.assign([TopicPartition(topic_name, partition, start)])
        out: list[FeedEvent] = []
        deadline = time.monotonic() + timeout_s
        pos = start
        while pos < high and time.monotonic() < deadline:
            for msg in consumer.consume(BATCH, timeout=0.2):
                if msg.error() is not None:
                    continue
                pos = int(msg.offset() or 0) + 1
                if pos > high:
                    break
                try:
                    ev = to_feed_event(msg, live=False)
                except serde.DecodeError:
                    continue  # the live consumer dead-letters it; a read-back only skips it
                if ev.tenant_id == tenant_id:
                    out.append(ev)
                    if len(out) >= limit:
                        return out, False
        return out, pos >= high
    finally:
        consumer.close()
