"""Hostile clients and producers against a real gateway (uvicorn, Postgres, Kafka): no 5xx for any parameter,
headers, rate limits, connection caps, non-reading clients, hostile feed records, paged resumes, idempotent ticket
changes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.testing import FeedProducer, free_port, noc_event, running_gateway, seed_rows
from gateway.tokens import create_token

pytestmark = pytest.mark.integration
API = "/api/v2/noc"
OFF = (0.0, 0.0)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 90))


@pytest.fixture
def env(pg_schema: tuple[str, str], namespace: str, kafka_bootstrap: str) -> dict[str, Any]:
    dsn, _ = pg_schema
    seed_rows(dsn)
    return {"dsn": dsn, "ns": namespace, "bootstrap": kafka_bootstrap,
            "t1": create_token(dsn, 1, ["noc:view"])[1], "t2": create_token(dsn, 2, ["noc:view"])[1],
            "m1": create_token(dsn, 1, ["noc:manage"])[1], "feed": FeedProducer(kafka_bootstrap, namespace)}


def _cfg(env: dict[str, Any], **kw: Any) -> GatewayConfig:
    return dataclasses.replace(GatewayConfig(), dsn=env["dsn"], bootstrap=env["bootstrap"], namespace=env["ns"], **kw)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _open(url: str, token: str, **kw: Any) -> Any:
    return connect(url, subprotocols=[Subprotocol("noc.v1"), Subprotocol(f"bearer.{token}")], compression=None,
                   open_timeout=10, **kw)


async def _next(ws: ClientConnection, kind: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if msg["type"] == kind:
            return dict(msg)


async def _events(ws: ClientConnection, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        out.extend((await _next(ws, "events", timeout))["events"])
    return out


async def _subscribe(ws: ClientConnection, **msg: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({"action": "subscribe", **msg}).decode())
    return await _next(ws, "subscribed")


# -- every route, any parameter ---------------------------------------------------------------------------------

ROUTES = [  # (path template, its query parameters)
    ("/telemetry/signals/{id}", ["window_minutes", "until", "anchor"]),
    ("/telemetry/signals/site/{id}", ["window_minutes", "until", "anchor"]),
    ("/telemetry/correlations", ["limit", "offset", "min_kinds", "status", "site_id", "person_id", "severity", "kind",
                                 "since", "until"]),
    ("/security/fraud-scores/live", ["minutes", "min_risk", "site_id", "limit", "until", "anchor"]),
    ("/security/fraud-scores/history/{id}", ["days", "limit", "until", "anchor"]),
    ("/security/fraud-scores/heatmap", ["hours", "until", "anchor"]),
    ("/security/ml-models/performance", ["hours", "until", "anchor"]),
    ("/incidents", ["limit", "offset", "status", "site_id", "person_id", "severity", "kind", "since", "until"]),
    ("/incidents/{id}", []),
    ("/tickets", ["limit", "offset", "status", "priority", "site_id"]),
    ("/tickets/{id}", []),
    ("/events/stats", ["hours", "until", "anchor"]),
]
EXTREMES = ["--5", "-5", "0", "-0", "+1", "1e9", "9" * 40, "-" + "9" * 40, "²", "٣", "5.5", "", " ", "NaN", "null",
            "0x1F", "1970-01-01T00:00:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59.999999+14:00",
            "2026-02-30T00:00:00Z", "\u0000", "%00", "latest", "LATEST", "ℓatest", "\ud7ff" * 3, "x" * 5000,
            "'; DROP TABLE tickets; --", "../../etc/passwd", "2147483648", "-9223372036854775809"]
VALUES = st.one_of(st.sampled_from(EXTREMES), st.text(max_size=60),
                   st.integers(min_value=-10**30, max_value=10**30).map(str),
                   st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()))
PATH_VALUES = st.one_of(st.sampled_from(["p-1", "s-1", "inc-1", "tk-1", "x" * 300, "%", "..", "\u202e", "é" * 150]),
                        st.text(min_size=1, max_size=250))


def test_any_query_or_path_value_on_any_route_is_answered_without_a_5xx(env: dict[str, Any]) -> None:
    cfg = _cfg(env, requests_per_token=OFF, requests_per_address=OFF, auth_failures_per_address=OFF,
               auth_failures_per_token=OFF)
    statuses: dict[int, int] = {}
    with running_gateway(cfg) as url, httpx.Client(base_url=url + API, timeout=15) as client:
        @settings(max_examples=400, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(route=st.sampled_from(ROUTES), path_value=PATH_VALUES, data=st.data(), slash=st.booleans())
        def check(route: tuple[str, list[str]], path_value: str, data: st.DataObject, slash: bool) -> None:
            template, names = route
            params = data.draw(st.dictionaries(st.sampled_from([*names, "unknown"]) if names else st.just("unknown"),
                                               VALUES, max_size=4))
            path = template.replace("{id}", quote(path_value, safe=""))
            resp = client.get(path + ("/" if slash else ""), params=params, headers=_auth(env["t1"]))
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            assert resp.status_code < 500, (path, params, resp.status_code, resp.text[:300])
            body = resp.json()
            assert body["status"] in ("success", "error")
            if resp.status_code == 400:
                assert any(f"'{n}'" in body["message"] for n in [*params, "person_id", "site_id", "incident_id",
                                                                  "ticket_id"]), body

        check()
    assert statuses.get(200) and statuses.get(400) and statuses.get(404), statuses


# -- headers and the response cache -----------------------------------------------------------------------------

def test_security_headers_on_pages_and_no_store_vary_on_the_api(env: dict[str, Any]) -> None:
    with running_gateway(_cfg(env)) as url, httpx.Client(base_url=url, timeout=10) as client:
        for path in ("/", "/static/app.js", "/static/style.css", "/static/index.html", "/static/nope.js"):
            r = client.get(path)
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
            assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
        for token in (None, env["t1"]):
            r = client.get(API + "/incidents", headers=_auth(token) if token else {})
            assert r.headers["cache-control"] == "no-store" and "Authorization" in r.headers["vary"]
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        # The gateway's own cache is per tenant: the second read of each is cached, and each sees its own rows.
        seen: dict[str, list[tuple[bool, list[str]]]] = {}
        for _ in range(2):
            for name in ("t1", "t2"):
                body = client.get(API + "/incidents?limit=7", headers=_auth(env[name])).json()
                seen.setdefault(name, []).append((body["cached"], [i["incident_id"] for i in body["data"]["items"]]))
        assert seen == {"t1": [(False, ["inc-1"]), (True, ["inc-1"])], "t2": [(False, ["inc-2"]), (True, ["inc-2"])]}


# -- rate limits ------------------------------------------------------------------------------------------------

def test_rate_limits_per_token_and_on_failed_authentication(env: dict[str, Any]) -> None:
    cfg = _cfg(env, requests_per_token=(0.5, 5), auth_failures_per_address=(0.05, 3))
    with running_gateway(cfg) as url, httpx.Client(base_url=url + API, timeout=10) as client:
        codes = [client.get("/incidents", headers=_auth(env["t1"])).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        r = client.get("/incidents", headers=_auth(env["t1"]))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "token" in r.json()["message"]
        assert client.get("/incidents", headers=_auth(env["t2"])).status_code == 200  # another token is not held up
        bad = "noc_guessing_" + "x" * 30
        codes = [client.get("/incidents", headers=_auth(bad)).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        r = client.get("/incidents", headers=_auth(env["t2"]))  # the address is held, whatever it presents now
        assert r.status_code == 429 and "failed authentications" in r.json()["message"]
        assert int(r.headers["retry-after"]) >= 10
        metrics = httpx.get(url + "/metrics", timeout=10).text
    assert "noc_api_requests_total" in metrics


def test_websocket_connections_per_token_and_inbound_message_rate(env: dict[str, Any]) -> None:
    cfg = _cfg(env, ws_connections_per_token=2, ws_messages_per_s=(1.0, 5.0))

    async def main(url: str) -> None:
        async with _open(url, env["t1"]) as a, _open(url, env["t1"]) as b:
            await _next(a, "hello")
            await _next(b, "hello")
            with pytest.raises(InvalidStatus) as third:
                async with _open(url, env["t1"]):
                    pass
            assert third.value.response.status_code == 429
            assert b"too many connections" in third.value.response.body
            async with _open(url, env["t2"]) as other:  # the cap is per token
                await _next(other, "hello")
        async with _open(url, env["t1"]) as a:  # closed ones no longer count
            await _next(a, "hello")
            for _ in range(5):
                await a.send('{"action": "ping"}')
                await _next(a, "pong")
            for _ in range(5):
                await a.send('{"action": "ping"}')
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(a.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4029

    with running_gateway(cfg) as url:
        run(main(url.replace("http://", "ws://") + "/ws/noc/dashboard"))


# -- a client that floods and does not read ----------------------------------------------------------------------

def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _masked(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _flood(port: int, token: str, seconds: float) -> tuple[int, float]:
    """Handshake, then send JSON pings as fast as the socket takes them without reading a byte; returns
    (messages sent, seconds until the gateway cut the connection, or ``seconds``)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/noc/dashboard HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # the handshake answer only: nothing after it is ever read
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    frame = _masked(b'{"action":"ping"}')
    batch = frame * 200
    sent, started = 0, time.monotonic()
    sock.settimeout(2)
    try:
        while time.monotonic() - started < seconds:
            sock.sendall(batch)
            sent += 200
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        return sent, time.monotonic() - started
    finally:
        sock.close()
    return sent, seconds


