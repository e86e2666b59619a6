"""REST over a real gateway (uvicorn) against real Postgres and Kafka: auth, tenants, envelope, cache, errors."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig
from gateway.testing import running_gateway, seed_rows
from gateway.tokens import create_token, revoke_token

pytestmark = pytest.mark.integration
API = "/api/v2/noc"


@pytest.fixture
def gw(pg_schema: tuple[str, str], namespace: str, kafka_bootstrap: str) -> Iterator[dict[str, Any]]:
    dsn, _ = pg_schema
    seeded = seed_rows(dsn)
    cfg = dataclasses.replace(GatewayConfig(), dsn=dsn, bootstrap=kafka_bootstrap, namespace=namespace)
    tokens = {
        "t1": create_token(dsn, 1, ["noc:view"])[1],
        "t2": create_token(dsn, 2, ["noc:view"])[1],
        "m1": create_token(dsn, 1, ["noc:manage"])[1],
    }
    with running_gateway(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield {"client": client, "tokens": tokens, "dsn": dsn, "seeded": seeded, "url": url}


def _get(gw: dict[str, Any], path: str, token: str | None = "t1", **params: Any) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {gw['tokens'].get(token, token)}"}
    return gw["client"].get(API + path, headers=headers, params=params)


def test_auth_is_required_and_capabilities_are_checked(gw: dict[str, Any]) -> None:
    r = _get(gw, "/incidents", token=None)
    assert r.status_code == 401 and r.json() == {"status": "error", "message": "missing or invalid bearer token"}
    assert _get(gw, "/incidents", token="noc_deadbeef_" + "x" * 40).status_code == 401
    r = gw["client"].post(f"{API}/tickets/tk-1/state", json={"status": "OPEN"},
                          headers={"Authorization": f"Bearer {gw['tokens']['t1']}"})
    assert r.status_code == 403 and "noc:manage" in r.json()["message"]
    # A token given in the query string is never read.
    r = gw["client"].get(f"{API}/incidents", params={"token": gw["tokens"]["t1"]})
    assert r.status_code == 401


def test_a_database_outage_is_a_503_and_the_gateway_recovers(gw: dict[str, Any]) -> None:
    """Postgres drops every connection of the gateway (what a restart or a failover does): the read that meets a
    dead connection runs again on a fresh one, and the pool replaces the others before the next requests, so no
    read sees the restart. (A database that stays away: the 503s of the test below.)
    (A database refusing new connections, the pool's PoolTimeout: the test below.)"""
    import psycopg

    dsn = gw["dsn"]
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as admin:
        row = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                            ).fetchone()
    assert row is not None and row[0] >= 8  # the gateway's pool holds 8
    # A token not seen before is looked up in Postgres (verify), on whichever pooled connection comes next: a dead
    # one. That made the pool check its idle ones (all dead too) and replace them, and the read ran again on a new
    # connection; the requests that follow wait for new connections instead of each meeting a dead one.
    statuses = [_get(gw, "/incidents", token=create_token(dsn, 1, ["noc:view"])[1]).status_code for _ in range(9)]
    assert statuses == [200] * 9, statuses


