"""Differential test on the real broker and database: hostile records injected mid-stream into a running sink.

The same clean records go through two sinks, each with its own topic namespace and Postgres schema; the
second also gets every record of ``test_sink_records.hostile()`` (times at +-2^63-1 ms, years 9999 and 0001,
NaN and infinities, 1 MB strings, NUL bytes, unknown tenants and sites, rows Postgres refuses) in the middle
of its stream, after it has stored the first half. The sink keeps going; every table of the second schema
equals the first one's, row for row; and each hostile record is a dead letter with its reason and original
bytes, in Postgres and (size permitting) on the dead-letters topic.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_sink_records import (
    SAMPLES,
    T0,
    activity,
    alert,
    anomaly,
    attendance,
    baseline,
    dead_letter,
    escalation,
    finding,
    fraud_score,
    hostile,
    incident,
    label,
    noc_event,
    produce_sites,
    ticket,
    ticket_command,
    window,
)

from schemas.serde import DecodeError, decode, encode
from schemas.topics import topic
from sinks.batching import BatchPolicy
from sinks.migrate import migrate
from sinks.routes import SUNK_TOPICS
from sinks.worker import SinkConfig, SinkWorker

pytestmark = pytest.mark.integration
Item = tuple[str, bytes, bytes]  # (topic short, key, value)
VOLATILE = {"ingested_at", "recorded_at", "broadcast_at", "broadcast_latency_ms"}  # wall-clock columns
TABLES = ("attendance", "activity", "alerts", "audit_findings", "labels", "signal_windows", "baselines",
          "anomalies", "incidents", "incident_events", "fraud_scores", "event_log", "tickets", "ticket_history",
          "ticket_counters")
SITES = [(1, "s1"), (2, "s2")]


def _t2(rec: dict[str, Any], **more: Any) -> dict[str, Any]:
    return rec | {"tenant_id": 2, "site_id": "s2"} | more


def clean_records() -> list[Item]:
    """A bit of every sunk topic, for tenants 1 and 2, in a fixed order."""
    # Ticket numbers follow the order tickets are created in, and the sink's consumer interleaves topics as
    # they come: the commands come first (in the first half of the stream), the upstream tickets last.
    recs: list[tuple[str, dict[str, Any]]] = [("ticket-commands", ticket_command(i)) for i in range(6)]
    recs.append(("ticket-commands", _t2(ticket_command(0))))
    for i in range(120):
        recs.append(("activity", activity(i, T0 + i * 1000) if i % 3 else _t2(activity(i, T0 + i * 1000))))
    for i in range(30):
        recs.append(("attendance", attendance(i, T0 + i * 60_000) if i % 2 else _t2(attendance(i, T0 + i))))
    for i in range(6):
        recs += [("alerts", alert(i)), ("audit-findings", finding(i)), ("finding-escalations", escalation(i)),
                 ("labels", label(i)), ("signal-windows", window(i)), ("anomalies", anomaly(i)),
                 ("fraud-scores", fraud_score(i, T0 + i)), ("events", noc_event(i)),
                 ("baselines", baseline(i % 3, T0 + i)), ("incidents", incident(i % 3, revision=1 + i // 3))]
    recs += [("alerts", _t2(alert(50))), ("signal-windows", _t2(window(50))), ("dead-letters", dead_letter(1)),
             ("tickets", ticket("tk-1", "e-1", "NEW")), ("tickets", ticket("tk-1", "e-2", "OPEN", T0 + 5)),
             ("tickets", ticket("tk-1", "e-3", "RESOLVED", T0 + 9, "FALSE_POSITIVE")),
             ("tickets", ticket("tk-1", "e-4", "NEW"))]  # refused: tk-1 exists (INVALID_TRANSITION, both runs)
    return [(short, f"{rec.get('tenant_id', 0)}:p".encode(), encode(SAMPLES[short][0], rec)) for short, rec in recs]


def _produce(bootstrap: str, ns: str, items: list[Item]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 2_000_000})
    for short, key, value in items:
        p.produce(topic(short, ns), key=key, value=value)
    assert p.flush(30) == 0


def _all_committed(bootstrap: str, ns: str, group: str) -> bool:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        md = c.list_topics(timeout=10).topics
        tps = [TopicPartition(topic(s, ns), p) for s in SUNK_TOPICS for p in md[topic(s, ns)].partitions]
        for tp in c.committed(tps, timeout=10):
            end = c.get_watermark_offsets(tp, timeout=10)[1]
            if end > 0 and tp.offset != end:
                return False
        return True
    finally:
        c.close()


def _wait(what: str, cond: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)  # polling a condition under a deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_sink(bootstrap: str, ns: str, dsn: str, parts: list[list[Item]]) -> SinkWorker:
    """A sink running in a thread while ``parts`` are produced one after the other, each once the sink has
    committed everything before it (the dead letters and feed events it publishes included)."""
    migrate(dsn)
    produce_sites(bootstrap, ns, SITES)
    group = f"sink-{ns}"
    w = SinkWorker(SinkConfig(dsn=dsn, bootstrap=bootstrap, namespace=ns, group=group, policy=BatchPolicy(100, 50)))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            w.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread, which fails with it
            errors.append(exc)

    th = threading.Thread(target=run, name="sink-under-test")
    th.start()
    try:
        for part in parts:
            _produce(bootstrap, ns, part)
            _wait(f"the sink to commit every record of {ns}", lambda: errors or _all_committed(bootstrap, ns, group))
            assert not errors, errors
    finally:
        w.stop()
        th.join(60)
    assert not th.is_alive() and not errors, errors
    return w


def snapshot(dsn: str) -> dict[str, list[str]]:
    """Every row of every table (wall-clock columns left out), as sorted reprs (a NaN equals itself)."""
    out: dict[str, list[str]] = {}
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        for table in TABLES:
            cols = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s ORDER BY ordinal_position", (table,)).fetchall() if r[0] not in VOLATILE]
            rows = conn.execute(f"SELECT {', '.join(_q(c) for c in cols)} FROM {table}".encode()).fetchall()
            out[table] = sorted(repr(r) for r in rows)
        out["partitions"] = sorted(str(r[0]) for r in conn.execute(
            b"SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            b"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()").fetchall())
        out["foreign dead letters"] = sorted(repr(r) for r in conn.execute(
            b"SELECT dead_letter_id, source_topic, reason, detail, key, value FROM dead_letters "
            b"WHERE component <> 'sink'").fetchall())
    return out


def _q(col: str) -> str:
    return f'"{col}"' if col in ("partition", "offset") else col


def _sink_dead_letters(dsn: str) -> list[tuple[str, str, bytes, str]]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        return [(str(a), str(b), bytes(c), str(d)) for a, b, c, d in conn.execute(
            b"SELECT source_topic, reason, value, detail FROM dead_letters WHERE component = 'sink'").fetchall()]


@pytest.fixture
def second(kafka_bootstrap: str, pg_dsn: str) -> Iterator[tuple[str, str]]:
    """A second (namespace, dsn) pair, as the namespace and pg_schema fixtures make them."""
    from infra.topics_admin import apply_topics, delete_namespace

    ns, schema = "t" + uuid.uuid4().hex[:10], "t_" + uuid.uuid4().hex[:10]
    apply_topics(kafka_bootstrap, ns)
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    sep = "&" if "?" in pg_dsn else "?"
    try:
        yield ns, f"{pg_dsn}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())
        delete_namespace(kafka_bootstrap, ns)


def test_hostile_records_mid_stream_change_nothing_else_and_each_is_a_dead_letter(
        kafka_bootstrap: str, namespace: str, pg_schema: tuple[str, str], second: tuple[str, str]) -> None:
    clean = clean_records()
    half = len(clean) // 2
    bad = hostile()
    bad_items = [(short, b"1:p", value) for _n, short, value, _r in bad]
    mixed = [x for pair in zip(clean[half:], bad_items, strict=False) for x in pair]
    mixed += clean[half + len(bad_items):]

    run_sink(kafka_bootstrap, namespace, pg_schema[0], [clean[:half], clean[half:]])
    ns2, dsn2 = second
    w = run_sink(kafka_bootstrap, ns2, dsn2, [clean[:half], mixed])

    want, got = snapshot(pg_schema[0]), snapshot(dsn2)
    for table in want:
        assert got[table] == want[table], table
    assert len(want["activity"]) == 120 and len(want["tickets"]) == 8 and want["partitions"]

    # Exactly one sink dead letter per hostile record, with its reason and original bytes; the clean run's
    # only sink dead letter is the refused ticket change both runs share.
    shared = [(r, v) for _t, r, v, _d in _sink_dead_letters(pg_schema[0])]
    assert shared == [("INVALID_TRANSITION", clean[-1][2])]
    got_dead = Counter((r, v) for _t, r, v, _d in _sink_dead_letters(dsn2)) - Counter(shared)
    assert got_dead == Counter((reason, value) for _n, _s, value, reason in bad)
    by_value = {value: (name, short) for name, short, value, _r in bad}
    for source, reason, value, detail in _sink_dead_letters(dsn2):
        if value in by_value:
            assert source == topic(by_value[value][1], ns2) and detail, (by_value[value][0], reason)
    assert w.stats.dead >= len(bad)

    # The dead-letters topic has them too (stored again, same ids: no second row); a 1 MB record's copy there
    # goes without its bytes, which only Postgres keeps.
    published = []
    for value in _read_to_end(kafka_bootstrap, topic("dead-letters", ns2)):
        try:
            published.append(decode(value, expected="dead_letter"))
        except DecodeError:
            continue  # the hostile dead letter itself
    sink_published = [d for d in published if d["component"] == "sink"]
    want_reasons = Counter(r for _n, s, _v, r in bad if s != "dead-letters") + Counter(["INVALID_TRANSITION"])
    assert Counter(d["reason"] for d in sink_published) == want_reasons
    big = [d for d in sink_published if d["value"] is None]
    assert len(big) == 3 and all("omitted here: in Postgres dead_letters" in d["detail"] for d in big)
    assert {d["value"] for d in sink_published if d["value"] is not None} <= {v for _n, _s, v, _r in bad} | {
        clean[-1][2]}


def _read_to_end(bootstrap: str, name: str) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{name}", "enable.auto.commit": False})
    try:
        parts = c.list_topics(name, timeout=10).topics[name].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(name, p, 0) for p in parts])
        left = {p for p, end in ends.items() if end > 0}
        out: list[bytes] = []
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            for m in c.consume(500, timeout=0.5):
                if m.error() is None:
                    out.append(m.value())
                    if m.offset() + 1 >= ends[m.partition()]:
                        left.discard(m.partition())
        assert not left, f"{name} not read to its end"
        return out
    finally:
        c.close()
