"""Faults on the real services: SIGKILL the sink mid-run, restart Postgres mid-run. Nothing lost, nothing doubled.

The sink runs as a real subprocess (``python -m infra.cli sink ...``). The Postgres restart uses a private
cluster on its own port (never the shared one).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_sink_records import activity, produce_sites

from infra.config import REPO_ROOT, Settings, settings
from infra.postgres_local import postgres_down, postgres_up
from schemas.serde import encode
from schemas.topics import PERSON_PARTITIONS, topic
from sinks.migrate import migrate

pytestmark = pytest.mark.integration
ID_WIDTH = 9


def _produce_activity(bootstrap: str, name: str, n: int, start: int = 0) -> None:
    """``n`` distinct activity signals (ids from ``start``), fast: one encoded template whose id is rewritten."""
    template = encode("activity_signal", activity(0) | {"event_id": "act-" + "0" * ID_WIDTH})
    marker = ("act-" + "0" * ID_WIDTH).encode()
    assert template.count(marker) == 1
    produce_sites(bootstrap, name.split(".")[0], [(1, "s1")])
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 500_000})
    for i in range(start, start + n):
        value = template.replace(marker, f"act-{i:0{ID_WIDTH}d}".encode())
        p.produce(name, key=str(i % 64).encode(), value=value)
        if i % 50_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def _count(dsn: str) -> int:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute(b"SELECT count(*), count(DISTINCT event_id) FROM activity").fetchone()
    assert row is not None and row[0] == row[1]  # never a duplicate
    return int(row[0])


def _sink(dsn: str, bootstrap: str, ns: str, log: Path, *extra: str, instance: str = "w1") -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "infra.cli", "sink", "--dsn", dsn, "--bootstrap", bootstrap, "--namespace", ns,
           "--topics", "activity", "--group", f"sink-{ns}", "--instance-id", instance, "--batch-size", "2000",
           "--no-publish", *extra]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)


def _wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)  # polling a condition under a deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _committed_everything(bootstrap: str, ns: str) -> bool:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sink-{ns}", "enable.auto.commit": False})
    try:
        name = topic("activity", ns)
        tps = [TopicPartition(name, p) for p in range(PERSON_PARTITIONS)]
        committed = c.committed(tps, timeout=10)
        return all(tp.offset == c.get_watermark_offsets(tp, timeout=10)[1] for tp in committed)
    finally:
        c.close()


def _safe_count(dsn: str) -> int:
    try:
        return _count(dsn)
    except psycopg.OperationalError:
        return -1


def test_sigkill_mid_run_then_restart_stores_every_record_once(
        kafka_bootstrap: str, namespace: str, pg_schema: tuple[str, str], tmp_path: Path) -> None:
    dsn = pg_schema[0]
    n = 100_000
    migrate(dsn)
    _produce_activity(kafka_bootstrap, topic("activity", namespace), n)
    log = tmp_path / "sink.log"
    proc = _sink(dsn, kafka_bootstrap, namespace, log)
    try:
        _wait_for("the sink to store 10,000 rows", lambda: _count(dsn) >= 10_000, 90)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = _count(dsn)
        assert 0 < at_kill < n, f"the kill was meant to land mid-run (stored {at_kill})"
        proc = _sink(dsn, kafka_bootstrap, namespace, log, "--until-caught-up")
        assert proc.wait(180) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _count(dsn) == n
    assert _committed_everything(kafka_bootstrap, namespace)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.fixture
def own_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A private Postgres cluster on a free port (inside the project home: the postgres user must reach it)."""
    monkeypatch.delenv("NOC_PG_DSN", raising=False)
    home = settings().home / "test-homes" / ("sink-" + uuid.uuid4().hex[:8])
    home.mkdir(parents=True)
    s = Settings(home=home, pg_port=_free_port())
    postgres_up(s, log=False)
    yield s
    postgres_down(s)
    shutil.rmtree(home, ignore_errors=True)