def test_a_database_refusing_connections_is_a_503_for_reads_and_writes(pg_schema: tuple[str, str], namespace: str,
                                                                        kafka_bootstrap: str) -> None:
    """Postgres refuses new connections (its connections dropped, the database closed to new ones: a failover in
    progress). With a pool of one, the first request meets the dead connection; after it the pool cannot reconnect
    and requests wait its timeout (PoolTimeout). Reads and ticket changes get 503 "database unavailable" after that
    wait, not a hang; once connections are allowed again the gateway serves by itself."""
    import psycopg

    from streams.testkit import wait_for

    dsn, _ = pg_schema
    seed_rows(dsn)  # migrated, with ticket tk-1
    cfg = dataclasses.replace(GatewayConfig(), dsn=dsn, bootstrap=kafka_bootstrap, namespace=namespace,
                              db_timeout_s=1.0, pool_min=1, pool_max=1)
    # Tokens not seen before: each request looks its token up in Postgres.
    view, manage = create_token(dsn, 1, ["noc:view"])[1], create_token(dsn, 1, ["noc:manage"])[1]
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        db = conn.info.dbname
    # A database cannot be closed from a connection to itself: the maintenance database does it.
    admin_dsn = psycopg.conninfo.make_conninfo(dsn, dbname="postgres", options="")
    with running_gateway(cfg) as url, httpx.Client(base_url=url, timeout=10) as client, \
            psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as admin:
        def allow(on: bool) -> None:
            admin.execute(psycopg.sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                psycopg.sql.Identifier(db), psycopg.sql.SQL("true" if on else "false")))

        allow(False)
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                          "AND backend_type = 'client backend'", (db,))
            r = client.get(f"{API}/incidents", headers={"Authorization": f"Bearer {view}"})  # the dead connection
            assert r.status_code == 503 and r.json() == {"status": "error", "message": "database unavailable"}
            for method, path, token in (("GET", "/incidents", view), ("POST", "/tickets/tk-1/state", manage)):
                t0 = time.monotonic()
                r = client.request(method, API + path, json={"status": "OPEN"} if method == "POST" else None,
                                   headers={"Authorization": f"Bearer {token}"})
                waited = time.monotonic() - t0
                assert r.status_code == 503 and r.json()["message"] == "database unavailable", (method, r.text)
                assert 0.9 <= waited < 5, f"{method} {path}: 503 after {waited:.2f} s, not the pool's 1-s timeout"
        finally:
            allow(True)
        wait_for(lambda: client.get(f"{API}/incidents", headers={"Authorization": f"Bearer {view}"}).status_code
                 == 200, 60, "the gateway to reconnect to Postgres", every_s=0.2)


def test_revoked_token_stops_working(gw: dict[str, Any]) -> None:
    token_id, token = create_token(gw["dsn"], 1, ["noc:view"])
    assert revoke_token(gw["dsn"], token_id)
    assert _get(gw, "/incidents", token=token).status_code == 401


def test_envelope_and_cache(gw: dict[str, Any]) -> None:
    first = _get(gw, "/telemetry/signals/p-1", window_minutes=120)
    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "success" and body["cached"] is False
    assert len(body["data"]["windows"]) == 4 and body["data"]["totals"]["event_count"] == 40
    again = _get(gw, "/telemetry/signals/p-1", window_minutes=120)
    assert again.json()["cached"] is True and again.json()["data"] == body["data"]
    # Another tenant's identical request never gets tenant 1's cached answer.
    assert _get(gw, "/telemetry/signals/p-1", token="t2", window_minutes=120).status_code == 404


TENANT_PATHS = [
    "/telemetry/signals/{person}", "/telemetry/signals/site/{site}", "/telemetry/correlations",
    "/security/fraud-scores/live", "/security/fraud-scores/history/{person}", "/security/fraud-scores/heatmap",
    "/security/ml-models/performance", "/incidents", "/incidents/inc-{tenant}", "/tickets", "/tickets/tk-{tenant}",
    "/events/stats",
]


def test_every_endpoint_is_tenant_scoped(gw: dict[str, Any]) -> None:
    # One gateway for all the paths (starting one per path would triple this file's run time).
    for path in TENANT_PATHS:
        own = path.format(person="p-1", site="s-1", tenant=1)
        other = path.format(person="p-2", site="s-2", tenant=2)
        r = _get(gw, own, min_risk="LOW")
        assert r.status_code == 200, (path, r.text)
        assert "p-2" not in r.text and "s-2" not in r.text and "tenant 2" not in r.text, path
        if own != other:
            assert _get(gw, other).status_code == 404, path  # tenant 1 cannot even learn tenant 2's ids exist
        r2 = _get(gw, other, token="t2", min_risk="LOW")
        assert r2.status_code == 200 and "p-1" not in r2.text and "s-1" not in r2.text, path


def test_query_results(gw: dict[str, Any]) -> None:
    live = _get(gw, "/security/fraud-scores/live", minutes=120).json()["data"]
    assert [s["score_id"] for s in live["items"]] == ["fs-1-3"]
    heat = _get(gw, "/security/fraud-scores/heatmap").json()["data"]
    assert heat["sites"][0]["site_id"] == "s-1" and heat["sites"][0]["high_risk"] == 1
    assert heat["sites"][0]["scores"] == 4
    inc = _get(gw, "/incidents/inc-1").json()["data"]
    assert inc["events"][0]["summary"] == "panic button"
    corr = _get(gw, "/telemetry/correlations").json()["data"]
    assert [i["incident_id"] for i in corr["items"]] == ["inc-1"] and corr["next_offset"] is None
    stats = _get(gw, "/events/stats").json()["data"]
    assert stats["by_type"][0]["type"] == "alert_created" and stats["by_type"][0]["avg_latency_ms"] == 5.0
    tickets = _get(gw, "/tickets", status="NEW").json()["data"]["items"]
    assert [t["ticket_id"] for t in tickets] == ["tk-1"]


