"""Record -> row for the input topics: attendance, activity, alerts, audit findings, labels."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sinks.tables import Row, TableSpec

Record = dict[str, Any]


def ts(ms: int | None) -> datetime | None:
    """Epoch milliseconds -> aware UTC datetime (None stays None)."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


ATTENDANCE = TableSpec(
    "attendance", "attendance",
    ("event_id", "tenant_id", "site_id", "person_id", "occurred_at", "received_at", "event_type", "shift_id", "lat",
     "lon", "accuracy_m", "device_id", "is_mock_location", "face_match_score"),
    key=("event_id", "tenant_id", "occurred_at"), partition_column="occurred_at")


def attendance_row(r: Record) -> Row:
    return (r["event_id"], r["tenant_id"], r["site_id"], r["person_id"], ts(r["occurred_at"]), ts(r["received_at"]),
            r["event_type"], r["shift_id"], r["lat"], r["lon"], r["accuracy_m"], r["device_id"],
            r["is_mock_location"], r["face_match_score"])


ACTIVITY = TableSpec(
    "activity", "activity",
    ("event_id", "tenant_id", "site_id", "person_id", "occurred_at", "received_at", "kind", "device_id", "shift_id",
     "lat", "lon", "accuracy_m", "is_mock_location", "phone_event_type", "task_id", "tour_id", "checkpoint_id"),
    key=("event_id", "tenant_id", "occurred_at"), partition_column="occurred_at")


def activity_row(r: Record) -> Row:
    return (r["event_id"], r["tenant_id"], r["site_id"], r["person_id"], ts(r["occurred_at"]), ts(r["received_at"]),
            r["kind"], r["device_id"], r["shift_id"], r["lat"], r["lon"], r["accuracy_m"], r["is_mock_location"],
            r["phone_event_type"], r["task_id"], r["tour_id"], r["checkpoint_id"])


ALERTS = TableSpec(
    "alerts", "alerts",
    ("event_id", "tenant_id", "site_id", "person_id", "occurred_at", "received_at", "alert_type", "severity",
     "message", "source"),
    key=("event_id", "tenant_id"))


def alert_row(r: Record) -> Row:
    return (r["event_id"], r["tenant_id"], r["site_id"], r["person_id"], ts(r["occurred_at"]), ts(r["received_at"]),
            r["alert_type"], r["severity"], r["message"], r["source"])


# The finding fills its own columns; the escalation columns stay as the escalation wrote them.
FINDINGS = TableSpec(
    "findings", "audit_findings",
    ("event_id", "tenant_id", "site_id", "person_id", "occurred_at", "received_at", "finding_type", "severity",
     "evidence_summary", "auditor_id", "evidence_urls"),
    key=("event_id", "tenant_id"), on_conflict="update")


def finding_row(r: Record) -> Row:
    return (r["event_id"], r["tenant_id"], r["site_id"], r["person_id"], ts(r["occurred_at"]), ts(r["received_at"]),
            r["finding_type"], r["severity"], r["evidence_summary"], r["auditor_id"], list(r["evidence_urls"]))


# An escalation may arrive before its finding: it inserts the row with what it knows (escalated_at is the
# finding's event time) and on conflict sets only the escalation columns.
ESCALATIONS = TableSpec(
    "escalations", "audit_findings",
    ("event_id", "tenant_id", "site_id", "person_id", "occurred_at", "severity", "evidence_summary",
     "escalated_to_ticket", "escalation_ticket_id", "escalated_at"),
    key=("event_id", "tenant_id"), on_conflict="update",
    update=("escalated_to_ticket", "escalation_ticket_id", "escalated_at"))


def escalation_row(r: Record) -> Row:
    at = ts(r["escalated_at"])
    return (r["finding_id"], r["tenant_id"], r["site_id"], r["person_id"], at, r["severity"], r["evidence_summary"],
            r["escalated_to_ticket"], r["escalation_ticket_id"], at)


LABELS = TableSpec(
    "labels", "labels",
    ("label_id", "tenant_id", "site_id", "person_id", "event_id", "is_fraud", "scenario", "source", "occurred_at"),
    key=("label_id", "tenant_id"), on_conflict="update")


def label_row(r: Record) -> Row:
    return (r["label_id"], r["tenant_id"], r["site_id"], r["person_id"], r["event_id"], r["is_fraud"],
            r["scenario"], r["source"], ts(r["occurred_at"]))
