"""The live WebSocket feed over a real gateway, fed from the real Kafka events topic."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from gateway.config import GatewayConfig
from gateway.testing import FeedProducer, noc_event, running_gateway, seed_rows
from gateway.tokens import create_token

pytestmark = pytest.mark.integration


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def env(pg_schema: tuple[str, str], namespace: str, kafka_bootstrap: str) -> dict[str, Any]:
    dsn, _ = pg_schema
    seed_rows(dsn)
    return {"dsn": dsn, "ns": namespace, "bootstrap": kafka_bootstrap,
            "t1": create_token(dsn, 1, ["noc:view"])[1], "t2": create_token(dsn, 2, ["noc:view"])[1],
            "feed": FeedProducer(kafka_bootstrap, namespace)}


def _cfg(env: dict[str, Any], **kw: Any) -> GatewayConfig:
    return dataclasses.replace(GatewayConfig(), dsn=env["dsn"], bootstrap=env["bootstrap"], namespace=env["ns"],
                               allowed_origins=("http://noc.example",), **kw)


@pytest.fixture
def gw(env: dict[str, Any]) -> Iterator[str]:
    with running_gateway(_cfg(env, heartbeat_s=0.5)) as url:
        yield url.replace("http://", "ws://") + "/ws/noc/dashboard"


def _open(url: str, token: str, **kw: Any) -> Any:
    return connect(url, subprotocols=[Subprotocol("noc.v1"), Subprotocol(f"bearer.{token}")], compression=None,
                   open_timeout=10, **kw)


async def _next(ws: ClientConnection, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if msg["type"] == kind:
            return dict(msg)


async def _events(ws: ClientConnection, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        out.extend((await _next(ws, "events", timeout))["events"])
    return out


async def _subscribe(ws: ClientConnection, **msg: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({"action": "subscribe", **msg}).decode())
    return await _next(ws, "subscribed")


def _ev(tenant: int, n: int, type_: str = "alert_created", site: str = "s-1") -> dict[str, Any]:
    return noc_event(type_, f"e-{tenant}-{n}", tenant, {"n": n}, site_id=site, person_id=f"p-{tenant}")


def test_handshake_needs_a_token_the_view_capability_and_an_allowed_origin(env: dict[str, Any], gw: str) -> None:
    async def main() -> None:
        with pytest.raises(InvalidStatus) as no_token:
            async with connect(gw, open_timeout=10):
                pass
        assert no_token.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as bad:
            async with _open(gw, "noc_nothere_" + "x" * 40):
                pass
        assert bad.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as foreign:
            async with _open(gw, env["t1"], origin="http://evil.example"):
                pass
        assert foreign.value.response.status_code == 403
        async with _open(gw, env["t1"], origin="http://noc.example") as ws:
            assert ws.subprotocol == "noc.v1"  # the token is never echoed back
            assert (await _next(ws, "hello"))["tenant_id"] == 1
        async with connect(gw, additional_headers={"Authorization": f"Bearer {env['t2']}"}, open_timeout=10) as ws:
            assert (await _next(ws, "hello"))["tenant_id"] == 2
    run(main())


def test_tenants_only_see_their_own_events_and_filters_apply(env: dict[str, Any], gw: str) -> None:
    async def main() -> None:
        async with _open(gw, env["t1"]) as a, _open(gw, env["t2"]) as b, _open(gw, env["t1"]) as fraud_only:
            await _subscribe(a)
            await _subscribe(b)
            await _subscribe(fraud_only, types=["fraud_scored"], site_ids=["s-9"])
            for i in range(3):
                env["feed"].send(_ev(1, i), flush=False)
                env["feed"].send(_ev(2, i), flush=False)
            env["feed"].send(_ev(1, 99, "fraud_scored", "s-9"))
            got_a = await _events(a, 4)
            got_b = await _events(b, 3)
            got_f = await _events(fraud_only, 1)
            assert [e["event_id"] for e in got_a] == ["e-1-0", "e-1-1", "e-1-2", "e-1-99"]
            assert [e["event_id"] for e in got_b] == ["e-2-0", "e-2-1", "e-2-2"]
            assert [e["event_id"] for e in got_f] == ["e-1-99"]
            assert got_a[0]["payload"] == {"n": 0} and got_a[0]["cursor"]
            # Nothing of the other tenant trails behind.
            env["feed"].send(_ev(2, 50))
            env["feed"].send(_ev(1, 50))
            assert [e["event_id"] for e in await _events(a, 1)] == ["e-1-50"]
    run(main())


def test_resume_from_the_ring_has_no_gap_and_no_duplicate(env: dict[str, Any], gw: str) -> None:
    async def main() -> None:
        async with _open(gw, env["t1"]) as ws:
            await _subscribe(ws)
            for i in range(3):
                env["feed"].send(_ev(1, i))
            seen = await _events(ws, 3)
        last = seen[1]  # the client processed only two before its connection dropped
        for i in range(3, 6):
            env["feed"].send(_ev(1, i))
        async with _open(gw, env["t1"]) as ws:
            ack = await _subscribe(ws, resume_from=last["event_id"], cursor=last["cursor"])
            assert ack["resume"] == "ring" and ack["replayed"] >= 1  # the rest may still be arriving live
            env["feed"].send(_ev(1, 6))
            got = [e["event_id"] for e in await _events(ws, 5)]
            assert got == [f"e-1-{i}" for i in range(2, 7)]
            # A producer retry of an event already pushed is not pushed again.
            env["feed"].send(_ev(1, 6))
            env["feed"].send(_ev(1, 7))
            assert [e["event_id"] for e in await _events(ws, 1)] == ["e-1-7"]
    run(main())


def test_resume_falls_back_to_kafka_offsets_when_the_ring_lost_the_event(env: dict[str, Any]) -> None:
    async def main(url: str) -> None:
        async with _open(url, env["t1"]) as ws:
            await _subscribe(ws)
            env["feed"].send(_ev(1, 0))
            first = (await _events(ws, 1))[0]
        async with _open(url, env["t1"]) as watcher:  # tells when the gateway has consumed them all
            await _subscribe(watcher)
            for i in range(1, 8):  # the ring keeps only 3 now
                env["feed"].send(_ev(1, i))
                env["feed"].send(_ev(2, i))
            await _events(watcher, 7)
        async with _open(url, env["t1"]) as ws:
            ack = await _subscribe(ws, resume_from=first["event_id"], cursor=first["cursor"])
            assert ack["resume"] == "kafka"
            env["feed"].send(_ev(1, 8))
            got = [e["event_id"] for e in await _events(ws, 8)]
            assert got == [f"e-1-{i}" for i in range(1, 9)]
        async with _open(url, env["t1"]) as ws:  # an id never seen and no cursor: told, not silently gapped
            assert (await _subscribe(ws, resume_from="never"))["resume"] == "unavailable"

    with running_gateway(_cfg(env, ring_size=3)) as url:
        run(main(url.replace("http://", "ws://") + "/ws/noc/dashboard"))


def test_a_slow_client_is_closed_without_holding_up_the_others(env: dict[str, Any]) -> None:
    big = "x" * 60_000

    async def main(url: str) -> None:
        async with _open(url, env["t1"], max_queue=1, max_size=None) as slow, _open(url, env["t1"]) as fast:
            await _subscribe(slow)
            await _subscribe(fast)
            for wave in range(40):  # ~24 MB in all for a client that does not read
                for i in range(10):
                    env["feed"].send(noc_event("alert_created", f"big-{wave}-{i}", 1, {"blob": big}), flush=False)
                env["feed"].flush()
                got = 0
                while got < 10:  # the reading client keeps getting every wave
                    got += len((await _next(fast, "events", 20))["events"])
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(slow.recv(), 20)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
            assert "slow consumer" in closed.value.rcvd.reason

    with running_gateway(_cfg(env, client_queue_max=50)) as url:
        run(main(url.replace("http://", "ws://") + "/ws/noc/dashboard"))


BAD_MESSAGES: list[tuple[Any, int, str]] = [
    ("not json", 1007, "malformed JSON"),
    ('{"action": "subscribe", "types": ["nope"]}', 1007, "unknown event type"),
    ('{"action": "subscribe", "evil": 1}', 1007, "unknown field"),
    ('{"action": "dance"}', 1007, "unknown action"),
    ('{"action": "subscribe", "cursor": "x"}', 1007, "cursor"),
    ('{"action": "subscribe", "site_ids": ["' + "a" * 5000 + '"]}', 1009, "too big"),
    (b"\x00\x01", 1003, "binary"),
]


def test_bad_messages_close_with_a_clear_code(env: dict[str, Any], gw: str) -> None:
    async def one(message: Any, code: int, reason: str) -> None:
        async with _open(gw, env["t1"]) as ws:
            await _next(ws, "hello")
            await ws.send(message)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None, message
            assert closed.value.rcvd.code == code and reason in closed.value.rcvd.reason, (message, closed.value)

    async def main() -> None:
        for message, code, reason in BAD_MESSAGES:
            await one(message, code, reason)
    run(main())


def test_heartbeat_ping_and_broadcast_latency_recorded(env: dict[str, Any], gw: str) -> None:
    ts = int(time.time() * 1000)
    with psycopg.connect(env["dsn"], autocommit=True, connect_timeout=10) as conn:  # the row the sink would write
        conn.execute("INSERT INTO event_log (event_id, type, ts, tenant_id, payload) "
                     "VALUES ('lat-1', 'fraud_scored', to_timestamp(%s / 1000.0), 1, '{}')", (ts,))

    async def main() -> None:
        async with _open(gw, env["t1"]) as ws:
            await _subscribe(ws)
            assert (await _next(ws, "heartbeat", 5))["server_time"] > 0
            await ws.send('{"action": "ping"}')
            await _next(ws, "pong")
            env["feed"].send(noc_event("fraud_scored", "lat-1", 1, {"risk_level": "HIGH"}, ts_ms=ts))
            await _events(ws, 1)
        deadline = time.monotonic() + 15
        with psycopg.connect(env["dsn"], autocommit=True, connect_timeout=10) as conn:
            while True:
                row = conn.execute("SELECT broadcast_latency_ms FROM event_log WHERE event_id = 'lat-1'").fetchone()
                if row is not None and row[0] is not None:
                    break
                assert time.monotonic() < deadline, "latency never written to event_log"
                await asyncio.sleep(0.1)
        assert 0 <= row[0] < 5000
    run(main())


def test_gateways_side_by_side_each_serve_their_clients_and_a_client_can_move(env: dict[str, Any]) -> None:
    async def main(url_a: str, url_b: str) -> None:
        async with _open(url_a, env["t1"]) as a, _open(url_b, env["t1"]) as b:
            await _subscribe(a)
            await _subscribe(b)
            env["feed"].send(_ev(1, 0))
            env["feed"].send(_ev(1, 1))
            got_a, got_b = await _events(a, 2), await _events(b, 2)
            assert [e["event_id"] for e in got_a] == [e["event_id"] for e in got_b] == ["e-1-0", "e-1-1"]
        env["feed"].send(_ev(1, 2))
        # The client of gateway A reconnects to gateway B and resumes from what A gave it.
        async with _open(url_b, env["t1"]) as b2:
            ack = await _subscribe(b2, resume_from=got_a[0]["event_id"], cursor=got_a[0]["cursor"])
            assert ack["resume"] in ("ring", "kafka")
            assert [e["event_id"] for e in await _events(b2, 2)] == ["e-1-1", "e-1-2"]

    with running_gateway(_cfg(env)) as a, running_gateway(_cfg(env)) as b:
        path = "/ws/noc/dashboard"
        run(main(a.replace("http://", "ws://") + path, b.replace("http://", "ws://") + path))


def test_an_open_socket_is_closed_when_its_token_is_revoked(env: dict[str, Any]) -> None:
    from gateway.tokens import revoke_token

    token_id, token = create_token(env["dsn"], 1, ["noc:view"])

    async def main(url: str) -> None:
        async with _open(url, token) as ws:
            await _subscribe(ws)
            revoke_token(env["dsn"], token_id)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    with running_gateway(_cfg(env, token_cache_s=0.1, token_recheck_s=0.2)) as url:
        run(main(url.replace("http://", "ws://") + "/ws/noc/dashboard"))


def test_undecodable_feed_records_are_dead_lettered_and_the_feed_goes_on(env: dict[str, Any], gw: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from schemas import serde
    from schemas.topics import topic

    async def main() -> None:
        async with _open(gw, env["t1"]) as ws:
            await _subscribe(ws)
            env["feed"].send_raw(b"1", b"\x00not avro")
            env["feed"].send(_ev(1, 0))
            assert [e["event_id"] for e in await _events(ws, 1)] == ["e-1-0"]
    run(main())
    name = topic("dead-letters", env["ns"])
    consumer = Consumer({"bootstrap.servers": env["bootstrap"], "group.id": "dlq-" + env["ns"],
                         "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in parts])
        deadline = time.monotonic() + 15
        found = None
        while found is None and time.monotonic() < deadline:
            for msg in consumer.consume(10, timeout=0.5):
                if msg.error() is None:
                    found = serde.decode(msg.value(), expected="dead_letter")
        assert found is not None and found["component"] == "gateway" and found["reason"] == "MALFORMED"
        assert found["value"] == b"\x00not avro" and found["source_topic"] == topic("events", env["ns"])
    finally:
        consumer.close()


def _frames_sent(http_url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(http_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("noc_websocket_frames_total{"):
            out[line.split('path="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


@pytest.mark.parametrize("ws_impl", ["websockets-sansio", "wsproto"])
def test_a_burst_arrives_in_fewer_frames_in_order_without_loss_or_duplicates(env: dict[str, Any],
                                                                             ws_impl: str) -> None:
    """Frames carry the events of a tick: a burst of 300 events reaches three clients (two sharing filters) in
    far fewer frames, complete and in feed order. With uvicorn's sans-I/O websockets the frames go out on the
    shared path (encoded once, written raw); with wsproto the gateway falls back to its ASGI send path."""
    n = 300

    async def read(ws: ClientConnection, want: int) -> tuple[list[str], int]:
        got: list[str] = []
        frames = 0
        while len(got) < want:
            got.extend(e["event_id"] for e in (await _next(ws, "events", 20))["events"])
            frames += 1
        return got, frames

    async def main(url: str, http_url: str) -> None:
        before = _frames_sent(http_url)
        async with _open(url, env["t1"]) as a, _open(url, env["t1"]) as b, _open(url, env["t1"]) as odd:
            await _subscribe(a)
            await _subscribe(b)
            await _subscribe(odd, types=["fraud_scored"])
            for i in range(n):
                env["feed"].send(_ev(1, i, "fraud_scored" if i % 2 else "alert_created"), flush=False)
            env["feed"].flush()
            (got_a, frames_a), (got_b, _), (got_odd, _) = await asyncio.gather(
                read(a, n), read(b, n), read(odd, n // 2))
            assert got_a == got_b == [f"e-1-{i}" for i in range(n)]
            assert got_odd == [f"e-1-{i}" for i in range(1, n, 2)]
            assert frames_a < n / 3, frames_a
            env["feed"].send(_ev(1, n + 1, "fraud_scored"))  # nothing trails behind, nothing repeats
            assert [e["event_id"] for e in await _events(odd, 1)] == [f"e-1-{n + 1}"]
        after = _frames_sent(http_url)
        shared = after.get("shared", 0) - before.get("shared", 0)
        if ws_impl == "websockets-sansio":
            assert shared > 0
        else:
            assert shared == 0 and after.get("queue", 0) > before.get("queue", 0)

    with running_gateway(_cfg(env, ws_tick_s=0.02), ws=ws_impl) as url:  # 20 ms ticks: batching does not hang on timing
        run(main(url.replace("http://", "ws://") + "/ws/noc/dashboard", url))
