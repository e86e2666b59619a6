"""The input contract (schemas/contract.py): every field of every input and reference schema at and beyond its
bounds, the extremes of each Avro type, the broker-relative event-time check, and the fast path agreeing with the
per-field checks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import contract, serde
from schemas.contract import (
    BAD_ID,
    BAD_TEXT,
    CONTRACT_REASONS,
    FUTURE_EVENT,
    MAX_CODE_LEN,
    MAX_FUTURE_SKEW_MS,
    MAX_ID_LEN,
    MAX_TIME_MS,
    MIN_TIME_MS,
    OUT_OF_RANGE,
    TOO_LONG,
    Violation,
    check,
    time_in_range,
)
from simulator.config import HOUR_MS, SimConfig
from simulator.generate import generate

T0 = 1_793_577_600_000  # 2026-11-01T00:00Z
LONG_MAX, LONG_MIN = 2**63 - 1, -(2**63)
SCHEMAS = Path(contract.__file__).parent
ALL_STEMS = sorted(contract.INPUT_STEMS | contract.REFERENCE_STEMS)

BASE: dict[str, dict[str, Any]] = {
    "attendance_event": {
        "event_id": "0b6f2d1e-7c1a-4b7e-9d3c-2a5f8e1b4c6d", "tenant_id": 1, "site_id": "site-1-001",
        "person_id": "guard-1-0001", "occurred_at": T0, "received_at": T0 + 400, "event_type": "CHECK_IN",
        "shift_id": "shift-guard-1-0001-20261101D", "lat": -1.2921, "lon": 36.8219, "accuracy_m": 8.5,
        "device_id": "dev-0123456789ab", "is_mock_location": False, "face_match_score": 0.97},
    "activity_signal": {
        "event_id": "evt-1", "tenant_id": 1, "site_id": "site-1-001", "person_id": "guard-1-0001",
        "occurred_at": T0, "received_at": T0 + 100, "kind": "TOUR_CHECKPOINT_SCANNED", "device_id": "dev-1",
        "shift_id": None, "lat": 0.0, "lon": 0.0, "accuracy_m": 5.0, "is_mock_location": False,
        "phone_event_type": "SCREEN_ON", "task_id": "task-9", "tour_id": "site-1-001-tour0",
        "checkpoint_id": "site-1-001-t0-cp1"},
    "noc_alert": {
        "event_id": "a-1", "tenant_id": 1, "site_id": "site-1-001", "person_id": None, "occurred_at": T0,
        "received_at": T0 + 500, "alert_type": "PANIC_BUTTON", "severity": "CRITICAL",
        "message": "Panic button pressed at Nairobi mall 1\n(second press)", "source": "device-mdm"},
    "audit_finding": {
        "event_id": "f-1", "tenant_id": 1, "site_id": "site-1-001", "person_id": "guard-1-0001", "occurred_at": T0,
        "received_at": T0 + 600_000, "finding_type": "SLEEPING_ON_DUTY", "severity": "HIGH",
        "evidence_summary": "Guard asleep at the gate\tphoto attached", "auditor_id": "auditor-1-01",
        "evidence_urls": ["https://evidence.nocstream.example/1/f-1/0.jpg"]},
    "ticket": {
        "event_id": "t-1", "tenant_id": 1, "site_id": None, "person_id": None, "occurred_at": T0,
        "received_at": T0 + 50, "ticket_id": "tkt-1", "ticket_no": "NOC-2026-000042", "category": "OPERATIONS",
        "source": "USER", "status": "RESOLVED", "priority": "URGENT", "resolution": "FALSE_POSITIVE",
        "title": "Gate barrier fault", "description": "", "related_event_id": "anom-1234", "actor": "user-1-01"},
    "site": {
        "tenant_id": 1, "site_id": "site-1-001", "name": "Nairobi mall 1", "timezone": "Africa/Nairobi",
        "lat": -1.29, "lon": 36.82, "geofence_radius_m": 150.0,
        "tours": [{"tour_id": "site-1-001-tour0", "checkpoint_ids": ["cp1", "cp2"], "interval_minutes": 60}],
        "active": True, "updated_at": T0},
    "person": {
        "tenant_id": 1, "person_id": "guard-1-0001", "name": "Amina Otieno", "role": "GUARD",
        "home_site_id": "site-1-001", "device_ids": ["dev-1", "dev-2"], "usual_check_in_minute": 420,
        "active": True, "updated_at": T0},
    "shift": {
        "tenant_id": 1, "shift_id": "shift-1", "person_id": "guard-1-0001", "site_id": "site-1-001",
        "starts_at": T0, "ends_at": T0 + 8 * HOUR_MS, "status": "SCHEDULED", "updated_at": T0},
}

# What each field is, for upstream teams: the domain table of README "Input contract" follows these.
TIMES = {"occurred_at", "received_at", "updated_at", "starts_at", "ends_at"}
CODES = {"alert_type", "source", "finding_type", "phone_event_type", "role"}
TEXTS = {"message": 2000, "evidence_summary": 4000, "title": 300, "description": 8000, "name": 200}
IDS = {"event_id", "site_id", "person_id", "shift_id", "device_id", "task_id", "tour_id", "checkpoint_id",
       "auditor_id", "ticket_id", "ticket_no", "related_event_id", "actor", "home_site_id"}
RANGES = {"lat": (-90.0, 90.0), "lon": (-180.0, 180.0), "accuracy_m": (0.0, 100_000.0),
          "face_match_score": (0.0, 1.0), "geofence_radius_m": (0.0, 100_000.0)}


def _avro_fields(stem: str) -> list[dict[str, Any]]:
    return list(json.loads((SCHEMAS / f"{stem}.avsc").read_text())["fields"])


def _strings(stem: str, names: set[str]) -> list[str]:
    """The string fields (nullable or not) of a schema among ``names`` (ticket's ``source`` is an enum)."""
    return [f["name"] for f in _avro_fields(stem)
            if f["name"] in names and f["type"] in ("string", ["null", "string"])]


def _with(stem: str, **fields: Any) -> dict[str, Any]:
    return {**BASE[stem], **fields}


def _reason(stem: str, field: str, value: Any, broker: int | None = None) -> str | None:
    v = check(stem, _with(stem, **{field: value}), broker)
    if v is not None:
        assert v.field.split("[")[0].split(".")[0] == field, v
        assert v.reason in CONTRACT_REASONS and field in v.detail
    return None if v is None else v.reason


def test_interface() -> None:
    assert {contract.OUT_OF_RANGE, contract.TOO_LONG, contract.BAD_ID} <= CONTRACT_REASONS
    assert len(CONTRACT_REASONS) == 5
    assert (MIN_TIME_MS, MAX_TIME_MS) == (946_684_800_000, 4_102_444_800_000)  # 2000-01-01, 2100-01-01 UTC
    assert time_in_range(MIN_TIME_MS) and time_in_range(MAX_TIME_MS - 1)
    assert not time_in_range(MIN_TIME_MS - 1) and not time_in_range(MAX_TIME_MS)
    assert not time_in_range(LONG_MAX) and not time_in_range(LONG_MIN) and not time_in_range(0)
    v = Violation(OUT_OF_RANGE, "lat", "x")
    with pytest.raises(AttributeError):
        v.reason = "other"  # type: ignore[misc]


@pytest.mark.parametrize("stem", ALL_STEMS)
def test_every_field_of_every_schema_is_bounded_and_the_bases_pass(stem: str) -> None:
    assert sorted(contract.fields(stem)) == sorted(f["name"] for f in _avro_fields(stem))
    assert check(stem, BASE[stem], None) is None
    if stem in contract.INPUT_STEMS:
        assert check(stem, BASE[stem], T0) is None
    serde.encode(stem, BASE[stem])  # the bases are valid Avro too


def test_the_simulators_world_is_inside_the_contract() -> None:
    cfg = SimConfig(seed=3, tenants=2, sites_per_tenant=3, guards_per_site=3, span=12 * HOUR_MS)
    seen = set()
    for r in generate(cfg):
        if r.stem in contract.INPUT_STEMS or r.stem in contract.REFERENCE_STEMS:
            broker = (r.record.get("occurred_at") or r.at) if r.stem in contract.INPUT_STEMS else None
            assert check(r.stem, r.record, broker) is None, r
            seen.add(r.stem)
    assert seen == set(ALL_STEMS)


@pytest.mark.parametrize("stem", ALL_STEMS)
def test_times_at_and_beyond_the_absolute_range(stem: str) -> None:
    for f in (f["name"] for f in _avro_fields(stem) if f["name"] in TIMES):
        ok = [MIN_TIME_MS, MAX_TIME_MS - 1, T0]
        if stem == "shift":  # ends_at >= starts_at
            ok = [T0 + 8 * HOUR_MS] if f == "ends_at" else [MIN_TIME_MS, T0]
        for value in ok:
            assert _reason(stem, f, value) is None, (f, value)
        for value in (MIN_TIME_MS - 1, MAX_TIME_MS, 0, -1, LONG_MAX, LONG_MIN):
            assert _reason(stem, f, value) == OUT_OF_RANGE, (f, value)
        for value in (float(T0), True, "1793577600000", None):  # not an int at all (a dict not from Avro)
            assert _reason(stem, f, value) == OUT_OF_RANGE, (f, value)


def test_shift_ends_after_it_starts() -> None:
    assert _reason("shift", "ends_at", T0) is None  # a zero-length shift
    v = check("shift", _with("shift", ends_at=T0 - 1), None)
    assert v is not None and (v.reason, v.field) == (OUT_OF_RANGE, "ends_at")


@pytest.mark.parametrize("stem", sorted(contract.INPUT_STEMS))
def test_event_times_against_the_broker_time(stem: str) -> None:
    broker = T0 + HOUR_MS
    for f in ("occurred_at", "received_at"):
        others = {"occurred_at": T0, "received_at": T0}
        assert check(stem, _with(stem, **{**others, f: broker + MAX_FUTURE_SKEW_MS}), broker) is None
        v = check(stem, _with(stem, **{**others, f: broker + MAX_FUTURE_SKEW_MS + 1}), broker)
        assert v is not None and (v.reason, v.field) == (FUTURE_EVENT, f) and "broker time" in v.detail
        # the broker check is skipped without a broker time, and never bounds the past (back-fills)
        assert check(stem, _with(stem, **{**others, f: broker + MAX_FUTURE_SKEW_MS + 1}), None) is None
        assert check(stem, _with(stem, **{**others, f: MIN_TIME_MS}), MAX_TIME_MS - 1) is None
    # the forged clock: both a year ahead, the record stamped a few minutes ahead
    year = 365 * 24 * HOUR_MS
    v = check(stem, _with(stem, occurred_at=T0 + year, received_at=T0 + year), T0 + 5 * 60_000)
    assert v is not None and (v.reason, v.field) == (FUTURE_EVENT, "occurred_at")
    assert contract.check_broker_time(stem, _with(stem, occurred_at=T0 + year), T0) is not None


@pytest.mark.parametrize("stem", ALL_STEMS)
def test_ids_and_codes(stem: str) -> None:
    for f in _strings(stem, IDS | CODES):
        longest = MAX_CODE_LEN if f in CODES else MAX_ID_LEN
        for value in ("a", "x" * longest, "0b6f2d1e-7c1a-4b7e-9d3c-2a5f8e1b4c6d", "user@example.com",
                      "NOC-2026-000042", "A.b_c-d@e+f~g=h"):
            assert _reason(stem, f, value) is None, (f, value)
        assert _reason(stem, f, "x" * (longest + 1)) == TOO_LONG
        assert _reason(stem, f, "x" * 1_000_000) == TOO_LONG
        for value in ("", " ", "a b", "a:b", "site:s1", "a|b", "a\x00", "a\n", "a\x1f", "\x7f", "é", "漢",
                      "🙂", "a/b", "a\\b", "a'b", 'a"b', "a,b", "a;b", "\u200b", "\ud800", "a\u2028b"):
            assert _reason(stem, f, value) == BAD_ID, (f, value)
        assert _reason(stem, f, 42) == BAD_ID  # not a string (a dict not from Avro)


@pytest.mark.parametrize("stem", ALL_STEMS)
def test_free_text(stem: str) -> None:
    for f in _strings(stem, set(TEXTS)):
        longest = TEXTS[f]
        for value in ("", "x" * longest, "tab\there\nnew line\r\n", "é漢字🙂 — «quoted»", "a:b|c/d", " "):
            assert _reason(stem, f, value) is None, (f, value)
        assert _reason(stem, f, "x" * (longest + 1)) == TOO_LONG
        assert _reason(stem, f, "é" * 1_000_000) == TOO_LONG
        for value in ("a\x00b", "\x01", "\x08", "\x0b", "\x0c", "\x1b[31m", "\x1f", "\x7f", "\ud800", "x\udfff"):
            assert _reason(stem, f, value) == BAD_TEXT, (f, value)


def test_evidence_urls() -> None:
    url = "https://evidence.nocstream.example/1/f-1/0.jpg"
    assert _reason("audit_finding", "evidence_urls", []) is None
    assert _reason("audit_finding", "evidence_urls", [url] * 20) is None
    assert _reason("audit_finding", "evidence_urls", [url] * 21) == TOO_LONG
    assert _reason("audit_finding", "evidence_urls", ["x" * 2048]) is None
    assert _reason("audit_finding", "evidence_urls", ["x" * 2049]) == TOO_LONG
    for bad in ("https://a b", "https://a\x00", "https://a\n", "\t"):
        v = check("audit_finding", _with("audit_finding", evidence_urls=[url, bad]), None)
        assert v is not None and (v.reason, v.field) == (BAD_TEXT, "evidence_urls[1]")
    assert _reason("audit_finding", "evidence_urls", "not a list") == OUT_OF_RANGE


@pytest.mark.parametrize("stem", ALL_STEMS)
def test_numbers_at_and_beyond_their_physical_range(stem: str) -> None:
    for f in (f["name"] for f in _avro_fields(stem) if f["name"] in RANGES):
        lo, hi = RANGES[f]
        for value in (lo, hi, (lo + hi) / 2, -0.0 if lo == 0 else lo, int(hi)):
            assert _reason(stem, f, value) is None, (f, value)
        for value in (math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf), math.nan, -math.nan, math.inf,
                      -math.inf, 1.7976931348623157e308, -1.7976931348623157e308, LONG_MAX, True, "1.0"):
            assert _reason(stem, f, value) == OUT_OF_RANGE, (f, value)
    fields = {f["name"] for f in _avro_fields(stem)}
    assert _reason(stem, "tenant_id", 1) is None
    assert _reason(stem, "tenant_id", 2**53 - 1) is None
    for value in (0, -1, 2**53, LONG_MAX, LONG_MIN, 1.0, True):
        assert _reason(stem, "tenant_id", value) == OUT_OF_RANGE, value
    if "usual_check_in_minute" in fields:
        for value in (-1, 0, 1439):
            assert _reason(stem, "usual_check_in_minute", value) is None
        for value in (-2, 1440, 2**31 - 1, -(2**31)):
            assert _reason(stem, "usual_check_in_minute", value) == OUT_OF_RANGE


