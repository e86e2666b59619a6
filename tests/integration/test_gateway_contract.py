"""The runbook's client contract over a real gateway: documented REST paths exactly as written (trailing slash, no
redirect followed), the documented WebSocket (one event per message, fields at the top level, no subscribe),
and dashboard sessions (HttpOnly cookie, Origin required, revocable with the token, sign-out)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from gateway.config import GatewayConfig
from gateway.testing import FeedProducer, noc_event, running_gateway, seed_rows
from gateway.tokens import create_token, revoke_token

pytestmark = pytest.mark.integration
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
DOCUMENTED = [  # the runbook's verification paths (its person and site id 1 are p-1 and s-1 here)
    "telemetry/signals/p-1/", "telemetry/signals/site/s-1/", "telemetry/correlations/",
    "security/fraud-scores/live/", "security/fraud-scores/history/p-1/", "security/fraud-scores/heatmap/",
    "security/ml-models/performance/",
]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def env(pg_schema: tuple[str, str], namespace: str, kafka_bootstrap: str) -> dict[str, Any]:
    dsn, _ = pg_schema
    seed_rows(dsn)
    return {"dsn": dsn, "ns": namespace, "bootstrap": kafka_bootstrap,
            "t1": create_token(dsn, 1, ["noc:view"]), "t2": create_token(dsn, 2, ["noc:view"])[1],
            "m1": create_token(dsn, 1, ["noc:manage"])[1], "feed": FeedProducer(kafka_bootstrap, namespace)}


def _name_p1(env: dict[str, Any]) -> None:
    """p-1's record on ref.people (the gateway reads names from there)."""
    from confluent_kafka import Producer

    from schemas import serde
    from schemas.topics import topic

    producer = Producer({"bootstrap.servers": env["bootstrap"], "message.timeout.ms": 10_000})
    producer.produce(topic("ref.people", env["ns"]), key=b"1:p-1", value=serde.encode("person", {
        "tenant_id": 1, "person_id": "p-1", "name": "John Doe", "role": "guard", "home_site_id": "s-1",
        "device_ids": ["d-1"], "usual_check_in_minute": 480, "active": True, "updated_at": 1_780_000_000_000}))
    assert producer.flush(10) == 0


def _cfg(env: dict[str, Any], **kw: Any) -> GatewayConfig:
    return dataclasses.replace(GatewayConfig(), dsn=env["dsn"], bootstrap=env["bootstrap"], namespace=env["ns"], **kw)


def test_every_documented_rest_path_answers_as_written_without_a_redirect(env: dict[str, Any]) -> None:
    token = env["t1"][1]
    _name_p1(env)
    with running_gateway(_cfg(env)) as url, httpx.Client(base_url=url, timeout=10, follow_redirects=False) as client:
        auth = {"Authorization": f"Bearer {token}"}
        for path in DOCUMENTED:
            r = client.get(f"/api/v2/noc/{path}", headers=auth, params={"anchor": "latest"})
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
            body = r.json()
            assert body["status"] == "success" and body["cached"] is False and isinstance(body["data"], dict), path
            # Without the slash: the same resource, from the same cache entry.
            again = client.get(f"/api/v2/noc/{path.rstrip('/')}", headers=auth, params={"anchor": "latest"})
            assert again.status_code == 200 and again.json()["cached"] is True
            assert again.json()["data"] == body["data"], path
        r = client.get("/api/v2/noc/telemetry/signals/p-1/", headers=auth, params={"window_minutes": 120,
                                                                                   "anchor": "latest"})
        data = r.json()["data"]
        assert {"person_id", "person_name", "site_id", "site_name", "window_minutes", "collected_at",
                "signals"} <= set(data)
        assert data["person_id"] == "p-1" and data["site_id"] == "s-1" and data["window_minutes"] == 120
        assert data["person_name"] == "John Doe"
        assert ISO_Z.fullmatch(data["collected_at"]), data["collected_at"]
        # seed_rows: four PERSON windows of p-1, each 2 phone events, 3 location updates, 120.5 m, 1 task, 4 scans.
        assert data["signals"] == {"phone_events_count": 8, "location_updates_count": 12,
                                   "movement_distance_meters": 482.0, "tasks_completed_count": 4,
                                   "tour_checkpoints_scanned": 16}
        assert data["totals"]["phone_events_count"] == 8 and len(data["windows"]) == 4  # today's fields stay
        perf = client.get("/api/v2/noc/security/ml-models/performance/", headers=auth).json()["data"]
        assert {"active_model_version", "pr_auc", "precision_at_80_recall", "training_samples",
                "fraud_normal_ratio", "models", "live"} <= set(perf)
        # The WebSocket path with the slash is not redirected either; the OpenAPI document lists both forms.
        paths = client.get("/openapi.json").json()["paths"]
        assert all(f"/api/v2/noc/{p}".replace("p-1", "{person_id}").replace("s-1", "{site_id}") in paths
                   for p in DOCUMENTED)


