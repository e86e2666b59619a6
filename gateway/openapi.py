"""The OpenAPI 3.0 document served at ``/openapi.json`` (written by hand: Starlette has no schema generator)."""

from __future__ import annotations

from functools import cache
from typing import Any

from gateway import api

PREFIX = "/api/v2/noc"


def _q(name: str, schema: dict[str, Any], doc: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": doc}


def _p(name: str, doc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": api.MAX_ID}, "description": doc}


def _int(lo: int, hi: int, default: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": lo, "maximum": hi, "default": default}


def _enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


_TIME = {"type": "string", "description": "epoch milliseconds or ISO 8601"}
UNTIL = _q("until", _TIME, "end of the time window (default: now)")
ANCHOR = _q("anchor", _enum(("now", "latest")), "without `until`: now, or the tenant's newest record")
PAGE = [_q("limit", _int(1, 200, 50), "page size"), _q("offset", _int(0, 100_000, 0), "rows to skip")]
INCIDENT_FILTERS = [
    _q("site_id", {"type": "string", "maxLength": api.MAX_ID}, "site"),
    _q("person_id", {"type": "string", "maxLength": api.MAX_ID}, "person"),
    _q("severity", _enum(api.SEVERITIES), "combined severity"),
    _q("kind", _enum(api.INCIDENT_KINDS), "incidents holding this kind of evidence"),
    _q("since", _TIME, "last seen at or after"), UNTIL,
]

_ENVELOPE = {"type": "object", "required": ["status", "data", "cached"], "properties": {
    "status": {"type": "string", "enum": ["success"]}, "data": {}, "cached": {"type": "boolean"}}}
_ERROR = {"type": "object", "required": ["status", "message"], "properties": {
    "status": {"type": "string", "enum": ["error"]}, "message": {"type": "string"}}}


def _responses(*codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "success", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Envelope"}}}}}
    for code in (400, 401, 403, 429, 503, *codes):
        out[str(code)] = {"description": "error", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
    return out


def _get(summary: str, params: list[dict[str, Any]], *codes: int) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params, "responses": _responses(*codes),
                    "security": [{"bearer": []}]}}


@cache
def openapi_document() -> dict[str, Any]:
    win = _q("window_minutes", _int(1, 10_080, 120), "window length in minutes")
    paths: dict[str, Any] = {
        f"{PREFIX}/telemetry/signals/{{person_id}}": _get(
            "Telemetry windows of one person", [_p("person_id", "person"), win, UNTIL, ANCHOR], 404),
        f"{PREFIX}/telemetry/signals/site/{{site_id}}": _get(
            "Site-level telemetry windows", [_p("site_id", "site"), win, UNTIL, ANCHOR], 404),
        f"{PREFIX}/telemetry/correlations": _get(
            "Incidents correlating several kinds of evidence",
            [_q("status", _enum(api.INCIDENT_STATUSES), "status"),
             _q("min_kinds", _int(1, 4, 2), "least number of evidence kinds"), *INCIDENT_FILTERS, *PAGE]),
        f"{PREFIX}/security/fraud-scores/live": _get(
            "Recent fraud scores at or above a risk level",
            [_q("minutes", _int(1, 1440, 60), "look-back"), _q("min_risk", _enum(api.RISKS), "least risk"),
             _q("site_id", {"type": "string", "maxLength": api.MAX_ID}, "site"),
             _q("limit", _int(1, 500, 100), "rows"), UNTIL, ANCHOR]),
        f"{PREFIX}/security/fraud-scores/history/{{person_id}}": _get(
            "Fraud score history of one person",
            [_p("person_id", "person"), _q("days", _int(1, 365, 30), "look-back"),
             _q("limit", _int(1, 1000, 200), "rows"), UNTIL, ANCHOR], 404),
        f"{PREFIX}/security/fraud-scores/heatmap": _get(
            "Fraud scores by site and hour", [_q("hours", _int(1, 720, 24), "look-back"), UNTIL, ANCHOR]),
        f"{PREFIX}/security/ml-models/performance": _get(
            "Registered models and their live precision/recall against labels",
            [_q("hours", _int(1, 720, 24), "look-back"), UNTIL, ANCHOR]),
        f"{PREFIX}/incidents": _get(
            "Incidents (default: open)", [_q("status", _enum(api.INCIDENT_STATUSES), "status"),
                                          *INCIDENT_FILTERS, *PAGE]),
        f"{PREFIX}/incidents/{{incident_id}}": _get("One incident with its evidence",
                                                    [_p("incident_id", "incident")], 404),
        f"{PREFIX}/tickets": _get(
            "The ticket queue, urgent first",
            [_q("status", _enum(api.TICKET_STATUSES), "status"), _q("priority", _enum(api.PRIORITIES), "priority"),
             _q("site_id", {"type": "string", "maxLength": api.MAX_ID}, "site"), *PAGE]),
        f"{PREFIX}/tickets/{{ticket_id}}": _get("One ticket with its history", [_p("ticket_id", "ticket")], 404),
        f"{PREFIX}/tickets/{{ticket_id}}/state": {"post": {
            "summary": "Change a ticket's state (capability noc:manage)", "security": [{"bearer": []}],
            "parameters": [_p("ticket_id", "ticket")],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["status"], "additionalProperties": False, "properties": {
                    "status": _enum(api.TICKET_STATUSES), "resolution": _enum(api.RESOLUTIONS),
                    "priority": _enum(api.PRIORITIES), "note": {"type": "string", "maxLength": 1000}}}}}},
            "responses": _responses(404, 409, 413, 501)}},
        f"{PREFIX}/session": {
            "get": {"summary": "Who the session cookie (or bearer token) is", "security": [{"bearer": []}],
                    "responses": _responses()},
            "post": {"summary": "Sign in: sets the HttpOnly session cookie noc_session for the bearer token",
                     "security": [{"bearer": []}], "responses": _responses()},
            "delete": {"summary": "Sign out: deletes the session and clears its cookie", "responses": _responses()}},
        f"{PREFIX}/events/stats": _get(
            "Feed events and broadcast latency (avg, p95) by type",
            [_q("hours", _int(1, 168, 24), "look-back"), UNTIL, ANCHOR]),
    }
    # Every path answers with and without a trailing slash (no redirect): the runbook's clients use the slash.
    paths.update({f"{path}/": spec for path, spec in list(paths.items())})
    return {
        "openapi": "3.0.3",
        "info": {"title": "nocstream gateway", "version": "2.0.0",
                 "description": "NOC dashboard API. Live feed: WebSocket /ws/noc/dashboard (see gateway/ws.py)."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Envelope": _ENVELOPE, "Error": _ERROR},
        },
    }
