"""``/ws/noc/dashboard`` (also ``/ws/noc/dashboard/``): the live feed over WebSocket.

Authentication: ``Authorization: Bearer``, the subprotocol ``bearer.<token>`` (browsers), or the dashboard's session
cookie (``gateway.sessions``; the handshake must then carry an allowed ``Origin``). Two modes:

- **per-event** (the documented contract, the default): a client that does not offer the ``noc.v1`` subprotocol
  gets ``{"type": "hello", "timestamp", "tenant_id", "mode": "events", ...}`` and then, with nothing to send, every
  event of its tenant, one per message: ``{"type", "timestamp" (ISO 8601), "tenant_id", ...the event's fields...,
  "event_id", "cursor"}`` (see ``gateway.event_messages``). Its first message may be a subscribe: that switches it
  to the batched protocol below.
- **batched** (efficient: one frame per tick, filters, resume), selected by offering ``noc.v1`` or by a first
  message that subscribes:

  - server → ``{"type": "hello", "tenant_id", "mode": "batched", "heartbeat_s", "max_message_bytes"}`` on connect;
  - client → ``{"action": "subscribe", "types": [...]|null, "site_ids": [...]|null,
    "resume_from": "<event_id>"|null, "cursor": "<partition>:<offset>"|null}``; with ``noc.v1`` no events flow
    before the first subscribe; later subscribes only change the filters (resume is honoured once per connection);
  - server → ``{"type": "subscribed", "filters", "resume": "live"|"ring"|"kafka"|"kafka-partial"|"unavailable",
    "replayed": n}``, then ``{"type": "events", "events": [...]}`` frames: the events of one tick (2 ms, longer with
    many clients: see the README) in one frame, in feed order (the first events after a quiet tick go at once).

In both: client → ``{"action": "ping"}`` → ``{"type": "pong"}``; server → ``{"type": "heartbeat"}`` when idle.

Close codes: 1003 binary frame, 1007 invalid message, 1009 message too big, 4008 slow consumer or not reading
(queue full by events or bytes, replies unread, socket full), 4029 too many messages from the client, 4401 token
(or session) revoked or expired (re-checked every ``token_recheck_s``), 1011 server error. A handshake without a
valid token or session is refused with HTTP 401, one without ``noc:view``, from a foreign Origin, or with a cookie
and no Origin with 403, one over a rate limit or the per-token connection cap with 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg_pool import PoolTimeout
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway import auth
from gateway.config import GatewayConfig
from gateway.consumer import read_back
from gateway.event_messages import event_message
from gateway.guard import Guard
from gateway.hub import (
    BATCHED,
    EVENT_TYPES,
    PER_EVENT,
    Client,
    FeedEvent,
    Filters,
    Hub,
    SharedFrame,
    parse_cursor,
    per_event_frame,
    type_label,
    ws_text_frame,
)
from gateway.limits import RateLimiter, retry_after_s
from gateway.metrics import WS_BROADCAST_LATENCY, WS_BROADCASTS, WS_CLIENTS, WS_CLOSED, WS_FRAMES, WS_LIMITED
from gateway.sessions import session_from_headers
from gateway.tokens import Principal, TokenVerifier
from gateway.wire import raw_writer

log = logging.getLogger("nocstream.gateway.ws")
FRAME_MAX_EVENTS = 200
CLOSE_WAIT_S = 2.0
MAX_FILTER_ITEMS = 500
_SUBSCRIBE_KEYS = frozenset({"action", "types", "site_ids", "resume_from", "cursor"})


class ProtocolViolation(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]  # a close reason must fit in 123 bytes


def _str_list(msg: dict[str, Any], key: str) -> frozenset[str] | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_FILTER_ITEMS or not all(
            isinstance(v, str) and 0 < len(v) <= 200 for v in value):
        raise ProtocolViolation(1007, f"'{key}' must be a list of at most {MAX_FILTER_ITEMS} non-empty strings")
    return frozenset(value)


def parse_client_message(text: str, max_bytes: int) -> dict[str, Any]:
    if len(text.encode("utf-8")) > max_bytes:
        raise ProtocolViolation(1009, f"message too big (max {max_bytes} bytes)")
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolViolation(1007, f"malformed JSON: {exc.msg}") from None
    if not isinstance(msg, dict):
        raise ProtocolViolation(1007, "a message must be a JSON object")
    action = msg.get("action")
    if action == "ping":
        return msg
    if action != "subscribe":
        raise ProtocolViolation(1007, "unknown action; expected 'subscribe' or 'ping'")
    unknown = set(msg) - _SUBSCRIBE_KEYS
    if unknown:
        raise ProtocolViolation(1007, f"unknown field(s): {', '.join(sorted(unknown))[:80]}")
    types = _str_list(msg, "types")
    if types is not None and not types <= EVENT_TYPES:
        raise ProtocolViolation(1007, f"unknown event type(s): {', '.join(sorted(types - EVENT_TYPES))[:80]}")
    msg["types"], msg["site_ids"] = types, _str_list(msg, "site_ids")
    for key in ("resume_from", "cursor"):
        if msg.get(key) is not None and (not isinstance(msg[key], str) or not 0 < len(msg[key]) <= 300):
            raise ProtocolViolation(1007, f"'{key}' must be a non-empty string")
    if msg.get("cursor") is not None:
        try:
            msg["cursor"] = parse_cursor(msg["cursor"])
        except ValueError as exc:
            raise ProtocolViolation(1007, str(exc)) from None
    return msg


FRAMES_SHARED, FRAMES_QUEUE = WS_FRAMES.labels("shared"), WS_FRAMES.labels("queue")


def record_sends(events: list[FeedEvent], clients: int, sent_log: deque[tuple[FeedEvent, float]],
                 queued: bool = False) -> None:
    """Metrics of one frame sent to ``clients`` clients: counts per type, and each event's latency once per process
    (at its first send), also queued for event_log. Per-delivery work stays minimal: 1,000 clients multiply it."""
    now_ms = time.time() * 1000
    by_type: dict[str, int] = {}
    for ev in events:
        label = type_label(ev.type)
        by_type[label] = by_type.get(label, 0) + clients
        if not ev.sent:
            ev.sent = True
            if ev.live:
                lat = max(0.0, (now_ms - ev.produced_ms) / 1000)
                WS_BROADCAST_LATENCY.labels(label).observe(lat)
                sent_log.append((ev, lat))
    for type_, n in by_type.items():
        WS_BROADCASTS.labels(type_).inc(n)
    (FRAMES_QUEUE if queued else FRAMES_SHARED).inc(clients)


class Connection:
    def __init__(self, ws: WebSocket, hub: Hub, cfg: GatewayConfig, tenant_id: int, topic_name: str) -> None:
        self.ws = ws
        self.hub = hub
        self.cfg = cfg
        self.topic = topic_name
        self.client = Client(tenant_id, cfg.client_queue_max, paused=True, max_bytes=cfg.client_queue_max_bytes)
        self.client.wake = self._wake
        self.raw = raw_writer(ws)
        if self.raw is not None:
            self.client.direct = self._direct
        self.event = asyncio.Event()
        self.control: deque[bytes] = deque()
        self.attached = False  # registered with the hub
        self.subscribed = False  # sent a subscribe (a client in per-event mode switches to batched frames then)
        self.close_code = 1000
        self.close_reason = ""
        self.sending = False
        self.last_send = time.monotonic()
        self.sender: asyncio.Task[None] | None = None
        self.inbound = RateLimiter(*cfg.ws_messages_per_s, max_keys=1)
        # (event, latency s) of every live send, drained once a second into event_log by app.py
        self.sent_log: deque[tuple[FeedEvent, float]] = ws.app.state.sent_log

    def _wake(self) -> None:
        self.event.set()
        if self.client.overflowed and self.sending and self.sender is not None:
            self.sender.cancel()  # blocked writing to a client that does not read: stop now

    def _direct(self, frame: SharedFrame) -> bool:
        """The hub's fast path: the group's frame straight to the socket, unless this connection's own sender
        has something in flight or queued (control messages first, and never two writers interleaving)."""
        if self.sending or self.control or self.raw is None or not self.raw.write(frame.wire()):
            return False
        self.last_send = time.monotonic()
        return True

    def say(self, obj: dict[str, Any]) -> None:
        if len(self.control) >= self.cfg.control_queue_max:  # replies pile up: the client does not read them
            raise ProtocolViolation(4008, f"not reading: more than {self.cfg.control_queue_max} replies queued")
        self.control.append(orjson.dumps(obj))
        self.event.set()

    async def watchdog(self, every_s: float = 0.25) -> None:
        """Returns when the client has stopped reading: its socket full (writes paused) for ``ws_stalled_close_s``,
        or more than ``client_queue_max_bytes`` waiting in the socket's buffer (what any writer, including the
        server's own ping replies, may have put there)."""
        if self.raw is None:
            await asyncio.Event().wait()  # no transport to watch: the ASGI send path has its timeout
            return
        full_since: float | None = None
        while True:
            await asyncio.sleep(every_s)
            now = time.monotonic()
            if self.raw.buffered() > self.cfg.client_queue_max_bytes:
                return
            if self.raw.is_writable():
                full_since = None
            elif full_since is None:
                full_since = now
            elif now - full_since >= self.cfg.ws_stalled_close_s:
                return

    async def _send(self, data: bytes) -> None:
        self.sending = True
        try:
            if self.raw is not None:  # frame it ourselves: no text round trip, no per-message protocol machinery
                if not self.raw.is_writable():
                    await asyncio.wait_for(self.raw.writable(), self.cfg.ws_stalled_close_s)
                if self.raw.write(ws_text_frame(data)):
                    return
            await asyncio.wait_for(self.ws.send({"type": "websocket.send", "text": data.decode("utf-8")}),
                                   self.cfg.ws_stalled_close_s)
        finally:
            self.sending = False
            self.last_send = time.monotonic()

    async def _send_events(self, batch: list[FeedEvent]) -> None:
        """Per-event mode: one message per event; with the raw writer all of them in one write."""
        if self.raw is None:
            for ev in batch:
                await self._send(event_message(ev.data, ev.type, self.hub.person_name(ev.tenant_id, ev.person_id)))
            return
        self.sending = True
        try:
            if not self.raw.is_writable():
                await asyncio.wait_for(self.raw.writable(), self.cfg.ws_stalled_close_s)
            if not self.raw.write(b"".join([per_event_frame(ev, self.hub.person_name) for ev in batch])):
                raise WebSocketDisconnect(1006)  # closing under us: the receive side reports the disconnect
        finally:
            self.sending = False
            self.last_send = time.monotonic()

    async def send_loop(self) -> None:
        while True:
            try:
                if not self.event.is_set():  # wait_for costs a task: skip it when there is work already
                    idle = time.monotonic() - self.last_send
                    await asyncio.wait_for(self.event.wait(), max(0.0, self.cfg.heartbeat_s - idle))
            except TimeoutError:
                if time.monotonic() - self.last_send >= self.cfg.heartbeat_s:  # frames went out directly meanwhile
                    await self._send(orjson.dumps({"type": "heartbeat", "timestamp": _now_iso(),
                                                   "server_time": int(time.time() * 1000)}))
                continue
            self.event.clear()
            if self.client.overflowed:
                return
            # Coalesce a backlog under load: with many clients, frames (not events) are what cost CPU.
            gap = self.hub.n_clients / self.cfg.ws_frame_budget - (time.monotonic() - self.last_send)
            if gap > 0.001 and self.client.backlog:
                await asyncio.sleep(gap)
                if self.client.overflowed:
                    return
            while self.control:
                await self._send(self.control.popleft())
            while not self.client.paused and self.client.backlog:
                batch = self.client.take(FRAME_MAX_EVENTS)
                if self.client.mode == PER_EVENT:
                    await self._send_events(batch)
                else:
                    await self._send(SharedFrame(batch).payload())
                record_sends(batch, 1, self.sent_log, queued=True)
                if self.client.overflowed:
                    return

    async def receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if self.inbound.take(0):
                WS_LIMITED.labels("messages").inc()
                rate = self.cfg.ws_messages_per_s[0]
                raise ProtocolViolation(4029, f"too many messages: at most {rate:g} per second")
            if message.get("text") is None:
                raise ProtocolViolation(1003, "binary frames are not supported; send JSON text")
            msg = parse_client_message(message["text"], self.cfg.max_ws_message_bytes)
            if msg["action"] == "ping":
                self.say({"type": "pong", "server_time": int(time.time() * 1000)})
                continue
            await self._subscribe(msg)

    def start_per_event(self) -> None:
        """The documented mode: every event of the tenant from now on, one per message, with nothing to send first."""
        c = self.client
        self.hub.set_mode(c, PER_EVENT)
        self.hub.attach(c, None)
        self.attached = True
        c.paused = False

    async def _subscribe(self, msg: dict[str, Any]) -> None:
        c = self.client
        first = not self.subscribed
        self.subscribed = True
        self.hub.set_filters(c, Filters(msg["types"], msg["site_ids"]))
        if first and c.mode == PER_EVENT:
            self.hub.set_mode(c, BATCHED)  # a subscribe selects the batched protocol, with filters and resume
        filters = {"types": sorted(msg["types"]) if msg["types"] is not None else None,
                   "site_ids": sorted(msg["site_ids"]) if msg["site_ids"] is not None else None}
        resume_from = msg.get("resume_from")
        if not first or (self.attached and resume_from is None):
            self.say({"type": "subscribed", "filters": filters, "resume": "live", "replayed": 0})
            return
        self.attached = True
        cursor: tuple[int, int] | None = msg.get("cursor")
        consumer = getattr(self.ws.app.state, "consumer", None)
        if cursor is not None and consumer is not None and cursor[0] not in consumer.partitions:
            raise ProtocolViolation(1007, f"cursor names partition {cursor[0]}, which the feed does not have")
        if cursor is not None:
            c.last_offset[cursor[0]] = max(c.last_offset.get(cursor[0], -1), cursor[1])
        c.paused = True  # a client that was live already (per-event mode) waits for its replay
        how, n = self.hub.attach(c, resume_from)
        if how == "miss" and cursor is not None:
            # Not in this process's ring (evicted, or another gateway served the client): read the gap back
            # from Kafka while live events queue up behind it.
            events, complete = await asyncio.to_thread(read_back, self.cfg.bootstrap, self.topic, cursor[0],
                                                       cursor[1] + 1, c.tenant_id, self.cfg.resume_max_events)
            self.say({"type": "subscribed", "filters": filters, "resume": "kafka" if complete else "kafka-partial",
                      "replayed": len(events)})
            Hub.complete_resume(c, events, cursor)
            return
        if how == "miss":
            how = "unavailable"  # no cursor and the id is not held: the client knows it may have a gap
        self.say({"type": "subscribed", "filters": filters, "resume": how, "replayed": n})
        c.paused = False
        c.wake()


