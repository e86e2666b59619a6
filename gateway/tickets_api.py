"""``POST /api/v2/noc/tickets/{ticket_id}/state`` (capability ``noc:manage``): a ticket state change.

The change itself (state machine, version, history row, the ``ticket_updated`` feed event) belongs to the
sinks: ``sinks.tickets_api.change_ticket``. It is imported lazily so the gateway runs before it exists
(the endpoint then answers 501). The change is committed before its feed event is published; the event id is
stable, so a client retry after a 503 publishes it without changing the ticket twice.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

import orjson
import psycopg
from confluent_kafka import KafkaException
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from gateway import api
from gateway.metrics import API_LATENCY, API_REQUESTS

MAX_BODY = 4096
ROUTE = "/tickets/{ticket_id}/state"
_FIELDS = {"status", "resolution", "note", "priority"}


def parse_body(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_BODY:
        raise api.ApiError(413, f"body too large (max {MAX_BODY} bytes)")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise api.ApiError(400, "body must be a JSON object") from None
    if not isinstance(body, dict):
        raise api.ApiError(400, "body must be a JSON object")
    unknown = set(body) - _FIELDS
    if unknown:
        raise api.ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))[:100]}")
    status = body.get("status")
    if not isinstance(status, str) or status.upper() not in api.TICKET_STATUSES:
        raise api.ApiError(400, f"'status' must be one of {', '.join(api.TICKET_STATUSES)}")
    out: dict[str, Any] = {"status": status.upper()}
    for name, allowed in (("resolution", api.RESOLUTIONS), ("priority", api.PRIORITIES)):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, str) or value.upper() not in allowed:
                raise api.ApiError(400, f"'{name}' must be one of {', '.join(allowed)}")
            out[name] = value.upper()
    note = body.get("note")
    if note is not None:
        if not isinstance(note, str) or len(note) > 1000:
            raise api.ApiError(400, "'note' must be a string of at most 1000 characters")
        out["note"] = note
    return out


async def change_state(request: Request) -> Response:
    started = time.perf_counter()
    response = await _change_state(request)
    API_REQUESTS.labels("POST", ROUTE, str(response.status_code)).inc()
    API_LATENCY.labels(ROUTE).observe(time.perf_counter() - started)
    return response


async def _change_state(request: Request) -> Response:
    state = request.app.state
    try:
        principal = await api.authenticate(request, "noc:manage")
        ticket_id = api.check_id(request.path_params["ticket_id"], "ticket_id")
        body = parse_body(await request.body())
        try:
            mod = importlib.import_module("sinks.tickets_api")
        except ImportError:
            raise api.ApiError(501, "ticket changes are not available in this build") from None
        publish = getattr(state, "ticket_publish", None)
        if publish is None:
            publish = state.ticket_publish = await asyncio.to_thread(
                mod.kafka_publisher, state.config.bootstrap, state.config.namespace)

        def run() -> Any:
            return mod.change_ticket(state.config.dsn, principal.tenant_id, ticket_id, body["status"],
                                     actor=f"token:{principal.token_id}", resolution=body.get("resolution"),
                                     note=body.get("note"), priority=body.get("priority"), publish=publish)

        result = await asyncio.wait_for(asyncio.to_thread(run), 20)
        if not result.ok:
            reason = str(result.reason or "change refused")
            raise api.ApiError(404 if result.ticket is None else 409, reason)
        state.cache.invalidate_tenant(principal.tenant_id)
        return Response(b'{"status":"success","cached":false,"data":' + api.dumps(result.ticket) + b"}",
                        media_type=api.JSON, headers={"cache-control": "no-store"})
    except api.ApiError as exc:
        return api.error_response(exc.status, exc.message)
    except TimeoutError:
        return api.error_response(503, "ticket change timed out")
    except (psycopg.OperationalError, PoolTimeout):
        return api.error_response(503, "database unavailable")
    except KafkaException as exc:  # the change is committed; its feed event is republished by a retry
        return api.error_response(503, f"ticket changed but its feed event was not delivered: {exc}")
