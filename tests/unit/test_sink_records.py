"""Valid sample records of every stem the sinks store (a fixture module shared by the sink tests; no tests here)."""

from __future__ import annotations

import functools
from typing import Any

T0 = 1_793_491_200_000  # 2026-11-01T00:00:00Z
DAY_MS = 86_400_000


def attendance(i: int = 0, at: int = T0) -> dict[str, Any]:
    return {"event_id": f"att-{i}", "tenant_id": 1, "site_id": "s1", "person_id": f"p{i % 7}", "occurred_at": at,
            "received_at": at + 150, "event_type": "CHECK_IN", "shift_id": None, "lat": 52.1, "lon": 4.3,
            "accuracy_m": 8.0, "device_id": "d1", "is_mock_location": False, "face_match_score": 0.93}


def activity(i: int = 0, at: int = T0) -> dict[str, Any]:
    return {"event_id": f"act-{i}", "tenant_id": 1, "site_id": "s1", "person_id": f"p{i % 7}", "occurred_at": at,
            "received_at": at + 80, "kind": "LOCATION_UPDATE", "device_id": "d1", "shift_id": "sh1", "lat": 52.1,
            "lon": 4.3, "accuracy_m": 12.5, "is_mock_location": False, "phone_event_type": None, "task_id": None,
            "tour_id": None, "checkpoint_id": None}


def alert(i: int = 0) -> dict[str, Any]:
    return {"event_id": f"al-{i}", "tenant_id": 1, "site_id": "s1", "person_id": None, "occurred_at": T0,
            "received_at": T0 + 5, "alert_type": "PANIC", "severity": "HIGH", "message": "panic", "source": "app"}


def finding(i: int = 0) -> dict[str, Any]:
    return {"event_id": f"f-{i}", "tenant_id": 1, "site_id": "s1", "person_id": "p1", "occurred_at": T0,
            "received_at": T0 + 1000, "finding_type": "SLEEPING_ON_DUTY", "severity": "HIGH",
            "evidence_summary": "asleep", "auditor_id": "a1", "evidence_urls": ["https://x/1.jpg"]}


def escalation(i: int = 0) -> dict[str, Any]:
    return {"finding_id": f"f-{i}", "tenant_id": 1, "site_id": "s1", "person_id": "p1", "severity": "HIGH",
            "escalated_to_ticket": True, "escalation_ticket_id": f"tkt-{i}", "escalated_at": T0,
            "evidence_summary": "asleep"}


def label(i: int = 0) -> dict[str, Any]:
    return {"label_id": f"l-{i}", "tenant_id": 1, "site_id": "s1", "person_id": "p1", "event_id": f"att-{i}",
            "is_fraud": True, "scenario": "GPS_SPOOFING", "source": "SIMULATOR", "occurred_at": T0}


def window(i: int = 0) -> dict[str, Any]:
    return {"window_id": f"w-{i}", "scope": "PERSON", "tenant_id": 1, "site_id": "s1", "person_id": "p1",
            "window_start": T0, "window_end": T0 + 900_000, "phone_events_count": 1, "location_updates_count": 3,
            "movement_distance_meters": 120.5, "tasks_completed_count": 0, "tour_checkpoints_scanned": 2,
            "tours": [{"tour_id": "t1", "checkpoints_expected": 4, "checkpoints_scanned": 2}], "event_count": 6,
            "late_event_count": 0}


def baseline(i: int = 0, updated_at: int = T0) -> dict[str, Any]:
    return {"baseline_id": f"1:s1:m:{i}", "tenant_id": 1, "site_id": "s1", "metric": "tour_checkpoints_scanned",
            "hour_of_week": i % 168, "sample_count": 10, "mean": 3.0, "m2": 4.0, "stddev": 0.66, "is_stable": True,
            "dynamic_threshold": 3.0, "false_positive_rate": 0.1, "feedback_total": 10, "false_positives": 1,
            "last_threshold_update": None, "updated_at": updated_at}


def anomaly(i: int = 0) -> dict[str, Any]:
    return {"anomaly_id": f"an-{i}", "tenant_id": 1, "site_id": "s1", "person_id": None, "window_id": "w-0",
            "baseline_id": "1:s1:m:0", "metric": "tour_checkpoints_scanned", "observed": 0.0, "expected": 3.0,
            "stddev": 0.5, "threshold": 3.0, "score": -6.0, "severity": "HIGH", "window_start": T0,
            "window_end": T0 + 900_000}


