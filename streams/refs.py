"""Reference data and model events for the worker: every worker reads the compacted single-partition topics
``ref.sites``, ``ref.people``, ``ref.shifts`` and ``model-events`` in full, outside the consumer group.

Why not Faust GlobalTables: a 1-partition topic in the worker's consumer group is owned by one worker only,
and global tables add a second recovery path to debug. A plain confluent-kafka consumer with ``assign()``
(no group, no commits) reads each topic from offset 0 to its end *before* the agents start (so the first
input record already sees all reference data present at start-up), then keeps tailing in a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from schemas.topics import topic

log = logging.getLogger(__name__)

REF_TOPICS = ("ref.sites", "ref.people", "ref.shifts", "model-events")
Apply = Callable[[str, bytes | None, bytes | None], None]  # (short, key, value)


class RefTail:
    """Reads the reference topics into ``apply``: fully at :meth:`load`, then live in a thread."""

    def __init__(self, bootstrap: str, namespace: str, apply: Apply, timeout_s: float = 30.0) -> None:
        self.apply = apply
        self.timeout_s = timeout_s
        self.names = {topic(short, namespace): short for short in REF_TOPICS}
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"{namespace}.noc-worker-refs",  # required by the client; never used (assign, no commit)
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "socket.timeout.ms": 10_000,
            "session.timeout.ms": 10_000,
        })
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.records = 0
        self.errors = 0

    def load(self) -> int:
        """Read every reference topic from the start to its current end; the number of records read."""
        ends: dict[str, int] = {}
        tps = []
        for name in self.names:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(name, 0), timeout=self.timeout_s)
            if high > low:
                ends[name] = high
            tps.append(TopicPartition(name, 0, OFFSET_BEGINNING))
        self.consumer.assign(tps)
        import time

        deadline = time.monotonic() + self.timeout_s * 4
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reference topics not read to their end: {sorted(ends)}")
            for msg in self.consumer.consume(1000, timeout=0.5):
                self._handle(msg)
                name, offset = str(msg.topic()), msg.offset()
                if name in ends and msg.error() is None and offset is not None and offset + 1 >= ends[name]:
                    del ends[name]
        return self.records

    def _handle(self, msg: object) -> None:
        from confluent_kafka import Message

        assert isinstance(msg, Message)
        if msg.error() is not None:
            self.errors += 1
            log.warning("reference consumer: %s", msg.error())
            return
        self.records += 1
        self.apply(self.names[str(msg.topic())], msg.key(), msg.value())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="noc-ref-tail", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for msg in self.consumer.consume(500, timeout=0.5):
                    self._handle(msg)
            except KafkaException as exc:
                self.errors += 1
                log.warning("reference consumer: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.consumer.close()