@pytest.mark.parametrize("message_limit", ["default", "off"])
def test_a_ping_flood_that_never_reads_is_closed_and_memory_stays_bounded(env: dict[str, Any],
                                                                          message_limit: str) -> None:
    """The gateway in its own process (``noc gateway``), so its RSS is its own. With the default inbound message
    limit the flood is closed at once (4029); with it off, the replies pile up unread and the bounded reply queue
    or the full-socket watchdog closes it (4008). Either way the gateway's memory stays within a bound."""
    port = free_port()
    envvars = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if message_limit == "off":
        envvars["NOC_GATEWAY_WS_MESSAGES_PER_S"] = "0"
    proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "gateway", "--port", str(port), "--dsn", env["dsn"],
                             "--bootstrap", env["bootstrap"], "--namespace", env["ns"], "--log-level", "warning"],
                            env=envvars)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "gateway did not start"
            time.sleep(0.2)
        before = _rss_mb(proc.pid)
        sent, cut_after = _flood(port, env["t1"], 15.0)
        peak_after = _rss_mb(proc.pid)
        with open(f"/proc/{proc.pid}/status") as f:
            hwm = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
        print(f"\nping flood ({message_limit} message limit): RSS {before:.0f} MB before, {peak_after:.0f} MB after, "
              f"peak {hwm:.0f} MB; {sent} messages sent, connection cut after {cut_after:.1f} s")
        assert cut_after < 15.0, "the gateway never closed the flooding client"
        assert hwm - before < 60, (before, hwm)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        code = "4029" if message_limit == "default" else "4008"
        closes = [line for line in metrics.splitlines() if line.startswith("noc_websocket_closed")]
        assert f'noc_websocket_closed_total{{code="{code}"}} 1.0' in metrics, closes
    finally:
        proc.terminate()
        proc.wait(15)