async def _watch_token(check: Callable[[], Awaitable[Principal | None]], every_s: float) -> None:
    """Returns when the connection's token (or session) stops being valid (revoked or expired), so the socket is
    closed."""
    while True:
        await asyncio.sleep(every_s)
        try:
            if await check() is None:
                return
        except (psycopg.OperationalError, PoolTimeout, TimeoutError) as exc:
            log.warning("token re-check skipped, database unavailable: %s", exc)  # keep serving meanwhile


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _cancel_all(tasks: tuple[asyncio.Task[Any], ...]) -> None:
    """Cancel the connection's tasks and wait for them. Python 3.11's ``wait_for`` drops a cancellation that arrives
    as the awaited future completes (fixed in 3.12), so a task still running is cancelled again."""
    pending = [t for t in tasks if not t.done()]
    while pending:
        for t in pending:
            t.cancel()
        await asyncio.wait(pending, timeout=0.05)
        pending = [t for t in pending if not t.done()]
    for t in tasks:  # retrieve what they raised, so asyncio does not log it as never retrieved
        if not t.cancelled():
            t.exception()


async def _deny(ws: WebSocket, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    WS_CLOSED.labels(str(status)).inc()
    body = orjson.dumps({"status": "error", "message": message})
    await ws.send_denial_response(Response(body, status_code=status, media_type="application/json", headers=headers))


async def dashboard_ws(ws: WebSocket) -> None:
    app_state = ws.app.state
    cfg: GatewayConfig = app_state.config
    verifier: TokenVerifier = app_state.verifier
    if not auth.origin_allowed(ws.headers.get("origin"), ws.headers.get("host"), cfg.allowed_origins,
                               ws.url.scheme == "wss"):
        await _deny(ws, 403, "origin not allowed")
        return
    # wsproto's uvicorn protocol passes the offered subprotocols in the scope only, not in the headers
    offered = auth.offered_subprotocols(ws.headers) or [str(p) for p in ws.scope.get("subprotocols", [])]
    token = auth.bearer_from_headers(ws.headers) or auth.bearer_from_subprotocols(offered)
    session = None if token else session_from_headers(ws.headers)
    if session is not None and ws.headers.get("origin") is None:
        # The browser sends the cookie on its own: only a page of an allowed origin may use it (checked above).
        await _deny(ws, 403, "a session cookie needs an Origin")
        return
    guard: Guard = app_state.guard
    address = ws.client.host if ws.client is not None else "-"
    wait, why = guard.before_auth(address, token or session)
    if wait:
        WS_LIMITED.labels("handshakes").inc()
        await _deny(ws, 429, why, {"retry-after": retry_after_s(wait)})
        return

    async def check() -> Principal | None:
        return await (verifier.verify(token) if session is None else verifier.verify_session(session))

    try:
        principal = await check()
    except (psycopg.OperationalError, PoolTimeout, TimeoutError):
        await _deny(ws, 503, "database unavailable")
        return
    if principal is None:
        guard.auth_failed(address, token or session)
        await _deny(ws, 401, "missing or invalid bearer token or session")
        return
    if not principal.can("noc:view"):
        await _deny(ws, 403, "token lacks the noc:view capability")
        return
    per_token: dict[str, int] = app_state.ws_per_token  # bounded: an entry per token with an open connection
    if per_token.get(principal.token_id, 0) >= cfg.ws_connections_per_token:
        WS_LIMITED.labels("connections").inc()
        await _deny(ws, 429, f"too many connections for this token (at most {cfg.ws_connections_per_token})",
                    {"retry-after": "10"})
        return
    per_token[principal.token_id] = per_token.get(principal.token_id, 0) + 1
    try:
        await _serve(ws, principal.tenant_id, check, offered)
    finally:
        left = per_token.pop(principal.token_id, 1) - 1
        if left > 0:
            per_token[principal.token_id] = left


async def _serve(ws: WebSocket, tenant_id: int, check: Callable[[], Awaitable[Principal | None]],
                 offered: list[str]) -> None:
    app_state = ws.app.state
    cfg: GatewayConfig = app_state.config
    hub: Hub = app_state.hub
    batched = auth.SUBPROTOCOL in offered
    await ws.accept(subprotocol=auth.SUBPROTOCOL if batched else None)
    conn = Connection(ws, hub, cfg, tenant_id, app_state.events_topic)
    app_state.connections.add(conn)
    WS_CLIENTS.inc()
    conn.say({"type": "hello", "timestamp": _now_iso(), "tenant_id": tenant_id, "mode": BATCHED if batched else
              PER_EVENT, "heartbeat_s": cfg.heartbeat_s, "max_message_bytes": cfg.max_ws_message_bytes})
    if not batched:
        conn.start_per_event()
    receiver = asyncio.create_task(conn.receive_loop())
    conn.sender = asyncio.create_task(conn.send_loop())
    watch = asyncio.create_task(_watch_token(check, cfg.token_recheck_s))
    dog = asyncio.create_task(conn.watchdog())
    try:
        await asyncio.wait({receiver, conn.sender, watch, dog}, return_when=asyncio.FIRST_COMPLETED)
        sender_err = conn.sender.exception() if conn.sender.done() and not conn.sender.cancelled() else None
        if watch.done() and not watch.cancelled() and watch.exception() is None:
            conn.close_code, conn.close_reason = 4401, "token revoked or expired"
        elif conn.client.overflowed:
            conn.close_code, conn.close_reason = 4008, (f"slow consumer: more than {cfg.client_queue_max} events "
                                                        f"or {cfg.client_queue_max_bytes} bytes queued")
        elif dog.done() or isinstance(sender_err, TimeoutError):
            conn.close_code, conn.close_reason = 4008, "not reading: socket full"
        elif receiver.done() and not receiver.cancelled() and isinstance(receiver.exception(), ProtocolViolation):
            exc = receiver.exception()
            assert isinstance(exc, ProtocolViolation)
            conn.close_code, conn.close_reason = exc.code, exc.reason
        for task in (receiver, conn.sender):
            if task.done() and not task.cancelled():
                err = task.exception()
                if err is not None and not isinstance(err, ProtocolViolation | WebSocketDisconnect | OSError
                                                      | TimeoutError):
                    log.error("websocket task failed", exc_info=err)
                    conn.close_code, conn.close_reason = 1011, "internal error"
    finally:
        hub.detach(conn.client)
        app_state.connections.discard(conn)
        WS_CLIENTS.dec()
        await _cancel_all((receiver, conn.sender, watch, dog))
        if conn.close_code != 1000:  # counted even when the socket is gone before the close frame could go
            WS_CLOSED.labels(str(conn.close_code)).inc()
        if ws.application_state != WebSocketState.DISCONNECTED and ws.client_state != WebSocketState.DISCONNECTED:
            closed = False
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError, TimeoutError):
                await asyncio.wait_for(ws.close(conn.close_code, conn.close_reason), CLOSE_WAIT_S)
                closed = True
            if conn.raw is not None and (not closed or conn.close_code != 1000):
                # The gateway closed it for a reason (a limit, a violation, a client that does not read): the client
                # gets CLOSE_WAIT_S to take the close frame and answer it, then the TCP connection is dropped with
                # whatever is still buffered for it.
                if closed:
                    await asyncio.sleep(CLOSE_WAIT_S)
                conn.raw.abort_if_stuck()
