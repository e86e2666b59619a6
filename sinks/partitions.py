"""Daily range partitions of the high-volume tables: naming, creation ahead of the rows, retention.

Partitions are ``<table>_pYYYYMMDD`` covering ``[day 00:00 UTC, next day 00:00 UTC)``. The sink creates the
partitions a batch needs (and one day ahead) before it writes the batch, in its own short transaction
under an advisory lock, so a record never meets a missing partition and concurrent workers never race.
Only days that meet the input contract's time range (``schemas.contract``) get a partition: a row dated
outside it is dead-lettered before it reaches here (:func:`partition_allowed`), so no producer-chosen time
can make the sink create a partition for year 9999 (or fail computing its bounds).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg

from schemas.contract import time_in_range

DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class PartitionedTable:
    table: str
    column: str  # the partition (time) column
    retention_days: int  # partitions wholly older than this are dropped by prune()


# Retention mirrors the topic retention in schemas/topics.py.
PARTITIONED: dict[str, PartitionedTable] = {t.table: t for t in (
    PartitionedTable("attendance", "occurred_at", 90),
    PartitionedTable("activity", "occurred_at", 30),
    PartitionedTable("signal_windows", "window_start", 30),
    PartitionedTable("fraud_scores", "occurred_at", 365),
    PartitionedTable("event_log", "ts", 7),
)}

_PART = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")


def day_of(ms: int) -> date:
    """UTC day of an epoch-ms instant (floor, so negative instants work too)."""
    return date(1970, 1, 1) + timedelta(days=ms // DAY_MS)


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def parse_partition(name: str) -> tuple[str, date] | None:
    m = _PART.match(name)
    if m is None:
        return None
    d = m.group("day")
    return m.group("table"), date(int(d[:4]), int(d[4:6]), int(d[6:]))


def bounds(day: date) -> tuple[datetime, datetime]:
    lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return lo, lo + timedelta(days=1)


def creatable(day: date) -> bool:
    """May the sink create a partition for ``day``: does the day meet the contract's time range?"""
    start_ms = (day - _EPOCH).days * DAY_MS
    return day < date.max and (time_in_range(start_ms) or time_in_range(start_ms + DAY_MS - 1))


def partition_allowed(at: datetime) -> bool:
    """Is ``at`` in a day the sink may create a partition for (see :func:`creatable`)?"""
    return creatable(at.astimezone(UTC).date())


def days_needed(times: Iterable[datetime], ahead: int = 1) -> set[date]:
    """The UTC days covering ``times``, plus ``ahead`` days after the latest one (created before they are due);
    only days that are :func:`creatable`."""
    days = {d for d in (t.astimezone(UTC).date() for t in times) if creatable(d)}
    if days and ahead > 0:
        last = max(days)
        # ``last`` is inside the contract's range, so the days after it are representable
        days.update(d for d in (last + timedelta(days=i) for i in range(1, ahead + 1)) if creatable(d))
    return days


def create_sql(table: str, day: date) -> str:
    lo, hi = bounds(day)
    return (f"CREATE TABLE IF NOT EXISTS {partition_name(table, day)} PARTITION OF {table} "
            f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')")


def expired(names: Iterable[str], table: str, retention_days: int, now: datetime) -> list[str]:
    """Partitions of ``table`` whose whole day ended more than ``retention_days`` before ``now``."""
    cutoff = now - timedelta(days=retention_days)
    out = []
    for name in names:
        parsed = parse_partition(name)
        if parsed is not None and parsed[0] == table and bounds(parsed[1])[1] <= cutoff:
            out.append(name)
    return sorted(out)


class PartitionManager:
    """Creates missing partitions; remembers those it has seen so a warm sink costs no round trip.

    ``known`` holds at most one name per (partitioned table, creatable day): bounded by the contract's range.
    """

    def __init__(self) -> None:
        self.known: set[str] = set()

    def ensure(self, conn: psycopg.Connection[tuple[object, ...]], table: str, days: Iterable[date]) -> list[str]:
        """Create the partitions of ``table`` for ``days`` that do not exist yet; return those created.

        ``conn`` must be in autocommit mode: each creation is its own short transaction (it locks the parent).
        """
        missing = [d for d in sorted(set(days)) if partition_name(table, d) not in self.known]
        if not missing:
            return []
        existing = set(self.list(conn, table))
        self.known.update(existing)
        created = []
        for d in missing:
            name = partition_name(table, d)
            if name in existing:
                continue
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('noc_partitions'), hashtext(%s))", (table,))
                conn.execute(create_sql(table, d).encode())
            self.known.add(name)
            created.append(name)
        return created

    @staticmethod
    def list(conn: psycopg.Connection[tuple[object, ...]], table: str) -> list[str]:
        """Partitions of ``table`` in the current schema (as resolved by the search_path)."""
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)", (table,)).fetchall()
        return sorted(str(r[0]) for r in rows)


def prune(conn: psycopg.Connection[tuple[object, ...]], now: datetime,
          retention: dict[str, int] | None = None) -> list[str]:
    """Drop expired partitions of every partitioned table (``retention`` overrides days per table)."""
    dropped = []
    for spec in PARTITIONED.values():
        days = (retention or {}).get(spec.table, spec.retention_days)
        for name in expired(PartitionManager.list(conn, spec.table), spec.table, days, now):
            with conn.transaction():
                conn.execute(f"DROP TABLE IF EXISTS {name}".encode())
            dropped.append(name)
    return dropped
