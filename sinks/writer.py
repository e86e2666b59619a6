"""Writes a prepared batch to Postgres in ONE transaction: COPY into temp tables, then upsert.

Partitions the batch needs are created first (short autocommit transactions). Ticket changes are applied
record by record in the same transaction; refusals become dead letters. The caller publishes the returned
feed events and commits Kafka offsets only after :meth:`Writer.write` returned (i.e. after the commit).

:func:`write_batch` is what the worker calls: when Postgres rejects a record's data it bisects the batch
to isolate that record as a dead letter and stores the rest; when even a dead letter cannot be stored it
raises :class:`SinkFatal` (the process stops; nothing is skipped silently).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_dumps

from sinks import map_feed
from sinks.batching import Backoff
from sinks.migrate import CONNECT_TIMEOUT_S
from sinks.partitions import PartitionManager, days_needed
from sinks.routes import Item, Prepared, Raw, prepare
from sinks.tables import Row, TableSpec
from sinks.tickets_store import apply_change, change_from_command, change_from_upstream

STATEMENT_TIMEOUT_MS = 60_000


@dataclass
class WriteResult:
    feed: list[dict[str, Any]] = field(default_factory=list)  # noc_events to publish (ticket_updated)
    dead: list[dict[str, Any]] = field(default_factory=list)  # dead letters written by this batch
    rows: dict[str, int] = field(default_factory=dict)  # rows sent per table spec
    seconds: float = 0.0
    transactions: int = 1  # transactions committed for the batch (more when a rejected record was bisected out)

    def add(self, other: WriteResult) -> None:
        """Count ``other`` (a part of the same batch) into this result."""
        self.feed += other.feed
        self.dead += other.dead
        for name, n in other.rows.items():
            self.rows[name] = self.rows.get(name, 0) + n
        self.transactions += other.transactions


class Writer:
    def __init__(self, dsn: str, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> None:
        self.dsn = dsn
        self.statement_timeout_ms = statement_timeout_ms
        self.partitions = PartitionManager()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._column_types: dict[str, dict[str, str]] = {}

    def connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            conn.execute(f"SET statement_timeout = {int(self.statement_timeout_ms)}")
            conn.execute("SET synchronous_commit = on")
            # JSONB columns receive JSON text the mapping already serialised: pass it through as is.
            set_json_dumps(_json_text, context=conn)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def write(self, prep: Prepared) -> WriteResult:
        """Store ``prep`` atomically. Raises psycopg.OperationalError when the database is unreachable."""
        try:
            return self._write(prep)
        except psycopg.errors.CheckViolation as exc:
            if "no partition" not in str(exc):
                raise
            self.partitions.known.clear()  # a partition we had seen was dropped (retention): create it again
            return self._write(prep)

    def _write(self, prep: Prepared) -> WriteResult:
        t0 = time.perf_counter()
        conn = self.connection()
        res = WriteResult()
        for spec, rows in prep.rows.items():
            if spec.partition_column is not None and rows:
                self.partitions.ensure(conn, spec.table, days_needed(spec.partition_times(rows)))
        try:
            with conn.transaction():
                dead = list(prep.dead)
                for short, rec, raw in prep.tickets:
                    ch = change_from_command(rec) if short == "ticket-commands" else change_from_upstream(rec)
                    applied = apply_change(conn, ch)
                    if applied.ok:
                        assert applied.feed is not None
                        res.feed.append(applied.feed)
                    else:
                        dead.append(map_feed.sink_dead_letter(raw.topic, raw.partition, raw.offset,
                                                              "INVALID_TRANSITION", applied.reason or "",
                                                              raw.key, raw.value, raw.timestamp))
                tables = dict(prep.rows)
                if dead:  # each spec is upserted once per transaction (its temp table empties at commit)
                    tables[map_feed.DEAD_LETTERS] = [*tables.get(map_feed.DEAD_LETTERS, []),
                                                     *(map_feed.dead_letter_row(d) for d in dead)]
                for spec, rows in tables.items():
                    res.rows[spec.name] = self._upsert(conn, spec, rows)
                res.dead = dead
        except psycopg.OperationalError:
            self.close()  # the session (and its temp tables) may be gone; start afresh on retry
            raise
        res.seconds = time.perf_counter() - t0
        return res

    def _types(self, conn: psycopg.Connection[tuple[Any, ...]], spec: TableSpec) -> list[str]:
        """Postgres types of the spec's columns (binary COPY needs them), read from the catalogue once."""
        got = self._column_types.get(spec.table)
        if got is None:
            rows = conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped", (spec.table,)).fetchall()
            got = {str(n): str(t) for n, t in rows}
            self._column_types[spec.table] = got
        return [got[c] for c in spec.columns]

    def _upsert(self, conn: psycopg.Connection[tuple[Any, ...]], spec: TableSpec, rows: list[Row]) -> int:
        rows = spec.dedup(rows)
        if not rows:
            return 0
        types = self._types(conn, spec)
        with conn.cursor() as cur:
            cur.execute(spec.temp_sql().encode())
            with cur.copy(spec.copy_sql().encode()) as cp:
                cp.set_types(types)
                for r in rows:
                    cp.write_row(r)
            cur.execute(spec.upsert_sql().encode())
        return len(rows)


