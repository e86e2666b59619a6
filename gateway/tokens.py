"""Bearer tokens: ``noc_<id>_<secret>``, stored as sha256 only, each bound to one tenant and capabilities.

The table is created idempotently from ``gateway/migrations/001_gateway_tokens.sql`` by :func:`ensure_schema`
(which applies the gateway's other migrations too)
(the gateway and ``noc token create`` both call it), so it does not depend on the sinks migration runner.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

CAPABILITIES = ("noc:view", "noc:manage", "noc:admin")
# A capability implies the ones before it: admin can manage, manage can view.
_IMPLIED = {"noc:admin": {"noc:admin", "noc:manage", "noc:view"}, "noc:manage": {"noc:manage", "noc:view"},
            "noc:view": {"noc:view"}}
PREFIX = "noc_"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION = MIGRATIONS / "001_gateway_tokens.sql"


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: str
    tenant_id: int
    capabilities: frozenset[str]

    def can(self, capability: str) -> bool:
        return capability in self.capabilities


def expand(caps: list[str] | tuple[str, ...]) -> frozenset[str]:
    out: set[str] = set()
    for c in caps:
        if c not in _IMPLIED:
            raise ValueError(f"unknown capability {c!r}; expected one of {', '.join(CAPABILITIES)}")
        out |= _IMPLIED[c]
    return frozenset(out)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def well_formed(token: str) -> bool:
    # Checked before any lookup so junk never reaches the database. token_urlsafe only uses [A-Za-z0-9_-],
    # which are all valid in a Sec-WebSocket-Protocol value.
    return (token.startswith(PREFIX) and 20 <= len(token) <= 200
            and all((c.isascii() and c.isalnum()) or c in "-_" for c in token))


def ensure_schema(dsn: str) -> None:
    """Apply every ``migrations/*.sql`` of the gateway in name order (each is idempotent)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        for path in sorted(MIGRATIONS.glob("*.sql")):
            conn.execute(path.read_text().encode())  # trusted files of ours, not user input


def create_token(dsn: str, tenant_id: int, caps: list[str], label: str = "",
                 ttl: timedelta | None = None) -> tuple[str, str]:
    """Mint a token; returns ``(token_id, token)``. The token itself is never stored."""
    stored = sorted(expand(caps))
    token_id = secrets.token_hex(4)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    ensure_schema(dsn)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            "INSERT INTO gateway_tokens (token_hash, token_id, tenant_id, capabilities, label, expires_at) "
            "VALUES (%s, %s, %s, %s, %s, CASE WHEN %s::interval IS NULL THEN NULL ELSE now() + %s::interval END)",
            (hash_token(token), token_id, tenant_id, stored, label, ttl, ttl),
        )
    return token_id, token


def revoke_token(dsn: str, token_id: str) -> bool:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute("UPDATE gateway_tokens SET revoked_at = now() WHERE token_id = %s AND revoked_at IS NULL",
                           (token_id,))
        return cur.rowcount == 1


def list_tokens(dsn: str) -> list[tuple[str, int, list[str], str, datetime, datetime | None]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("SELECT token_id, tenant_id, capabilities, label, created_at, revoked_at "
                            "FROM gateway_tokens ORDER BY created_at").fetchall()
    return [(r[0], r[1], list(r[2]), r[3], r[4], r[5]) for r in rows]


_BY_TOKEN = ("SELECT token_id, tenant_id, capabilities FROM gateway_tokens WHERE token_hash = %s "
             "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())")
_BY_SESSION = ("SELECT t.token_id, t.tenant_id, t.capabilities FROM gateway_sessions s JOIN gateway_tokens t "
               "ON t.token_hash = s.token_hash WHERE s.session_hash = %s AND s.expires_at > now() "
               "AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())")


class TokenVerifier:
    """Looks tokens up by hash, caching answers briefly so hot paths do not hit Postgres per request.

    A revoked token stops working within ``ttl_s`` (default 30 s) on every gateway process.
    """

    def __init__(self, pool: AsyncConnectionPool, ttl_s: float = 30.0, max_entries: int = 10_000) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._max = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}  # bounded: cleared at ``max_entries``
        self.on_verified: Callable[[Principal], None] = lambda p: None  # a valid token was looked up
        # lookups running, by key (bounded by the requests waiting on them)
        self._in_flight: dict[str, asyncio.Future[Principal | None]] = {}

    async def verify(self, token: str | None) -> Principal | None:
        if not token or not well_formed(token):
            return None
        return await self._lookup(hash_token(token), _BY_TOKEN)

    async def verify_session(self, session: str | None) -> Principal | None:
        """The principal of a dashboard session cookie (see sessions.py): its token's, while both are valid."""
        if not session:
            return None
        return await self._lookup("s:" + hash_token(session), _BY_SESSION)

    def forget_session(self, session: str) -> None:
        self._cache.pop("s:" + hash_token(session), None)

    async def _lookup(self, key: str, sql: str) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        # One query per key at a time: every connection of a token re-checks it when its cache entry expires, and
        # 1,000 of them at once must not queue 1,000 identical queries for the pool's 8 connections.
        flight = self._in_flight.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = self._in_flight[key] = asyncio.ensure_future(self._query(key, sql, now))
        try:
            return await asyncio.shield(flight)
        finally:
            if flight.done() and self._in_flight.get(key) is flight:
                del self._in_flight[key]

    async def _query(self, key: str, sql: str, now: float) -> Principal | None:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(sql, (key.removeprefix("s:"),))
                row = await cur.fetchone()
        finally:
            self._in_flight.pop(key, None)
        principal = None if row is None else Principal(row[0], int(row[1]), frozenset(row[2]))
        if principal is not None:
            self.on_verified(principal)
        if len(self._cache) >= self._max:
            self._cache.clear()
        self._cache[key] = (now + self._ttl, principal)
        return principal
