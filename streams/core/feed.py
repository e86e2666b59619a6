"""The consolidated live feed: pure builders from source records to the ``noc_event`` envelope.

Topic ``events``, keyed by tenant (the gateway fans out per tenant). The payload is the source record as
JSON with sorted keys (orjson: byte-deterministic; NaN becomes null), and the feed event id is derived from
the type and the source record's id (+ revision for incident updates), so a replay yields the same
envelopes byte for byte and a consumer can drop duplicates by event_id.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from streams.core.ids import event_time, evidence_id, stable_id, tenant_key
from streams.core.types import Out, Record

FEED_TOPIC = "events"
FEED_STEM = "noc_event"
FRAUD_FEED_LEVELS = frozenset({"HIGH", "CRITICAL"})


def payload_json(record: Record) -> str:
    """The record as compact JSON with sorted keys (bytes are not expected in feed sources)."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()


def envelope(event_type: str, source_id: str, stem: str, record: Record, *extra_id: object) -> Out:
    """The feed Out for one source record. Its id includes the tenant: source ids such as an alert's
    ``event_id`` are chosen by upstream producers, and two tenants may choose the same one."""
    tenant_id = int(record["tenant_id"])
    env = {
        "type": event_type,
        "event_id": stable_id("evt", event_type, tenant_id, source_id, *extra_id),
        "timestamp": event_time(stem, record),
        "tenant_id": tenant_id,
        "site_id": record.get("site_id"),
        "person_id": record.get("person_id"),
        "payload": payload_json(record),
    }
    return Out(FEED_TOPIC, tenant_key(tenant_id), FEED_STEM, env)


def alert_created(alert: Record) -> Out:
    return envelope("alert_created", evidence_id("noc_alert", alert), "noc_alert", alert)


def finding_created(finding: Record) -> Out:
    return envelope("finding_created", evidence_id("audit_finding", finding), "audit_finding", finding)


def finding_escalated(escalation: Record) -> Out:
    return envelope("finding_escalated", str(escalation["finding_id"]), "finding_escalation", escalation)


def anomaly_detected(anomaly: Record) -> Out:
    return envelope("anomaly_detected", evidence_id("anomaly", anomaly), "anomaly", anomaly)


def incident_event(incident: Record) -> Out:
    """Revision 1 is ``incident_created``; every later revision (closing included) ``incident_updated``."""
    rev = int(incident["revision"])
    if rev == 1:
        return envelope("incident_created", str(incident["incident_id"]), "correlated_incident", incident)
    return envelope("incident_updated", str(incident["incident_id"]), "correlated_incident", incident, rev)


def fraud_scored(score: Record) -> Out | None:
    """Only HIGH and CRITICAL scores go on the feed (the rest is noise for an operator)."""
    if score["risk_level"] not in FRAUD_FEED_LEVELS:
        return None
    return envelope("fraud_scored", evidence_id("fraud_score", score), "fraud_score", score)


def ticket_updated(ticket: Record) -> Out:
    """One feed event per ticket change (``event_id`` of the change, not the ticket)."""
    return envelope("ticket_updated", str(ticket["event_id"]), "ticket", ticket)


_BUILDERS: dict[str, Callable[[Record], Out | None]] = {
    "noc_alert": alert_created,
    "audit_finding": finding_created,
    "finding_escalation": finding_escalated,
    "anomaly": anomaly_detected,
    "correlated_incident": incident_event,
    "fraud_score": fraud_scored,
    "ticket": ticket_updated,
}
FEED_STEMS = frozenset(_BUILDERS)


def feed_events(stem: str, record: Record) -> list[Out]:
    """Feed events for any record: ``[]`` for stems and records that do not go on the feed."""
    build = _BUILDERS.get(stem)
    if build is None:
        return []
    out = build(record)
    return [] if out is None else [out]