async def _recv(ws: ClientConnection, timeout: float = 15) -> dict[str, Any]:
    return dict(orjson.loads(await asyncio.wait_for(ws.recv(), timeout)))


def _anomaly(event_id: str, tenant: int = 1) -> dict[str, Any]:
    return noc_event("anomaly_detected", event_id, tenant,
                     {"anomaly_id": f"an-{event_id}", "tenant_id": tenant, "site_id": "s-1", "person_id": "p-1",
                      "metric": "phone_events_count", "observed": 0.0, "expected": 9.5, "score": 0.91,
                      "severity": "HIGH"}, site_id="s-1", person_id="p-1", ts_ms=1_780_000_000_123)


def test_the_documented_websocket_sends_every_event_one_per_message_with_no_subscribe(env: dict[str, Any]) -> None:
    token = env["t1"][1]
    _name_p1(env)

    async def main(base: str) -> None:
        for path in ("/ws/noc/dashboard/", "/ws/noc/dashboard"):
            async with connect(base + path, additional_headers={"Authorization": f"Bearer {token}"},
                               open_timeout=10) as ws:
                hello = await _recv(ws)
                assert hello["type"] == "hello" and hello["mode"] == "events" and hello["tenant_id"] == 1
                tag = path.count("/")
                env["feed"].send(_anomaly(f"an-{tag}"))
                env["feed"].send(noc_event("alert_created", f"other-{tag}", 2, {"message": "tenant 2"}))
                env["feed"].send(noc_event("ticket_updated", f"tk-{tag}", 1,
                                           {"ticket_id": "tk-1", "status": "OPEN", "priority": "HIGH",
                                            "version": 2}))
                first, second = await _recv(ws), await _recv(ws)
                assert first["type"] == "anomaly_detected" and first["event_id"] == f"an-{tag}"
                assert first["timestamp"] == "2026-05-28T20:26:40.123Z" and first["tenant_id"] == 1
                assert first["anomaly_type"] == "phone_events_count" and first["fraud_score"] == 0.91
                assert first["person_name"] == "John Doe" and first["person_id"] == "p-1" and first["cursor"]
                assert first["observed"] == 0.0 and first["severity"] == "HIGH"  # the event's own fields, on top
                assert second["type"] == "ticket_updated" and second["ticket_id"] == "tk-1"
                assert second["status"] == "OPEN" and second["tenant_id"] == 1
                datetime.fromisoformat(second["timestamp"].replace("Z", "+00:00"))
        # A first message that subscribes selects the batched protocol (filters, resume, frames of events).
        async with connect(base + "/ws/noc/dashboard/", additional_headers={"Authorization": f"Bearer {token}"},
                           open_timeout=10) as ws:
            await _recv(ws)
            await ws.send('{"action": "subscribe", "types": ["anomaly_detected"]}')
            assert (await _recv(ws))["type"] == "subscribed"
            env["feed"].send(noc_event("alert_created", "filtered-out", 1, {}))
            env["feed"].send(_anomaly("an-batched"))
            frame = await _recv(ws)
            assert frame["type"] == "events" and [e["event_id"] for e in frame["events"]] == ["an-batched"]

    with running_gateway(_cfg(env)) as url:
        run(main(url.replace("http://", "ws://")))