# -- hostile feed records ----------------------------------------------------------------------------------------

def test_hostile_feed_records_change_nothing_for_the_clean_ones(env: dict[str, Any]) -> None:
    """Undecodable bytes, an oversized record and events of tenants without a token, interleaved with clean events:
    tenant 1's client receives exactly the clean events, the gateway keeps no ring for the unknown tenants."""
    clean = [noc_event("alert_created", f"clean-{i}", 1, {"n": i}, site_id="s-1") for i in range(6)]
    hostile: list[Any] = [
        b"\x00not avro", b"\xc3\x01" + b"\xff" * 8 + b"junk", b"",
        noc_event("alert_created", "big", 1, {"blob": "x" * 300_000}),
        *[noc_event("alert_created", f"ghost-{t}", t, {}) for t in (999, 123456, -1, 2**62)],
    ]

    async def main(url: str) -> list[str]:
        async with _open(url, env["t1"]) as ws:
            await _subscribe(ws)
            for i, good in enumerate(clean):
                env["feed"].send(good)
                bad = hostile[i % len(hostile)] if i < len(hostile) else None
                for extra in ([bad] if bad is not None else []) + (hostile[len(clean):] if i == len(clean) - 1 else []):
                    if isinstance(extra, bytes):
                        env["feed"].send_raw(b"1", extra)
                    else:
                        env["feed"].send(extra)
            env["feed"].send(noc_event("alert_created", "last", 1, {}))
            got = await _events(ws, len(clean) + 1)
            return [e["event_id"] for e in got]

    with running_gateway(_cfg(env)) as url:
        got = run(main(url.replace("http://", "ws://") + "/ws/noc/dashboard"))
        health = httpx.get(url + "/health", timeout=10).json()["data"]
        metrics = httpx.get(url + "/metrics", timeout=10).text
    assert got == [e["event_id"] for e in clean] + ["last"]
    assert health["tenant_rings"] <= 2  # tenants 1 and 2 have tokens; 999 and the others none
    unknown = [line for line in metrics.splitlines() if line.startswith("noc_feed_unknown_tenant_total ")]
    assert unknown and float(unknown[0].split()[1]) >= 4


