"""REST behind the dashboard wall (``/api/v2/noc/wall/...``): trends, the site × hour-of-day fraud heatmap, the
sites map, a site's recent scores, the incident drill-down and the caller's capabilities.

Same envelope, auth, tenant filter and 60 s cache as :mod:`gateway.api` (through its ``endpoint`` decorator).
Site names, coordinates, geofences and time zones come from the ``ref.sites`` topic (:mod:`gateway.site_directory`);
hours of day are the site's local hours (UTC for a site the directory does not know).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import KafkaException
from starlette.requests import Request
from starlette.routing import Route

from gateway import api, queries
from gateway.api import ApiError, Conn, check_id, endpoint, q_int
from gateway.site_directory import Site, SiteDirectory
from gateway.tokens import Principal

__all__ = ["LATENCY_TARGETS_MS", "routes"]

Row = dict[str, Any]
SEVERITY_ORDER = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
LATENCY_TARGETS_MS = {"avg": 300.0, "p95": 500.0}
FLAGGED = "risk_level IN ('HIGH', 'CRITICAL')"


def _directory(request: Request) -> SiteDirectory:
    state = request.app.state
    directory: SiteDirectory | None = getattr(state, "wall_sites", None)
    if directory is None:
        directory = state.wall_sites = SiteDirectory(state.config.bootstrap, state.config.namespace)
    return directory


async def _sites(request: Request, tenant: int) -> dict[str, Site]:
    try:
        return await _directory(request).for_tenant(tenant)
    except (TimeoutError, KafkaException) as exc:
        raise ApiError(503, f"site directory unavailable: {exc}") from None


async def _pg_zones(conn: Conn, names: set[str]) -> set[str]:
    """The names Postgres's ``AT TIME ZONE`` knows (its tz data may differ from Python's)."""
    if not names:
        return set()
    rows = await queries._all(conn, "SELECT name FROM pg_timezone_names WHERE name = ANY(%s)", (sorted(names),))
    return {r["name"] for r in rows}


async def _zones(conn: Conn, sites: dict[str, Site]) -> dict[str, str]:
    known = await _pg_zones(conn, {s.timezone for s in sites.values()})
    return {sid: s.timezone for sid, s in sites.items() if s.timezone in known}


def _bucket(column: str, step_s: int) -> str:
    """SQL for the start of ``column``'s bucket of ``step_s`` seconds, as epoch seconds."""
    return f"(floor(extract(epoch FROM {column}) / {step_s})::bigint * {step_s})"


def _grid(since: datetime, until: datetime, step_s: int) -> list[int]:
    """Bucket starts (epoch seconds) from the one holding ``since`` to the one holding the instant before ``until``."""
    first, end = int(since.timestamp()) // step_s * step_s, until.timestamp()
    return list(range(first, int(end) + 1 if end % step_s else int(end), step_s))


def _columns(rows: list[Row], grid: list[int], key: str) -> dict[str, list[int]]:
    index = {t: i for i, t in enumerate(grid)}
    out: dict[str, list[int]] = {}
    for r in rows:
        i = index.get(int(r["t"]))
        if i is not None:
            out.setdefault(str(r[key]), [0] * len(grid))[i] = int(r["n"])
    return out


async def _latency(conn: Conn, tenant: int) -> Row:
    """Broadcast latency per minute (avg, p95) over the last hour of wall-clock time, and over the whole hour."""
    now = datetime.now(UTC)
    since = now - timedelta(hours=1)
    # broadcast_at has no index; an event broadcast in the last hour happened within the last day (a live feed lags
    # by seconds), so the event-time bound lets the (tenant, ts) index and the daily partitions do the pruning.
    where = ("WHERE tenant_id = %s AND ts >= %s AND broadcast_at >= %s AND broadcast_at < %s "
             "AND broadcast_latency_ms IS NOT NULL")
    params = (tenant, since - timedelta(days=1), since, now)
    stats = ("count(*) AS n, avg(broadcast_latency_ms) AS avg_ms, "
             "percentile_cont(0.95) WITHIN GROUP (ORDER BY broadcast_latency_ms) AS p95_ms")
    rows = await queries._all(conn, f"SELECT {_bucket('broadcast_at', 60)} AS t, {stats} FROM event_log {where} "
                                    "GROUP BY 1", params)
    overall = await queries._one(conn, f"SELECT {stats} FROM event_log {where}", params)
    grid = _grid(since, now, 60)
    by_minute = {int(r["t"]): r for r in rows}
    return {"from": since, "until": now, "targets_ms": LATENCY_TARGETS_MS, "t": grid,
            "avg_ms": [by_minute[t]["avg_ms"] if t in by_minute else None for t in grid],
            "p95_ms": [by_minute[t]["p95_ms"] if t in by_minute else None for t in grid],
            "n": [int(by_minute[t]["n"]) if t in by_minute else 0 for t in grid], "overall": overall}