def test_site_tours_and_timezone() -> None:
    tour = BASE["site"]["tours"][0]
    assert _reason("site", "tours", [tour] * 64) is None
    assert _reason("site", "tours", [tour] * 65) == TOO_LONG
    cases = [({**tour, "interval_minutes": 0}, OUT_OF_RANGE, "tours[0].interval_minutes"),
             ({**tour, "interval_minutes": 2**31 - 1}, OUT_OF_RANGE, "tours[0].interval_minutes"),
             ({**tour, "checkpoint_ids": ["cp"] * 257}, TOO_LONG, "tours[0].checkpoint_ids"),
             ({**tour, "checkpoint_ids": ["ok", "not ok"]}, BAD_ID, "tours[0].checkpoint_ids[1]"),
             ({**tour, "tour_id": ""}, BAD_ID, "tours[0].tour_id")]
    for bad, reason, field in cases:
        v = check("site", _with("site", tours=[bad]), None)
        assert v is not None and (v.reason, v.field) == (reason, field)
    for tz in ("UTC", "Africa/Nairobi", "America/Argentina/Buenos_Aires", "Etc/GMT+3", "No/Such_Zone"):
        assert _reason("site", "timezone", tz) is None, tz
    for tz in ("", "../../etc/passwd", "../etc", "./UTC", "a b", "A/B/C/D", "/UTC", "UTC/", "x" * 65, "Europe/\x00"):
        assert _reason("site", "timezone", tz) == BAD_ID, tz


