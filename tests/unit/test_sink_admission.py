"""The sink's record-level guards without services: contract and reference checks, the partition-day guard,
isolation of any mapping failure, which errors blame a record, and text every dead letter can hold."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg
import pytest
from test_sink_records import SAMPLES, T0, YEAR_9999, activity, alert, hostile, window

from schemas.contract import MAX_TIME_MS, MIN_TIME_MS
from schemas.serde import decode, encode
from sinks import map_feed
from sinks.admission import Admission
from sinks.partitions import creatable, days_needed, partition_allowed
from sinks.routes import Raw, prepare
from sinks.writer import record_level
from streams.core.validate import ReferenceData, validate_input

BROKER_TIME = T0 + 3_600_000  # when the test's records reached the broker


def _refs() -> ReferenceData:
    refs = ReferenceData(loaded=True)
    refs.add_site({"tenant_id": 1, "site_id": "s1"})
    refs.add_site({"tenant_id": 2, "site_id": "s2"})
    return refs


def _raws(items: list[tuple[str, bytes]], ts: int = BROKER_TIME) -> list[Raw]:
    return [Raw(short, f"ns.{short}", 0, n, b"k", value, ts) for n, (short, value) in enumerate(items)]


def _clean() -> list[tuple[str, bytes]]:
    return [(short, encode(stem, rec)) for short, (stem, rec) in SAMPLES.items()]


# Reasons Postgres gives (DB_REJECTED): prepare lets those records through as rows.
_AT_PREPARE = {name: reason for name, _s, _v, reason in hostile() if reason != "DB_REJECTED"}


def test_hostile_records_become_one_dead_letter_each_and_leave_the_others_rows_as_a_clean_batch() -> None:
    clean = _clean()
    bad = [(short, value) for name, short, value, _r in hostile() if name in _AT_PREPARE]
    mixed = [x for pair in zip(clean, bad, strict=False) for x in pair] + clean[len(bad):] + bad[len(clean):]
    admit = Admission(_refs())
    want = prepare(_raws(clean), admit=admit)
    got = prepare(_raws(mixed), admit=admit)
    assert not want.dead
    assert repr(got.rows) == repr(want.rows)  # repr: a NaN feature equals itself
    assert [t[:2] for t in got.tickets] == [t[:2] for t in want.tickets]
    by_value = {value: name for name, _s, value, _r in hostile()}
    reasons = {by_value[d["value"]]: d["reason"] for d in got.dead}
    assert reasons == _AT_PREPARE
    for d in got.dead:
        assert d["component"] == "sink" and d["key"] == b"k" and d["source_topic"].startswith("ns.")
        assert "\x00" not in d["detail"] and len(d["detail"]) <= 2000


def test_inputs_are_judged_with_the_workers_verdicts_and_details() -> None:
    refs = _refs()
    for name, short, value, _reason in hostile():
        if short not in ("attendance", "activity", "alerts", "audit-findings") or name == "not Avro":
            continue
        raw = _raws([(short, value)])[0]
        rec = decode(value, expected=SAMPLES[short][0])
        want = validate_input(SAMPLES[short][0], rec, refs, raw.timestamp)
        got = prepare([raw], admit=Admission(refs)).dead[0]
        assert (got["reason"], got["detail"]) == (want.reason, want.detail), name
    rec = activity(1) | {"lat": float("nan")}
    got = prepare(_raws([("activity", encode("activity_signal", rec))]), admit=Admission(refs))
    assert got.dead[0]["reason"] == "OUT_OF_RANGE" and got.dead[0]["detail"].startswith("lat ")


def test_an_event_leading_its_broker_time_is_future_and_without_references_only_the_contract_applies() -> None:
    ahead = _raws([("alerts", encode("noc_alert", alert(1)))], ts=T0 - 3_600_000)
    assert prepare(ahead, admit=Admission(None)).dead[0]["reason"] == "FUTURE_EVENT"
    unknown = _raws([("alerts", encode("noc_alert", alert(1) | {"tenant_id": 5}))])
    assert not prepare(unknown, admit=Admission(None)).dead
    assert prepare(unknown, admit=Admission(_refs())).dead[0]["reason"] == "UNKNOWN_TENANT"


def test_partitions_only_for_days_inside_the_contract() -> None:
    assert creatable(date(2026, 11, 1)) and creatable(date(2000, 1, 1)) and creatable(date(2099, 12, 31))
    assert not creatable(date(1999, 12, 31)) and not creatable(date(2100, 1, 1))
    assert not creatable(date(9999, 12, 31)) and not creatable(date(1, 1, 1)) and not creatable(date.max)
    last = datetime.fromtimestamp((MAX_TIME_MS - 1) / 1000, UTC)
    assert days_needed([last]) == {date(2099, 12, 31)}  # the day ahead is past the range: not made
    first = datetime.fromtimestamp(MIN_TIME_MS / 1000, UTC)
    assert partition_allowed(first) and not partition_allowed(datetime(9999, 12, 31, tzinfo=UTC))


def test_a_derived_row_dated_outside_the_partition_days_is_dead_lettered_before_any_partition_is_made() -> None:
    raws = _raws([("signal-windows", encode("signal_window", window(1) | {"window_start": YEAR_9999})),
                  ("signal-windows", encode("signal_window", window(2)))])
    got = prepare(raws)
    assert [d["reason"] for d in got.dead] == ["OUT_OF_RANGE"]
    assert "window_start 9999-12-31" in got.dead[0]["detail"]
    assert len(got.rows[next(iter(got.rows))]) == 1


def test_any_exception_while_mapping_isolates_the_record() -> None:
    raws = _raws([("fraud-scores", encode("fraud_score", SAMPLES["fraud-scores"][1] | {"occurred_at": 2**63 - 1})),
                  ("fraud-scores", encode("fraud_score", SAMPLES["fraud-scores"][1]))])
    got = prepare(raws)
    assert [d["reason"] for d in got.dead] == ["UNMAPPABLE"] and got.items[0].dead is not None
    assert sum(len(r) for r in got.rows.values()) == 1


def test_errors_that_blame_a_record_and_those_that_do_not() -> None:
    assert record_level(psycopg.errors.CharacterNotInRepertoire())  # 22021: NUL in text
    assert record_level(psycopg.errors.UntranslatableCharacter())  # 22P05: \u0000 in JSONB
    assert record_level(psycopg.errors.ProgramLimitExceeded())  # 54000: index row too large
    assert record_level(psycopg.errors.CheckViolation())
    assert record_level(OverflowError("date value out of range")) and record_level(psycopg.DataError("client"))
    assert not record_level(psycopg.OperationalError("connection refused"))
    assert not record_level(psycopg.errors.InsufficientPrivilege())  # 42501
    assert not record_level(psycopg.errors.UndefinedTable())
    assert not record_level(psycopg.errors.QueryCanceled())  # 57014: statement timeout
    assert not record_level(KeyboardInterrupt())


@pytest.mark.parametrize("text", ["a\x00b", "lone \ud800 surrogate", "x" * 5000])
def test_dead_letter_detail_is_always_storable(text: str) -> None:
    d = map_feed.sink_dead_letter("t", 0, 1, "R", text, None, b"\x00", 2**63 - 1)
    assert "\x00" not in d["detail"] and len(d["detail"]) <= 4 * 2000
    d["detail"].encode("utf-8")  # no lone surrogate left
    row = map_feed.dead_letter_row(d)
    assert row[9].year == 9999  # a Kafka timestamp no column holds is clamped, not an error
    assert map_feed.dead_letter_row(d | {"record_timestamp": -(2**63)})[9].year == 1
