"""``Idempotency-Key`` for ticket changes: a retry gets the first answer, and the change's feed event goes out once.

Stored per tenant in ``gateway_idempotency`` (``migrations/002_gateway_idempotency.sql``), kept ``ttl_s``:

1. :meth:`IdempotencyStore.claim` inserts ``(tenant, key, request hash)`` with no answer yet, or returns the row
   already there: the stored answer (replayed), "in progress" (409), or "another request" (422).
2. The gateway changes the ticket, then :meth:`answer` stores the response and, for a change, the ``ticket_updated``
   event as ``pending_event``; after the event's delivery is confirmed :meth:`delivered` clears it.
3. A retry of a change whose event was not delivered (the 503 "feed event was not delivered") publishes the stored
   event (its id is stable) and replays the stored answer; the ticket is not changed twice.

A claim that never got an answer answers 409 ("in progress") for ``ABANDONED_S``; then the same request may take
it over (the process died mid-change, or the database went away).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

__all__ = ["Claim", "IdempotencyStore", "check_key", "request_hash"]

MAX_KEY = 200
# A claim with no answer this old was abandoned (its process died, or the database went away mid-change): the
# same request may take it over. The ticket's state machine refuses a change made twice.
ABANDONED_S = 60


def check_key(raw: str) -> str | None:
    """The key if it is 1-200 visible ASCII characters, else None."""
    if 0 < len(raw) <= MAX_KEY and all(33 <= ord(c) <= 126 for c in raw):
        return raw
    return None


def request_hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Claim:
    new: bool  # True: this request holds the key and must answer it
    same_request: bool = True
    status_code: int | None = None  # the stored answer (None: the first request is still in progress)
    response: bytes | None = None
    pending_event: bytes | None = None


class IdempotencyStore:
    def __init__(self, pool: AsyncConnectionPool, ttl_s: float, sweep_every_s: float = 60.0) -> None:
        self._pool = pool
        self.ttl_s = ttl_s
        self._sweep_every = sweep_every_s
        self._next_sweep = 0.0

    async def claim(self, tenant_id: int, key: str, req_hash: str) -> Claim:
        async with self._pool.connection() as conn:
            now = time.monotonic()
            if now >= self._next_sweep:  # bounded by age: old keys go, at most once a minute per process
                self._next_sweep = now + self._sweep_every
                await conn.execute("DELETE FROM gateway_idempotency WHERE created_at < now() - %s * interval '1 s'",
                                   (self.ttl_s,))
            cur = await conn.execute(
                "INSERT INTO gateway_idempotency (tenant_id, idem_key, request_hash) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant_id, idem_key) DO UPDATE SET request_hash = EXCLUDED.request_hash, "
                "status_code = NULL, response = NULL, pending_event = NULL, created_at = now() "
                "WHERE gateway_idempotency.created_at < now() - %s * interval '1 s' "
                "OR (gateway_idempotency.status_code IS NULL AND gateway_idempotency.request_hash = "
                "EXCLUDED.request_hash AND gateway_idempotency.created_at < now() - %s * interval '1 s') RETURNING 1",
                (tenant_id, key, req_hash, self.ttl_s, ABANDONED_S))
            if await cur.fetchone() is not None:
                return Claim(new=True)
            cur = await conn.execute(
                "SELECT request_hash, status_code, response, pending_event FROM gateway_idempotency "
                "WHERE tenant_id = %s AND idem_key = %s", (tenant_id, key))
            row: Any = await cur.fetchone()
        if row is None:  # deleted between the two statements (expired): take it on the next try
            return Claim(new=False, status_code=None)
        if row[0] != req_hash:
            return Claim(new=False, same_request=False)
        return Claim(new=False, status_code=row[1], response=None if row[2] is None else bytes(row[2]),
                     pending_event=None if row[3] is None else bytes(row[3]))

    async def answer(self, tenant_id: int, key: str, status_code: int, response: bytes,
                     pending_event: bytes | None = None) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE gateway_idempotency SET status_code = %s, response = %s, pending_event = %s "
                "WHERE tenant_id = %s AND idem_key = %s", (status_code, response, pending_event, tenant_id, key))

    async def release(self, tenant_id: int, key: str) -> None:
        """Forget a claim whose request failed before changing anything (so a retry runs it afresh)."""
        async with self._pool.connection() as conn:
            await conn.execute("DELETE FROM gateway_idempotency WHERE tenant_id = %s AND idem_key = %s "
                               "AND status_code IS NULL", (tenant_id, key))

    async def delivered(self, tenant_id: int, key: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute("UPDATE gateway_idempotency SET pending_event = NULL WHERE tenant_id = %s "
                               "AND idem_key = %s", (tenant_id, key))
