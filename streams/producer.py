"""The worker's producing side: one librdkafka producer per producing thread (:class:`Sink`), and encoding a
step's outputs onto their topics (:func:`send_outputs`). Shared by the pipeline process and the site-stage
process, so neither needs the other's imports."""

from __future__ import annotations

from collections import Counter
from typing import Any

from schemas.serde import SchemaStore
from streams.core.types import Out

OUTPUT_TOPICS = ("signal-windows", "baselines", "anomalies", "incidents", "fraud-scores", "ticket-commands",
                 "finding-escalations", "events", "dead-letters")


class Sink:
    """One confluent-kafka (librdkafka) producer for outputs and state changelog writes.

    Faust's own producer path (aiokafka, one awaited future per record) cost about a millisecond per output
    here; librdkafka batches in C. ``deliver()`` blocks until everything queued is acknowledged, which is what
    the at-least-once ordering needs: outputs acknowledged before the state is written, the state acknowledged
    before the input offsets are committed."""

    def __init__(self, bootstrap: str, timeout_s: float = 30.0) -> None:
        from confluent_kafka import Producer

        self.timeout_s = timeout_s
        self.errors: list[str] = []
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "client.id": "noc-worker",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            "message.timeout.ms": int(timeout_s * 1000),
            "socket.timeout.ms": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            # Bounded: a state flush queues tens of MB of changelog records; past this, send() waits for
            # acknowledgements instead of growing the process (librdkafka's default allows 1 GB). Over the bench
            # 4 MB held ~7 MB less at the worker's peak than 16 MB, at the same events/s (local broker).
            "queue.buffering.max.kbytes": 4_096,
            # One client-wide callback, called for failures only: a per-record callback cost ~1.5 µs each.
            "on_delivery": self._failed,
            "delivery.report.only.error": True,
        })
        self.produce = self.producer.produce

    def _failed(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")

    def send(self, name: str, key: bytes | None, value: bytes | None, partition: int = -1) -> None:
        """-1: the partitioner chooses (librdkafka's RD_KAFKA_PARTITION_UA)."""
        while True:
            try:
                self.produce(name, value, key, partition)
                return
            except BufferError:
                self.producer.poll(0.01)  # the queue is full: serve acknowledgements until it has room

    def deliver(self) -> None:
        left = self.producer.flush(self.timeout_s)
        if left or self.errors:
            errors, self.errors = self.errors, []
            raise RuntimeError(f"could not deliver {left} records: {errors[:5]}")  # crash: redelivery redoes it


def send_outputs(sink: Sink, schemas: SchemaStore, names: dict[str, str], outs: list[Out],
                 wait: bool = True, encoded: list[bytes] | None = None) -> Counter[str]:
    """Encode and send ``outs`` (``names``: topic short name -> full name); ``wait``: until all are
    acknowledged (else the caller's next ``sink.deliver()`` does); ``encoded``: gets each out's bytes. Returns
    how many went to each topic (short names)."""
    encode, send = schemas.encode, sink.send
    counts: Counter[str] = Counter()
    for out in outs:
        value = encode(out.stem, out.record)
        send(names[out.topic], out.key, value)
        if encoded is not None:
            encoded.append(value)
        counts[out.topic] += 1
    if outs and wait:
        sink.deliver()
    return counts