# -- trends ----------------------------------------------------------------------------------------------------

@endpoint("/wall/trends")
async def trends(request: Request, p: Principal, conn: Conn) -> Any:
    """Feed events per minute by type and incidents opened per hour by severity over ``hours`` (default 24) to the
    anchor, and the broadcast latency of the last hour (as ``/wall/latency``)."""
    hours = q_int(request, "hours", 24, 1, 168)
    until = await api.anchor(request, conn, "event_log", p.tenant_id)
    since = until - timedelta(hours=hours)
    # Buckets as epoch seconds by integer arithmetic: the cheapest per-row expression (date_trunc with a zone
    # took 2.3x as long over 500k rows), and these scans are the endpoint's whole cost.
    ev = await queries._all(conn, f"SELECT {_bucket('ts', 60)} AS t, type, count(*) AS n FROM event_log "
                                  "WHERE tenant_id = %s AND ts >= %s AND ts < %s GROUP BY 1, 2",
                            (p.tenant_id, since, until))
    inc = await queries._all(conn, f"SELECT {_bucket('first_seen', 3600)} AS t, combined_severity AS severity, "
                                   "count(*) AS n FROM incidents WHERE tenant_id = %s AND last_seen >= %s "
                                   "AND first_seen >= %s AND first_seen < %s GROUP BY 1, 2",
                             (p.tenant_id, since, since, until))
    minutes, hour_grid = _grid(since, until, 60), _grid(since, until, 3600)
    return {"from": since, "until": until, "hours": hours,
            "events_per_minute": {"t": minutes, "by_type": _columns(ev, minutes, "type")},
            "incidents_per_hour": {"t": hour_grid, "by_severity": _columns(inc, hour_grid, "severity")},
            "latency": await _latency(conn, p.tenant_id)}


@endpoint("/wall/latency")
async def latency(request: Request, p: Principal, conn: Conn) -> Any:
    """Broadcast latency per minute (avg, p95) over the last hour, with the 300/500 ms targets (refreshed by the
    page every minute without recomputing the 24 h trends)."""
    return await _latency(conn, p.tenant_id)


# -- fraud heatmap and a site's scores -------------------------------------------------------------------------

def _tz_values(zones: dict[str, str]) -> tuple[list[str], list[str]]:
    ids = sorted(zones)
    return ids, [zones[i] for i in ids]


@endpoint("/wall/heatmap")
async def heatmap(request: Request, p: Principal, conn: Conn) -> Any:
    """Fraud scores per site and site-local hour of day over ``hours`` (default 7 days) to the anchor: scores,
    flagged (HIGH or CRITICAL) and mean probability per cell."""
    hours = q_int(request, "hours", 168, 1, 720)
    until = await api.anchor(request, conn, "fraud_scores", p.tenant_id)
    since = until - timedelta(hours=hours)
    sites = await _sites(request, p.tenant_id)
    zones = await _zones(conn, sites)
    ids, tzs = _tz_values(zones)
    cells = await queries._all(
        conn, "WITH z AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS z(site_id, tz)) "
              "SELECT s.site_id, extract(hour FROM s.occurred_at AT TIME ZONE coalesce(z.tz, 'UTC'))::int AS hour, "
              f"count(*) AS scores, count(*) FILTER (WHERE {FLAGGED}) AS flagged, "
              "avg(s.fraud_probability) AS mean_score FROM fraud_scores s LEFT JOIN z ON z.site_id = s.site_id "
              "WHERE s.tenant_id = %s AND s.occurred_at >= %s AND s.occurred_at < %s "
              "GROUP BY 1, 2 ORDER BY 1, 2", (ids, tzs, p.tenant_id, since, until))
    seen = sorted({c["site_id"] for c in cells} | set(sites))
    return {"from": since, "until": until, "hours": hours,
            "sites": [{"site_id": sid, "name": sites[sid].name if sid in sites else sid,
                       "timezone": zones.get(sid, "UTC"), "known": sid in sites} for sid in seen],
            "cells": cells}


