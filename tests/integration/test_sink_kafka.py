"""The sink worker on the real Kafka broker and Postgres: every topic lands, poison records are dead-lettered
while the rest flows on, ticket changes are re-emitted on the feed, and redelivery changes nothing."""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_sink_records import SAMPLES, activity, produce_sites, ticket_command

from schemas.serde import DecodeError, decode, encode
from schemas.topics import topic
from sinks.batching import BatchPolicy
from sinks.worker import SinkConfig, SinkWorker

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, items: list[tuple[str, bytes | None]]) -> None:
    ns = items[0][0].split(".")[0] if items else ""
    produce_sites(bootstrap, ns, [(1, "s1")])
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for name, value in items:
        p.produce(name, key=b"1:p1", value=value)
    assert p.flush(30) == 0


def _count(dsn: str, table: str, where: str = "TRUE") -> int:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}".encode()).fetchone()
    assert row is not None
    return int(row[0])


def _worker(dsn: str, bootstrap: str, ns: str, **kw: Any) -> SinkWorker:
    return SinkWorker(SinkConfig(dsn=dsn, bootstrap=bootstrap, namespace=ns, group=f"sink-{ns}",
                                 policy=BatchPolicy(500, 200), until_caught_up=True, **kw))


def test_sink_stores_every_topic_dead_letters_poison_and_emits_ticket_feed(
        kafka_bootstrap: str, namespace: str, pg_schema: tuple[str, str]) -> None:
    dsn = pg_schema[0]
    items: list[tuple[str, bytes | None]] = [(topic(short, namespace), encode(stem, rec))
                                             for short, (stem, rec) in SAMPLES.items()]
    items += [(topic("activity", namespace), encode("activity_signal", activity(i))) for i in range(1, 200)]
    items += [(topic("activity", namespace), b"\xc3\x01not avro at all"),  # poison
              (topic("activity", namespace), encode("noc_alert", SAMPLES["alerts"][1])),  # wrong schema
              (topic("dead-letters", namespace), b"broken dead letter")]
    items += [(topic("ticket-commands", namespace), encode("ticket_command", ticket_command(1)))] * 2  # redelivered
    _produce(kafka_bootstrap, items)

    stats = _worker(dsn, kafka_bootstrap, namespace, metrics_port=None).run()
    assert _count(dsn, "activity") == 200
    for table in ("attendance", "alerts", "labels", "signal_windows", "baselines", "anomalies", "incidents",
                  "fraud_scores", "incident_events"):
        assert _count(dsn, table) == 1, table
    assert _count(dsn, "audit_findings", "escalated_to_ticket AND finding_type IS NOT NULL") == 1
    assert _count(dsn, "tickets") == 3  # tkt-0, tkt-1 (once, though its command came twice), upstream tk-1
    # The sink's own dead letters (3 poison records) beside the sample record of the dead-letters topic.
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        reasons = sorted(r[0] for r in conn.execute(
            b"SELECT reason FROM dead_letters WHERE component = 'sink'").fetchall())
    assert reasons == ["MALFORMED", "UNKNOWN_SCHEMA", "WRONG_SCHEMA"]
    assert _count(dsn, "dead_letters", "reason = 'WRONG_SCHEMA' AND value IS NOT NULL") == 1
    assert _count(dsn, "dead_letters", "component = 'validate'") == 1
    assert stats.dead == 3

    # ticket_updated events were produced after the commit (one per change; the redelivered command
    # re-emits the same event id) and the same run stored them in the event log.
    feed = _read_all(kafka_bootstrap, topic("events", namespace))
    kinds = [(e["type"], e["event_id"]) for e in feed]
    assert {k for k, _ in kinds} == {"ticket_updated", "alert_created"}
    assert len({i for k, i in kinds if k == "ticket_updated"}) == 3
    assert _count(dsn, "event_log", "type = 'ticket_updated'") == 3

    # Dead letters made by the sink were also published (not the broken dead letter itself).
    dl = _read_all(kafka_bootstrap, topic("dead-letters", namespace))
    assert sorted(d["source_topic"] for d in dl) == ["noc.attendance"] + [topic("activity", namespace)] * 2

    # A second group re-reading everything (full redelivery) changes no row count.
    before = {t: _count(dsn, t) for t in ("activity", "tickets", "ticket_history", "dead_letters", "event_log")}
    SinkWorker(SinkConfig(dsn=dsn, bootstrap=kafka_bootstrap, namespace=namespace, group=f"again-{namespace}",
                          until_caught_up=True, publish=False)).run()
    assert {t: _count(dsn, t) for t in before} == before


def _read_all(bootstrap: str, name: str) -> list[dict[str, Any]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{name}-{time.monotonic_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([name])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                if out and time.monotonic() - quiet_since > 2:
                    break
                continue
            if m.error() is None:
                quiet_since = time.monotonic()
                try:
                    out.append(decode(m.value()))
                except DecodeError:
                    continue  # the test's own broken record
    finally:
        c.close()
    return out


def test_metrics_endpoint_shows_lag_per_partition(kafka_bootstrap: str, namespace: str,
                                                  pg_schema: tuple[str, str]) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    _produce(kafka_bootstrap, [(topic("activity", namespace), encode("activity_signal", activity(i)))
                               for i in range(50)])
    w = _worker(pg_schema[0], kafka_bootstrap, namespace, topics=("activity",), metrics_port=port)
    w.run()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    lines = [ln for ln in body.splitlines() if ln.startswith("noc_sink_consumer_lag{")
             and f'topic="{topic("activity", namespace)}"' in ln]
    assert len(lines) == 6 and all(ln.endswith(" 0.0") for ln in lines)
    assert 'noc_sink_rows_total{table="activity"}' in body


def test_max_idle_stops_a_worker_with_nothing_to_read(kafka_bootstrap: str, namespace: str,
                                                      pg_schema: tuple[str, str]) -> None:
    t = time.monotonic()
    stats = SinkWorker(SinkConfig(dsn=pg_schema[0], bootstrap=kafka_bootstrap, namespace=namespace,
                                  topics=("alerts",), group=f"idle-{namespace}", max_idle_s=1.0)).run()
    assert stats.records == 0 and time.monotonic() - t < 30


def test_until_caught_up_stops_when_retention_emptied_a_partition(kafka_bootstrap: str, namespace: str,
                                                                  pg_schema: tuple[str, str]) -> None:
    """A partition whose every record was deleted (retention, DeleteRecords) has end offset > 0 but nothing to
    read or commit: it counts as caught up from its log start, not as lagging forever."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    dsn, _schema = pg_schema
    name = topic("activity", namespace)
    delivered: list[tuple[int, int]] = []
    p = Producer({"bootstrap.servers": kafka_bootstrap})

    def acked(err: Any, msg: Any) -> None:
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))

    for _ in range(3):  # one key: one partition
        p.produce(name, key=b"1:p1", value=encode("activity_signal", activity()), on_delivery=acked)
    assert p.flush(30) == 0 and len(delivered) == 3
    partition, end = delivered[0][0], max(off for _, off in delivered) + 1
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.delete_records([TopicPartition(name, partition, end)], request_timeout=30).values():
        fut.result(timeout=30)
    stats = _worker(dsn, kafka_bootstrap, namespace).run()  # returns once caught up (pytest-timeout otherwise)
    assert stats.records == 0