def test_postgres_restart_mid_run_sink_waits_and_resumes_nothing_lost(
        kafka_bootstrap: str, namespace: str, own_postgres: Settings, tmp_path: Path) -> None:
    s = own_postgres
    dsn = f"postgresql://noc@127.0.0.1:{s.pg_port}/nocstream"
    assert dsn == s.pg_dsn
    n = 100_000  # enough that the sink is still busy when Postgres goes away, even on a fast machine
    migrate(dsn)
    _produce_activity(kafka_bootstrap, topic("activity", namespace), n)
    log = tmp_path / "sink.log"
    proc = _sink(dsn, kafka_bootstrap, namespace, log, "--until-caught-up", "--batch-ms", "200")
    try:
        _wait_for("the sink to store rows", lambda: _safe_count(dsn) >= 4_000, 90)
        postgres_down(s)
        _wait_for("the sink to notice Postgres is gone",
                  lambda: b"postgres unavailable" in log.read_bytes(), 60)
        assert proc.poll() is None, "the sink must wait for Postgres, not exit"
        postgres_up(s, log=False)
        assert proc.wait(180) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _count(dsn) == n
    assert _committed_everything(kafka_bootstrap, namespace)


def test_two_workers_share_the_partitions_through_a_rebalance(
        kafka_bootstrap: str, namespace: str, pg_schema: tuple[str, str], tmp_path: Path) -> None:
    dsn = pg_schema[0]
    n = 60_000
    migrate(dsn)
    name = topic("activity", namespace)
    _produce_activity(kafka_bootstrap, name, n // 2)
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    first = _sink(dsn, kafka_bootstrap, namespace, logs[0])  # both run until SIGTERM: the overlap is certain
    second: subprocess.Popen[bytes] | None = None
    try:
        _wait_for("the first worker to store rows", lambda: _count(dsn) >= 2_000, 90)
        # The second worker joins mid-run: the first gives up half its partitions (flushing its batch first).
        second = _sink(dsn, kafka_bootstrap, namespace, logs[1], instance="w2")
        _wait_for("the second worker to take half the partitions",
                  lambda: b"partitions assigned: 3" in logs[1].read_bytes(), 90)
        _produce_activity(kafka_bootstrap, name, n - n // 2, start=n // 2)  # the rest, while both consume
        _wait_for("every record stored", lambda: _count(dsn) == n, 120)
        _wait_for("every offset committed", lambda: _committed_everything(kafka_bootstrap, namespace), 60)
        for proc, log in ((first, logs[0]), (second, logs[1])):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    assert _count(dsn) == n
    assert b"partitions revoked" in logs[0].read_bytes()
    summary = json.loads(logs[1].read_text().strip().splitlines()[-1])  # printed by the sink as it stops
    assert summary["rows"] > 0, summary  # the second worker really stored its half


def _committed_total(bootstrap: str, ns: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sink-{ns}", "enable.auto.commit": False})
    try:
        name = topic("activity", ns)
        committed = c.committed([TopicPartition(name, p) for p in range(PERSON_PARTITIONS)], timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        c.close()


def test_sigterm_stops_gracefully_with_offsets_matching_stored_rows(
        kafka_bootstrap: str, namespace: str, pg_schema: tuple[str, str], tmp_path: Path) -> None:
    dsn = pg_schema[0]
    migrate(dsn)
    _produce_activity(kafka_bootstrap, topic("activity", namespace), 100_000)
    log = tmp_path / "sink.log"
    proc = _sink(dsn, kafka_bootstrap, namespace, log)
    try:
        _wait_for("the sink to store rows", lambda: _count(dsn) >= 5_000, 90)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    stored = _count(dsn)
    # Offsets are committed only after the rows are: after a clean stop, exactly the stored records.
    assert _committed_total(kafka_bootstrap, namespace) == stored
    assert b'"records": ' in log.read_bytes()
