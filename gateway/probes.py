"""``/healthz`` and ``/readyz`` of ``noc gateway`` (on its HTTP port, beside ``/metrics`` and ``/health``).

* ``/healthz``: the event loop answers (this handler runs on it) and the feed consumer thread runs. 503 means
  restart the process.
* ``/readyz``: a pooled connection answers ``SELECT 1`` within 2 s and the feed consumer has its partitions
  without error. 503 takes the gateway out of its Service's endpoints until the database is back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import psycopg
import psycopg_pool
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["healthz", "readyz"]

DB_TIMEOUT_S = 2.0


def _answer(checks: dict[str, tuple[bool, str]]) -> Response:
    ok = all(good for good, _ in checks.values())
    body = {"status": "ok" if ok else "fail",
            "checks": {name: {"ok": good, "detail": detail} for name, (good, detail) in checks.items()}}
    return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json")


def _consumer(request: Request, ready: bool) -> tuple[bool, str]:
    consumer: Any = getattr(request.app.state, "consumer", None)
    if consumer is None:
        return True, "no feed consumer in this process"
    if not consumer.alive():
        return False, "the feed consumer thread has stopped"
    if ready and (not consumer.ready.is_set() or consumer.error is not None):
        return False, f"partitions not assigned (error: {consumer.error!r})"
    return True, "running"


async def healthz(request: Request) -> Response:
    return _answer({"event loop": (True, "answers"), "feed consumer": _consumer(request, ready=False)})


async def readyz(request: Request) -> Response:
    pool: Any = getattr(request.app.state, "pool", None)
    if pool is None:
        db = (False, "the connection pool is not open yet")
    else:
        try:
            async with asyncio.timeout(DB_TIMEOUT_S):
                async with pool.connection(timeout=DB_TIMEOUT_S) as conn:
                    await conn.execute("SELECT 1")
            db = (True, "answers")
        except (TimeoutError, psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            db = (False, f"unreachable: {type(exc).__name__}: {str(exc).strip()[:200]}")
    return _answer({"database": db, "feed consumer": _consumer(request, ready=True)})
