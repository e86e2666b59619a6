"""Helpers for the gateway's tests and benchmark: a real uvicorn server in a thread, feed events, demo rows."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import uvicorn
from confluent_kafka import Producer

from gateway.app import create_app
from gateway.config import GatewayConfig
from schemas import serde
from schemas.topics import topic


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_gateway(cfg: GatewayConfig, port: int | None = None, app: Any = None, **uvicorn_kw: Any) -> Iterator[str]:
    """Serve ``app`` (default ``create_app(cfg)``) on 127.0.0.1 in a background thread; yields the base URL."""
    port = port or free_port()
    config = uvicorn.Config(app if app is not None else create_app(cfg), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on",
                            ws_max_size=64 * 1024, ws_per_message_deflate=False, **uvicorn_kw)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def noc_event(type_: str, event_id: str, tenant_id: int, payload: dict[str, Any], site_id: str | None = None,
              person_id: str | None = None, ts_ms: int | None = None) -> dict[str, Any]:
    return {"type": type_, "event_id": event_id, "timestamp": ts_ms or int(time.time() * 1000),
            "tenant_id": tenant_id, "site_id": site_id, "person_id": person_id,
            "payload": orjson.dumps(payload).decode()}


class FeedProducer:
    def __init__(self, bootstrap: str, namespace: str) -> None:
        self.topic = topic("events", namespace)
        self._p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "message.timeout.ms": 10_000,
                            "enable.idempotence": True})

    def send(self, rec: dict[str, Any], flush: bool = True) -> None:
        self._p.produce(self.topic, key=str(rec["tenant_id"]).encode(), value=serde.encode("noc_event", rec))
        self._p.poll(0)
        if flush:
            self.flush()

    def send_raw(self, key: bytes, value: bytes) -> None:
        self._p.produce(self.topic, key=key, value=value)
        self.flush()

    def flush(self) -> None:
        if self._p.flush(10) != 0:
            raise RuntimeError("feed events not delivered within 10 s")


async def wait_for(predicate: Any, timeout: float = 10.0, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(every)


# -- demo/test rows in the sinks' tables ----------------------------------------------------------------------

def seed_rows(dsn: str, now: datetime | None = None) -> dict[str, Any]:
    """Migrate ``dsn`` (the sinks' migrations) and insert a small two-tenant data set; returns what was written.

    Partitioned tables get a DEFAULT partition, so rows of any day fit (the sink makes daily ones).
    """
    from sinks.migrate import migrate

    migrate(dsn)
    now = now or datetime.now(UTC)
    t = now - timedelta(minutes=30)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        for table in ("signal_windows", "fraud_scores", "event_log"):
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table}_pdefault PARTITION OF {table} DEFAULT".encode())
        for tenant, person, site in ((1, "p-1", "s-1"), (2, "p-2", "s-2")):
            for i in range(4):
                ws = t + timedelta(minutes=5 * i)
                for scope, pid in (("PERSON", person), ("SITE", None)):
                    conn.execute(
                        "INSERT INTO signal_windows (window_id, scope, tenant_id, site_id, person_id, window_start, "
                        "window_end, phone_events_count, location_updates_count, movement_distance_meters, "
                        "tasks_completed_count, tour_checkpoints_scanned, tours, event_count, late_event_count) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, 2, 3, 120.5, 1, 4, '[]', 10, 0)",
                        (f"w-{tenant}-{scope}-{i}", scope, tenant, site, pid, ws, ws + timedelta(minutes=5)))
                risk = "CRITICAL" if i == 3 else "LOW"
                conn.execute(
                    "INSERT INTO fraud_scores (score_id, event_id, tenant_id, site_id, person_id, device_id, "
                    "event_type, "
                    "occurred_at, fraud_probability, risk_level, model_version, reasons, feature_names, features) "
                    "VALUES (%s, %s, %s, %s, %s, 'd-1', 'CHECK_IN', %s, %s, %s, 'rules-v1', '[]', '{}', '{}')",
                    (f"fs-{tenant}-{i}", f"att-{tenant}-{i}", tenant, site, person, ws, 0.95 if i == 3 else 0.1,
                     risk))
            conn.execute(
                "INSERT INTO incidents (incident_id, tenant_id, site_id, person_id, status, combined_severity, kinds, "
                "related_event_ids, evidence, title, first_seen, last_seen, revision, updated_at) VALUES "
                "(%s, %s, %s, %s, 'OPEN', 'HIGH', ARRAY['NOC_ALERT','FRAUD_SCORE'], ARRAY['a-1'], '[]', %s, %s, %s, "
                "1, %s)", (f"inc-{tenant}", tenant, site, person, f"Incident of tenant {tenant}", t, now, now))
            conn.execute(
                "INSERT INTO incident_events (incident_id, event_id, tenant_id, kind, severity, occurred_at, summary) "
                "VALUES (%s, 'a-1', %s, 'NOC_ALERT', 'HIGH', %s, 'panic button')", (f"inc-{tenant}", tenant, t))
            conn.execute(
                "INSERT INTO tickets (ticket_id, tenant_id, ticket_no, site_id, person_id, category, source, status, "
                "priority, title, description, created_at, updated_at, version) VALUES "
                "(%s, %s, %s, %s, %s, 'FRAUD', 'SYSTEM_GENERATED', 'NEW', 'HIGH', %s, 'd', %s, %s, 1)",
                (f"tk-{tenant}", tenant, f"NOC-2026-00000{tenant}", site, person, f"Ticket of tenant {tenant}", t, t))
            conn.execute(
                "INSERT INTO event_log (event_id, type, ts, tenant_id, site_id, person_id, payload, broadcast_at, "
                "broadcast_latency_ms) VALUES (%s, 'alert_created', %s, %s, %s, %s, '{}', %s, %s)",
                (f"ev-{tenant}", t, tenant, site, person, t, 5.0 * tenant))
    return {"now": now, "window_start": t}
