"""How rows are upserted into each table: columns, conflict target, and what a conflict does.

A :class:`TableSpec` is one way of writing a table (``audit_findings`` has two: from the finding and from
its escalation, each updating only its own columns). The SQL is built here from the spec, so the pure
parts (dedup within a batch, statement text) are unit-tested without a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Row = tuple[Any, ...]
OnConflict = Literal["nothing", "update"]


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str  # unique per spec; names the temp table
    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # conflict target (includes the partition column for partitioned tables)
    on_conflict: OnConflict = "nothing"
    update: tuple[str, ...] = ()  # columns set on conflict; default: every non-key column
    newer: str | None = None  # only replace a stored row when this column is >= (or > with strict) the stored
    strict: bool = False
    partition_column: str | None = None
    key_index: tuple[int, ...] = field(init=False)
    rank_index: int | None = field(init=False)
    partition_index: int = field(init=False)  # position of partition_column in a row (-1: not partitioned)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_index", tuple(self.columns.index(k) for k in self.key))
        object.__setattr__(self, "rank_index", self.columns.index(self.newer) if self.newer else None)
        object.__setattr__(self, "partition_index",
                           self.columns.index(self.partition_column) if self.partition_column else -1)

    @property
    def temp(self) -> str:
        return f"tmp_{self.name}"

    def update_columns(self) -> tuple[str, ...]:
        return self.update or tuple(c for c in self.columns if c not in self.key)

    def temp_sql(self) -> str:
        # Per transaction, dropped at commit: cheaper than ON COMMIT DELETE ROWS tables, which Postgres
        # truncates at every commit, all of them, used or not.
        return f"CREATE TEMP TABLE {self.temp} (LIKE {self.table} INCLUDING DEFAULTS) ON COMMIT DROP"

    def copy_sql(self) -> str:
        return f"COPY {self.temp} ({', '.join(_q(c) for c in self.columns)}) FROM STDIN (FORMAT BINARY)"

    def upsert_sql(self) -> str:
        cols = ", ".join(_q(c) for c in self.columns)
        sql = (f"INSERT INTO {self.table} AS t ({cols}) SELECT {cols} FROM {self.temp} "
               f"ON CONFLICT ({', '.join(_q(k) for k in self.key)}) ")
        if self.on_conflict == "nothing":
            return sql + "DO NOTHING"
        sets = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in self.update_columns())
        sql += f"DO UPDATE SET {sets}"
        if self.newer:
            op = ">" if self.strict else ">="
            sql += f" WHERE EXCLUDED.{_q(self.newer)} {op} t.{_q(self.newer)}"
        return sql

    def dedup(self, rows: Iterable[Row]) -> list[Row]:
        """One row per key: the highest ``newer`` value (ties: the later row), else the later row.

        Needed because one INSERT ... ON CONFLICT DO UPDATE may not touch a row twice.
        """
        best: dict[tuple[Any, ...], Row] = {}
        ki, ri = self.key_index, self.rank_index
        for row in rows:
            k = tuple(row[i] for i in ki)
            old = best.get(k)
            if old is None or ri is None or row[ri] >= old[ri]:
                best[k] = row
        return list(best.values())

    def partition_times(self, rows: Sequence[Row]) -> list[Any]:
        if self.partition_column is None:
            return []
        i = self.columns.index(self.partition_column)
        return [r[i] for r in rows]


_RESERVED = {"partition", "offset"}


def _q(col: str) -> str:
    return f'"{col}"' if col in _RESERVED else col