@endpoint("/wall/sites/{site_id}/scores")
async def site_scores(request: Request, p: Principal, conn: Conn) -> Any:
    """A site's most recent fraud scores (with reasons) over ``hours`` to the anchor, optionally only those at the
    site-local ``hour`` of day, and optionally only flagged ones (``flagged=1``)."""
    site_id = check_id(request.path_params["site_id"], "site_id")
    hours = q_int(request, "hours", 168, 1, 720)
    limit = q_int(request, "limit", 50, 1, 200)
    hour = q_int(request, "hour", -1, -1, 23)
    flagged = q_int(request, "flagged", 0, 0, 1)
    until = await api.anchor(request, conn, "fraud_scores", p.tenant_id)
    since = until - timedelta(hours=hours)
    sites = await _sites(request, p.tenant_id)
    zones = await _zones(conn, {site_id: sites[site_id]} if site_id in sites else {})
    tz = zones.get(site_id, "UTC")
    where = ["tenant_id = %s", "site_id = %s", "occurred_at >= %s", "occurred_at < %s"]
    params: list[Any] = [p.tenant_id, site_id, since, until]
    if hour >= 0:
        where.append("extract(hour FROM occurred_at AT TIME ZONE %s)::int = %s")
        params += [tz, hour]
    if flagged:
        where.append(FLAGGED)
    items = await queries._all(
        conn, "SELECT score_id, event_id, person_id, device_id, event_type, occurred_at, fraud_probability, "
              f"risk_level, model_version, reasons FROM fraud_scores WHERE {' AND '.join(where)} "
              "ORDER BY occurred_at DESC, score_id LIMIT %s", (*params, limit))
    site = sites[site_id].as_json() if site_id in sites else {"site_id": site_id, "name": site_id}
    return {"site": {**site, "timezone": tz}, "from": since, "until": until, "hour": None if hour < 0 else hour,
            "items": items}


# -- sites at a glance -----------------------------------------------------------------------------------------

@endpoint("/wall/sites")
async def sites_at_a_glance(request: Request, p: Principal, conn: Conn) -> Any:
    """The tenant's sites with coordinates and geofence, each with its open incidents' count and highest severity;
    ``unplaced``: sites with open incidents the directory has no coordinates for."""
    sites = await _sites(request, p.tenant_id)
    rows = await queries._all(
        conn, "SELECT site_id, count(*) AS open_incidents, max(array_position(%s::text[], combined_severity)) AS rank "
              "FROM incidents WHERE tenant_id = %s AND status = 'OPEN' GROUP BY site_id",
        (list(SEVERITY_ORDER), p.tenant_id))
    open_ = {r["site_id"]: r for r in rows}

    def stats(site_id: str) -> Row:
        r = open_.get(site_id)
        rank = r["rank"] if r is not None else None
        return {"open_incidents": int(r["open_incidents"]) if r is not None else 0,
                "max_severity": SEVERITY_ORDER[rank - 1] if rank else None}
    return {"sites": [{**s.as_json(), **stats(s.site_id)} for s in sorted(sites.values(), key=lambda s: s.site_id)],
            "unplaced": [{"site_id": sid, **stats(sid)} for sid in sorted(open_) if sid not in sites]}


# -- incident drill-down ---------------------------------------------------------------------------------------

_TICKET_COLS = ("ticket_id, ticket_no, site_id, person_id, category, status, priority, resolution, title, "
                "related_event_id, related_kind, created_at, updated_at, version")


