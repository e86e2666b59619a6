"""Tenant-safe writes on the real broker and database: a tenant reusing another tenant's ids, in every sunk
topic and for tickets and ticket changes, gets rows of its own and leaves the other tenant's untouched; the
migration that puts the tenant into the keys moves an existing database forward with its rows."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_sink_records import (
    SAMPLES,
    T0,
    activity,
    alert,
    anomaly,
    attendance,
    baseline,
    escalation,
    finding,
    fraud_score,
    incident,
    label,
    noc_event,
    produce_sites,
    ticket,
    ticket_command,
    window,
)

from schemas.serde import encode
from schemas.topics import topic
from sinks.batching import BatchPolicy
from sinks.migrate import MIGRATIONS_DIR, migrate
from sinks.routes import Raw, prepare
from sinks.tickets_api import change_ticket, ticket_with_history
from sinks.worker import SinkConfig, SinkWorker
from sinks.writer import Writer, write_batch

pytestmark = pytest.mark.integration
# table -> its id columns (without the tenant)
TABLES = {"attendance": "event_id", "activity": "event_id", "alerts": "event_id", "audit_findings": "event_id",
          "labels": "label_id", "signal_windows": "window_id", "baselines": "baseline_id", "anomalies": "anomaly_id",
          "incidents": "incident_id", "incident_events": "incident_id, event_id", "fraud_scores": "score_id",
          "event_log": "event_id", "tickets": "ticket_id", "ticket_history": "change_id"}
TEXT = {"attendance": "device_id", "activity": "device_id", "alerts": "message", "audit_findings": "evidence_summary",
        "labels": "scenario", "signal_windows": "site_id", "baselines": "site_id", "anomalies": "metric",
        "incidents": "title", "incident_events": "summary", "fraud_scores": "model_version", "event_log": "site_id",
        "tickets": "title", "ticket_history": "actor"}


def records(tenant: int) -> list[tuple[str, dict[str, Any]]]:
    """One of everything with the same producer-chosen ids for every tenant; tenant 2's text and times differ
    (later times and higher revisions: whatever would win a conflict if the tenants shared a key)."""
    if tenant == 1:
        return [(short, rec) for short, (_stem, rec) in SAMPLES.items() if short != "dead-letters"] + [
            ("tickets", ticket("tk-1", "e-2", "OPEN", T0 + 5))]
    s2 = {"tenant_id": 2, "site_id": "s2"}
    return [
        ("attendance", attendance() | s2 | {"device_id": "T2"}),
        ("activity", activity() | s2 | {"device_id": "T2"}),
        ("alerts", alert() | s2 | {"message": "T2"}),
        ("audit-findings", finding() | s2 | {"evidence_summary": "T2", "received_at": T0 + 9000}),
        ("finding-escalations", escalation() | s2 | {"escalation_ticket_id": "T2", "escalated_at": T0 + 9000}),
        ("labels", label() | s2 | {"scenario": "T2"}),
        ("signal-windows", window() | s2),
        ("baselines", baseline(updated_at=T0 + 9000) | s2),
        ("anomalies", anomaly() | s2 | {"metric": "T2"}),
        ("incidents", incident(revision=5) | s2 | {"title": "T2", "evidence": [
            {"event_id": "al-0", "kind": "NOC_ALERT", "severity": "HIGH", "occurred_at": T0, "summary": "T2"}]}),
        ("fraud-scores", fraud_score() | s2 | {"model_version": "T2"}),
        ("events", noc_event() | s2),
        ("ticket-commands", ticket_command() | s2 | {"title": "T2"}),
        ("tickets", ticket("tk-1", "e-1", "NEW") | s2 | {"title": "T2", "actor": "T2"}),
        ("tickets", ticket("tk-1", "e-2", "OPEN", T0 + 5) | s2 | {"title": "T2", "actor": "T2"}),
    ]


def _sink(bootstrap: str, ns: str, dsn: str, recs: list[tuple[str, dict[str, Any]]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for short, rec in recs:
        p.produce(topic(short, ns), key=f"{rec['tenant_id']}:p1".encode(), value=encode(SAMPLES[short][0], rec))
    assert p.flush(30) == 0
    SinkWorker(SinkConfig(dsn=dsn, bootstrap=bootstrap, namespace=ns, group=f"sink-{ns}",
                          policy=BatchPolicy(500, 100), until_caught_up=True)).run()


def _tenant_rows(dsn: str, tenant: int) -> dict[str, list[str]]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        out = {}
        for table, ids in TABLES.items():
            cols = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s AND column_name NOT IN ('ingested_at', 'recorded_at') ORDER BY ordinal_position",
                (table,)).fetchall()]
            rows = conn.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE tenant_id = %s ORDER BY {ids}".encode(),
                                (tenant,)).fetchall()
            out[table] = [repr(r) for r in rows]
    return out


def _one(dsn: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def test_a_tenant_reusing_every_id_of_another_gets_its_own_rows_and_changes_none_of_the_others(
        kafka_bootstrap: str, namespace: str, pg_schema: tuple[str, str]) -> None:
    dsn = pg_schema[0]
    migrate(dsn)
    produce_sites(kafka_bootstrap, namespace, [(1, "s1"), (2, "s2")])
    _sink(kafka_bootstrap, namespace, dsn, records(1))
    before = _tenant_rows(dsn, 1)
    assert all(before[t] for t in TABLES), [t for t in TABLES if not before[t]]

    _sink(kafka_bootstrap, namespace, dsn, records(2))
    assert _tenant_rows(dsn, 1) == before  # tenant 1 untouched: no update, no overwrite
    after = _tenant_rows(dsn, 2)
    for table, ids in TABLES.items():
        # tenant 2 has the same ids, stored separately (not suppressed), with its own text; the ticket_updated
        # events the sink makes carry the tenant in their ids, so those differ
        own = " AND type <> 'ticket_updated'" if table == "event_log" else ""
        assert _one(dsn, f"SELECT {ids} FROM {table} WHERE tenant_id = 2{own} ORDER BY {ids}") == \
            _one(dsn, f"SELECT {ids} FROM {table} WHERE tenant_id = 1{own} ORDER BY {ids}"), table
        if table not in ("signal_windows", "baselines", "event_log"):
            assert {r[0] for r in _one(dsn, f"SELECT {TEXT[table]} FROM {table} WHERE tenant_id = 2")} <= \
                {"T2", "nocstream"}, table
        else:
            assert {r[0] for r in _one(dsn, f"SELECT {TEXT[table]} FROM {table} WHERE tenant_id = 2")} == {"s2"}
        assert len(after[table]) == len(before[table]), table
    updates = [{r[0] for r in _one(dsn, "SELECT event_id FROM event_log WHERE type = 'ticket_updated' "
                                        "AND tenant_id = %s", t)} for t in (1, 2)]
    assert updates[0] and len(updates[0]) == len(updates[1]) and not updates[0] & updates[1]
    assert _one(dsn, "SELECT count(*) FROM dead_letters") == [(0,)]
    # tenant 2 numbers its own tickets from 1 (in the order the sink meets the two topics' records)
    got = _one(dsn, "SELECT ticket_id, ticket_no, version FROM tickets WHERE tenant_id = 2 ORDER BY ticket_id")
    assert [(t, v) for t, _n, v in got] == [("tk-1", 2), ("tkt-0", 1)]
    assert sorted(n for _t, n, _v in got) == ["NOC-2026-000001", "NOC-2026-000002"]
    assert _one(dsn, "SELECT escalation_ticket_id FROM audit_findings ORDER BY tenant_id") == [("tkt-0",), ("T2",)]

    # A ticket change through the gateway's function touches its own tenant's ticket only.
    assert change_ticket(dsn, 2, "tk-1", "IN_PROGRESS", actor="u2").ok
    t1, t2 = ticket_with_history(dsn, 1, "tk-1"), ticket_with_history(dsn, 2, "tk-1")
    assert t1 is not None and t2 is not None
    assert (t1["status"], len(t1["history"]), t1["title"]) == ("OPEN", 2, "Broken gate")
    assert (t2["status"], len(t2["history"]), t2["title"]) == ("IN_PROGRESS", 3, "T2")
    assert _tenant_rows(dsn, 1)["tickets"] == before["tickets"]


def _insert_old_rows(dsn: str) -> None:
    """Rows as the sink wrote them before tenant keys: tenant 1's attendance, alert, incident, ticket."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(b"CREATE TABLE attendance_p20261101 PARTITION OF attendance "
                     b"FOR VALUES FROM ('2026-11-01T00:00:00+00:00') TO ('2026-11-02T00:00:00+00:00')")
        a = attendance()
        conn.execute("INSERT INTO attendance (event_id, tenant_id, site_id, person_id, occurred_at, received_at, "
                     "event_type, lat, lon, accuracy_m, device_id, is_mock_location) VALUES (%s, 1, 's1', 'p0', "
                     "to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), 'CHECK_IN', 52.1, 4.3, 8, 'd1', false)",
                     (a["event_id"], a["occurred_at"], a["received_at"]))
        conn.execute(b"INSERT INTO alerts (event_id, tenant_id, site_id, occurred_at, received_at, alert_type, "
                     b"severity, message, source) VALUES ('al-0', 1, 's1', now(), now(), 'PANIC', 'HIGH', 'old', 'x')")
        conn.execute(b"INSERT INTO tickets (ticket_id, tenant_id, ticket_no, category, source, status, priority, "
                     b"title, description, created_at, updated_at, version) VALUES ('tk-1', 1, 'NOC-2026-000001', "
                     b"'OTHER', 'USER', 'NEW', 'LOW', 'old', 'd', now(), now(), 1)")
        conn.execute(b"INSERT INTO ticket_history (change_id, ticket_id, tenant_id, version, to_status, origin, "
                     b"occurred_at) VALUES ('e-1', 'tk-1', 1, 1, 'NEW', 'UPSTREAM', now())")
        conn.execute(b"INSERT INTO ticket_counters VALUES (1, 2026, 1)")


