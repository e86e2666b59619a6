"""REST endpoints under ``/api/v2/noc``: one envelope, tenant-scoped queries, a 60 s cache per
(tenant, path, query), bearer-token auth with capabilities.

Success: ``{"status": "success", "data": ..., "cached": bool}``; errors: ``{"status": "error", "message": ...}``
with 400 (bad parameter), 401 (no or bad token), 403 (capability), 404 (unknown id), 409 (refused state
change), 503 (database not reachable or not migrated).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any

import orjson
import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from gateway import auth, queries
from gateway.limits import retry_after_s
from gateway.metrics import API_LATENCY, API_REQUESTS
from gateway.sessions import session_from_headers
from gateway.tokens import Principal

log = logging.getLogger("nocstream.gateway.api")
JSON = "application/json"
RISKS = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
INCIDENT_STATUSES = ("OPEN", "CLOSED")
INCIDENT_KINDS = ("NOC_ALERT", "ANOMALY", "AUDIT_FINDING", "FRAUD_SCORE")
TICKET_STATUSES = ("NEW", "OPEN", "IN_PROGRESS", "RESOLVED", "CLOSED")
PRIORITIES = ("LOW", "MEDIUM", "HIGH", "URGENT")
RESOLUTIONS = ("FRAUD_CONFIRMED", "FALSE_POSITIVE", "RESOLVED_OTHER", "DUPLICATE")
MAX_ID = 200


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps({"status": "error", "message": message}), status_code=status, media_type=JSON,
                    headers=headers)


def _default(obj: Any) -> Any:
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_default, option=orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY)


# -- query parameters -------------------------------------------------------------------------------------------

_INT = re.compile(r"-?[0-9]{1,12}")
_EPOCH_MS = re.compile(r"[0-9]{1,15}")
# Instants a client may name: time windows are computed by subtracting up to a year from them, and Postgres
# must be able to store the result.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def q_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _INT.fullmatch(raw):  # ASCII digits only: str.isdigit() also accepts '²', which int() refuses
        raise ApiError(400, f"'{name}' must be an integer between {lo} and {hi}")
    value = int(raw)
    if not lo <= value <= hi:
        raise ApiError(400, f"'{name}' must be between {lo} and {hi}")
    return value


def q_enum(request: Request, name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.upper() not in allowed:
        raise ApiError(400, f"'{name}' must be one of {', '.join(allowed)}")
    return raw.upper()


def q_id(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    return check_id(raw, name)


def check_id(raw: str, name: str) -> str:
    if not 0 < len(raw) <= MAX_ID or any(ord(c) < 32 for c in raw):
        raise ApiError(400, f"'{name}' must be 1-{MAX_ID} printable characters")
    return raw


def q_time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    message = f"'{name}' must be epoch milliseconds or an ISO 8601 time between 1970 and 9000"
    try:
        if _EPOCH_MS.fullmatch(raw):
            dt = datetime.fromtimestamp(int(raw) / 1000, UTC)
        elif raw.isascii() and 10 <= len(raw) <= 40:
            dt = datetime.fromisoformat(raw)
        else:
            raise ApiError(400, message)
        dt = dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise ApiError(400, message) from None
    if not EARLIEST <= dt <= LATEST:
        raise ApiError(400, message)
    return dt


async def anchor(request: Request, conn: psycopg.AsyncConnection[Any], table: str, tenant: int) -> datetime:
    """End of a time window: ``until``, else the tenant's newest row with ``anchor=latest``, else now."""
    until = q_time(request, "until")
    mode = q_enum(request, "anchor", ("NOW", "LATEST"), "NOW")
    if until is not None:
        return until
    if mode == "LATEST":
        newest = await queries.latest(conn, table, tenant)
        if newest is not None:
            return newest + timedelta(microseconds=1)
    return datetime.now(UTC)


# -- the decorator every endpoint goes through ------------------------------------------------------------------

Handler = Callable[[Request, Principal, psycopg.AsyncConnection[Any]], Awaitable[Any]]


