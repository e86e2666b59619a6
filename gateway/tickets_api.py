"""``POST /api/v2/noc/tickets/{ticket_id}/state`` (capability ``noc:manage``): a ticket state change.

The change itself (state machine, version, history row, the ``ticket_updated`` feed event) belongs to the
sinks: ``sinks.tickets_api.change_ticket``. It is imported lazily so the gateway runs before it exists
(the endpoint then answers 501). The change is committed, then its feed event is published (its id is stable).
With an ``Idempotency-Key`` header (see :mod:`gateway.idempotency`) a retry, after a 503 or a lost answer, gets
the original answer, and the event is published once: again only if its delivery was not confirmed.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from typing import Any

import orjson
import psycopg
from confluent_kafka import KafkaException
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from gateway import api
from gateway.idempotency import Claim, IdempotencyStore, check_key, request_hash
from gateway.metrics import API_LATENCY, API_REQUESTS

MAX_BODY = 4096
CHANGE_TIMEOUT_S = 20.0
log = logging.getLogger("nocstream.gateway.tickets")
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


async def read_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it is larger than MAX_BODY: never read whole first."""
    declared = request.headers.get("content-length")
    if declared is not None and not (declared.isascii() and declared.isdigit() and int(declared) <= MAX_BODY):
        raise api.ApiError(413, f"body too large (max {MAX_BODY} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise api.ApiError(413, f"body too large (max {MAX_BODY} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def warm_publisher(state: Any) -> None:
    """Make the ticket changes' Kafka producer now (connected, with the feed topic's metadata), so the first
    change's ``ticket_updated`` event is not delayed by it. A build without the sinks package has none."""
    try:
        mod = importlib.import_module("sinks.tickets_api")
    except ImportError:
        return
    try:
        state.ticket_publish = await asyncio.to_thread(
            mod.kafka_publisher, state.config.bootstrap, state.config.namespace, connect=True)
    except KafkaException as exc:  # the first change connects instead (and answers 503 if it cannot)
        log.warning("ticket changes' Kafka producer not connected at start-up: %s", exc)


async def _publisher(state: Any, mod: Any) -> Any:
    publish = getattr(state, "ticket_publish", None)
    if publish is None:
        publish = state.ticket_publish = await asyncio.to_thread(
            mod.kafka_publisher, state.config.bootstrap, state.config.namespace)
    return publish


def _ok_body(ticket: Any) -> bytes:
    return b'{"status":"success","cached":false,"data":' + api.dumps(ticket) + b"}"


def _error_body(message: str) -> bytes:
    return orjson.dumps({"status": "error", "message": message})


class _Change:
    """One ticket change: the change itself (in a thread, over ``sinks.tickets_api``), then its feed event."""

    def __init__(self, state: Any, mod: Any, tenant_id: int, key: str | None) -> None:
        self.state = state
        self.mod = mod
        self.tenant_id = tenant_id
        self.key = key
        self.store: IdempotencyStore = state.idempotency

    async def finish(self, result: Any) -> tuple[int, bytes]:
        """Store the answer (with a key), publish the event, and return (status, body). Raises KafkaException when
        the event was not delivered: the ticket is changed, and a retry with the key publishes it."""
        if not result.ok:
            status = 404 if result.ticket is None else 409
            body = _error_body(str(result.reason or "change refused"))
            if self.key is not None:
                await self.store.answer(self.tenant_id, self.key, status, body)
            return status, body
        self.state.cache.invalidate_tenant(self.tenant_id)
        body = _ok_body(result.ticket)
        if self.key is not None:
            await self.store.answer(self.tenant_id, self.key, 200, body, orjson.dumps(result.event))
        await asyncio.to_thread(await _publisher(self.state, self.mod), result.event)
        if self.key is not None:
            await self.store.delivered(self.tenant_id, self.key)
        return 200, body

    async def finish_later(self, fut: asyncio.Future[Any]) -> None:
        """A change that outlived its request (the 503 "timed out"): store and publish it when it is done."""
        try:
            await self.finish(await fut)
        except (KafkaException, psycopg.OperationalError, PoolTimeout, TimeoutError) as exc:
            log.warning("ticket change finished after its request timed out; not completed: %s", exc)


async def _change_state(request: Request) -> Response:
    state = request.app.state
    try:
        principal = await api.authenticate(request, "noc:manage")
        ticket_id = api.check_id(request.path_params["ticket_id"], "ticket_id")
        body = parse_body(await read_body(request))
        try:
            mod = importlib.import_module("sinks.tickets_api")
        except ImportError:
            raise api.ApiError(501, "ticket changes are not available in this build") from None
        key = None
        raw_key = request.headers.get("idempotency-key")
        if raw_key is not None:
            key = check_key(raw_key)
            if key is None:
                raise api.ApiError(400, "'Idempotency-Key' must be 1-200 visible ASCII characters")
        change = _Change(state, mod, principal.tenant_id, key)
        if key is not None:
            claim = await change.store.claim(principal.tenant_id, key, request_hash(
                b"POST", ROUTE.encode(), ticket_id.encode(), orjson.dumps(body, option=orjson.OPT_SORT_KEYS)))
            if not claim.new:
                return await _replay(change, claim)

        def run() -> Any:
            return mod.change_ticket(state.config.dsn, principal.tenant_id, ticket_id, body["status"],
                                     actor=f"token:{principal.token_id}", resolution=body.get("resolution"),
                                     note=body.get("note"), priority=body.get("priority"), publish=None)

        fut = asyncio.ensure_future(asyncio.to_thread(run))
        try:
            result = await asyncio.wait_for(asyncio.shield(fut), CHANGE_TIMEOUT_S)
        except TimeoutError:
            task = asyncio.ensure_future(change.finish_later(fut))
            state.background.add(task)
            task.add_done_callback(state.background.discard)
            raise
        status, out = await change.finish(result)
        return Response(out, status_code=status, media_type=api.JSON)
    except api.ApiError as exc:
        return api.error_response(exc.status, exc.message, exc.headers)
    except TimeoutError:
        return api.error_response(503, "ticket change timed out")
    except (psycopg.OperationalError, PoolTimeout):
        return api.error_response(503, "database unavailable")
    except KafkaException as exc:  # the change is committed; a retry with the same Idempotency-Key publishes it
        return api.error_response(503, f"ticket changed but its feed event was not delivered: {exc}")


async def _replay(change: _Change, claim: Claim) -> Response:
    """The answer to a request whose Idempotency-Key was seen before."""
    if not claim.same_request:
        raise api.ApiError(422, "this Idempotency-Key was used for another request")
    if claim.status_code is None or claim.response is None:
        raise api.ApiError(409, "a request with this Idempotency-Key is in progress", {"retry-after": "1"})
    if claim.pending_event is not None:  # the change was made but its event not confirmed: publish it now
        assert change.key is not None
        await asyncio.to_thread(await _publisher(change.state, change.mod), orjson.loads(claim.pending_event))
        await change.store.delivered(change.tenant_id, change.key)
    return Response(claim.response, status_code=claim.status_code, media_type=api.JSON,
                    headers={"idempotent-replayed": "true"})
