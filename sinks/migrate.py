"""Versioned SQL migrations: ``sinks/migrations/NNN_name.sql``, each applied once, in its own transaction.

Applied versions are recorded in ``schema_migrations`` in the first schema of the connection's
search_path (so a DSN with ``options=-csearch_path=...`` migrates that schema). Re-running is harmless:
applied files are skipped. Concurrent runners serialise on an advisory lock per schema.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_MS = 120_000


@dataclass(frozen=True, slots=True)
class Migration:
    version: str  # "010"
    name: str  # "inputs"
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migration files in version order; a badly named or duplicate-numbered file is an error."""
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if m is None:
            raise ValueError(f"migration file {path.name} is not named NNN_name.sql")
        if m.group(1) in found:
            raise ValueError(f"two migrations numbered {m.group(1)}: {found[m.group(1)].path.name}, {path.name}")
        found[m.group(1)] = Migration(m.group(1), m.group(2), path)
    return [found[v] for v in sorted(found)]


def connect(dsn: str, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=autocommit)
    conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    if not autocommit:
        conn.commit()
    return conn


def migrate(dsn: str, directory: Path = MIGRATIONS_DIR, log: bool = False) -> list[str]:
    """Apply pending migrations; return the versions applied now (empty when up to date)."""
    applied_now: list[str] = []
    with connect(dsn, autocommit=True) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()
        if schema is None or schema[0] is None:
            raise RuntimeError("no current schema: the search_path names no existing schema")
        conn.execute("SELECT pg_advisory_lock(hashtext('noc_migrate'), hashtext(%s))", (schema[0],))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, name TEXT NOT NULL, "
                         "checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            done = {r[0]: r[1] for r in conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()}
            for mig in discover(directory):
                if mig.version in done:
                    if done[mig.version] != mig.checksum:
                        # Warn, not fail: an applied file edited later is the author's to reconcile.
                        print(f"warning: migration {mig.path.name} changed since it was applied", file=sys.stderr)
                    continue
                with conn.transaction():
                    conn.execute(mig.sql.encode())  # bytes: run the script as is (no placeholder parsing)
                    conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                                 (mig.version, mig.name, mig.checksum))
                applied_now.append(mig.version)
                if log:
                    print(f"applied {mig.path.name} to schema {schema[0]}")
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('noc_migrate'), hashtext(%s))", (schema[0],))
    if log and not applied_now:
        print("database schema up to date")
    return applied_now


def status(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[tuple[str, str, bool]]:
    """(version, file name, applied?) for every migration file."""
    with connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        done = set()
        if exists and exists[0] is not None:
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    return [(m.version, m.path.name, m.version in done) for m in discover(directory)]
