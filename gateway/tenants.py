"""The tenants this gateway serves: those with at least one token that is not revoked.

The feed consumer keeps a resume ring only for these (see :class:`gateway.hub.Hub`): a feed record names its
tenant, and a producer bug or a hostile producer must not make the gateway hold a buffer per made-up tenant.
The set is read from ``gateway_tokens`` at start-up and every ``refresh_s``, and a tenant is added at once when
one of its tokens is verified (a token minted a moment ago). Bounded by ``max_tenants``.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

__all__ = ["KnownTenants"]

log = logging.getLogger("nocstream.gateway.tenants")


class KnownTenants:
    def __init__(self, max_tenants: int) -> None:
        self.max = max_tenants
        self._ids: set[int] = set()

    def __contains__(self, tenant_id: object) -> bool:
        return tenant_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, tenant_id: int) -> None:
        if tenant_id not in self._ids and len(self._ids) < self.max:
            self._ids.add(tenant_id)

    async def load(self, pool: AsyncConnectionPool) -> None:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT DISTINCT tenant_id FROM gateway_tokens WHERE revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > now()) ORDER BY tenant_id LIMIT %s", (self.max,))
            rows = await cur.fetchall()
        # Tenants whose last token went away keep their ring until the process restarts: the set only grows,
        # up to ``max``, so events are never dropped for a tenant a client is still subscribed to.
        for (tenant_id,) in rows:
            self.add(int(tenant_id))

    async def refresh_every(self, pool: AsyncConnectionPool, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.load(pool)
            except (psycopg.OperationalError, PoolTimeout, TimeoutError) as exc:
                log.warning("tenant list not refreshed, database unavailable: %s", exc)
