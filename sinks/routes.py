"""Which topics the sink stores, and how a batch of raw Kafka records becomes rows (pure: no I/O).

``prepare`` decodes each record once with ``schemas.serde``; a record that does not decode or map becomes a
dead-letter row with its reason and original bytes, and the rest of the batch flows on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas.serde import DecodeError, SchemaStore, store
from schemas.topics import BY_SHORT
from sinks import map_derived as d
from sinks import map_feed as f
from sinks import map_inputs as i
from sinks.tables import Row, TableSpec

Mapper = Callable[[dict[str, Any]], Row]


@dataclass(frozen=True, slots=True)
class Route:
    spec: TableSpec
    row: Mapper
    many: Callable[[dict[str, Any]], list[Row]] | None = None  # a second table fed by the same record
    many_spec: TableSpec | None = None


# topic short name -> how its records are stored. Ticket topics are applied one by one (state machine).
ROUTES: dict[str, Route] = {
    "attendance": Route(i.ATTENDANCE, i.attendance_row),
    "activity": Route(i.ACTIVITY, i.activity_row),
    "alerts": Route(i.ALERTS, i.alert_row),
    "audit-findings": Route(i.FINDINGS, i.finding_row),
    "finding-escalations": Route(i.ESCALATIONS, i.escalation_row),
    "labels": Route(i.LABELS, i.label_row),
    "signal-windows": Route(d.WINDOWS, d.window_row),
    "baselines": Route(d.BASELINES, d.baseline_row),
    "anomalies": Route(d.ANOMALIES, d.anomaly_row),
    "incidents": Route(d.INCIDENTS, d.incident_row, d.incident_event_rows, d.INCIDENT_EVENTS),
    "fraud-scores": Route(d.FRAUD_SCORES, d.fraud_score_row),
    "events": Route(f.EVENT_LOG, f.event_log_row),
    "dead-letters": Route(f.DEAD_LETTERS, f.dead_letter_row),
}
TICKET_TOPICS = ("ticket-commands", "tickets")
SUNK_TOPICS: tuple[str, ...] = (*ROUTES, *TICKET_TOPICS)
ALL_SPECS: tuple[TableSpec, ...] = (*(r.spec for r in ROUTES.values()), d.INCIDENT_EVENTS)


@dataclass(frozen=True, slots=True)
class Raw:
    """One Kafka record, as the consumer hands it over."""

    short: str  # topic short name (namespace stripped)
    topic: str  # full topic name
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int  # Kafka timestamp, epoch ms


@dataclass
class Prepared:
    rows: dict[TableSpec, list[Row]] = field(default_factory=dict)
    tickets: list[tuple[str, dict[str, Any], Raw]] = field(default_factory=list)  # (short, record, raw), in order
    dead: list[dict[str, Any]] = field(default_factory=list)  # dead_letter records made by this sink
    count: int = 0

    def add(self, spec: TableSpec, rows: Iterable[Row]) -> None:
        self.rows.setdefault(spec, []).extend(rows)


def short_name(topic: str, namespace: str) -> str:
    prefix = namespace + "."
    return topic[len(prefix):] if topic.startswith(prefix) else topic


def prepare(batch: Iterable[Raw], schemas: SchemaStore | None = None) -> Prepared:
    """Decode and map ``batch``; every record ends up as rows, a ticket change, or a dead letter."""
    st = schemas or store()
    out = Prepared()
    for raw in batch:
        out.count += 1
        stem = BY_SHORT[raw.short].schema
        try:
            _, rec = st.decode(raw.value, expected=stem)
        except DecodeError as exc:
            out.dead.append(_dead(raw, exc.reason, exc.detail))
            continue
        if raw.short in TICKET_TOPICS:
            out.tickets.append((raw.short, rec, raw))
            continue
        route = ROUTES[raw.short]
        try:
            row = route.row(rec)
            extra = route.many(rec) if route.many is not None else None
        except (f.BadPayload, KeyError, TypeError, ValueError) as exc:
            out.dead.append(_dead(raw, "UNMAPPABLE", f"{type(exc).__name__}: {exc}"))
            continue
        out.rows.setdefault(route.spec, []).append(row)
        if extra is not None and route.many_spec is not None:
            out.add(route.many_spec, extra)
    return out


def _dead(raw: Raw, reason: str, detail: str) -> dict[str, Any]:
    return f.sink_dead_letter(raw.topic, raw.partition, raw.offset, reason, detail, raw.key, raw.value, raw.timestamp)


def dead_row(rec: dict[str, Any]) -> Row:
    return f.dead_letter_row(rec)