def endpoint(route: str, capability: str = "noc:view", cached: bool = True) -> Callable[[Handler], Callable[
        [Request], Awaitable[Response]]]:
    def deco(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        @wraps(fn)
        async def handler(request: Request) -> Response:
            started = time.perf_counter()
            response = await _handle(request, fn, capability, cached)
            API_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
            API_LATENCY.labels(route).observe(time.perf_counter() - started)
            return response
        handler.route = route  # type: ignore[attr-defined]
        return handler
    return deco


def same_origin(request: Request) -> bool:
    """The request carries an Origin, and it is the gateway's own or an allowed one."""
    origin = request.headers.get("origin")
    return origin is not None and auth.origin_allowed(origin, request.headers.get("host"),
                                                      request.app.state.config.allowed_origins,
                                                      request.url.scheme == "https")


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "-"


async def authenticate(request: Request, capability: str) -> Principal:
    """The caller's principal, after the rate limits (429 with ``Retry-After``) and the token (401, 403)."""
    state = request.app.state
    address = client_address(request)
    token = auth.bearer_from_headers(request.headers)
    session = None if token else session_from_headers(request.headers)
    wait, why = state.guard.before_auth(address, token or session)
    if wait:
        raise ApiError(429, why, {"retry-after": retry_after_s(wait)})
    if session is not None:
        principal = await state.verifier.verify_session(session)
        # A cookie goes with every request the browser makes to us, whoever's page asks: a change needs our Origin.
        if principal is not None and request.method not in ("GET", "HEAD") and not same_origin(request):
            raise ApiError(403, "cross-origin request refused (session cookie without an allowed Origin)")
    else:
        principal = await state.verifier.verify(token)
    if principal is None:
        state.guard.auth_failed(address, token or session)
        raise ApiError(401, "missing or invalid bearer token")
    wait = state.guard.after_auth(principal.token_id)
    if wait:
        raise ApiError(429, "too many requests with this token", {"retry-after": retry_after_s(wait)})
    if not principal.can(capability):
        raise ApiError(403, f"token lacks the {capability} capability")
    return principal


async def _handle(request: Request, fn: Handler, capability: str, cached: bool, retry: bool = True) -> Response:
    """One read. Every endpoint here only reads, so one that met a connection the database dropped (a restart:
    the pool is sweeping its idle ones meanwhile) runs once more on a fresh one instead of answering 503."""
    state = request.app.state
    try:
        principal = await authenticate(request, capability)
        key = (principal.tenant_id, request.url.path, "&".join(sorted(request.url.query.split("&"))))
        if cached:
            hit = state.cache.get(key)
            if hit is not None:
                return Response(b'{"status":"success","cached":true,"data":' + hit + b"}", media_type=JSON)
        async with state.pool.connection(timeout=state.config.db_timeout_s) as conn:
            data = await fn(request, principal, conn)
        body = dumps(data)
        if cached:
            state.cache.put(key, body)
        return Response(b'{"status":"success","cached":false,"data":' + body + b"}", media_type=JSON)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except psycopg.errors.UndefinedTable:
        log.warning("query on a missing table", exc_info=True)
        return error_response(503, "database not migrated: run `noc db migrate`")
    except psycopg.errors.QueryCanceled:
        return error_response(503, "query timed out")
    except (TimeoutError, psycopg.OperationalError, PoolTimeout) as exc:
        if retry and not isinstance(exc, (TimeoutError, PoolTimeout)):
            log.info("database connection lost (%s); running the read again on a fresh one", exc)
            await state.pool.swept()  # else the retry could take the next dead idle connection
            return await _handle(request, fn, capability, cached, retry=False)
        log.warning("database unavailable", exc_info=True)
        return error_response(503, "database unavailable")


def _page(request: Request, default: int = 50, hi: int = 200) -> tuple[int, int]:
    return q_int(request, "limit", default, 1, hi), q_int(request, "offset", 0, 0, 100_000)


def _paged(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "limit": limit, "offset": offset,
            "next_offset": offset + limit if len(items) == limit else None}


Conn = psycopg.AsyncConnection[Any]


# -- telemetry -------------------------------------------------------------------------------------------------

@endpoint("/telemetry/signals/{person_id}")
async def person_signals(request: Request, p: Principal, conn: Conn) -> Any:
    person_id = check_id(request.path_params["person_id"], "person_id")
    minutes = q_int(request, "window_minutes", 120, 1, 10_080)
    until = await anchor(request, conn, "signal_windows", p.tenant_id)
    data = await queries.person_signals(conn, p.tenant_id, person_id, until, minutes)
    if data is None:
        raise ApiError(404, f"no telemetry for person {person_id!r}")
    # The documented fields beside today's: names where the gateway knows them (people from ref.people, sites from
    # ref.sites; null when unknown), and when the answer was put together.
    data["person_name"] = request.app.state.people.name(p.tenant_id, person_id)
    data["site_name"] = await site_name(request, p.tenant_id, data["site_id"])
    data["collected_at"] = datetime.now(UTC)
    return data


SITE_NAME_WAIT_S = 2.0


async def site_name(request: Request, tenant_id: int, site_id: str | None) -> str | None:
    """The site's name from the ``ref.sites`` directory the wall reads, or None when unknown or not read in time."""
    if site_id is None:
        return None
    from gateway import wall_api

    try:
        sites = await asyncio.wait_for(wall_api._directory(request).for_tenant(tenant_id), SITE_NAME_WAIT_S)
    except TimeoutError:
        return None
    site = sites.get(site_id)
    return None if site is None else site.name


@endpoint("/telemetry/signals/site/{site_id}")
async def site_signals(request: Request, p: Principal, conn: Conn) -> Any:
    site_id = check_id(request.path_params["site_id"], "site_id")
    minutes = q_int(request, "window_minutes", 120, 1, 10_080)
    until = await anchor(request, conn, "signal_windows", p.tenant_id)
    data = await queries.site_signals(conn, p.tenant_id, site_id, until, minutes)
    if data is None:
        raise ApiError(404, f"no telemetry for site {site_id!r}")
    data["site_name"] = await site_name(request, p.tenant_id, site_id)
    data["collected_at"] = datetime.now(UTC)
    return data


def _incident_filters(request: Request) -> dict[str, Any]:
    return {"site_id": q_id(request, "site_id"), "person_id": q_id(request, "person_id"),
            "severity": q_enum(request, "severity", SEVERITIES), "kind": q_enum(request, "kind", INCIDENT_KINDS),
            "since": q_time(request, "since"), "until": q_time(request, "until")}


@endpoint("/telemetry/correlations")
async def correlations(request: Request, p: Principal, conn: Conn) -> Any:
    """Incidents that correlate more than one kind of evidence (alerts, anomalies, findings, fraud)."""
    limit, offset = _page(request)
    items = await queries.incidents(conn, p.tenant_id, status=q_enum(request, "status", INCIDENT_STATUSES),
                                    min_kinds=q_int(request, "min_kinds", 2, 1, 4), limit=limit, offset=offset,
                                    evidence=True, **_incident_filters(request))
    return _paged(items, limit, offset)


# -- security --------------------------------------------------------------------------------------------------

@endpoint("/security/fraud-scores/live")
async def fraud_live(request: Request, p: Principal, conn: Conn) -> Any:
    minutes = q_int(request, "minutes", 60, 1, 1440)
    min_risk = q_enum(request, "min_risk", RISKS, "MEDIUM") or "MEDIUM"
    site_id, limit = q_id(request, "site_id"), q_int(request, "limit", 100, 1, 500)
    until = await anchor(request, conn, "fraud_scores", p.tenant_id)
    items = await queries.live_scores(conn, p.tenant_id, until, minutes, min_risk, site_id, limit)
    return {"until": until, "minutes": minutes, "min_risk": min_risk, "items": items}


@endpoint("/security/fraud-scores/history/{person_id}")
async def fraud_history(request: Request, p: Principal, conn: Conn) -> Any:
    person_id = check_id(request.path_params["person_id"], "person_id")
    days, limit = q_int(request, "days", 30, 1, 365), q_int(request, "limit", 200, 1, 1000)
    until = await anchor(request, conn, "fraud_scores", p.tenant_id)
    data = await queries.score_history(conn, p.tenant_id, person_id, until, days, limit)
    if data is None:
        raise ApiError(404, f"no fraud scores for person {person_id!r}")
    return data


@endpoint("/security/fraud-scores/heatmap")
async def fraud_heatmap(request: Request, p: Principal, conn: Conn) -> Any:
    hours = q_int(request, "hours", 24, 1, 720)
    until = await anchor(request, conn, "fraud_scores", p.tenant_id)
    return await queries.heatmap(conn, p.tenant_id, until, hours)


@endpoint("/security/ml-models/performance")
async def model_performance(request: Request, p: Principal, conn: Conn) -> Any:
    hours = q_int(request, "hours", 24, 1, 720)
    until = await anchor(request, conn, "fraud_scores", p.tenant_id)
    return await queries.model_performance(conn, p.tenant_id, until, hours)


# -- incidents and tickets -------------------------------------------------------------------------------------

@endpoint("/incidents")
async def incident_list(request: Request, p: Principal, conn: Conn) -> Any:
    limit, offset = _page(request)
    items = await queries.incidents(conn, p.tenant_id, status=q_enum(request, "status", INCIDENT_STATUSES, "OPEN"),
                                    min_kinds=1, limit=limit, offset=offset, **_incident_filters(request))
    return _paged(items, limit, offset)


@endpoint("/incidents/{incident_id}")
async def incident_detail(request: Request, p: Principal, conn: Conn) -> Any:
    incident_id = check_id(request.path_params["incident_id"], "incident_id")
    row = await queries.incident_detail(conn, p.tenant_id, incident_id)
    if row is None:
        raise ApiError(404, f"no incident {incident_id!r}")
    return row


@endpoint("/tickets")
async def ticket_list(request: Request, p: Principal, conn: Conn) -> Any:
    limit, offset = _page(request)
    items = await queries.tickets(conn, p.tenant_id, status=q_enum(request, "status", TICKET_STATUSES),
                                  priority=q_enum(request, "priority", PRIORITIES), site_id=q_id(request, "site_id"),
                                  limit=limit, offset=offset)
    return _paged(items, limit, offset)


@endpoint("/tickets/{ticket_id}")
async def ticket_detail(request: Request, p: Principal, conn: Conn) -> Any:
    ticket_id = check_id(request.path_params["ticket_id"], "ticket_id")
    row = await queries.ticket_detail(conn, p.tenant_id, ticket_id)
    if row is None:
        raise ApiError(404, f"no ticket {ticket_id!r}")
    return row


@endpoint("/events/stats")
async def event_stats(request: Request, p: Principal, conn: Conn) -> Any:
    hours = q_int(request, "hours", 24, 1, 168)
    until = await anchor(request, conn, "event_log", p.tenant_id)
    return await queries.event_stats(conn, p.tenant_id, until, hours)
