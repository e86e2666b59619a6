"""SQL behind the REST endpoints, over the sinks' tables (see /work/notes/api-sinks.md, sinks/migrations/).

Every query is filtered by the caller's tenant. Time windows end at ``until`` (an aware datetime); the API
layer passes now, a client-given instant, or the tenant's newest row (``anchor=latest``, for replayed or
simulated data whose event time is not today).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

Row = dict[str, Any]
RISK_ORDER = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


async def _all(conn: AsyncConnection[Any], sql: str, params: tuple[Any, ...]) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def _one(conn: AsyncConnection[Any], sql: str, params: tuple[Any, ...]) -> Row | None:
    rows = await _all(conn, sql, params)
    return rows[0] if rows else None


_LATEST = {
    "signal_windows": "SELECT max(window_end) AS t FROM signal_windows WHERE tenant_id = %s",
    "fraud_scores": "SELECT max(occurred_at) AS t FROM fraud_scores WHERE tenant_id = %s",
    "event_log": "SELECT max(ts) AS t FROM event_log WHERE tenant_id = %s",
}


async def latest(conn: AsyncConnection[Any], table: str, tenant: int) -> datetime | None:
    row = await _one(conn, _LATEST[table], (tenant,))
    return None if row is None else row["t"]


_WINDOW_COLS = ("window_id, scope, site_id, person_id, window_start, window_end, phone_events_count, "
                "location_updates_count, movement_distance_meters, tasks_completed_count, tour_checkpoints_scanned, "
                "tours, event_count, late_event_count")
_TOTALS = ("phone_events_count", "location_updates_count", "movement_distance_meters", "tasks_completed_count",
           "tour_checkpoints_scanned", "event_count", "late_event_count")


def _totals(windows: list[Row]) -> Row:
    return {k: sum(w[k] for w in windows) for k in _TOTALS}


SIGNALS = ("phone_events_count", "location_updates_count", "movement_distance_meters", "tasks_completed_count",
           "tour_checkpoints_scanned")


def _signals(totals: Row) -> Row:
    """The documented ``signals`` object: the five activity signals summed over the window."""
    return {k: totals[k] for k in SIGNALS}


async def person_signals(conn: AsyncConnection[Any], tenant: int, person_id: str, until: datetime,
                         minutes: int) -> Row | None:
    since = until - timedelta(minutes=minutes)
    windows = await _all(conn, f"SELECT {_WINDOW_COLS} FROM signal_windows WHERE tenant_id = %s AND person_id = %s "
                               "AND window_start >= %s AND window_start < %s ORDER BY window_start",
                         (tenant, person_id, since, until))
    if not windows and await _one(conn, "SELECT 1 AS x FROM signal_windows WHERE tenant_id = %s AND person_id = %s "
                                        "LIMIT 1", (tenant, person_id)) is None:
        return None
    totals = _totals(windows)
    return {"person_id": person_id, "from": since, "until": until, "window_minutes": minutes,
            "windows": windows, "totals": totals, "site_ids": sorted({w["site_id"] for w in windows}),
            # The runbook's contract: the site of the latest window, and the five signals under "signals".
            "site_id": windows[-1]["site_id"] if windows else None, "signals": _signals(totals)}


async def site_signals(conn: AsyncConnection[Any], tenant: int, site_id: str, until: datetime,
                       minutes: int) -> Row | None:
    since = until - timedelta(minutes=minutes)
    windows = await _all(conn, f"SELECT {_WINDOW_COLS} FROM signal_windows WHERE tenant_id = %s AND site_id = %s "
                               "AND window_start >= %s AND window_start < %s ORDER BY window_start",
                         (tenant, site_id, since, until))
    if not windows and await _one(conn, "SELECT 1 AS x FROM signal_windows WHERE tenant_id = %s AND site_id = %s "
                                        "LIMIT 1", (tenant, site_id)) is None:
        return None
    site_rows = [w for w in windows if w["scope"] == "SITE"]
    people = sorted({w["person_id"] for w in windows if w["person_id"] is not None})
    totals = _totals(site_rows)
    return {"site_id": site_id, "from": since, "until": until, "window_minutes": minutes,
            "windows": site_rows, "totals": totals, "signals": _signals(totals), "people": people,
            "person_windows": len(windows) - len(site_rows)}


_INCIDENT_COLS = ("incident_id, site_id, person_id, status, combined_severity, kinds, related_event_ids, title, "
                  "first_seen, last_seen, revision, updated_at")


async def incidents(conn: AsyncConnection[Any], tenant: int, *, status: str | None, site_id: str | None,
                    person_id: str | None, severity: str | None, kind: str | None, min_kinds: int,
                    since: datetime | None, until: datetime | None, limit: int, offset: int,
                    evidence: bool = False) -> list[Row]:
    cols = _INCIDENT_COLS + (", evidence" if evidence else "")
    where, params = ["tenant_id = %s"], list[Any]([tenant])
    for col, val in (("status", status), ("site_id", site_id), ("person_id", person_id),
                     ("combined_severity", severity)):
        if val is not None:
            where.append(f"{col} = %s")
            params.append(val)
    if kind is not None:
        where.append("kinds @> ARRAY[%s]::text[]")
        params.append(kind)
    if min_kinds > 1:
        where.append("cardinality(kinds) >= %s")
        params.append(min_kinds)
    if since is not None:
        where.append("last_seen >= %s")
        params.append(since)
    if until is not None:
        where.append("last_seen < %s")
        params.append(until)
    sql = (f"SELECT {cols} FROM incidents WHERE {' AND '.join(where)} "
           "ORDER BY last_seen DESC, incident_id LIMIT %s OFFSET %s")
    return await _all(conn, sql, (*params, limit, offset))


async def incident_detail(conn: AsyncConnection[Any], tenant: int, incident_id: str) -> Row | None:
    row = await _one(conn, f"SELECT {_INCIDENT_COLS}, evidence FROM incidents WHERE tenant_id = %s "
                           "AND incident_id = %s", (tenant, incident_id))
    if row is None:
        return None
    row["events"] = await _all(conn, "SELECT event_id, kind, severity, occurred_at, summary FROM incident_events "
                                     "WHERE tenant_id = %s AND incident_id = %s ORDER BY occurred_at, event_id",
                               (tenant, incident_id))
    return row


_SCORE_COLS = ("score_id, event_id, site_id, person_id, device_id, shift_id, event_type, occurred_at, "
               "fraud_probability, risk_level, model_version, reasons")


def _risks_at_least(level: str) -> list[str]:
    return list(RISK_ORDER[RISK_ORDER.index(level):])


async def live_scores(conn: AsyncConnection[Any], tenant: int, until: datetime, minutes: int, min_risk: str,
                      site_id: str | None, limit: int) -> list[Row]:
    where, params = ["tenant_id = %s", "occurred_at >= %s", "occurred_at < %s", "risk_level = ANY(%s)"], [
        tenant, until - timedelta(minutes=minutes), until, _risks_at_least(min_risk)]
    if site_id is not None:
        where.append("site_id = %s")
        params.append(site_id)
    return await _all(conn, f"SELECT {_SCORE_COLS} FROM fraud_scores WHERE {' AND '.join(where)} "
                            "ORDER BY occurred_at DESC, score_id LIMIT %s", (*params, limit))


async def score_history(conn: AsyncConnection[Any], tenant: int, person_id: str, until: datetime, days: int,
                        limit: int) -> Row | None:
    rows = await _all(conn, f"SELECT {_SCORE_COLS} FROM fraud_scores WHERE tenant_id = %s AND person_id = %s "
                            "AND occurred_at >= %s AND occurred_at < %s ORDER BY occurred_at DESC, score_id LIMIT %s",
                      (tenant, person_id, until - timedelta(days=days), until, limit))
    if not rows and await _one(conn, "SELECT 1 AS x FROM fraud_scores WHERE tenant_id = %s AND person_id = %s LIMIT 1",
                               (tenant, person_id)) is None:
        return None
    probs = [r["fraud_probability"] for r in rows]
    return {"person_id": person_id, "until": until, "days": days, "scores": rows,
            "summary": {"count": len(rows), "max_probability": max(probs, default=None),
                        "avg_probability": sum(probs) / len(probs) if probs else None,
                        "high_risk": sum(1 for r in rows if r["risk_level"] in ("HIGH", "CRITICAL"))}}


async def heatmap(conn: AsyncConnection[Any], tenant: int, until: datetime, hours: int) -> Row:
    since = until - timedelta(hours=hours)
    sites = await _all(conn, "SELECT site_id, count(*) AS scores, "
                             "count(*) FILTER (WHERE risk_level IN ('HIGH', 'CRITICAL')) AS high_risk, "
                             "avg(fraud_probability) AS avg_probability, max(fraud_probability) AS max_probability "
                             "FROM fraud_scores WHERE tenant_id = %s AND occurred_at >= %s AND occurred_at < %s "
                             "GROUP BY site_id ORDER BY high_risk DESC, site_id", (tenant, since, until))
    cells = await _all(conn, "SELECT site_id, date_trunc('hour', occurred_at) AS hour, count(*) AS scores, "
                             "count(*) FILTER (WHERE risk_level IN ('HIGH', 'CRITICAL')) AS high_risk, "
                             "avg(fraud_probability) AS avg_probability "
                             "FROM fraud_scores WHERE tenant_id = %s AND occurred_at >= %s AND occurred_at < %s "
                             "GROUP BY site_id, hour ORDER BY site_id, hour", (tenant, since, until))
    return {"from": since, "until": until, "hours": hours, "sites": sites, "cells": cells}


async def model_performance(conn: AsyncConnection[Any], tenant: int, until: datetime, hours: int) -> Row:
    models = await _all(conn, "SELECT version, tenant_id, algorithm, metrics, trained_at, is_active, activated_at "
                              "FROM models WHERE tenant_id = %s OR tenant_id IS NULL ORDER BY trained_at DESC "
                              "LIMIT 50", (tenant,))
    since = until - timedelta(hours=hours)
    live = await _all(conn, "SELECT s.model_version, count(*) AS predictions, "
                            "avg(s.fraud_probability) AS avg_probability, "
                            "count(*) FILTER (WHERE s.risk_level IN ('HIGH', 'CRITICAL')) AS flagged, "
                            "count(l.label_id) AS labelled, "
                            "count(*) FILTER (WHERE l.is_fraud AND s.risk_level IN ('HIGH', 'CRITICAL')) AS tp, "
                            "count(*) FILTER (WHERE NOT l.is_fraud AND s.risk_level IN ('HIGH', 'CRITICAL')) AS fp, "
                            "count(*) FILTER (WHERE l.is_fraud AND s.risk_level NOT IN ('HIGH', 'CRITICAL')) AS fn "
                            "FROM fraud_scores s LEFT JOIN labels l "
                            "ON l.event_id = s.event_id AND l.tenant_id = s.tenant_id "
                            "WHERE s.tenant_id = %s AND s.occurred_at >= %s AND s.occurred_at < %s "
                            "GROUP BY s.model_version ORDER BY predictions DESC", (tenant, since, until))
    for row in live:
        tp, fp, fn = row["tp"], row["fp"], row["fn"]
        row["precision"] = tp / (tp + fp) if tp + fp else None
        row["recall"] = tp / (tp + fn) if tp + fn else None
    return {"from": since, "until": until, "hours": hours, "models": models, "live": live, **_active_summary(models,
                                                                                                          tenant)}


def _active_summary(models: list[Row], tenant: int) -> Row:
    """The runbook's fields: the active model (the tenant's own, else the global one) and its holdout metrics."""
    candidates = ([m for m in models if m["is_active"] and m["tenant_id"] == tenant]
                  or [m for m in models if m["is_active"] and m["tenant_id"] is None])
    active = candidates[0] if candidates else None
    metrics = active["metrics"] if active is not None and isinstance(active["metrics"], dict) else {}
    size, positives = metrics.get("train_size"), metrics.get("train_positives")
    ratio = (positives / (size - positives) if isinstance(size, int) and isinstance(positives, int) and size > positives
             else None)
    return {"active_model_version": None if active is None else active["version"],
            "pr_auc": metrics.get("pr_auc"), "precision_at_80_recall": metrics.get("precision_at_80_recall"),
            "training_samples": size, "fraud_normal_ratio": ratio}


_TICKET_COLS = ("ticket_id, ticket_no, site_id, person_id, category, source, status, priority, resolution, title, "
                "description, related_event_id, related_kind, evidence_summary, created_by, created_at, updated_at, "
                "resolved_at, closed_at, version")


async def tickets(conn: AsyncConnection[Any], tenant: int, *, status: str | None, priority: str | None,
                  site_id: str | None, limit: int, offset: int) -> list[Row]:
    where, params = ["tenant_id = %s"], list[Any]([tenant])
    for col, val in (("status", status), ("priority", priority), ("site_id", site_id)):
        if val is not None:
            where.append(f"{col} = %s")
            params.append(val)
    # Urgent first, then the most recently changed.
    sql = (f"SELECT {_TICKET_COLS} FROM tickets WHERE {' AND '.join(where)} ORDER BY "
           "array_position(ARRAY['URGENT','HIGH','MEDIUM','LOW'], priority), updated_at DESC, ticket_id "
           "LIMIT %s OFFSET %s")
    return await _all(conn, sql, (*params, limit, offset))


async def ticket_detail(conn: AsyncConnection[Any], tenant: int, ticket_id: str) -> Row | None:
    row = await _one(conn, f"SELECT {_TICKET_COLS} FROM tickets WHERE tenant_id = %s AND ticket_id = %s",
                     (tenant, ticket_id))
    if row is None:
        return None
    row["history"] = await _all(conn, "SELECT change_id, version, from_status, to_status, resolution, actor, note, "
                                      "origin, occurred_at FROM ticket_history WHERE tenant_id = %s AND ticket_id = %s "
                                      "ORDER BY version", (tenant, ticket_id))
    return row


async def event_stats(conn: AsyncConnection[Any], tenant: int, until: datetime, hours: int) -> Row:
    since = until - timedelta(hours=hours)
    rows = await _all(conn, "SELECT type, count(*) AS events, count(broadcast_latency_ms) AS broadcast, "
                            "avg(broadcast_latency_ms) AS avg_latency_ms, "
                            "percentile_cont(0.95) WITHIN GROUP (ORDER BY broadcast_latency_ms) AS p95_latency_ms "
                            "FROM event_log WHERE tenant_id = %s AND ts >= %s AND ts < %s GROUP BY type ORDER BY type",
                      (tenant, since, until))
    return {"from": since, "until": until, "hours": hours, "by_type": rows,
            "total": sum(r["events"] for r in rows)}
