"""The local services for real.

The shared broker and Postgres (other sessions use them concurrently) are only read from here; stop/start,
SIGKILL and stale-pid recovery run on a private broker and cluster in a throw-away NOC_HOME on free ports.
"""

from __future__ import annotations

import os
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
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from infra.config import Settings, settings
from infra.kafka_local import fetch_jars, kafka_down, kafka_pid, kafka_status, kafka_up, paths
from infra.postgres_local import answers, postgres_down, postgres_pid, postgres_restart, postgres_status, postgres_up
from infra.procs import pid_alive, port_open
from infra.topics_admin import apply_topics, list_topics
from schemas.serde import decode, encode
from schemas.topics import CATALOGUE

pytestmark = pytest.mark.integration


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=30, check=True)
    return int(proc.stdout)


@pytest.fixture
def private(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings for a private broker and cluster; the Kafka jars are shared with the main home by symlink."""
    for name in ("NOC_BOOTSTRAP", "NOC_PG_DSN"):
        monkeypatch.delenv(name, raising=False)
    shared = paths(settings())
    fetch_jars(shared)
    # Inside the project's home, not /tmp: the `postgres` OS user must be able to reach the data dir.
    home = settings().home / "test-homes" / uuid.uuid4().hex[:8]
    (home / "kafka").mkdir(parents=True)
    (home / "kafka" / "lib").symlink_to(shared.lib)
    shutil.copy(shared.lib_ok, home / "kafka" / "lib.complete")
    kp, cp, pp = _free_ports(3)
    s = Settings(home=home, kafka_port=kp, kafka_controller_port=cp, pg_port=pp)
    yield s
    kafka_down(s)
    postgres_down(s)
    shutil.rmtree(home)


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
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
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


FAUST_APP = """
import faust

app = faust.App({app_id!r}, broker={broker!r}, store="memory://", web_enabled=False, topic_partitions=2)
src = app.topic({src!r}, value_serializer="raw", key_serializer="raw")
dst = app.topic({dst!r}, value_serializer="raw", key_serializer="raw")
counts = app.Table("counts", default=int, partitions=2)


@app.agent(src)
async def forward(stream):
    async for event in stream.events():
        counts[event.key] += 1
        await dst.send(key=event.key, value=event.key + b":" + str(counts[event.key]).encode())
"""


def test_faust_creates_its_internal_topics_and_processes(kafka_bootstrap: str, namespace: str,
                                                        tmp_path: Path) -> None:
    """faust-streaming creates its changelog topic itself and produces to a topic nobody created."""
    src, dst, app_id = f"{namespace}.faust-src", f"{namespace}.faust-dst", f"{namespace}-faust"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(src, num_partitions=2, replication_factor=1)])[src].result(timeout=30)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    p.produce(src, key=b"guard-7", value=b"x")
    assert p.flush(30) == 0
    (tmp_path / "app.py").write_text(FAUST_APP.format(app_id=app_id, broker=f"kafka://{kafka_bootstrap}",
                                                      src=src, dst=dst))
    worker = subprocess.Popen([sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "warn"], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(tmp_path)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex,
                  "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000})
    c.subscribe([dst])
    got: bytes | None = None
    try:
        deadline = time.monotonic() + 120
        while got is None and time.monotonic() < deadline and worker.poll() is None:
            msg = c.poll(1.0)
            if msg is not None and msg.error() is None:
                got = msg.value()
    finally:
        c.close()
        worker.send_signal(signal.SIGTERM)
        try:
            out = worker.communicate(timeout=60)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            worker.kill()
            out = worker.communicate(timeout=30)[0].decode(errors="replace")
    assert got == b"guard-7:1", f"faust produced {got!r}; worker output:\n{out[-3000:]}"
    topics = admin.list_topics(timeout=30).topics
    assert len(topics[f"{app_id}-counts-changelog"].partitions) == 2
    admin.delete_topics([t for t in topics if t.startswith(app_id)], request_timeout=30)


def test_postgres_answers(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT current_database(), version(), current_setting('synchronous_commit')").fetchone()
    assert row is not None and row[1].startswith("PostgreSQL") and row[2] == "on"


def test_pg_schema_fixture_isolates_unqualified_tables(pg_schema: tuple[str, str]) -> None:
    dsn, schema = pg_schema
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE probe (id int)")
        row = conn.execute("SELECT table_schema FROM information_schema.tables WHERE table_name = 'probe'").fetchone()
    assert row == (schema,)


def test_up_twice_is_harmless_and_status_says_running(kafka_bootstrap: str, pg_dsn: str) -> None:
    for _ in range(2):
        out = subprocess.run(["noc", "infra", "up"], capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        assert "kafka already running" in out.stdout and "postgres already answering" in out.stdout
    status = subprocess.run(["noc", "infra", "status"], capture_output=True, text=True, timeout=60).stdout
    assert "kafka: running" in status and "postgres: running" in status


def test_private_broker_lifecycle_recovers_stale_pid_and_sigkill(private: Settings) -> None:
    s, kp = private, paths(private)
    assert kafka_status(s) == "kafka: stopped"
    kp.pid.write_text(f"{_dead_pid()}\n")  # stale pid file: its process is gone
    assert kafka_up(s, log=False) > 0
    first = kafka_pid(s)
    assert first is not None and kafka_status(s).startswith("kafka: running")
    assert kafka_up(s, log=False) == 0.0  # up twice is harmless

    # SIGKILL leaves a stale pid file and the storage .lock behind; `up` must recover both.
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid_alive(first) and time.monotonic() < deadline:
        time.sleep(0.1)  # waiting for the kernel to reap the killed broker, bounded
    assert kp.pid.exists() and kafka_pid(s) is None and (kp.data / ".lock").exists()
    assert kafka_up(s, log=False) > 0
    second = kafka_pid(s)
    assert second not in (None, first)

    assert kafka_down(s) is True
    assert kafka_pid(s) is None and not pid_alive(second or 0) and not port_open(s.kafka_port)
    assert kafka_status(s) == "kafka: stopped"
    assert kafka_down(s) is False


def test_private_postgres_lifecycle_recovers_stale_postmaster_pid(private: Settings) -> None:
    s = private
    data: Path = s.home / "pg" / "data"
    assert postgres_status(s) == "postgres: stopped"
    data.mkdir(parents=True)
    (data / "half-written").write_text("an initdb interrupted before PG_VERSION")
    assert postgres_up(s, log=False) > 0 and answers(s.pg_dsn)
    assert not (data / "half-written").exists()
    assert postgres_up(s, log=False) == 0.0  # up twice is harmless
    real = (data / "postmaster.pid").read_text().splitlines()

    assert postgres_down(s) is True and not answers(s.pg_dsn)
    assert postgres_status(s) == "postgres: stopped"
    # A crash leaves postmaster.pid naming a dead process.
    (data / "postmaster.pid").write_text("\n".join([str(_dead_pid()), *real[1:]]) + "\n")
    assert postgres_up(s, log=False) > 0
    with psycopg.connect(s.pg_dsn, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("noc", "nocstream")

    before = postgres_pid(s)
    postgres_restart(s)
    assert answers(s.pg_dsn) and postgres_pid(s) not in (None, before)