def test_person_devices() -> None:
    assert _reason("person", "device_ids", ["d"] * 32) is None
    assert _reason("person", "device_ids", ["d"] * 33) == TOO_LONG
    assert _reason("person", "device_ids", ["d", ""]) == BAD_ID


@pytest.mark.parametrize("stem", ALL_STEMS)
def test_nulls_enums_and_missing_fields(stem: str) -> None:
    for f in _avro_fields(stem):
        name, typ = f["name"], f["type"]
        nullable = isinstance(typ, list) and "null" in typ
        assert (_reason(stem, name, None) is None) == nullable, name
        rec = dict(BASE[stem])
        del rec[name]
        v = check(stem, rec, None)
        assert (v is None) == nullable, name  # a missing nullable field reads as null
        if isinstance(typ, dict) and typ.get("type") == "enum":
            assert _reason(stem, name, typ["symbols"][-1]) is None
            assert _reason(stem, name, "NOT_A_SYMBOL") == OUT_OF_RANGE
        if typ == "boolean":
            assert _reason(stem, name, 1) == OUT_OF_RANGE


def test_stems_without_a_contract_pass() -> None:
    assert check("fraud_score", {"anything": math.nan}, 0) is None


def test_violations_name_the_first_bad_field_in_schema_order() -> None:
    rec = _with("attendance_event", person_id="", lat=math.nan, occurred_at=LONG_MAX)
    v = check("attendance_event", rec, T0)
    assert v is not None and (v.reason, v.field) == (BAD_ID, "person_id")


