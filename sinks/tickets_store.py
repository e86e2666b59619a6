"""Ticket changes in Postgres: creation from commands and upstream records, transitions, history, feed events.

Tickets and changes are keyed per tenant: ``(ticket_id, tenant_id)`` and ``(change_id, tenant_id)``, so
two tenants using the same ids get separate tickets and histories. Every change has a stable ``change_id``
(the command id, the upstream ticket record's event id, or the API's id); a change already in the tenant's
``ticket_history`` is not applied again but its feed event is returned
again (same event id), so a redelivered record re-emits rather than loses the event. Callers run these
functions inside their transaction and publish ``Applied.feed`` only after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row

from sinks.tickets_state import decide, ticket_no, year_of
from streams.core.ids import stable_id

Record = dict[str, Any]
FEED_TYPE = "ticket_updated"

_TICKET_COLS = ("ticket_id, tenant_id, ticket_no, site_id, person_id, category, source, status, priority, resolution, "
                "title, description, related_event_id, related_kind, evidence_summary, command_id, created_by, "
                "created_at, updated_at, resolved_at, closed_at, version")


@dataclass(frozen=True, slots=True)
class Change:
    change_id: str
    ticket_id: str
    tenant_id: int
    status: str
    occurred_at: int  # epoch ms (event time for stream records, the call time for the API)
    origin: str  # COMMAND | UPSTREAM | API
    actor: str | None = None
    resolution: str | None = None
    note: str | None = None
    priority: str | None = None
    create: Record = field(default_factory=dict)  # creation fields (site_id, category, title, ...), for NEW


@dataclass(frozen=True, slots=True)
class Applied:
    ok: bool
    ticket: Record | None = None
    reason: str | None = None
    feed: Record | None = None  # the noc_event to publish after the commit
    replayed: bool = False  # the change was already applied (redelivery)


def change_from_command(cmd: Record) -> Change:
    return Change(change_id=cmd["command_id"], ticket_id=cmd["ticket_id"], tenant_id=cmd["tenant_id"], status="NEW",
                  occurred_at=cmd["issued_at"], origin="COMMAND", actor="nocstream", priority=cmd["priority"],
                  create={"site_id": cmd["site_id"], "person_id": cmd["person_id"], "category": cmd["category"],
                          "source": cmd["source"], "title": cmd["title"], "description": cmd["description"],
                          "related_event_id": cmd["related_event_id"], "related_kind": cmd["related_kind"],
                          "evidence_summary": cmd["evidence_summary"], "command_id": cmd["command_id"]})


def change_from_upstream(rec: Record) -> Change:
    return Change(change_id=rec["event_id"], ticket_id=rec["ticket_id"], tenant_id=rec["tenant_id"],
                  status=rec["status"], occurred_at=rec["occurred_at"], origin="UPSTREAM", actor=rec["actor"],
                  resolution=rec["resolution"], priority=rec["priority"],
                  create={"site_id": rec["site_id"], "person_id": rec["person_id"], "category": rec["category"],
                          "source": rec["source"], "title": rec["title"], "description": rec["description"],
                          "related_event_id": rec["related_event_id"], "related_kind": None,
                          "evidence_summary": None, "command_id": None})


def _ms(dt: datetime | None) -> int | None:
    return None if dt is None else int(dt.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def ticket_json(row: Record) -> Record:
    """A ticket row as plain JSON-able values (times in epoch ms, like the records)."""
    return {k: (_ms(v) if isinstance(v, datetime) else v) for k, v in row.items()}


def feed_event(ticket: Record, hist: Record) -> Record:
    """The ``ticket_updated`` noc_event of one history row; built from the row so a replay is identical."""
    payload = {**ticket_json(ticket), "status": hist["to_status"], "resolution": hist["resolution"],
               "version": hist["version"], "updated_at": _ms(hist["occurred_at"]), "from_status": hist["from_status"],
               "change_id": hist["change_id"], "origin": hist["origin"], "actor": hist["actor"], "note": hist["note"]}
    for k in ("ingested_at", "resolved_at", "closed_at"):
        payload.pop(k, None)  # not part of the change itself; they would make a replay differ
    return {"type": FEED_TYPE, "event_id": stable_id("evt", FEED_TYPE, ticket["tenant_id"], hist["change_id"]),
            "timestamp": _ms(hist["occurred_at"]), "tenant_id": ticket["tenant_id"], "site_id": ticket["site_id"],
            "person_id": ticket["person_id"], "payload": orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()}


def get_ticket(conn: psycopg.Connection[Any], tenant_id: int, ticket_id: str, lock: bool = False) -> Record | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_TICKET_COLS} FROM tickets WHERE ticket_id = %s AND tenant_id = %s"
                          + (" FOR UPDATE" if lock else ""), (ticket_id, tenant_id)).fetchone()
    return row


def history(conn: psycopg.Connection[Any], tenant_id: int, ticket_id: str) -> list[Record]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM ticket_history WHERE ticket_id = %s AND tenant_id = %s ORDER BY version",
                           (ticket_id, tenant_id)).fetchall()


def apply_change(conn: psycopg.Connection[Any], ch: Change) -> Applied:
    """Apply one change inside the caller's transaction; refusals leave the database untouched."""
    with conn.cursor(row_factory=dict_row) as cur:
        hist = cur.execute("SELECT * FROM ticket_history WHERE change_id = %s AND tenant_id = %s",
                           (ch.change_id, ch.tenant_id)).fetchone()
        if hist is not None:
            ticket = get_ticket(conn, ch.tenant_id, hist["ticket_id"])
            assert ticket is not None  # history rows reference their ticket
            return Applied(True, ticket, feed=feed_event(ticket, hist), replayed=True)
        current = get_ticket(conn, ch.tenant_id, ch.ticket_id, lock=True)
        d = decide(current["status"] if current else None, ch.status, ch.resolution,
                   current["resolution"] if current else None)
        if not d.ok:
            return Applied(False, current, reason=d.reason)
        at = _dt(ch.occurred_at)
        if current is None:
            year = year_of(ch.occurred_at)
            n = cur.execute("INSERT INTO ticket_counters (tenant_id, year, last_no) VALUES (%s, %s, 1) "
                            "ON CONFLICT (tenant_id, year) DO UPDATE SET last_no = ticket_counters.last_no + 1 "
                            "RETURNING last_no", (ch.tenant_id, year)).fetchone()
            assert n is not None
            c = ch.create
            cur.execute(
                "INSERT INTO tickets (ticket_id, tenant_id, ticket_no, site_id, person_id, category, source, status, "
                "priority, resolution, title, description, related_event_id, related_kind, evidence_summary, "
                "command_id, created_by, created_at, updated_at, version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, NULL, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1)",
                (ch.ticket_id, ch.tenant_id, ticket_no(year, n["last_no"]), c.get("site_id"), c.get("person_id"),
                 c.get("category", "OTHER"), c.get("source", "USER"), ch.status, ch.priority or "MEDIUM",
                 c.get("title", ""), c.get("description", ""), c.get("related_event_id"), c.get("related_kind"),
                 c.get("evidence_summary"), c.get("command_id"), ch.actor, at, at))
            version, from_status = 1, None
        else:
            version, from_status = current["version"] + 1, current["status"]
            cur.execute(
                "UPDATE tickets SET status = %s, resolution = %s, priority = COALESCE(%s, priority), updated_at = %s, "
                "resolved_at = CASE WHEN %s = 'RESOLVED' THEN %s WHEN %s = 'OPEN' THEN NULL ELSE resolved_at END, "
                "closed_at = CASE WHEN %s = 'CLOSED' THEN %s ELSE closed_at END, version = %s "
                "WHERE ticket_id = %s AND tenant_id = %s",
                (ch.status, d.resolution, ch.priority, at, ch.status, at, ch.status, ch.status, at, version,
                 ch.ticket_id, ch.tenant_id))
        hist = cur.execute(
            "INSERT INTO ticket_history (change_id, ticket_id, tenant_id, version, from_status, to_status, resolution, "
            "actor, note, origin, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (ch.change_id, ch.ticket_id, ch.tenant_id, version, from_status, ch.status, d.resolution, ch.actor,
             ch.note, ch.origin, at)).fetchone()
        assert hist is not None
        ticket = get_ticket(conn, ch.tenant_id, ch.ticket_id)
        assert ticket is not None
        return Applied(True, ticket, feed=feed_event(ticket, hist))
