"""Writes a prepared batch to Postgres in ONE transaction: COPY into temp tables, then upsert.

Partitions the batch needs are created first (short autocommit transactions). Ticket changes are applied
record by record in the same transaction; refusals become dead letters. The caller publishes the returned
feed events and commits Kafka offsets only after :meth:`Writer.write` returned (i.e. after the commit).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_dumps

from sinks import map_feed
from sinks.migrate import CONNECT_TIMEOUT_S
from sinks.partitions import PartitionManager, days_needed
from sinks.routes import Prepared, Raw, prepare
from sinks.tables import Row, TableSpec
from sinks.tickets_store import apply_change, change_from_command, change_from_upstream

STATEMENT_TIMEOUT_MS = 60_000


@dataclass
class WriteResult:
    feed: list[dict[str, Any]] = field(default_factory=list)  # noc_events to publish (ticket_updated)
    dead: list[dict[str, Any]] = field(default_factory=list)  # dead letters written by this batch
    rows: dict[str, int] = field(default_factory=dict)  # rows sent per table spec
    seconds: float = 0.0


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


def write_batch(writer: Writer, batch: list[Raw], prep: Prepared) -> WriteResult:
    """Write a batch; if Postgres rejects its data (not its connection), isolate the culprit record by record.

    A record the database refuses (e.g. text JSONB cannot hold) becomes a DB_REJECTED dead letter and the
    rest of the batch is stored; psycopg.OperationalError (database unreachable) still propagates.
    """
    try:
        return writer.write(prep)
    except psycopg.OperationalError:
        raise
    except psycopg.Error:
        pass
    out = WriteResult()
    t0 = time.perf_counter()
    for raw in batch:
        try:
            res = writer.write(prepare([raw]))
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            dead = map_feed.sink_dead_letter(raw.topic, raw.partition, raw.offset, "DB_REJECTED",
                                             f"{type(exc).__name__}: {exc}", raw.key, raw.value, raw.timestamp)
            res = writer.write(Prepared(dead=[dead], count=1))
        out.feed += res.feed
        out.dead += res.dead
        for name, n in res.rows.items():
            out.rows[name] = out.rows.get(name, 0) + n
    out.seconds = time.perf_counter() - t0
    return out
