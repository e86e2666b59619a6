"""Reading a one-partition compacted reference topic (``ref.people``, ``ref.sites``) to its end, for the gateway's
directories. The caller folds each record into its own map (latest per key; ``None`` is a tombstone)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

__all__ = ["read_to_end"]


def read_to_end(bootstrap: str, topic: str, timeout_s: float, apply: Callable[[bytes, bytes | None], None]) -> bool:
    """Call ``apply(key, value)`` for every record of partition 0 of ``topic`` up to its end offset at the call,
    in offset order. False when the topic does not exist. Raises TimeoutError when the records are not read
    within ``timeout_s``, KafkaException when the broker does not answer."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"noc-gateway-ref-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "socket.timeout.ms": int(timeout_s * 1000)})
    try:
        tp = TopicPartition(topic, 0)
        try:
            low, high = c.get_watermark_offsets(tp, timeout=timeout_s)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
            if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION):
                return False
            raise
        if high <= low:
            return True
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        at = low
        while at < high:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: read to {at} of {high} in {timeout_s} s")
            for msg in c.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    continue  # librdkafka retries; a record it never delivers ends in the timeout above
                offset = msg.offset()
                at = max(at, (offset if offset is not None else at) + 1)
                apply(msg.key() or b"", msg.value())
    finally:
        c.close()
    return True
