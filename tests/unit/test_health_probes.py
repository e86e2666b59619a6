"""Probe endpoints without services: infra.probes' server and Heartbeat, the gateway's /healthz and /readyz."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.probes import healthz, readyz
from infra.probes import Heartbeat, serve_probes


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_heartbeat_is_alive_only_while_recent_or_busy() -> None:
    hb = Heartbeat()
    assert hb.check()[0] is False  # never polled
    hb.beat()
    assert hb.check(within_s=5)[0] is True
    hb.at = time.monotonic() - 10
    ok, detail = hb.check(within_s=5)
    assert ok is False and "last polled 10" in detail
    hb.busy = "restoring partitions [0]"
    assert hb.check(within_s=5) == (True, "restoring partitions [0]")


def test_probe_server_serves_metrics_and_each_check_by_name() -> None:
    registry = CollectorRegistry()
    Counter("noc_test_things", "things", registry=registry).inc(3)
    state = {"alive": True, "ready": False}

    def boom() -> tuple[bool, str]:
        raise RuntimeError("no answer")

    server = serve_probes(0, registry, {"loop": lambda: (state["alive"], "x")},
                          {"group": lambda: (state["ready"], "waiting"), "database": lambda: (True, "answers")})
    try:
        code, body = _get(server.port, "/metrics")
        assert code == 200 and b"noc_test_things_total 3.0" in body
        assert _get(server.port, "/healthz")[0] == 200
        code, body = _get(server.port, "/readyz")
        assert code == 503
        doc = json.loads(body)
        assert doc["status"] == "fail"
        assert doc["checks"] == {"group": {"ok": False, "detail": "waiting"},
                                 "database": {"ok": True, "detail": "answers"}}
        state.update(alive=False, ready=True)
        assert (_get(server.port, "/healthz")[0], _get(server.port, "/readyz")[0]) == (503, 200)
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.close()
    ready = {"ok": False}
    counted = serve_probes(0, registry, {}, {"group": lambda: (ready["ok"], "")}, component="pipeline")
    try:
        assert b'noc_ready{component="pipeline"} 0.0' in _get(counted.port, "/metrics")[1]
        ready["ok"] = True
        assert b'noc_ready{component="pipeline"} 1.0' in _get(counted.port, "/metrics")[1]
    finally:
        counted.close()
    assert b"noc_ready" not in generate_latest(registry)  # unregistered with its server
    failing = serve_probes(0, registry, {"loop": boom}, {})
    try:
        code, body = _get(failing.port, "/healthz")
        assert code == 503 and json.loads(body)["checks"]["loop"] == {"ok": False,
                                                                       "detail": "RuntimeError: no answer"}
    finally:
        failing.close()


def _gateway_probe_app(state: Any) -> Starlette:
    app = Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz)])
    app.state.consumer = state.consumer
    if state.pool is not None:
        app.state.pool = state.pool
    return app


def test_gateway_readyz_fails_while_the_database_does_not_answer_and_healthz_does_not() -> None:
    consumer = SimpleNamespace(alive=lambda: True, ready=SimpleNamespace(is_set=lambda: True), error=None)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool("postgresql://noc@127.0.0.1:1/none", open=False,
                                                         kwargs={"connect_timeout": 1})
    with TestClient(_gateway_probe_app(SimpleNamespace(consumer=consumer, pool=pool))) as client:
        client.portal.call(pool.open, False)  # type: ignore[union-attr]
        try:
            assert client.get("/healthz").status_code == 200
            resp = client.get("/readyz")
            assert resp.status_code == 503
            checks = resp.json()["checks"]
            assert checks["database"]["ok"] is False and checks["feed consumer"]["ok"] is True
        finally:
            client.portal.call(pool.close)  # type: ignore[union-attr]
    dead = SimpleNamespace(alive=lambda: False, ready=SimpleNamespace(is_set=lambda: True), error=None)
    with TestClient(_gateway_probe_app(SimpleNamespace(consumer=dead, pool=None))) as client:
        assert client.get("/healthz").status_code == 503
        assert client.get("/readyz").json()["checks"]["database"]["detail"] == "the connection pool is not open yet"