def incident(i: int = 0, revision: int = 1, n_evidence: int = 1) -> dict[str, Any]:
    ev = [{"event_id": f"al-{k}", "kind": "NOC_ALERT", "severity": "HIGH", "occurred_at": T0 + k, "summary": "x"}
          for k in range(n_evidence)]
    return {"incident_id": f"inc-{i}", "tenant_id": 1, "site_id": "s1", "person_id": "p1",
            "status": "OPEN" if revision < 3 else "CLOSED", "combined_severity": "HIGH", "kinds": ["NOC_ALERT"],
            "related_event_ids": [e["event_id"] for e in ev], "evidence": ev, "title": f"rev {revision}",
            "first_seen": T0, "last_seen": T0 + n_evidence, "revision": revision, "updated_at": T0 + revision}


def fraud_score(i: int = 0, at: int = T0) -> dict[str, Any]:
    return {"score_id": f"sc-{i}", "event_id": f"att-{i}", "tenant_id": 1, "site_id": "s1", "person_id": "p1",
            "device_id": "d1", "shift_id": None, "event_type": "CHECK_IN", "occurred_at": at,
            "fraud_probability": 0.91, "risk_level": "CRITICAL", "model_version": "rules-v1",
            "reasons": [{"feature": "speed", "value": float("nan"), "contribution": 0.5, "description": "fast"}],
            "feature_names": ["speed", "acc"], "features": [float("nan"), 3.0]}


def ticket_command(i: int = 0) -> dict[str, Any]:
    return {"command_id": f"audit:f-{i}", "ticket_id": f"tkt-{i}", "tenant_id": 1, "site_id": "s1", "person_id": "p1",
            "category": "SECURITY_AUDIT", "source": "SYSTEM_GENERATED", "priority": "HIGH", "title": "Sleeping",
            "description": "asleep on duty", "related_event_id": f"f-{i}", "related_kind": "AUDIT_FINDING",
            "evidence_summary": "asleep", "issued_at": T0}


def ticket(ticket_id: str, event_id: str, status: str, at: int = T0, resolution: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id, "tenant_id": 1, "site_id": "s1", "person_id": None, "occurred_at": at,
            "received_at": at + 50, "ticket_id": ticket_id, "ticket_no": None, "category": "OPERATIONS",
            "source": "USER", "status": status, "priority": "LOW", "resolution": resolution, "title": "Broken gate",
            "description": "gate", "related_event_id": None, "actor": "u1"}


def noc_event(i: int = 0, payload: str = '{"a": 1}') -> dict[str, Any]:
    return {"type": "alert_created", "event_id": f"evt-{i}", "timestamp": T0, "tenant_id": 1, "site_id": "s1",
            "person_id": None, "payload": payload}


def dead_letter(i: int = 0) -> dict[str, Any]:
    return {"dead_letter_id": f"dlq-{i}", "source_topic": "noc.attendance", "partition": 0, "offset": i,
            "reason": "UNKNOWN_SITE", "detail": "no site s9", "component": "validate", "key": b"k",
            "value": b"\x00\x01", "record_timestamp": T0}


def site(tenant_id: int = 1, site_id: str = "s1") -> dict[str, Any]:
    return {"tenant_id": tenant_id, "site_id": site_id, "name": f"Site {site_id}", "timezone": "Europe/Amsterdam",
            "lat": 52.1, "lon": 4.3, "geofence_radius_m": 150.0, "tours": [], "active": True, "updated_at": T0}


def produce_sites(bootstrap: str, namespace: str, sites: list[tuple[int, str]]) -> None:
    """Publish ``(tenant, site)`` pairs to ``<namespace>.ref.sites``: the tenants and sites the sink accepts."""
    from confluent_kafka import Producer

    from schemas.serde import encode
    from schemas.topics import site_key, topic

    p = Producer({"bootstrap.servers": bootstrap})
    for tenant_id, site_id in sites:
        p.produce(topic("ref.sites", namespace), key=site_key(tenant_id, site_id),
                  value=encode("site", site(tenant_id, site_id)))
    assert p.flush(30) == 0


# topic short -> (stem, sample)
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "attendance": ("attendance_event", attendance()), "activity": ("activity_signal", activity()),
    "alerts": ("noc_alert", alert()), "audit-findings": ("audit_finding", finding()),
    "finding-escalations": ("finding_escalation", escalation()), "labels": ("label", label()),
    "signal-windows": ("signal_window", window()), "baselines": ("baseline", baseline()),
    "anomalies": ("anomaly", anomaly()), "incidents": ("correlated_incident", incident()),
    "fraud-scores": ("fraud_score", fraud_score()), "events": ("noc_event", noc_event()),
    "dead-letters": ("dead_letter", dead_letter()), "ticket-commands": ("ticket_command", ticket_command()),
    "tickets": ("ticket", ticket("tk-1", "e-1", "NEW")),
}