def _by_kind(events: list[Row]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        out.setdefault(str(e["kind"]), []).append(str(e["event_id"]))
    return out


@endpoint("/wall/incidents/{incident_id}")
async def incident_drilldown(request: Request, p: Principal, conn: Conn) -> Any:
    """An incident with its evidence timeline (alerts; anomalies with observed vs expected; fraud scores with their
    reasons; audit findings), the site and person, its revisions (from the feed log) and its tickets."""
    incident_id = check_id(request.path_params["incident_id"], "incident_id")
    t = p.tenant_id
    inc = await queries.incident_detail(conn, t, incident_id)
    if inc is None:
        raise ApiError(404, f"no incident {incident_id!r}")
    events: list[Row] = inc.pop("events")
    ids = _by_kind(events)
    every = sorted({str(e["event_id"]) for e in events} | set(inc["related_event_ids"]))
    alerts = await queries._all(conn, "SELECT event_id, alert_type, severity, message, source, occurred_at "
                                      "FROM alerts WHERE tenant_id = %s AND event_id = ANY(%s)",
                                (t, ids.get("NOC_ALERT", [])))
    anomalies = await queries._all(conn, "SELECT anomaly_id, person_id, metric, observed, expected, stddev, threshold, "
                                         "score, severity, window_start, window_end FROM anomalies "
                                         "WHERE tenant_id = %s AND anomaly_id = ANY(%s)", (t, ids.get("ANOMALY", [])))
    scores = await queries._all(conn, "SELECT score_id, event_id, person_id, device_id, event_type, occurred_at, "
                                      "fraud_probability, risk_level, model_version, reasons FROM fraud_scores "
                                      "WHERE tenant_id = %s AND score_id = ANY(%s)", (t, ids.get("FRAUD_SCORE", [])))
    findings = await queries._all(conn, "SELECT event_id, finding_type, severity, evidence_summary, auditor_id, "
                                        "occurred_at, escalated_to_ticket, escalation_ticket_id FROM audit_findings "
                                        "WHERE tenant_id = %s AND event_id = ANY(%s)",
                                  (t, ids.get("AUDIT_FINDING", [])))
    details: dict[str, Row] = {}
    for kind, rows, key in (("NOC_ALERT", alerts, "event_id"), ("ANOMALY", anomalies, "anomaly_id"),
                            ("FRAUD_SCORE", scores, "score_id"), ("AUDIT_FINDING", findings, "event_id")):
        for r in rows:
            details[f"{kind}:{r[key]}"] = r
    timeline = [{**e, "detail": details.get(f"{e['kind']}:{e['event_id']}")} for e in events]
    revisions = await queries._all(
        conn, "SELECT event_id, type, ts, (payload->>'revision')::int AS revision, payload->>'status' AS status, "
              "payload->>'combined_severity' AS combined_severity, payload->>'title' AS title, "
              "jsonb_array_length(coalesce(payload->'related_event_ids', '[]'::jsonb)) AS evidence_count "
              "FROM event_log WHERE tenant_id = %s AND type IN ('incident_created', 'incident_updated') "
              "AND ts >= %s AND ts <= %s AND payload->>'incident_id' = %s ORDER BY ts, event_id",
        (t, inc["first_seen"] - timedelta(minutes=1), inc["updated_at"] + timedelta(minutes=1), incident_id))
    tickets = await queries._all(conn, f"SELECT {_TICKET_COLS} FROM tickets WHERE tenant_id = %s "
                                       "AND (related_event_id = %s OR related_event_id = ANY(%s)) "
                                       "ORDER BY created_at, ticket_id", (t, incident_id, every))
    person = None
    if inc["person_id"] is not None:
        recent = await queries._all(conn, "SELECT score_id, site_id, event_type, occurred_at, fraud_probability, "
                                          "risk_level FROM fraud_scores WHERE tenant_id = %s AND person_id = %s "
                                          "ORDER BY occurred_at DESC, score_id LIMIT 5", (t, inc["person_id"]))
        person = {"person_id": inc["person_id"], "recent_scores": recent}
    sites = await _sites(request, t)
    site = sites.get(inc["site_id"])
    return {"incident": inc, "timeline": timeline, "revisions": revisions, "tickets": tickets, "person": person,
            "site": site.as_json() if site is not None else {"site_id": inc["site_id"], "name": inc["site_id"]}}


# -- who is asking ---------------------------------------------------------------------------------------------

@endpoint("/wall/me", cached=False)  # the cache key is per tenant, and two tokens of one tenant differ in rights
async def me(request: Request, p: Principal, conn: Conn) -> Any:
    return {"tenant_id": p.tenant_id, "capabilities": sorted(p.capabilities), "can_manage": p.can("noc:manage")}


def routes(prefix: str) -> list[Route]:
    """The wall's routes under ``prefix`` (``/api/v2/noc``)."""
    return [Route(f"{prefix}/wall/trends", trends), Route(f"{prefix}/wall/latency", latency),
            Route(f"{prefix}/wall/heatmap", heatmap),
            Route(f"{prefix}/wall/sites", sites_at_a_glance),
            Route(f"{prefix}/wall/sites/{{site_id}}/scores", site_scores),
            Route(f"{prefix}/wall/incidents/{{incident_id}}", incident_drilldown), Route(f"{prefix}/wall/me", me)]
