"""Input validation reasons and dead-letter records."""

from __future__ import annotations

import json

import pytest
from test_core_correlation import HOUR, T0, alert, anomaly, encodes, fraud

from schemas import serde
from schemas.serde import DecodeError
from streams.core.ids import stable_id
from streams.core.validate import (
    DECODE_REASONS,
    FUTURE_EVENT,
    LATE,
    OK,
    UNKNOWN_SITE,
    UNKNOWN_TENANT,
    ReferenceData,
    ValidationConfig,
    Verdict,
    dead_letter,
    dead_letter_for_decode_error,
    dead_letter_for_verdict,
    validate,
)


def site(tenant: int, site_id: str) -> dict[str, object]:
    return {"tenant_id": tenant, "site_id": site_id, "name": site_id, "timezone": "UTC", "lat": 0.0, "lon": 0.0,
            "geofence_radius_m": 100.0, "tours": []}


@pytest.fixture
def ref() -> ReferenceData:
    r = ReferenceData()
    r.add_site(site(1, "s1"))
    r.apply(b"1:s2", site(1, "s2"))
    r.loaded = True
    return r


def test_ok_and_reasons(ref: ReferenceData) -> None:
    assert validate("noc_alert", alert("a", T0), ref, T0) == OK
    assert validate("noc_alert", alert("a", T0), ref, T0).ok
    v = validate("noc_alert", alert("a", T0, tenant=9), ref, T0)
    assert v.reason == UNKNOWN_TENANT and "tenant 9" in v.detail and not v.ok
    assert validate("fraud_score", fraud("x", T0, site="s9"), ref, T0).reason == UNKNOWN_SITE
    v = validate("noc_alert", alert("a", T0 + 25 * HOUR), ref, T0)
    assert v.reason == FUTURE_EVENT and "allowed skew" in v.detail
    assert validate("noc_alert", alert("a", T0 + 24 * HOUR), ref, T0).ok  # exactly at the skew: fine
    assert validate("anomaly", anomaly("n", T0 + 2 * HOUR), ref, T0,
                    ValidationConfig(max_future_skew_ms=HOUR)).reason == FUTURE_EVENT  # window_end is its time
    assert validate("site", site(5, "zz"), ref, T0).ok  # reference data is not checked against itself
    no_time = {"tenant_id": 1, "site_id": "s1"}
    assert validate("whatever", no_time, ref, T0).ok


def test_ticket_without_site_checks_tenant_only(ref: ReferenceData) -> None:
    t = {"tenant_id": 1, "site_id": None, "occurred_at": T0}
    assert validate("ticket", t, ref, T0).ok
    assert validate("ticket", {**t, "tenant_id": 2}, ref, T0).reason == UNKNOWN_TENANT


def test_before_reference_data_is_loaded() -> None:
    empty = ReferenceData()
    assert validate("noc_alert", alert("a", T0, tenant=9, site="nowhere"), empty, T0).ok  # accept by default
    assert validate("noc_alert", alert("a", T0 + 48 * HOUR), empty, T0).reason == FUTURE_EVENT  # still checked
    strict = ValidationConfig(before_load="reject")
    v = validate("noc_alert", alert("a", T0), empty, T0, strict)
    assert v.reason == UNKNOWN_SITE and "not loaded" in v.detail


def test_reference_data_tombstones_and_round_trip(ref: ReferenceData) -> None:
    ref.apply(b"1:s2", None)
    assert not ref.knows_site(1, "s2") and ref.knows_site(1, "s1")
    ref.remove_site(7, "x")  # unknown tenant: no error
    ref.add_tenant(4)
    assert ref.knows_tenant(4) and not ref.knows_site(4, "s1")
    again = ReferenceData.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert again == ref


def test_dead_letter_record_is_stable_and_valid() -> None:
    raw = serde.encode("noc_alert", alert("a", T0))
    args = dict(source_topic="noc.alerts", partition=2, offset=41, component="correlator", key=b"1:p1", value=raw,
                record_timestamp=T0)
    out = dead_letter(reason=LATE, detail="3 min behind the watermark", **args)  # type: ignore[arg-type]
    encodes([out])
    assert out.topic == "dead-letters" and out.key == b"noc.alerts" and out.stem == "dead_letter"
    rec = out.record
    assert rec["dead_letter_id"] == stable_id("dlq", "noc.alerts", 2, 41, "correlator")
    assert rec["value"] == raw and rec["reason"] == "LATE" and rec["offset"] == 41
    assert dead_letter(reason=LATE, detail="3 min behind the watermark", **args) == out  # type: ignore[arg-type]
    other = dead_letter(reason=LATE, detail="", **{**args, "component": "escalator"})  # type: ignore[arg-type]
    assert other.record["dead_letter_id"] != rec["dead_letter_id"]


@pytest.mark.parametrize("data", [b"", b"\x00" * 12, b"\xc3\x01" + b"\xff" * 8 + b"x"])
def test_decode_failures_become_dead_letters(data: bytes) -> None:
    with pytest.raises(DecodeError) as exc:
        serde.decode(data, expected="noc_alert")
    out = dead_letter_for_decode_error(exc.value, source_topic="noc.alerts", partition=0, offset=1,
                                       component="feed", key=None, value=data, record_timestamp=T0)
    encodes([out])
    assert out.record["reason"] in DECODE_REASONS and out.record["value"] == data and out.record["key"] is None


def test_wrong_schema_dead_letter() -> None:
    data = serde.encode("anomaly", anomaly("n", T0))
    with pytest.raises(DecodeError) as exc:
        serde.decode(data, expected="noc_alert")
    out = dead_letter_for_decode_error(exc.value, source_topic="noc.alerts", partition=0, offset=2,
                                       component="feed", key=b"k", value=data, record_timestamp=T0)
    assert out.record["reason"] == "WRONG_SCHEMA"


def test_verdict_dead_letter(ref: ReferenceData) -> None:
    v = validate("noc_alert", alert("a", T0, tenant=9), ref, T0)
    out = dead_letter_for_verdict(v, source_topic="noc.alerts", partition=1, offset=5, component="validator",
                                  key=None, value=b"raw", record_timestamp=T0)
    encodes([out])
    assert out.record["reason"] == UNKNOWN_TENANT and out.record["detail"] == v.detail
    with pytest.raises(ValueError):
        dead_letter_for_verdict(Verdict(None), source_topic="t", partition=0, offset=0, component="c", key=None,
                                value=None, record_timestamp=0)