def _json_text(obj: Any) -> str:
    return obj if isinstance(obj, str) else orjson.dumps(obj).decode()


class SinkFatal(RuntimeError):
    """The sink cannot go on without losing a record (e.g. a dead letter cannot be written): the process must
    stop with this message, its batch uncommitted (redelivered to whoever runs next)."""


# SQLSTATE classes that blame the data of a row: 22 data exception (NUL in text, bad JSON escape, value out
# of range), 23 integrity constraint violation, 54 program limit exceeded (an index row too large).
RECORD_LEVEL_CLASSES = frozenset({"22", "23", "54"})
DEAD_LETTER_ATTEMPTS = 5
DEAD_LETTER_BACKOFF = Backoff(first_s=0.2, factor=2.0, max_s=2.0)


def record_level(exc: BaseException) -> bool:
    """Does ``exc`` blame some record of the batch rather than the database or the connection?

    Postgres errors of a data class do; so do client-side errors without a SQLSTATE (a value no dumper takes)
    and any other Python error raised while building or sending rows. A lost connection, a timeout, a
    missing permission or table do not: retrying or stopping is right for those, not dead-lettering."""
    if isinstance(exc, psycopg.Error):
        if exc.sqlstate is not None:
            return exc.sqlstate[:2] in RECORD_LEVEL_CLASSES
        return not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return isinstance(exc, Exception)


def write_batch(writer: Writer, batch: list[Raw], prep: Prepared,
                sleep: Callable[[float], None] = time.sleep) -> WriteResult:
    """Write a batch; if Postgres rejects some record's data, find it by bisection and dead-letter it.

    The batch is split in halves, each written in its own transaction, recursively, until the rejected
    record stands alone; it becomes a DB_REJECTED dead letter and every other record is stored. With one bad
    record in n this costs about two writes of the batch and 2*log2(n) small transactions. A half that was
    not tried because its sibling's failure already located the fault is split further without a try.
    Errors that do not blame a record (:func:`record_level`) propagate: the caller retries the batch.
    A dead letter that cannot be written is retried ``DEAD_LETTER_ATTEMPTS`` times, then :class:`SinkFatal`.
    """
    items = prep.items if prep.items or not batch else prepare(batch).items
    try:
        return writer.write(prep)
    except Exception as exc:
        if not record_level(exc):
            raise
        first: BaseException = exc
    out = WriteResult(transactions=0)
    t0 = time.perf_counter()
    _split(writer, items, first, True, out, sleep)
    out.seconds = time.perf_counter() - t0
    return out


def _split(writer: Writer, items: list[Item], failed: BaseException, tried: bool, out: WriteResult,
           sleep: Callable[[float], None]) -> None:
    """Store ``items``, known to hold a record Postgres rejects (``tried``: writing exactly them raised ``failed``)."""
    if len(items) == 1:
        if not tried:
            err = _try(writer, items, out)
            if err is None:
                return
            failed = err
        _isolate(writer, items[0], failed, out, sleep)
        return
    mid = len(items) // 2
    left, right = items[:mid], items[mid:]
    err = _try(writer, left, out)
    if err is None:  # the fault is in the right half: split it without writing it whole first
        _split(writer, right, failed, False, out, sleep)
        return
    _split(writer, left, err, True, out, sleep)
    err = _try(writer, right, out)
    if err is not None:
        _split(writer, right, err, True, out, sleep)


def _try(writer: Writer, items: list[Item], out: WriteResult) -> BaseException | None:
    """Write ``items`` in one transaction; the record-level error it raised, or None once stored."""
    try:
        res = writer.write(Prepared.of(items))
    except Exception as exc:
        if not record_level(exc):
            raise
        return exc
    out.add(res)
    return None


def _isolate(writer: Writer, item: Item, exc: BaseException, out: WriteResult,
             sleep: Callable[[float], None]) -> None:
    """Store the dead letter of a record Postgres rejected (its original bytes), retrying a few times."""
    raw = item.raw
    dead = map_feed.sink_dead_letter(raw.topic, raw.partition, raw.offset, "DB_REJECTED",
                                     f"{type(exc).__name__}: {exc}", raw.key, raw.value, raw.timestamp)
    for attempt in range(1, DEAD_LETTER_ATTEMPTS + 1):
        try:
            out.add(writer.write(Prepared(dead=[dead], count=1)))
            return
        except psycopg.OperationalError as err:
            if err.sqlstate is None:
                raise  # the connection is gone: the caller retries the whole batch once it is back
            last: BaseException = err
        except Exception as err:  # noqa: BLE001 - any failure to store a dead letter is retried, then fatal
            last = err
        if attempt < DEAD_LETTER_ATTEMPTS:
            sleep(DEAD_LETTER_BACKOFF.delay(attempt))
    raise SinkFatal(f"cannot write the dead letter of {raw.topic} [{raw.partition}] @ {raw.offset} "
                    f"(Postgres rejected the record: {one_line(exc)}) after {DEAD_LETTER_ATTEMPTS} attempts: "
                    f"{one_line(last)}; stopping without committing the batch") from last


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (Postgres adds DETAIL and CONTEXT lines quoting the row)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
