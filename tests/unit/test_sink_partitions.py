from __future__ import annotations

from datetime import UTC, date, datetime

from sinks.partitions import (
    PARTITIONED,
    bounds,
    create_sql,
    day_of,
    days_needed,
    expired,
    parse_partition,
    partition_name,
)


def test_names_round_trip() -> None:
    assert partition_name("activity", date(2026, 11, 1)) == "activity_p20261101"
    assert parse_partition("activity_p20261101") == ("activity", date(2026, 11, 1))
    assert parse_partition("event_log_p20260102") == ("event_log", date(2026, 1, 2))
    assert parse_partition("activity_default") is None


def test_day_of_uses_utc_floor() -> None:
    assert day_of(1_793_491_200_000) == date(2026, 11, 1)
    assert day_of(1_793_491_199_999) == date(2026, 10, 31)
    assert day_of(-1) == date(1969, 12, 31)


def test_bounds_and_sql() -> None:
    lo, hi = bounds(date(2026, 11, 1))
    assert lo == datetime(2026, 11, 1, tzinfo=UTC) and (hi - lo).days == 1
    sql = create_sql("activity", date(2026, 11, 1))
    assert "activity_p20261101 PARTITION OF activity" in sql
    assert "FROM ('2026-11-01T00:00:00+00:00') TO ('2026-11-02T00:00:00+00:00')" in sql


def test_days_needed_adds_days_ahead() -> None:
    t = [datetime(2026, 11, 1, 23, 59, tzinfo=UTC), datetime(2026, 11, 3, 1, tzinfo=UTC)]
    assert days_needed(t) == {date(2026, 11, 1), date(2026, 11, 3), date(2026, 11, 4)}
    assert days_needed(t, ahead=0) == {date(2026, 11, 1), date(2026, 11, 3)}
    assert days_needed([]) == set()


def test_expired_keeps_partitions_still_inside_retention() -> None:
    names = ["activity_p20261001", "activity_p20261002", "activity_p20261003", "attendance_p20200101", "junk"]
    now = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
    # 30 days before now is 2026-10-03 00:00: the day of 10-02 ended exactly then, 10-03 not yet.
    assert expired(names, "activity", 30, now) == ["activity_p20261001", "activity_p20261002"]
    assert PARTITIONED["activity"].retention_days == 30
