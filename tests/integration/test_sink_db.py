"""The sink's database side on the real Postgres: migrations, upsert semantics, partitions, tickets."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_sink_records import (
    DAY_MS,
    T0,
    activity,
    baseline,
    escalation,
    finding,
    incident,
    ticket,
    ticket_command,
)

from schemas.serde import encode
from sinks.migrate import migrate, status
from sinks.partitions import PartitionManager, prune
from sinks.routes import Raw, prepare
from sinks.tickets_api import change_ticket, ticket_with_history
from sinks.writer import Writer

pytestmark = pytest.mark.integration
STEMS = {"activity": "activity_signal", "incidents": "correlated_incident", "baselines": "baseline",
         "audit-findings": "audit_finding", "finding-escalations": "finding_escalation",
         "ticket-commands": "ticket_command", "tickets": "ticket"}


def _write(w: Writer, items: list[tuple[str, dict[str, Any]]], first_offset: int = 0) -> Any:
    raws = [Raw(short, f"x.{short}", 0, first_offset + n, b"k", encode(STEMS[short], rec), T0)
            for n, (short, rec) in enumerate(items)]
    return w.write(prepare(raws))


def _one(dsn: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute(sql.encode() if not params else sql, params or None).fetchone()
        return row[0] if row is not None and len(row) == 1 else row


@pytest.fixture
def db(pg_schema: tuple[str, str]) -> str:
    dsn = pg_schema[0]
    assert migrate(dsn) == ["010", "020", "030", "040", "050", "060", "070"]
    return dsn


def test_migrate_is_harmless_to_rerun_and_lands_in_the_dsn_schema(db: str, pg_schema: tuple[str, str]) -> None:
    assert migrate(db) == []
    assert all(applied for _v, _n, applied in status(db))
    assert _one(db, "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'models'",
                pg_schema[1]) == 1
    assert _one(db, "SELECT count(*) FROM schema_migrations") == 7


def test_redelivery_does_not_duplicate_and_partitions_appear_as_data_arrives(db: str) -> None:
    w = Writer(db)
    try:
        batch = [("activity", activity(i, T0 + (i % 3) * DAY_MS)) for i in range(300)]
        _write(w, batch)
        _write(w, batch[:150] + batch[:10])  # redelivered, with duplicates inside the batch
        assert _one(db, "SELECT count(*) FROM activity") == 300
        parts = PartitionManager.list(psycopg.connect(db, autocommit=True, connect_timeout=10), "activity")
        assert parts == ["activity_p20261101", "activity_p20261102", "activity_p20261103", "activity_p20261104"]
        # A far-away day needs a partition nobody created ahead: the writer makes it, nothing is lost.
        _write(w, [("activity", activity(999, T0 + 40 * DAY_MS))])
        assert _one(db, "SELECT count(*) FROM activity WHERE event_id = 'act-999'") == 1
        with psycopg.connect(db, autocommit=True, connect_timeout=10) as conn:
            dropped = prune(conn, datetime(2026, 12, 3, tzinfo=UTC), {"activity": 30})
        assert dropped == ["activity_p20261101", "activity_p20261102"]
        assert _one(db, "SELECT count(*) FROM activity") == 1 + 100  # day 3 (2026-11-03) is kept
    finally:
        w.close()


def test_incidents_keep_highest_revision_baselines_latest_update(db: str) -> None:
    w = Writer(db)
    try:
        _write(w, [("incidents", incident(revision=2, n_evidence=2)), ("incidents", incident(revision=1))])
        _write(w, [("incidents", incident(revision=1))])  # late, lower revision: ignored
        assert _one(db, "SELECT revision, title FROM incidents") == (2, "rev 2")
        _write(w, [("incidents", incident(revision=3, n_evidence=3))])
        assert _one(db, "SELECT revision, status FROM incidents") == (3, "CLOSED")
        assert _one(db, "SELECT count(*) FROM incident_events WHERE incident_id = 'inc-0'") == 3
        _write(w, [("baselines", baseline(updated_at=T0 + 10))])
        _write(w, [("baselines", baseline(updated_at=T0 + 5))])
        assert _one(db, "SELECT updated_at FROM baselines") == datetime.fromtimestamp((T0 + 10) / 1000, UTC)
    finally:
        w.close()


def test_escalation_before_or_after_its_finding(db: str) -> None:
    w = Writer(db)
    try:
        _write(w, [("finding-escalations", escalation(1))])
        _write(w, [("audit-findings", finding(1)), ("audit-findings", finding(2))])
        _write(w, [("finding-escalations", escalation(2))])
        rows = _rows(db, "SELECT event_id, finding_type, escalated_to_ticket, escalation_ticket_id FROM audit_findings "
                         "ORDER BY event_id")
        assert rows == [("f-1", "SLEEPING_ON_DUTY", True, "tkt-1"), ("f-2", "SLEEPING_ON_DUTY", True, "tkt-2")]
    finally:
        w.close()


def _rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        return conn.execute(sql.encode()).fetchall()


def test_ticket_commands_create_one_numbered_ticket_and_upstream_workflows_apply(db: str) -> None:
    w = Writer(db)
    try:
        res = _write(w, [("ticket-commands", ticket_command(1)), ("ticket-commands", ticket_command(2))])
        again = _write(w, [("ticket-commands", ticket_command(1))])  # redelivered command
        assert _one(db, "SELECT count(*) FROM tickets") == 2
        assert _rows(db, "SELECT ticket_no, status, source FROM tickets ORDER BY ticket_no") == [
            ("NOC-2026-000001", "NEW", "SYSTEM_GENERATED"), ("NOC-2026-000002", "NEW", "SYSTEM_GENERATED")]
        assert again.feed == [res.feed[0]]  # the same feed event again (same id, same bytes), not a new one
        flow = [("tickets", ticket("up-1", f"e{i}", s, T0 + i, r)) for i, (s, r) in enumerate(
            [("NEW", None), ("OPEN", None), ("IN_PROGRESS", None), ("RESOLVED", "DUPLICATE"), ("CLOSED", "DUPLICATE")])]
        out = _write(w, [*flow, ("tickets", ticket("up-1", "e9", "OPEN", T0 + 9))])  # reopening a CLOSED ticket
        assert [e["type"] for e in out.feed] == ["ticket_updated"] * 5
        assert [d["reason"] for d in out.dead] == ["INVALID_TRANSITION"]
        assert "CLOSED -> OPEN is not allowed" in out.dead[0]["detail"]
        t = ticket_with_history(db, 1, "up-1")
        assert t is not None and t["status"] == "CLOSED" and t["resolution"] == "DUPLICATE" and t["version"] == 5
        assert [h["to_status"] for h in t["history"]] == ["NEW", "OPEN", "IN_PROGRESS", "RESOLVED", "CLOSED"]
        assert _one(db, "SELECT count(*) FROM dead_letters WHERE reason = 'INVALID_TRANSITION'") == 1
    finally:
        w.close()


def test_gateway_change_function_validates_writes_history_and_emits(db: str) -> None:
    w = Writer(db)
    try:
        _write(w, [("ticket-commands", ticket_command(7))])
    finally:
        w.close()
    sent: list[dict[str, Any]] = []
    ok = change_ticket(db, 1, "tkt-7", "IN_PROGRESS", actor="u-1", publish=sent.append, at_ms=T0 + 60_000)
    assert ok.ok and ok.ticket is not None and ok.ticket["status"] == "IN_PROGRESS" and ok.ticket["version"] == 2
    assert sent == [ok.event] and sent[0]["type"] == "ticket_updated" and sent[0]["timestamp"] == T0 + 60_000
    refused = change_ticket(db, 1, "tkt-7", "RESOLVED", actor="u-1", publish=sent.append)
    assert not refused.ok and refused.reason == "RESOLVED needs a resolution" and len(sent) == 1
    assert not change_ticket(db, 2, "tkt-7", "OPEN", actor="u-9").ok  # another tenant's ticket
    done = change_ticket(db, 1, "tkt-7", "RESOLVED", actor="u-1", resolution="FRAUD_CONFIRMED", note="confirmed")
    assert done.ok and done.ticket is not None and done.ticket["resolved_at"] is not None
    hist = ticket_with_history(db, 1, "tkt-7")
    assert hist is not None and [h["origin"] for h in hist["history"]] == ["COMMAND", "API", "API"]
    assert hist["history"][2]["note"] == "confirmed"


def test_a_record_postgres_rejects_is_dead_lettered_and_the_rest_stored(db: str) -> None:
    from test_sink_records import noc_event

    from sinks.writer import write_batch

    # JSON accepts \\u0000 but JSONB cannot store it: Postgres refuses that one record only.
    recs = [noc_event(1), noc_event(2, payload='{"a": "\\u0000"}'), noc_event(3)]
    raws = [Raw("events", "x.events", 1, n, b"k", encode("noc_event", r), T0) for n, r in enumerate(recs)]
    w = Writer(db)
    try:
        res = write_batch(w, raws, prepare(raws))
    finally:
        w.close()
    assert [d["reason"] for d in res.dead] == ["DB_REJECTED"] and res.dead[0]["offset"] == 1
    assert _rows(db, "SELECT event_id FROM event_log ORDER BY event_id") == [("evt-1",), ("evt-3",)]
    assert _one(db, "SELECT count(*) FROM dead_letters WHERE reason = 'DB_REJECTED' AND value IS NOT NULL") == 1


def test_dropped_partition_is_recreated_for_a_late_record(db: str) -> None:
    w = Writer(db)
    try:
        _write(w, [("activity", activity(1))])
        with psycopg.connect(db, autocommit=True, connect_timeout=10) as conn:
            conn.execute(b"DROP TABLE activity_p20261101")
        _write(w, [("activity", activity(2))], first_offset=5)  # the writer's cache still lists the partition
        assert _one(db, "SELECT count(*) FROM activity") == 1
    finally:
        w.close()


def test_db_and_ticket_commands(pg_schema: tuple[str, str], kafka_bootstrap: str, namespace: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from infra.cli import main

    dsn = pg_schema[0]
    assert main(["db", "migrate", "--dsn", dsn]) == 0
    assert "applied 060_models.sql" in capsys.readouterr().out
    assert main(["db", "migrate", "--dsn", dsn]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["db", "status", "--dsn", dsn]) == 0
    assert capsys.readouterr().out.count("applied ") == 7
    assert main(["db", "prune", "--dsn", dsn, "--now", "2030-01-01T00:00:00", "--keep", "activity=1"]) == 0
    assert "dropped 0 partitions" in capsys.readouterr().out
    w = Writer(dsn)
    try:
        _write(w, [("ticket-commands", ticket_command(3))])
    finally:
        w.close()
    base = ["ticket", "set", "--dsn", dsn, "--tenant", "1", "--bootstrap", kafka_bootstrap, "--namespace", namespace]
    assert main([*base, "tkt-3", "OPEN", "--actor", "ops"]) == 0
    assert "NOC-2026-000001 is now OPEN (version 2)" in capsys.readouterr().out
    assert main([*base, "tkt-3", "CLOSED"]) == 1
    assert "refused: OPEN -> CLOSED is not allowed" in capsys.readouterr().out
