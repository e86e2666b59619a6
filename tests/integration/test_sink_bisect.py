"""A batch with records Postgres rejects, on the real database: bisection isolates exactly those records,
stores every other one in order, costs about a clean batch's time again; a dead letter that cannot be
written is retried, then stops the process with a clear message and nothing committed."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_sink_records import T0, activity, produce_sites, ticket

from infra.config import REPO_ROOT
from schemas.serde import encode
from schemas.topics import PERSON_PARTITIONS, topic
from sinks.migrate import migrate
from sinks.routes import Raw, prepare
from sinks.writer import DEAD_LETTER_ATTEMPTS, SinkFatal, Writer, write_batch

pytestmark = pytest.mark.integration
N = 5000


def _rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        return conn.execute(sql.encode()).fetchall()


def _batch(first: int, bad: set[int] = frozenset()) -> list[Raw]:  # type: ignore[assignment]
    """``N`` activity records (ids from ``first``); those at positions in ``bad`` carry a NUL in device_id,
    which Postgres text cannot hold (no contract check here: Postgres itself must refuse them)."""
    out = []
    for i in range(N):
        rec = activity(first + i, T0 + i) | ({"device_id": "d\x00"} if i in bad else {})
        out.append(Raw("activity", "x.activity", 0, first + i, b"k", encode("activity_signal", rec), T0))
    return out


@pytest.fixture
def db(pg_schema: tuple[str, str]) -> str:
    migrate(pg_schema[0])
    return pg_schema[0]


def test_one_rejected_record_is_bisected_out_and_costs_under_twice_a_clean_batch(db: str) -> None:
    w = Writer(db)
    try:
        write_batch(w, _batch(10 * N), prepare(_batch(10 * N)))  # warm: partitions, catalogue, connection
        clean_s, bad_s = [], []
        for k in range(3):
            raws = _batch(k * 2 * N)
            prep = prepare(raws)
            t = time.perf_counter()
            res = write_batch(w, raws, prep)
            clean_s.append(time.perf_counter() - t)
            assert not res.dead and res.transactions == 1
            raws = _batch((k * 2 + 1) * N, bad={3217})
            prep = prepare(raws)
            t = time.perf_counter()
            res = write_batch(w, raws, prep)
            bad_s.append(time.perf_counter() - t)
            assert [(d["reason"], d["offset"]) for d in res.dead] == [("DB_REJECTED", (k * 2 + 1) * N + 3217)]
            assert res.dead[0]["value"] == raws[3217].value and "CharacterNotInRepertoire" in res.dead[0]["detail"]
            assert res.rows == {"activity": N - 1, "dead_letters": 1}
            assert res.transactions <= 2 * 13 + 2  # log2(5000) < 13 levels
    finally:
        w.close()
    clean, bad = statistics.median(clean_s), statistics.median(bad_s)
    print(f"\nclean batch of {N}: {clean * 1000:.0f} ms ({N / clean:,.0f} rows/s); with one rejected record: "
          f"{bad * 1000:.0f} ms ({(N - 1) / bad:,.0f} rows/s); ratio {bad / clean:.2f}")
    assert bad / clean < 2.5  # ~1.5-2 measured; the margin is for a machine shared with other jobs
    stored = {r[0] for r in _rows(db, "SELECT event_id FROM activity")}
    want = {f"act-{i}" for k in (*range(6), 10) for i in range(k * N, (k + 1) * N)} - \
        {f"act-{(k * 2 + 1) * N + 3217}" for k in range(3)}
    assert stored == want


def test_several_rejected_records_anywhere_and_ticket_order_across_the_split(db: str) -> None:
    raws = _batch(0, bad={0, 2500, N - 1})
    t1 = [ticket("tk-1", "e-1", "NEW"), ticket("tk-1", "e-2", "OPEN", T0 + 1),
          ticket("tk-1", "e-3", "IN_PROGRESS", T0 + 2)]
    # the ticket's changes straddle both halves of every split around the rejected record at 2500
    raws[1000] = Raw("tickets", "x.tickets", 1, 0, b"k", encode("ticket", t1[0]), T0)
    raws[2499] = Raw("tickets", "x.tickets", 1, 1, b"k", encode("ticket", t1[1]), T0)
    raws[4000] = Raw("tickets", "x.tickets", 1, 2, b"k", encode("ticket", t1[2]), T0)
    w = Writer(db)
    try:
        res = write_batch(w, raws, prepare(raws))
    finally:
        w.close()
    assert sorted(d["offset"] for d in res.dead) == [0, 2500, N - 1]
    assert len(_rows(db, "SELECT 1 FROM activity")) == N - 6
    assert _rows(db, "SELECT version, to_status FROM ticket_history ORDER BY version") == [
        (1, "NEW"), (2, "OPEN"), (3, "IN_PROGRESS")]
    assert len(res.feed) == 3


def _unwritable_dead_letters(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(b"ALTER TABLE dead_letters ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")


def test_a_dead_letter_that_cannot_be_written_is_retried_with_backoff_then_fatal(db: str) -> None:
    _unwritable_dead_letters(db)
    raws = _batch(0, bad={7})[:20]
    slept: list[float] = []
    w = Writer(db)
    try:
        with pytest.raises(SinkFatal, match=r"cannot write the dead letter of x\.activity \[0\] @ 7 .* after 5 "):
            write_batch(w, raws, prepare(raws), sleep=slept.append)
    finally:
        w.close()
    assert len(slept) == DEAD_LETTER_ATTEMPTS - 1 and slept == sorted(slept) and slept[0] < slept[-1]
    assert not _rows(db, "SELECT 1 FROM dead_letters")


def test_the_sink_process_stops_with_a_clear_message_and_commits_nothing(
        db: str, kafka_bootstrap: str, namespace: str, tmp_path: Path) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    produce_sites(kafka_bootstrap, namespace, [(1, "s1")])
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    name = topic("activity", namespace)
    for i in range(10):
        p.produce(name, key=b"1:p1", value=encode("activity_signal", activity(i)))
    p.produce(name, key=b"1:p1", value=b"\xc3\x01not avro")
    assert p.flush(30) == 0
    _unwritable_dead_letters(db)
    cmd = [sys.executable, "-m", "infra.cli", "sink", "--dsn", db, "--bootstrap", kafka_bootstrap, "--namespace",
           namespace, "--topics", "activity", "--group", f"sink-{namespace}", "--until-caught-up", "--no-publish"]
    run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, run.stderr[-2000:]
    assert "stopping: cannot write the dead letter of" in run.stderr
    assert "Traceback" not in run.stderr
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"sink-{namespace}"})
    try:
        committed = c.committed([TopicPartition(name, q) for q in range(PERSON_PARTITIONS)], timeout=10)
    finally:
        c.close()
    assert all(tp.offset < 0 for tp in committed)  # nothing committed: the records come back

    with psycopg.connect(db, autocommit=True, connect_timeout=10) as conn:
        conn.execute(b"ALTER TABLE dead_letters DROP CONSTRAINT refuse_all")
    run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(_rows(db, "SELECT 1 FROM activity")) == 10
    assert _rows(db, "SELECT reason, value FROM dead_letters") == [("UNKNOWN_SCHEMA", b"\xc3\x01not avro")]


def test_a_refusal_no_record_explains_is_retried_then_stops_the_worker_with_nothing_committed(
        db: str, kafka_bootstrap: str, namespace: str) -> None:
    from confluent_kafka import Producer

    from sinks.batching import Backoff, BatchPolicy
    from sinks.worker import REFUSED_ATTEMPTS, SinkConfig, SinkWorker

    produce_sites(kafka_bootstrap, namespace, [(1, "s1")])
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(5):
        p.produce(topic("activity", namespace), key=b"1:p1", value=encode("activity_signal", activity(i)))
    assert p.flush(30) == 0
    with psycopg.connect(db, autocommit=True, connect_timeout=10) as conn:  # every write refused, whatever the row
        conn.execute(b"CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                     b"$$ BEGIN RAISE EXCEPTION 'writes to % are suspended', TG_TABLE_NAME; END $$")
        conn.execute(b"CREATE TRIGGER refuse BEFORE INSERT ON activity FOR EACH ROW EXECUTE FUNCTION refuse()")
    w = SinkWorker(SinkConfig(dsn=db, bootstrap=kafka_bootstrap, namespace=namespace, topics=("activity",),
                              group=f"sink-{namespace}", policy=BatchPolicy(100, 50), publish=False,
                              until_caught_up=True, backoff=Backoff(0.05, 2.0, 0.2)))
    with pytest.raises(SinkFatal, match=rf"refused a batch of 5 records {REFUSED_ATTEMPTS} times .*RaiseException: "
                                        r"writes to activity_p20261101 are suspended; stopping without committing it"):
        w.run()
    assert w.stats.batches == 0 and not _rows(db, "SELECT 1 FROM dead_letters")  # nothing dead-lettered