# -- hostile records: each must end as exactly one dead letter with the reason given, and change nothing else --

I63 = 2**63 - 1
YEAR_9999 = 253_402_214_400_000  # 9999-12-31T00:00:00Z
YEAR_0001 = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MB = 1_000_000  # below the broker's default message.max.bytes (1 MiB + 12) with the rest of the record


def _big_id() -> str:
    """1 MB that does not compress below Postgres' btree limit (~2.7 kB per index row)."""
    import random

    return random.Random(7).randbytes(MB // 2).hex()


@functools.cache
def hostile() -> list[tuple[str, str, bytes, str]]:
    """``(name, topic short, value bytes, dead-letter reason)`` for records no sink run may store or stop on."""
    from schemas.serde import encode

    def enc(short: str, rec: dict[str, Any]) -> bytes:
        return encode(SAMPLES[short][0], rec)

    att, act = attendance(900), activity(900)
    cases: list[tuple[str, str, dict[str, Any] | bytes, str]] = [
        ("occurred_at 2^63-1", "activity", act | {"event_id": "h1", "occurred_at": I63}, "OUT_OF_RANGE"),
        ("occurred_at -(2^63-1)", "activity", act | {"event_id": "h2", "occurred_at": -I63}, "OUT_OF_RANGE"),
        ("received_at 2^63-1", "attendance", att | {"event_id": "h3", "received_at": I63}, "OUT_OF_RANGE"),
        ("year 9999", "attendance", att | {"event_id": "h4", "occurred_at": YEAR_9999}, "OUT_OF_RANGE"),
        ("year 0001", "attendance", att | {"event_id": "h5", "occurred_at": YEAR_0001}, "OUT_OF_RANGE"),
        ("lat NaN", "attendance", att | {"event_id": "h6", "lat": float("nan")}, "OUT_OF_RANGE"),
        ("accuracy inf", "activity", act | {"event_id": "h7", "accuracy_m": float("inf")}, "OUT_OF_RANGE"),
        ("face score -inf", "attendance", att | {"event_id": "h8", "face_match_score": float("-inf")},
         "OUT_OF_RANGE"),
        ("1 MB message", "alerts", alert(900) | {"message": "m" * MB}, "TOO_LONG"),
        ("1 MB event id", "activity", act | {"event_id": _big_id()}, "TOO_LONG"),
        ("NUL in text", "audit-findings", finding(900) | {"evidence_summary": "a\x00b"}, "BAD_TEXT"),
        ("NUL in id", "activity", act | {"event_id": "h9", "device_id": "d\x001"}, "BAD_ID"),
        ("NUL in ticket title", "tickets", ticket("tk-h", "e-h", "NEW") | {"title": "t\x00"}, "BAD_TEXT"),
        ("unknown tenant", "activity", act | {"event_id": "h10", "tenant_id": 99}, "UNKNOWN_TENANT"),
        ("unknown tenant ticket", "tickets", ticket("tk-h2", "e-h2", "NEW") | {"tenant_id": 99},
         "UNKNOWN_TENANT"),
        ("unknown tenant label", "labels", label(900) | {"tenant_id": 99}, "UNKNOWN_TENANT"),
        ("unknown site", "alerts", alert(901) | {"site_id": "nowhere"}, "UNKNOWN_SITE"),
        ("event a year after receipt", "activity",
         act | {"event_id": "h11", "received_at": T0 - 366 * DAY_MS}, "FUTURE_EVENT"),
        ("not Avro", "attendance", b"\xc3\x01garbage", "MALFORMED"),
        # Derived topics are outside the input contract: the sink's own guards and Postgres judge them.
        ("window in year 9999", "signal-windows", window(900) | {"window_start": YEAR_9999}, "OUT_OF_RANGE"),
        ("score at 2^63-1", "fraud-scores", fraud_score(900) | {"occurred_at": I63}, "UNMAPPABLE"),
        ("NUL in incident title", "incidents", incident(900) | {"title": "x\x00y"}, "DB_REJECTED"),
        ("NUL in JSONB", "events", noc_event(900, payload='{"a": "\\u0000"}'), "DB_REJECTED"),
        ("1 MB anomaly id", "anomalies", anomaly(900) | {"anomaly_id": _big_id()}, "DB_REJECTED"),
        ("command at 2^63-1", "ticket-commands", ticket_command(900) | {"issued_at": I63}, "DB_REJECTED"),
        ("NUL in a dead letter", "dead-letters", dead_letter(900) | {"detail": "\x00"}, "DB_REJECTED"),
    ]
    return [(name, short, rec if isinstance(rec, bytes) else enc(short, rec), reason)
            for name, short, rec, reason in cases]
