"""Which topics the sink stores, and how a batch of raw Kafka records becomes rows (pure: no I/O).

``prepare`` decodes each record once with ``schemas.serde``, lets the caller's ``admit`` check refuse it
(input contract, reference data: see ``sinks.admission``) and maps it to rows; a record that does not
decode, is refused, fails to map or is dated outside the days the sink keeps partitions for becomes a
dead-letter row with its reason and original bytes, and the rest of the batch flows on. The result keeps
one :class:`Item` per record, so the writer can split a batch Postgres refuses without decoding it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.contract import OUT_OF_RANGE
from schemas.serde import DecodeError, SchemaStore, store
from schemas.topics import BY_SHORT
from sinks import map_derived as d
from sinks import map_feed as f
from sinks import map_inputs as i
from sinks.partitions import partition_allowed
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


@dataclass(slots=True)
class Item:
    """What one record becomes: rows (table spec, row), a ticket change, or a dead letter."""

    raw: Raw
    rows: list[tuple[TableSpec, Row]] = field(default_factory=list)
    ticket: tuple[str, dict[str, Any]] | None = None  # (short, record), applied by the state machine
    dead: dict[str, Any] | None = None  # the dead_letter record this sink made for it


@dataclass
class Prepared:
    rows: dict[TableSpec, list[Row]] = field(default_factory=dict)
    tickets: list[tuple[str, dict[str, Any], Raw]] = field(default_factory=list)  # (short, record, raw), in order
    dead: list[dict[str, Any]] = field(default_factory=list)  # dead_letter records made by this sink
    count: int = 0
    items: list[Item] = field(default_factory=list)  # per record, in batch order (to split the batch)

    def add(self, spec: TableSpec, rows: Iterable[Row]) -> None:
        self.rows.setdefault(spec, []).extend(rows)

    @classmethod
    def of(cls, items: Sequence[Item]) -> Prepared:
        """The batch made of ``items`` (any subsequence of a prepared batch), in their order."""
        out = cls(count=len(items), items=list(items))
        rows = out.rows
        for it in items:
            if it.dead is not None:
                out.dead.append(it.dead)
            elif it.ticket is not None:
                out.tickets.append((it.ticket[0], it.ticket[1], it.raw))
            for spec, row in it.rows:
                got = rows.get(spec)
                if got is None:
                    rows[spec] = [row]
                else:
                    got.append(row)
        return out


# Checks a decoded record before it is mapped: None to store it, else (reason, detail) to dead-letter it.
Admit = Callable[[Raw, str, dict[str, Any]], tuple[str, str] | None]


def short_name(topic: str, namespace: str) -> str:
    prefix = namespace + "."
    return topic[len(prefix):] if topic.startswith(prefix) else topic


def prepare(batch: Iterable[Raw], schemas: SchemaStore | None = None, admit: Admit | None = None) -> Prepared:
    """Decode, check and map ``batch``; every record ends up as rows, a ticket change, or a dead letter.

    Whatever goes wrong with one record (it does not decode, ``admit`` refuses it, its mapping raises) makes
    that record a dead letter and nothing else: the rest of the batch flows on.
    """
    st = schemas or store()
    return Prepared.of([prepare_one(raw, st, admit) for raw in batch])


def prepare_one(raw: Raw, st: SchemaStore, admit: Admit | None = None) -> Item:
    stem = BY_SHORT[raw.short].schema
    try:
        _, rec = st.decode(raw.value, expected=stem)
    except DecodeError as exc:
        return Item(raw, dead=_dead(raw, exc.reason, exc.detail))
    except Exception as exc:  # noqa: BLE001 - a decoder failure on one record's bytes isolates that record
        return Item(raw, dead=_dead(raw, "MALFORMED", f"{type(exc).__name__}: {exc}"))
    try:
        refused = admit(raw, stem, rec) if admit is not None else None
        if refused is not None:
            return Item(raw, dead=_dead(raw, refused[0], refused[1]))
        if raw.short in TICKET_TOPICS:
            return Item(raw, ticket=(raw.short, rec))
        route = ROUTES[raw.short]
        rows = [(route.spec, route.row(rec))]
        if route.many is not None and route.many_spec is not None:
            rows += [(route.many_spec, r) for r in route.many(rec)]
        for spec, row in rows:
            if spec.partition_column is not None:
                at = row[spec.partition_index]
                if not partition_allowed(at):
                    return Item(raw, dead=_dead(raw, OUT_OF_RANGE, f"{spec.partition_column} {at.isoformat()} is "
                                                                   "outside the days the sink keeps partitions for"))
    except Exception as exc:  # noqa: BLE001 - any failure of one record isolates that record (dead letter)
        return Item(raw, dead=_dead(raw, "UNMAPPABLE", f"{type(exc).__name__}: {exc}"))
    return Item(raw, rows=rows)


def _dead(raw: Raw, reason: str, detail: str) -> dict[str, Any]:
    return f.sink_dead_letter(raw.topic, raw.partition, raw.offset, reason, detail, raw.key, raw.value, raw.timestamp)


def dead_row(rec: dict[str, Any]) -> Row:
    return f.dead_letter_row(rec)
