"""The topic catalogue: one declarative list of every topic nocstream reads or writes.

Names are ``<namespace>.<short>``; the live namespace is ``noc`` and a replay sandbox uses its own, so
a replay can never write to a live topic. Keys keep every event of one person (or one site, for data
that is about a site) in one partition, so per-person order holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.contract import BROKER_MAX_FUTURE_MS

DAY_MS = 24 * 3600 * 1000
LIVE_NAMESPACE = "noc"

Kind = Literal["input", "reference", "derived"]
KeyBy = Literal["person", "site", "ticket", "tenant", "entity", "source_topic"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    short: str
    schema: str  # file stem in schemas/, e.g. "attendance_event"
    kind: Kind
    key: KeyBy
    partitions: int
    retention_ms: int  # -1 keeps forever
    cleanup_policy: Literal["delete", "compact"] = "delete"
    doc: str = ""

    def name(self, namespace: str = LIVE_NAMESPACE) -> str:
        return f"{namespace}.{self.short}"

    def config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if self.cleanup_policy == "compact":
            cfg["min.cleanable.dirty.ratio"] = "0.1"
        if self.kind == "input":
            # The broker refuses a record stamped (CreateTime) further ahead of its own clock than this, so the
            # record timestamp is a time no producer can push ahead; the worker bounds event time by it (see
            # schemas/contract.py). No bound into the past (message.timestamp.before.max.ms): back-fills work.
            cfg["message.timestamp.after.max.ms"] = str(BROKER_MAX_FUTURE_MS)
        return cfg


# Topics keyed by person share one partition count so a worker sees a person's attendance, activity,
# alerts and findings in the same partition number (co-partitioned, as Faust tables require).
PERSON_PARTITIONS = 6

CATALOGUE: tuple[TopicSpec, ...] = (
    # -- inputs, produced by upstream systems
    TopicSpec("attendance", "attendance_event", "input", "person", PERSON_PARTITIONS, 90 * DAY_MS,
              doc="Check-ins and check-outs."),
    TopicSpec("activity", "activity_signal", "input", "person", PERSON_PARTITIONS, 30 * DAY_MS,
              doc="Phone events, location updates, tasks, tour checkpoint scans."),
    TopicSpec("alerts", "noc_alert", "input", "person", PERSON_PARTITIONS, 90 * DAY_MS,
              doc="NOC alerts; keyed by person, or by site when about no one."),
    TopicSpec("audit-findings", "audit_finding", "input", "person", PERSON_PARTITIONS, 365 * DAY_MS,
              doc="Audit findings; keyed like alerts."),
    TopicSpec("tickets", "ticket", "input", "ticket", PERSON_PARTITIONS, 365 * DAY_MS,
              doc="Helpdesk ticket changes from upstream and from the ticket sink."),
    # -- reference data, compacted: the latest version of each entity
    TopicSpec("ref.sites", "site", "reference", "site", 1, -1, "compact", doc="Sites with geofence, timezone, tours."),
    TopicSpec("ref.people", "person", "reference", "person", 1, -1, "compact", doc="Guards."),
    TopicSpec("ref.shifts", "shift", "reference", "entity", 1, -1, "compact", doc="Scheduled shifts."),
    # -- derived, produced by nocstream
    TopicSpec("signal-windows", "signal_window", "derived", "person", PERSON_PARTITIONS, 30 * DAY_MS,
              doc="Closed telemetry windows (person and site scope)."),
    TopicSpec("baselines", "baseline", "derived", "entity", 3, -1, "compact",
              doc="Baseline state per site/metric/hour."),
    TopicSpec("anomalies", "anomaly", "derived", "person", PERSON_PARTITIONS, 90 * DAY_MS, doc="Detected anomalies."),
    TopicSpec("incidents", "correlated_incident", "derived", "person", PERSON_PARTITIONS, 365 * DAY_MS,
              doc="Correlated incident revisions."),
    TopicSpec("fraud-scores", "fraud_score", "derived", "person", PERSON_PARTITIONS, 365 * DAY_MS,
              doc="Inline fraud scores: the prediction log."),
    TopicSpec("ticket-commands", "ticket_command", "derived", "ticket", PERSON_PARTITIONS, 365 * DAY_MS,
              doc="Requests to open system-generated tickets."),
    TopicSpec("finding-escalations", "finding_escalation", "derived", "person", PERSON_PARTITIONS, 365 * DAY_MS,
              doc="Audit findings escalated to tickets."),
    TopicSpec("events", "noc_event", "derived", "tenant", PERSON_PARTITIONS, 7 * DAY_MS,
              doc="Consolidated live feed for dashboards."),
    TopicSpec("labels", "label", "derived", "person", PERSON_PARTITIONS, -1, doc="Ground truth labels."),
    TopicSpec("model-events", "model_event", "derived", "tenant", 1, -1, "compact", doc="Active model changes."),
    TopicSpec("dead-letters", "dead_letter", "derived", "source_topic", 3, 30 * DAY_MS,
              doc="Records that could not be processed, with reason and original bytes."),
)

BY_SHORT = {t.short: t for t in CATALOGUE}


def topic(short: str, namespace: str = LIVE_NAMESPACE) -> str:
    """Full name of a catalogued topic, e.g. ``topic("attendance") == "noc.attendance"``."""
    return BY_SHORT[short].name(namespace)


def person_key(tenant_id: int, person_id: str | None, site_id: str | None = None) -> bytes:
    """Partition key: the person when there is one, else the site (so site-only records stay ordered)."""
    if person_id:
        return f"{tenant_id}:{person_id}".encode()
    return f"{tenant_id}:site:{site_id}".encode()


def site_key(tenant_id: int, site_id: str) -> bytes:
    return f"{tenant_id}:{site_id}".encode()
