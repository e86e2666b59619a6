"""Where the input contract is applied: the order of the reasons in validate_input, reference records outside
the contract, the time a ticket's baseline feedback carries, and the broker's bound in the topic catalogue."""

from __future__ import annotations

import math

from models.scoring import ModelCache
from schemas import serde
from schemas.contract import BROKER_MAX_FUTURE_MS, MAX_FUTURE_SKEW_MS
from schemas.topics import CATALOGUE
from streams.core.pipeline import Pipeline, References
from streams.core.sites import ticket_feedback
from streams.core.validate import REASONS, ReferenceData, validate_input

T0 = 1_793_577_600_000  # 2026-11-01T00:00Z
HOUR = 3_600_000
SITE = {"tenant_id": 1, "site_id": "s1", "name": "Mall", "timezone": "Africa/Nairobi", "lat": -1.29, "lon": 36.82,
        "geofence_radius_m": 150.0, "tours": [], "active": True, "updated_at": T0}
ALERT = {"event_id": "a1", "tenant_id": 1, "site_id": "s1", "person_id": "p1", "occurred_at": T0,
         "received_at": T0 + 500, "alert_type": "PANIC_BUTTON", "severity": "HIGH", "message": "m", "source": "noc"}


def _ref() -> ReferenceData:
    r = ReferenceData()
    r.add_site(SITE)
    r.loaded = True
    return r


def test_validate_input_reasons_in_order() -> None:
    ref = _ref()
    assert validate_input("noc_alert", ALERT, ref, T0).ok
    # the field domains first, even for an unknown tenant
    v = validate_input("noc_alert", {**ALERT, "tenant_id": 9, "person_id": "p:1"}, ref, T0)
    assert (v.reason, "person_id" in v.detail) == ("BAD_ID", True)
    # then reference data, before the broker time
    v = validate_input("noc_alert", {**ALERT, "tenant_id": 9, "occurred_at": T0 + 2 * HOUR}, ref, T0)
    assert v.reason == "UNKNOWN_TENANT"
    # the broker time: at the skew fine, beyond it FUTURE_EVENT naming the field
    assert validate_input("noc_alert", {**ALERT, "occurred_at": T0 + MAX_FUTURE_SKEW_MS,
                                        "received_at": T0 + MAX_FUTURE_SKEW_MS}, ref, T0).ok
    v = validate_input("noc_alert", {**ALERT, "received_at": T0 + MAX_FUTURE_SKEW_MS + 1}, ref, T0)
    assert v.reason == "FUTURE_EVENT" and "received_at" in v.detail and "broker time" in v.detail
    # and still a day after its own received_at (a wrong device clock), whatever the broker time
    v = validate_input("noc_alert", {**ALERT, "occurred_at": T0 + 25 * HOUR}, ref, T0 + 26 * HOUR)
    assert v.reason == "FUTURE_EVENT" and "received_at" in v.detail
    # a record without a Kafka timestamp (-1) cannot be judged against the broker: dead-lettered, never trusted
    assert validate_input("noc_alert", ALERT, ref, -1).reason == "FUTURE_EVENT"
    assert {"OUT_OF_RANGE", "TOO_LONG", "BAD_ID", "BAD_TEXT", "FUTURE_EVENT", "LATE", "MALFORMED"} <= REASONS


def test_reference_records_outside_the_contract_are_not_applied() -> None:
    refs = References()
    pipe = Pipeline(refs, ModelCache())
    assert pipe.apply_reference("ref.sites", serde.encode("site", SITE))
    for bad in ({**SITE, "lat": math.nan}, {**SITE, "timezone": "../../etc"}, {**SITE, "name": "x" * 201},
                {**SITE, "updated_at": 2**63 - 1}, {**SITE, "site_id": "s1", "tenant_id": 0}):
        assert not pipe.apply_reference("ref.sites", serde.encode("site", bad))
    assert refs.sites[(1, "s1")] == SITE  # the last valid version stays
    shift = {"tenant_id": 1, "shift_id": "sh1", "person_id": "p1", "site_id": "s1", "starts_at": T0,
             "ends_at": T0 - 1, "status": "SCHEDULED", "updated_at": T0}
    assert not pipe.apply_reference("ref.shifts", serde.encode("shift", shift))
    assert (1, "sh1") not in refs.shifts


def test_ticket_feedback_is_timed_no_later_than_its_record_timestamp() -> None:
    ticket = {"tenant_id": 1, "site_id": "s1", "status": "RESOLVED", "resolution": "FALSE_POSITIVE",
              "related_event_id": "anom-1", "occurred_at": T0 + 365 * 24 * HOUR}
    fb = ticket_feedback(ticket)
    assert fb is not None and fb["at"] == ticket["occurred_at"]  # no broker time given: its own
    fb = ticket_feedback(ticket, T0)
    assert fb is not None and fb["at"] == T0
    fb = ticket_feedback({**ticket, "occurred_at": T0 - HOUR}, T0)
    assert fb is not None and fb["at"] == T0 - HOUR  # stamped after it happened: its event time


def test_the_input_topics_carry_the_brokers_bound() -> None:
    for spec in CATALOGUE:
        cfg = spec.config()
        if spec.kind == "input":
            assert cfg["message.timestamp.after.max.ms"] == str(BROKER_MAX_FUTURE_MS)
        else:
            assert "message.timestamp.after.max.ms" not in cfg  # outputs are stamped by nocstream itself
        assert "message.timestamp.before.max.ms" not in cfg  # back-fills: no bound into the past
    assert {s.short for s in CATALOGUE if s.kind == "input"} == {"attendance", "activity", "alerts",
                                                                  "audit-findings", "tickets"}