# -- resume longer than the client queue -------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["ring", "kafka"])
def test_a_resume_longer_than_the_client_queue_is_delivered_in_pages(env: dict[str, Any], source: str) -> None:
    n = 400
    cfg = _cfg(env, client_queue_max=50, ring_size=1000 if source == "ring" else 10)

    async def main(url: str) -> None:
        async with _open(url, env["t1"]) as ws:
            await _subscribe(ws)
            env["feed"].send(noc_event("alert_created", "r-0", 1, {"n": 0}))
            first = (await _events(ws, 1))[0]
            for i in range(1, n):
                env["feed"].send(noc_event("alert_created", f"r-{i}", 1, {"n": i}), flush=False)
            env["feed"].flush()
            await _events(ws, n - 1, 30)
        async with _open(url, env["t1"]) as ws:  # a cursor of a partition the feed does not have: refused
            await ws.send(orjson.dumps({"action": "subscribe", "resume_from": "nope", "cursor": "9999:0"}).decode())
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
        async with _open(url, env["t1"]) as ws:
            ack = await _subscribe(ws, resume_from=first["event_id"], cursor=first["cursor"])
            assert ack["resume"] == source and ack["replayed"] == n - 1
            env["feed"].send(noc_event("alert_created", "r-live", 1, {}))
            got = [e["event_id"] for e in await _events(ws, n, 30)]
            assert got == [f"r-{i}" for i in range(1, n)] + ["r-live"]

    with running_gateway(cfg) as url:
        run(main(url.replace("http://", "ws://") + "/ws/noc/dashboard"))


# -- idempotent ticket changes -----------------------------------------------------------------------------------

