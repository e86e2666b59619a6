"""Stable ids and the few record accessors every core component needs.

Ids are derived from natural keys (sha1), never random, so a redelivered or replayed record yields the
same ids and the sinks' upserts keep effects single.
"""

from __future__ import annotations

import hashlib

from streams.core.types import Record

_ID_FIELD = {"anomaly": "anomaly_id", "fraud_score": "score_id", "correlated_incident": "incident_id",
             "finding_escalation": "finding_id", "ticket_command": "command_id"}


def stable_id(prefix: str, *parts: object) -> str:
    """``prefix-<24 hex>``: sha1 of the parts joined with a unit separator (which no id contains)."""
    digest = hashlib.sha1("\x1f".join(str(p) for p in parts).encode(), usedforsecurity=False).hexdigest()
    return f"{prefix}-{digest[:24]}"


def evidence_id(stem: str, record: Record) -> str:
    """The record's own stable id: ``event_id`` for alerts, findings and tickets; ``anomaly_id``, ``score_id``..."""
    return str(record[_ID_FIELD.get(stem, "event_id")])


def event_time(stem: str, record: Record) -> int:
    """When it happened, epoch ms: ``occurred_at``; an anomaly's is its window end."""
    if stem == "anomaly":
        return int(record["window_end"])
    if stem == "correlated_incident":
        return int(record["updated_at"])
    if stem == "finding_escalation":
        return int(record["escalated_at"])
    return int(record["occurred_at"])


def tenant_key(tenant_id: int) -> bytes:
    """Partition key of tenant-keyed topics (``events``): the tenant id in decimal."""
    return str(int(tenant_id)).encode()