def test_the_tenant_key_migration_moves_an_existing_database_forward(pg_schema: tuple[str, str],
                                                                     tmp_path: Path) -> None:
    dsn = pg_schema[0]
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if f.name < "070":
            shutil.copy(f, tmp_path / f.name)
    assert migrate(dsn, tmp_path) == ["010", "020", "030", "040", "050", "060"]
    _insert_old_rows(dsn)
    assert migrate(dsn) == ["070"]
    assert _one(dsn, "SELECT count(*) FROM attendance") == [(1,)]
    assert _one(dsn, "SELECT message FROM alerts") == [("old",)]

    w = Writer(dsn)
    try:
        items = [("attendance", "attendance_event", attendance()),  # redelivered: no second row
                 ("attendance", "attendance_event", attendance() | {"tenant_id": 2, "device_id": "T2"}),
                 ("alerts", "noc_alert", alert() | {"tenant_id": 2, "message": "T2"}),
                 ("tickets", "ticket", ticket("tk-1", "e-1", "NEW") | {"tenant_id": 2, "title": "T2"}),
                 ("tickets", "ticket", ticket("tk-1", "e-2", "OPEN", T0 + 5))]
        raws = [Raw(short, f"x.{short}", 0, n, b"k", encode(stem, rec), T0) for n, (short, stem, rec) in
                enumerate(items)]
        res = write_batch(w, raws, prepare(raws))
    finally:
        w.close()
    assert not res.dead
    assert _one(dsn, "SELECT tenant_id, device_id FROM attendance ORDER BY tenant_id") == [(1, "d1"), (2, "T2")]
    assert _one(dsn, "SELECT tenant_id, message FROM alerts ORDER BY tenant_id") == [(1, "old"), (2, "T2")]
    assert _one(dsn, "SELECT tenant_id, ticket_no, status, title FROM tickets ORDER BY tenant_id") == [
        (1, "NOC-2026-000001", "OPEN", "old"), (2, "NOC-2026-000001", "NEW", "T2")]
    assert _one(dsn, "SELECT tenant_id, change_id, version FROM ticket_history ORDER BY tenant_id, version") == [
        (1, "e-1", 1), (1, "e-2", 2), (2, "e-1", 1)]
    with pytest.raises(psycopg.errors.ForeignKeyViolation), psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute(b"INSERT INTO ticket_history (change_id, ticket_id, tenant_id, version, to_status, origin, "
                     b"occurred_at) VALUES ('e-9', 'tk-1', 3, 1, 'NEW', 'UPSTREAM', now())")