# -- the fast path and the per-field checks agree on arbitrary records -----------------------------------

def _value() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), st.integers(min_value=LONG_MIN, max_value=LONG_MAX),
        st.sampled_from([0, 1, -1, MIN_TIME_MS, MAX_TIME_MS, MAX_TIME_MS - 1, T0, 2**53]),
        st.floats(), st.sampled_from([0.0, -0.0, 90.0, 180.0, 1.0, 100_000.0]),
        st.text(max_size=40), st.sampled_from(["", "x" * 129, "guard-1", "a:b", "Africa/Nairobi"]),
        st.lists(st.text(max_size=5), max_size=3))


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[str, dict[str, Any], int | None]:
    stem = draw(st.sampled_from(ALL_STEMS))
    rec = dict(BASE[stem])
    for name in draw(st.lists(st.sampled_from(sorted(rec)), max_size=4, unique=True)):
        rec[name] = draw(_value())
    broker = draw(st.one_of(st.none(), st.sampled_from([T0, T0 - HOUR_MS, 0])))
    return stem, rec, broker


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_fast_path_agrees_with_the_per_field_checks(case: tuple[str, dict[str, Any], int | None]) -> None:
    stem, rec, broker = case
    slow = contract._check_fields(contract.SPECS[stem], rec)
    if slow is None and stem == "shift" and rec["ends_at"] < rec["starts_at"]:
        slow = Violation(OUT_OF_RANGE, "ends_at", "")
    if slow is None and broker is not None:
        slow = contract.check_broker_time(stem, rec, broker)
    got = check(stem, rec, broker)
    assert (got is None) == (slow is None)
    if got is not None and slow is not None:
        assert (got.reason, got.field) == (slow.reason, slow.field)
    assert check(stem, rec, broker) == got  # the id memo changes no verdict
