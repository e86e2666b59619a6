"""Feed envelopes: one per source type, stable ids, deterministic payload bytes."""

from __future__ import annotations

import orjson
import pytest
from test_core_correlation import MIN, T0, alert, anomaly, encodes, finding, fraud

from schemas import serde
from streams.core.correlation import CorrelationEngine
from streams.core.escalation import audit_outputs
from streams.core.feed import (
    alert_created,
    anomaly_detected,
    feed_events,
    fraud_scored,
    incident_event,
    payload_json,
    ticket_updated,
)
from streams.core.ids import stable_id
from streams.core.types import Record


def ticket(eid: str, at: int) -> Record:
    return {"event_id": eid, "tenant_id": 3, "site_id": None, "person_id": None, "occurred_at": at,
            "received_at": at, "ticket_id": "tkt-1", "ticket_no": "T3-000001", "category": "OPERATIONS",
            "source": "USER", "status": "IN_PROGRESS", "priority": "MEDIUM", "resolution": None,
            "title": "Gate barrier fault", "description": "", "related_event_id": None, "actor": "u1"}


def incident_revisions() -> list[Record]:
    eng = CorrelationEngine()
    outs = eng.process("noc_alert", alert("a1", T0)) + eng.process("anomaly", anomaly("n1", T0 + MIN))
    outs += eng.advance(T0 + 3 * 3_600_000)
    return [o.record for o in outs]


CASES = [
    ("noc_alert", alert("a1", T0), "alert_created", "a1", T0),
    ("audit_finding", finding("f1", T0), "finding_created", "f1", T0),
    ("anomaly", anomaly("n1", T0), "anomaly_detected", "n1", T0),
    ("fraud_score", fraud("x1", T0, prob=0.7), "fraud_scored", "x1", T0),
    ("ticket", ticket("tc-1", T0), "ticket_updated", "tc-1", T0),
]


@pytest.mark.parametrize(("stem", "record", "etype", "source_id", "ts"), CASES)
def test_envelope_per_source_type(stem: str, record: Record, etype: str, source_id: str, ts: int) -> None:
    [out] = feed_events(stem, record)
    encodes([out])
    env = out.record
    assert out.topic == "events" and out.stem == "noc_event" and out.key == str(record["tenant_id"]).encode()
    assert env["type"] == etype and env["event_id"] == stable_id("evt", etype, record["tenant_id"], source_id)
    assert env["timestamp"] == ts and env["tenant_id"] == record["tenant_id"]
    assert env["site_id"] == record["site_id"] and env["person_id"] == record["person_id"]
    assert env["payload"] == orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()


def test_incident_created_then_updated_with_revision_in_id() -> None:
    revs = incident_revisions()
    outs = [o for r in revs for o in feed_events("correlated_incident", r)]
    encodes(outs)
    assert [o.record["type"] for o in outs] == ["incident_created", "incident_updated", "incident_updated"]
    iid = revs[0]["incident_id"]
    assert outs[0].record["event_id"] == stable_id("evt", "incident_created", revs[0]["tenant_id"], iid)
    assert outs[2].record["event_id"] == stable_id("evt", "incident_updated", revs[0]["tenant_id"], iid, 3)
    assert len({o.record["event_id"] for o in outs}) == 3
    assert outs[2].record["timestamp"] == revs[2]["updated_at"]
    assert orjson.loads(outs[2].record["payload"])["status"] == "CLOSED"
    assert incident_event(revs[0]).record == outs[0].record


def test_finding_escalated_envelope() -> None:
    esc = audit_outputs(finding("f1", T0))[1].record
    [out] = feed_events("finding_escalation", esc)
    encodes([out])
    assert out.record["type"] == "finding_escalated" and out.record["timestamp"] == T0


def test_fraud_below_high_and_unknown_stems_stay_off_the_feed() -> None:
    assert fraud_scored(fraud("x", T0, prob=0.5)) is None
    assert feed_events("fraud_score", fraud("x", T0, prob=0.1)) == []
    assert feed_events("activity_signal", {"tenant_id": 1}) == []


def test_payload_is_byte_deterministic_and_nan_safe() -> None:
    a = dict(alert("a1", T0))
    b = dict(reversed(list(a.items())))  # same record, other key order
    assert payload_json(a) == payload_json(b)
    assert serde.encode("noc_event", alert_created(a).record) == serde.encode("noc_event", alert_created(b).record)
    doc = orjson.loads(payload_json(fraud("x1", T0)))
    assert doc["features"] == [812.0, None]


def test_builders_are_pure() -> None:
    assert anomaly_detected(anomaly("n1", T0)) == anomaly_detected(anomaly("n1", T0))
    assert ticket_updated(ticket("tc", T0)).record["event_id"] != ticket_updated(ticket("tc2", T0)).record["event_id"]


def test_two_tenants_choosing_the_same_source_id_get_distinct_feed_events() -> None:
    [a] = feed_events("noc_alert", alert("a1", T0))
    [b] = feed_events("noc_alert", {**alert("a1", T0), "tenant_id": 2})
    assert a.record["event_id"] != b.record["event_id"]
