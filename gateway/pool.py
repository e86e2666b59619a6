"""The gateway's connection pool: psycopg_pool's, which also sweeps its idle connections when one comes back broken.

psycopg_pool checks a connection when it is returned, not when it is handed out. After a database restart or
failover every idle connection is dead, and without a sweep each of them costs one request a 503 before it is
replaced (up to ``pool_max`` failed requests). The first broken connection returned starts ``check()`` on the
rest, so the requests behind it wait for fresh connections instead; a read that met it runs again once the sweep
is over (:meth:`SweepingPool.swept`, ``gateway.api``). Checking on every checkout (the pool's ``check`` option)
would do the same at the price of a round trip per request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)
Conn = psycopg.AsyncConnection[Any]


class SweepingPool(AsyncConnectionPool[Conn]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sweep: asyncio.Task[None] | None = None

    async def putconn(self, conn: Conn) -> None:
        broken = conn.pgconn.transaction_status == TransactionStatus.UNKNOWN  # the pool's own test
        await super().putconn(conn)
        if broken and not self.closed and (self._sweep is None or self._sweep.done()):
            log.warning("a pooled connection was broken: checking the idle ones")
            self._sweep = asyncio.get_running_loop().create_task(self.check())

    async def swept(self) -> None:
        """Return once the sweep a broken connection started (if any) is over: the idle connections are live."""
        if self._sweep is not None and not self._sweep.done():
            await self._sweep

    async def close(self, timeout: float = 5.0) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        await super().close(timeout)
