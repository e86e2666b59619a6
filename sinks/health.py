"""Probes of ``noc sink`` on its metrics port (``--metrics-port``): ``/metrics``, ``/healthz``, ``/readyz``.

* ``/healthz``: the main loop went round within ``NOC_LIVENESS_S`` (30 s). It keeps going round while it waits
  for Postgres (a batch retried with backoff), so a database outage is not a reason to restart the sink.
* ``/readyz``: the consumer holds an assignment (possibly empty: more members than partitions) and Postgres
  answers ``SELECT 1`` within 2 s (checked at most every 2 s). False while the database is down or the group
  rebalances.
"""

from __future__ import annotations

import threading
import time

import psycopg
from prometheus_client import REGISTRY

from infra.probes import Heartbeat, ProbeServer, metrics_addr, serve_probes

__all__ = ["DB_CHECK_EVERY_S", "SinkHealth"]

DB_CHECK_EVERY_S = 2.0


class SinkHealth:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.heartbeat = Heartbeat()
        self.assigned = False
        self._db: tuple[float, bool, str] | None = None
        self._lock = threading.Lock()

    def database(self) -> tuple[bool, str]:
        with self._lock:
            now = time.monotonic()
            if self._db is None or now - self._db[0] >= DB_CHECK_EVERY_S:
                try:
                    with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as conn:
                        conn.execute("SELECT 1")
                    self._db = (now, True, "answers")
                except psycopg.Error as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    self._db = (now, False, f"unreachable: {first}")
            return self._db[1], self._db[2]

    def group(self) -> tuple[bool, str]:
        return self.assigned, "partitions assigned" if self.assigned else "waiting for an assignment"

    def serve(self, port: int) -> ProbeServer:
        return serve_probes(port, REGISTRY, {"loop": self.heartbeat.check},
                            {"group": self.group, "database": self.database}, addr=metrics_addr("0.0.0.0"),
                            component="sink")
