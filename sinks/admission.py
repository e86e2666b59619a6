"""What the sink refuses before it maps a decoded record: the input contract, and unknown tenants and sites.

The worker's inputs (attendance, activity, alerts, audit findings) are judged by the worker's own
``streams.core.validate.validate_input`` with their Kafka timestamp and the sites of the ``ref.sites`` topic
(contract field domains, UNKNOWN_TENANT, UNKNOWN_SITE, FUTURE_EVENT), so Postgres holds the inputs the worker
processed, dead-lettered with the same reasons and details. Every other record goes through the contract
alone (``contract_verdict``, as the worker's tickets agent does; nocstream's own outputs have no contract
and pass), and the other upstream inputs (helpdesk tickets, labels) also need a known tenant. Derived
records descend from inputs that passed these checks and are not judged against reference data again.

:class:`SiteDirectory` reads ``ref.sites`` (compacted, one partition) to its end before the first batch and
then picks up new sites before each batch, without a thread. Like the worker it keeps every site it has
read and ignores tombstones. Its map grows only with the reference topic, which only the operators' own
systems write; no input record adds to it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from schemas.contract import check
from schemas.serde import DecodeError, decode
from schemas.topics import topic
from sinks.routes import Raw
from streams.core.validate import UNKNOWN_TENANT, ReferenceData, Verdict, contract_verdict, validate_input

__all__ = ["REFERENCE_CHECKED", "TENANT_CHECKED", "WORKER_INPUTS", "Admission", "SiteDirectory"]

log = logging.getLogger("noc.sink")

WORKER_INPUTS = frozenset({"attendance", "activity", "alerts", "audit-findings"})  # validated as the worker does
TENANT_CHECKED = frozenset({"tickets", "labels"})  # other upstream inputs: the tenant must be known
REFERENCE_CHECKED = WORKER_INPUTS | TENANT_CHECKED
KAFKA_TIMEOUT_S = 10.0
_TRANSIENT = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                        KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TRANSPORT, KafkaError._TIMED_OUT})


class SiteDirectory:
    """The sites of ``<namespace>.ref.sites``, as :class:`streams.core.validate.ReferenceData`."""

    def __init__(self, bootstrap: str, namespace: str, timeout_s: float = 30.0) -> None:
        self.refs = ReferenceData()
        self.name = topic("ref.sites", namespace)
        self.timeout_s = timeout_s
        self.ignored = 0
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"{namespace}.noc-sink-refs",  # assign(): never joins
            "enable.auto.commit": False, "enable.partition.eof": False, "socket.timeout.ms": 10_000,
            "session.timeout.ms": 10_000,
        })

    def load(self) -> int:
        """Read the topic from its start to its current end; then the reference data counts as loaded."""
        deadline = time.monotonic() + self.timeout_s
        low, high = self._watermarks(deadline)
        self.consumer.assign([TopicPartition(self.name, 0, OFFSET_BEGINNING)])
        n = 0
        position = low
        while position < high:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not read to its end ({position} of {high}) in {self.timeout_s}s")
            for msg in self.consumer.consume(1000, timeout=0.5):
                n += self._apply(msg)
                off = msg.offset()
                if msg.error() is None and off is not None:
                    position = max(position, off + 1)
        self.refs.loaded = True
        log.info("reference data: %d sites of %d tenants from %s", sum(map(len, self.refs.sites.values())),
                 len(self.refs.sites), self.name)
        return n

    def _watermarks(self, deadline: float) -> tuple[int, int]:
        """The topic's offsets, waiting out a leader election (a topic just created has no leader yet)."""
        while True:
            try:
                low, high = self.consumer.get_watermark_offsets(TopicPartition(self.name, 0),
                                                                timeout=KAFKA_TIMEOUT_S)
                return int(low), int(high)
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is None or err.code() not in _TRANSIENT or time.monotonic() > deadline:
                    raise
                log.info("%s: %s; retrying", self.name, err.str())
                time.sleep(0.5)  # backoff before asking for the offsets again

    def poll(self) -> int:
        """Apply the sites published since the last call (does not wait)."""
        n = 0
        while True:
            msgs = self.consumer.consume(1000, timeout=0)
            if not msgs:
                return n
            for msg in msgs:
                n += self._apply(msg)

    def _apply(self, msg: Message) -> int:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("%s: %s", self.name, err)
            return 0
        value = msg.value()
        if value is None:
            return 0  # a tombstone: the worker keeps the site too, so both judge inputs alike
        try:
            site = decode(value, expected="site")
        except DecodeError as exc:
            return self._ignore(msg, f"{exc.reason}: {exc.detail}")
        bad = check("site", site, None)
        if bad is not None:
            return self._ignore(msg, f"{bad.reason}: {bad.detail}")
        self.refs.add_site(site)
        return 1

    def _ignore(self, msg: Message, why: str) -> int:
        self.ignored += 1
        log.warning("%s record at offset %s ignored: %s", self.name, msg.offset(), why)
        return 0

    def close(self) -> None:
        self.consumer.close()


class Admission:
    """``sinks.routes.Admit``: None to store a record, else (reason, detail) to dead-letter it. Verdicts and
    details are the worker's own (``streams.core.validate``), given the record's Kafka timestamp."""

    def __init__(self, refs: ReferenceData | None) -> None:
        self.refs = refs  # None: no reference checks (the sink stores no upstream input)

    def __call__(self, raw: Raw, stem: str, record: dict[str, Any]) -> tuple[str, str] | None:
        refs = self.refs
        if refs is not None and raw.short in WORKER_INPUTS:
            verdict = validate_input(stem, record, refs, raw.timestamp)
        else:
            verdict = contract_verdict(stem, record, raw.timestamp)  # stems outside the contract pass
            if verdict.ok and refs is not None and raw.short in TENANT_CHECKED and refs.loaded \
                    and not refs.knows_tenant(record["tenant_id"]):
                verdict = Verdict(UNKNOWN_TENANT, f"tenant {record['tenant_id']} is not in ref.sites")
        return None if verdict.reason is None else (verdict.reason, verdict.detail)