BAD_INPUT = [
    ("/telemetry/signals/p-1", {"window_minutes": "abc"}, 400),
    ("/telemetry/signals/p-1", {"window_minutes": "0"}, 400),
    ("/telemetry/signals/p-1", {"until": "yesterday"}, 400),
    ("/telemetry/signals/p-1", {"anchor": "someday"}, 400),
    ("/telemetry/signals/nobody", {}, 404),
    ("/security/fraud-scores/live", {"min_risk": "EXTREME"}, 400),
    ("/incidents", {"status": "MAYBE"}, 400),
    ("/incidents", {"limit": "100000"}, 400),
    ("/incidents", {"offset": "-1"}, 400),
    ("/incidents/nope", {}, 404),
    ("/tickets/nope", {}, 404),
    ("/no/such/path", {}, 404),
]


def test_bad_input_is_a_clear_4xx(gw: dict[str, Any]) -> None:
    for path, params, status in BAD_INPUT:
        r = _get(gw, path, **params)
        assert r.status_code == status, (path, params, r.text)
        body = r.json()
        assert body["status"] == "error" and body["message"], (path, params)


def test_openapi_metrics_and_health(gw: dict[str, Any]) -> None:
    c = gw["client"]
    doc = c.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.") and f"{API}/security/fraud-scores/heatmap" in doc["paths"]
    _get(gw, "/incidents")
    metrics = c.get("/metrics").text
    for name in ("noc_api_requests_total", "noc_api_latency_seconds", "noc_websocket_broadcasts_total",
                 "noc_websocket_broadcast_latency_seconds", "noc_ml_predictions_total",
                 "noc_fraud_detections_total", "noc_fraud_tickets_created_total"):
        assert name in metrics
    assert 'route="/incidents"' in metrics
    assert c.get("/health").json()["data"]["consumer"]["ready"] is True


def test_ticket_state_change_needs_manage_and_refuses_bad_changes(gw: dict[str, Any], namespace: str,
                                                                  kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from schemas import serde

    c = gw["client"]
    m2 = create_token(gw["dsn"], 2, ["noc:manage"])[1]

    def post(token: str, ticket: str, body: Any) -> httpx.Response:
        return c.post(f"{API}/tickets/{ticket}/state", headers={"Authorization": f"Bearer {token}"},
                      content=body if isinstance(body, bytes) else None, json=None if isinstance(body, bytes) else body)

    assert _get(gw, "/tickets/tk-1").json()["data"]["status"] == "NEW"  # now cached
    assert post(gw["tokens"]["m1"], "tk-1", {"status": "WHATEVER"}).status_code == 400
    assert post(gw["tokens"]["m1"], "tk-1", b"{not json").status_code == 400
    assert post(gw["tokens"]["m1"], "tk-1", {"status": "OPEN", "extra": 1}).status_code == 400
    assert post(gw["tokens"]["m1"], "tk-1", b"x" * 5000).status_code == 413
    assert post(m2, "tk-1", {"status": "OPEN"}).status_code == 404  # tenant 2 cannot touch tenant 1's ticket
    refused = post(gw["tokens"]["m1"], "tk-1", {"status": "CLOSED"})
    assert refused.status_code == 409 and refused.json()["status"] == "error"
    ok = post(gw["tokens"]["m1"], "tk-1", {"status": "OPEN", "note": "looking"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["data"]["status"] == "OPEN" and ok.json()["data"]["version"] == 2
    detail = _get(gw, "/tickets/tk-1").json()
    assert detail["cached"] is False and detail["data"]["status"] == "OPEN"  # the change invalidated the cache
    assert [h["to_status"] for h in detail["data"]["history"]][-1] == "OPEN"
    # The ticket_updated feed event is on the events topic.
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "t-" + namespace,
                         "enable.auto.commit": False})
    try:
        from schemas.topics import topic
        name = topic("events", namespace)
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in parts])
        deadline = time.monotonic() + 15
        found = None
        while found is None and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is None:
                    rec = serde.decode(msg.value(), expected="noc_event")
                    if rec["type"] == "ticket_updated":
                        found = rec
        assert found is not None and found["tenant_id"] == 1
    finally:
        consumer.close()