def test_a_dashboard_session_is_an_httponly_cookie_that_needs_our_origin_and_ends_with_the_token(
        env: dict[str, Any]) -> None:
    token_id, token = env["t1"]
    cfg = _cfg(env, token_cache_s=0.1)
    with running_gateway(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
        r = client.post("/api/v2/noc/session/", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["data"]["tenant_id"] == 1
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=28800" in cookie
        assert "Secure" not in cookie  # plain HTTP here; over TLS it is added
        session = client.cookies["noc_session"]
        assert token not in cookie and session
        assert client.get("/api/v2/noc/session").json()["data"]["token_id"] == token_id
        assert client.get("/api/v2/noc/incidents/").status_code == 200  # REST reads by cookie
        host = url.removeprefix("http://")
        # A change by cookie needs our Origin (a cross-site form or script cannot use the cookie).
        m = client.post("/api/v2/noc/tickets/tk-1/state", json={"status": "OPEN"})
        assert m.status_code == 403  # noc:view cookie anyway, and no Origin

        async def ws_main() -> None:
            cookie_hdr = {"Cookie": f"noc_session={session}"}
            with pytest.raises(InvalidStatus) as no_origin:
                async with connect(f"ws://{host}/ws/noc/dashboard/", additional_headers=cookie_hdr, open_timeout=10):
                    pass
            assert no_origin.value.response.status_code == 403
            with pytest.raises(InvalidStatus) as foreign:
                async with connect(f"ws://{host}/ws/noc/dashboard/", additional_headers=cookie_hdr,
                                   origin="http://evil.example", open_timeout=10):  # type: ignore[arg-type]
                    pass
            assert foreign.value.response.status_code == 403
            async with connect(f"ws://{host}/ws/noc/dashboard/", additional_headers=cookie_hdr,
                               origin=f"http://{host}", open_timeout=10) as ws:  # type: ignore[arg-type]
                hello = await _recv(ws)
                assert hello["tenant_id"] == 1 and hello["mode"] == "events"

        run(ws_main())
        # Revoking the token ends its sessions.
        assert revoke_token(env["dsn"], token_id)
        deadline = time.monotonic() + 5
        while client.get("/api/v2/noc/session").status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # Signing in again and again keeps at most 20 sessions of a token.
        other = create_token(env["dsn"], 1, ["noc:view"])[1]
        for _ in range(25):
            assert client.post("/api/v2/noc/session", headers={"Authorization": f"Bearer {other}"}).status_code == 200
        import psycopg

        with psycopg.connect(env["dsn"], connect_timeout=10) as conn:
            row = conn.execute("SELECT count(*) FROM gateway_sessions s JOIN gateway_tokens t "
                               "ON t.token_hash = s.token_hash WHERE t.revoked_at IS NULL").fetchone()
        assert row is not None and row[0] == 20
        # Sign-out deletes the session and clears the cookie.
        client.cookies.clear()
        assert client.post("/api/v2/noc/session", headers={"Authorization": f"Bearer {other}"}).status_code == 200
        assert client.get("/api/v2/noc/session").status_code == 200
        out = client.delete("/api/v2/noc/session", headers={"Origin": url})
        assert out.status_code == 200 and "Max-Age=0" in out.headers["set-cookie"]
        assert "noc_session" not in client.cookies
        with httpx.Client(base_url=url, timeout=10, cookies={"noc_session": session}) as replay:
            assert replay.get("/api/v2/noc/session").status_code == 401  # the first session, revoked with its token
