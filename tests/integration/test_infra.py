"""The local services for real: the broker answers a round trip, Postgres answers, `up` is idempotent and
recovers a stale pid file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from infra.config import settings
from infra.kafka_local import kafka_pid, kafka_up, paths
from infra.procs import pid_alive
from infra.topics_admin import apply_topics, list_topics
from schemas.serde import decode, encode
from schemas.topics import CATALOGUE

pytestmark = pytest.mark.integration


def test_round_trip_through_the_broker(kafka_bootstrap: str, namespace: str) -> None:
    topic = f"{namespace}.alerts"
    alert = {"event_id": "a-1", "tenant_id": 1, "site_id": "s-1", "person_id": "p-1", "occurred_at": 1,
             "received_at": 2, "alert_type": "PANIC_BUTTON", "severity": "HIGH", "message": "m", "source": "noc"}
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    p.produce(topic, key=b"1:p-1", value=encode("noc_alert", alert))
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    try:
        for _ in range(60):
            msg = c.poll(1.0)
            if msg is not None and msg.error() is None:
                assert decode(msg.value(), "noc_alert") == alert
                return
        pytest.fail("the record did not come back within 60 s")
    finally:
        c.close()


def test_topics_apply_is_idempotent(kafka_bootstrap: str, namespace: str) -> None:
    assert apply_topics(kafka_bootstrap, namespace) == []  # the fixture created them all already
    states = {t.name: t for t in list_topics(kafka_bootstrap, namespace)}
    for spec in CATALOGUE:
        assert states[spec.name(namespace)].partitions == spec.partitions


def test_postgres_answers(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT current_database(), version()").fetchone()
    assert row is not None and row[1].startswith("PostgreSQL")


def test_up_twice_is_harmless_and_status_says_running(kafka_bootstrap: str, pg_dsn: str) -> None:
    for _ in range(2):
        out = subprocess.run(["noc", "infra", "up"], capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        assert "already" in out.stdout
    status = subprocess.run(["noc", "infra", "status"], capture_output=True, text=True, timeout=60).stdout
    assert "kafka: running" in status and "postgres: running" in status


def test_broker_killed_with_sigkill_is_recovered_by_up(kafka_bootstrap: str) -> None:
    """SIGKILL leaves a stale pid file and a stale storage lock behind; `up` must recover both."""
    s = settings()
    pid = kafka_pid(s)
    if pid is None:
        pytest.fail("this test needs the local broker (no Docker engine here) and it is not running")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)  # waiting for the kernel to reap the killed broker, bounded
    assert paths(s).pid.exists() and kafka_pid(s) is None  # the pid file is stale now
    took = kafka_up(s, log=False)
    assert took > 0 and kafka_pid(s) not in (None, pid)
