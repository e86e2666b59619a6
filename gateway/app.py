"""The gateway application: REST, WebSocket, metrics, OpenAPI and the dashboard page in one Starlette app.

``create_app(config)`` wires: the connection pool (``gateway.pool``; timeouts, statement_timeout per connection),
the token verifier, the response cache, the fan-out hub and the feed consumer thread (started in the lifespan),
the event-log latency writer and the consumer-group lag poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from gateway import api, session_api, tickets_api, wall_api
from gateway.cache import TTLCache
from gateway.config import GatewayConfig
from gateway.consumer import FeedConsumer
from gateway.feed_metrics import observe_feed
from gateway.gc_pauses import keep_gc_pauses_short
from gateway.guard import Guard
from gateway.headers import SecurityHeaders
from gateway.hub import FeedEvent, Hub
from gateway.idempotency import IdempotencyStore
from gateway.lag import poll_group_lag
from gateway.metrics import FEED_UNKNOWN_TENANT
from gateway.openapi import openapi_document
from gateway.people import PeopleDirectory
from gateway.pool import SweepingPool
from gateway.probes import healthz, readyz
from gateway.sessions import SessionStore
from gateway.slashes import StripTrailingSlash
from gateway.tenants import KnownTenants
from gateway.tokens import TokenVerifier, ensure_schema
from gateway.wire import ExposeServerSend
from gateway.ws import dashboard_ws, record_sends
from schemas.topics import topic

log = logging.getLogger("nocstream.gateway")
STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/api/v2/noc"


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(True)
    await conn.execute("SET statement_timeout = 5000")


_LATENCY_UPDATE = (
    "UPDATE event_log e SET broadcast_at = to_timestamp(v.sent_at), broadcast_latency_ms = v.lat_ms "
    "FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::float8[], %s::float8[]) "
    "AS v(event_id, ts_ms, tenant_id, sent_at, lat_ms) "
    "WHERE e.event_id = v.event_id AND e.ts = to_timestamp(v.ts_ms / 1000.0) AND e.tenant_id = v.tenant_id "
    "AND e.broadcast_latency_ms IS NULL RETURNING e.event_id, e.tenant_id")


async def _flush_latencies(app: Starlette, batch_max: int = 5_000) -> None:
    """Write each event's first broadcast latency to event_log (the sink inserts the row; we only update it).

    One statement a second for what is due, at most ``batch_max`` rows. A row the sink has not written yet is
    retried 2, 4, 8 and 16 s later, then given up (the histogram still has it): retrying every row every
    second made the statement, and the loop time spent building it, grow with any sink lag.
    """
    # (event id, tenant) -> (ts ms, latency s, sent at, tries, due at)
    pending: dict[tuple[str, int], tuple[int, float, float, int, float]] = {}
    while True:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        log_: deque[tuple[FeedEvent, float]] = app.state.sent_log
        while log_:
            ev, lat = log_.popleft()
            key = (ev.event_id, ev.tenant_id)
            if key not in pending and len(pending) < 100_000:
                pending[key] = (int(orjson.loads(ev.data)["timestamp"]), lat, time.time() - lat, 0, now)
        items = [(k, v) for k, v in pending.items() if v[4] <= now][:batch_max]
        if not items:
            continue
        try:
            async with app.state.pool.connection(timeout=5) as db:
                cur = await db.execute(_LATENCY_UPDATE, (
                    [k[0] for k, _ in items], [v[0] for _, v in items], [k[1] for k, _ in items],
                    [v[2] for _, v in items], [v[1] * 1000 for _, v in items]))
                done = {(str(r[0]), int(r[1])) for r in await cur.fetchall()}
        except psycopg.errors.UndefinedTable:
            pending.clear()  # no event_log in this database: the histogram is the only record
            continue
        except (psycopg.OperationalError, TimeoutError) as exc:
            log.warning("event_log latency update failed: %s", exc)
            continue
        for key, (ts_ms, lat, sent_at, tries, _) in items:
            if key in done or tries >= 4:
                del pending[key]
            else:
                pending[key] = (ts_ms, lat, sent_at, tries + 1, now + 2 ** (tries + 1))


class FlushTicker:
    """Runs ``hub.flush`` at most once per tick: the first events after a quiet tick go out on the next loop step,
    later ones wait for the end of the tick and share its frames. The tick is ``tick_s``, or longer with many
    clients: ``clients / frame_budget`` keeps the writes per second (what costs, mostly in the kernel) bounded."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hub: Hub, tick_s: float, frame_budget: int) -> None:
        self._loop = loop
        self._hub = hub
        self._tick = tick_s
        self._budget = frame_budget
        self._handle: asyncio.Handle | None = None
        self._last = float("-inf")

    def kick(self) -> None:
        if self._handle is not None:
            return
        due = self._last + max(self._tick, self._hub.n_clients / self._budget)
        if due <= self._loop.time():
            self._handle = self._loop.call_soon(self._run)
        else:
            self._handle = self._loop.call_at(due, self._run)

    def _run(self) -> None:
        self._handle = None
        self._last = self._loop.time()
        self._hub.flush()