def _ticket_events(env: dict[str, Any], ticket_id: str) -> list[str]:
    from confluent_kafka import Consumer, TopicPartition

    from schemas import serde
    from schemas.topics import topic

    name = topic("events", env["ns"])
    consumer = Consumer({"bootstrap.servers": env["bootstrap"], "group.id": "idem-" + env["ns"],
                         "enable.auto.commit": False})
    out: list[str] = []
    try:
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(name, p, 0) for p in parts])
        pos = {p: 0 for p in parts}
        deadline = time.monotonic() + 20
        while any(pos[p] < ends[p] for p in parts) and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is not None:
                    continue
                pos[msg.partition()] = msg.offset() + 1
                rec = serde.decode(msg.value(), expected="noc_event")
                if rec["type"] == "ticket_updated" and ticket_id in rec["payload"]:
                    out.append(rec["event_id"])
    finally:
        consumer.close()
    return out


def test_a_retry_with_the_same_idempotency_key_gets_the_first_answer_and_one_event(env: dict[str, Any]) -> None:
    from sinks.tickets_api import kafka_publisher

    app = create_app(_cfg(env))
    with running_gateway(_cfg(env), app=app) as url, httpx.Client(base_url=url + API, timeout=30) as client:
        headers = {**_auth(env["m1"]), "Idempotency-Key": "retry-1"}
        # The first attempt's feed event cannot be delivered (a real producer to a port nothing listens on).
        app.state.ticket_publish = kafka_publisher("127.0.0.1:1", env["ns"], timeout_s=1.0)
        first = client.post("/tickets/tk-1/state", json={"status": "OPEN"}, headers=headers)
        assert first.status_code == 503 and "not delivered" in first.json()["message"]
        app.state.ticket_publish = kafka_publisher(env["bootstrap"], env["ns"])
        retry = client.post("/tickets/tk-1/state", json={"status": "OPEN"}, headers=headers)
        assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
        again = client.post("/tickets/tk-1/state", json={"status": "OPEN"}, headers=headers)
        assert again.status_code == 200 and again.content == retry.content
        assert retry.json()["data"]["status"] == "OPEN" and retry.json()["data"]["version"] == 2
        # The same key for another request is refused; another key is a new change (refused by the state machine).
        other = client.post("/tickets/tk-1/state", json={"status": "RESOLVED"}, headers=headers)
        assert other.status_code == 422
        fresh = client.post("/tickets/tk-1/state", json={"status": "OPEN"},
                            headers={**_auth(env["m1"]), "Idempotency-Key": "retry-2"})
        assert fresh.status_code == 409
        # Keys are per tenant: tenant 2 using "retry-1" is its own request.
        m2 = create_token(env["dsn"], 2, ["noc:manage"])[1]
        t2 = client.post("/tickets/tk-2/state", json={"status": "OPEN"},
                         headers={**_auth(m2), "Idempotency-Key": "retry-1"})
        assert t2.status_code == 200 and t2.json()["data"]["ticket_id"] == "tk-2"
        bad_key = client.post("/tickets/tk-1/state", json={"status": "OPEN"},
                              headers={**_auth(env["m1"]), "Idempotency-Key": "a key"})
        assert bad_key.status_code == 400 and "Idempotency-Key" in bad_key.json()["message"]
        huge = client.post("/tickets/tk-1/state", content=b"{" + b" " * 100_000 + b"}",
                           headers={**_auth(env["m1"]), "content-type": "application/json"})
        assert huge.status_code == 413
    with psycopg.connect(env["dsn"], connect_timeout=10) as conn:
        history = conn.execute("SELECT count(*) FROM ticket_history WHERE ticket_id = 'tk-1'").fetchone()
        stored = conn.execute("SELECT count(*), count(pending_event) FROM gateway_idempotency").fetchone()
    assert history is not None and history[0] == 1  # changed once
    assert stored == (3, 0)  # tenant 1: retry-1 and retry-2; tenant 2: its own retry-1
    events = _ticket_events(env, "tk-1")
    assert len(events) == 1, events  # published once: by the retry