def create_app(config: GatewayConfig | None = None) -> Starlette:
    cfg = config or GatewayConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(ensure_schema, cfg.dsn)
        pool = SweepingPool(
            cfg.dsn, min_size=cfg.pool_min, max_size=cfg.pool_max, timeout=cfg.db_timeout_s, open=False,
            configure=_configure, kwargs={"connect_timeout": 10})
        await pool.open(wait=True, timeout=30)
        app.state.pool = pool
        app.state.verifier = TokenVerifier(pool, ttl_s=cfg.token_cache_s)
        app.state.idempotency = IdempotencyStore(pool, cfg.idempotency_ttl_s)
        app.state.sessions = SessionStore(pool, cfg.session_ttl_s)
        tenants: KnownTenants = app.state.tenants
        app.state.verifier.on_verified = lambda p: tenants.add(p.tenant_id)
        await tenants.load(pool)  # before the consumer warms the rings
        await app.state.people.refresh()  # names for the first answers (at most its 10 s timeout)
        loop = asyncio.get_running_loop()
        consumer = None
        tasks = [asyncio.create_task(_flush_latencies(app)),
                 asyncio.create_task(app.state.people.refresh_every(cfg.people_refresh_s)),
                 asyncio.create_task(tenants.refresh_every(pool, cfg.tenants_refresh_s))]
        if cfg.gc_freeze_every_s > 0:
            tasks.append(asyncio.create_task(keep_gc_pauses_short(cfg.gc_freeze_every_s, cfg.gc_sweep_every_s)))
        if cfg.start_consumer:
            # The consumer thread and the event loop share the GIL; a shorter switch interval (default 5 ms)
            # keeps a busy loop from delaying the hand-over of each consumed batch by whole milliseconds.
            sys.setswitchinterval(0.0005)

            ticker = FlushTicker(loop, app.state.hub, cfg.ws_tick_s, cfg.ws_frame_budget)

            def deliver(batch: list[FeedEvent]) -> None:
                observe_feed(batch)
                hub: Hub = app.state.hub
                dropped = hub.dropped_unknown
                if hub.add(batch):
                    ticker.kick()
                if hub.dropped_unknown != dropped:
                    FEED_UNKNOWN_TENANT.inc(hub.dropped_unknown - dropped)
            consumer = FeedConsumer(cfg.bootstrap, cfg.namespace, loop, deliver, cfg.group_id, warm=cfg.ring_size)
            consumer.start()
            app.state.consumer = consumer
            if not await asyncio.to_thread(consumer.ready.wait, 60) or consumer.error is not None:
                raise RuntimeError(f"feed consumer did not get its partitions: {consumer.error}")
            tasks.append(asyncio.create_task(poll_group_lag(cfg.bootstrap, cfg.lag_poll_s)))
            await tickets_api.warm_publisher(app.state)
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            if consumer is not None:
                await asyncio.to_thread(consumer.stop)
            await pool.close(timeout=5)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def health(request: Request) -> Response:
        consumer: FeedConsumer | None = getattr(request.app.state, "consumer", None)
        ok = consumer is None or (consumer.ready.is_set() and consumer.error is None and consumer.alive())
        body = {"status": "success" if ok else "error", "data": {
            "consumer": None if consumer is None else {"group_id": consumer.group_id, "ready": consumer.ready.is_set(),
                                                       "error": repr(consumer.error) if consumer.error else None},
            "websocket_clients": request.app.state.hub.client_count(),
            "tenant_rings": len(request.app.state.hub.rings)}, "cached": False}
        return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json")

    async def openapi(_: Request) -> Response:
        return Response(orjson.dumps(openapi_document()), media_type="application/json")

    async def index(_: Request) -> Response:
        # Security headers (no inline script, no third-party origin, no framing): gateway/headers.py, on every page.
        return FileResponse(STATIC / "index.html")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        detail = getattr(exc, "detail", None) or ("not found" if status == 404 else "request refused")
        return api.error_response(status, str(detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return api.error_response(500, "internal error")

    routes: list[Any] = [
        Route("/", index),
        Route("/health", health),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
        Route(f"{PREFIX}/telemetry/signals/site/{{site_id}}", api.site_signals),
        Route(f"{PREFIX}/telemetry/signals/{{person_id}}", api.person_signals),
        Route(f"{PREFIX}/telemetry/correlations", api.correlations),
        Route(f"{PREFIX}/security/fraud-scores/live", api.fraud_live),
        Route(f"{PREFIX}/security/fraud-scores/history/{{person_id}}", api.fraud_history),
        Route(f"{PREFIX}/security/fraud-scores/heatmap", api.fraud_heatmap),
        Route(f"{PREFIX}/security/ml-models/performance", api.model_performance),
        Route(f"{PREFIX}/incidents", api.incident_list),
        Route(f"{PREFIX}/incidents/{{incident_id}}", api.incident_detail),
        Route(f"{PREFIX}/tickets", api.ticket_list),
        Route(f"{PREFIX}/tickets/{{ticket_id}}", api.ticket_detail),
        Route(f"{PREFIX}/tickets/{{ticket_id}}/state", tickets_api.change_state, methods=["POST"]),
        Route(f"{PREFIX}/events/stats", api.event_stats),
        Route(f"{PREFIX}/session", session_api.session, methods=["GET", "POST", "DELETE"]),
        *wall_api.routes(PREFIX),
        WebSocketRoute("/ws/noc/dashboard", dashboard_ws),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(ExposeServerSend), Middleware(StripTrailingSlash),
                                Middleware(SecurityHeaders)],
                    exception_handlers={404: not_found, 405: not_found, 500: server_error})
    app.state.config = cfg
    app.state.cache = TTLCache(cfg.cache_ttl_s, cfg.cache_max_entries)
    app.state.tenants = KnownTenants(cfg.max_tenants)
    app.state.guard = Guard(cfg)
    app.state.ws_per_token = {}
    app.state.background = set()  # tasks that outlive their request (a ticket change that timed out)
    app.state.hub = Hub(cfg.ring_size, cfg.ring_max_bytes, cfg.max_tenants, accepts=app.state.tenants.__contains__)
    app.state.hub.on_direct = lambda events, n: record_sends(events, n, app.state.sent_log)
    app.state.people = PeopleDirectory(cfg.bootstrap, cfg.namespace)
    app.state.hub.person_name = app.state.people.name
    app.state.connections = set()
    app.state.sent_log = deque(maxlen=100_000)
    app.state.events_topic = topic("events", cfg.namespace)
    return app
