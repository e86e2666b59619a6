"""Liveness and readiness probes beside the Prometheus metrics, on one HTTP port.

``serve_probes(port, registry, live, ready)`` answers

* ``GET /metrics``: the registry, as ``prometheus_client`` serves it;
* ``GET /healthz``: 200 when every liveness check passes, else 503 (an orchestrator restarts the process);
* ``GET /readyz``: 200 when every readiness check passes, else 503 (the process is not counted as serving);
  the same judgement is the metric ``noc_ready{component}`` (1 or 0) for alerts.

Each check returns ``(ok, detail)``; the body is JSON ``{"status": "ok"|"fail", "checks": {name: {"ok": ..,
"detail": ..}}}`` so an operator sees which check failed. A check that raises fails with the exception's text.
The processes' loops say they are alive with a :class:`Heartbeat`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "LIVENESS_S",
    "Check",
    "Heartbeat",
    "ProbeServer",
    "ReadinessCollector",
    "evaluate",
    "metrics_addr",
    "serve_probes",
]

# A loop that has not polled for this long is not alive (NOC_LIVENESS_S). Generous: one batch or flush takes
# well under a second, and a changelog restore counts as alive while it runs (see Heartbeat.busy).
LIVENESS_S = float(os.environ.get("NOC_LIVENESS_S") or 30.0)

Check = Callable[[], tuple[bool, str]]


def metrics_addr(default: str) -> str:
    """The address the metrics/probe port binds (NOC_METRICS_ADDR; 0.0.0.0 in a container)."""
    return os.environ.get("NOC_METRICS_ADDR") or default


class Heartbeat:
    """When a loop last went round; ``busy`` marks a long step (a restore) that counts as alive while it runs."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.busy: str | None = None

    def beat(self) -> None:
        self.at = time.monotonic()

    def check(self, within_s: float = LIVENESS_S) -> tuple[bool, str]:
        if self.busy is not None:
            return True, self.busy
        if self.at is None:
            return False, "the loop has not started"
        age = time.monotonic() - self.at
        return age <= within_s, f"last polled {age:.1f} s ago (limit {within_s:.0f} s)"


def evaluate(checks: Mapping[str, Check]) -> tuple[bool, dict[str, dict[str, object]]]:
    out: dict[str, dict[str, object]] = {}
    ok = True
    for name, fn in checks.items():
        try:
            good, detail = fn()
        except Exception as exc:  # noqa: BLE001 - a failing check is reported as failed, with its error
            good, detail = False, f"{type(exc).__name__}: {exc}"
        out[name] = {"ok": good, "detail": detail}
        ok = ok and good
    return ok, out


class ReadinessCollector(Collector):
    """``noc_ready{component}``: 1 while every readiness check passes (what /readyz answers), computed per scrape,
    so alerts see a process that stays unready."""

    def __init__(self, component: str, ready: Mapping[str, Check]) -> None:
        self.component = component
        self.ready = ready

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("noc_ready", "1 when the process's /readyz answers 200", labels=["component"])
        g.add_metric([self.component], 1.0 if evaluate(self.ready)[0] else 0.0)
        yield g


class ProbeServer:
    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread,
                 registry: CollectorRegistry | None = None, collector: Collector | None = None) -> None:
        self.server = server
        self.thread = thread
        self.registry = registry
        self.collector = collector

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.registry is not None and self.collector is not None:
            self.registry.unregister(self.collector)


def serve_probes(port: int, registry: CollectorRegistry, live: Mapping[str, Check], ready: Mapping[str, Check],
                 addr: str = "127.0.0.1", component: str | None = None) -> ProbeServer:
    """Serve /metrics, /healthz and /readyz on ``addr:port`` from a daemon thread; with ``component``, also
    ``noc_ready{component}`` in the registry."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, checks = evaluate(live if path == "/healthz" else ready)
                body = json.dumps({"status": "ok" if ok else "fail", "checks": checks}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found: /metrics, /healthz, /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes arrive every few seconds; access lines would drown the log

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="noc-probes", daemon=True)
    thread.start()
    collector = None
    if component is not None:
        collector = ReadinessCollector(component, ready)
        registry.register(collector)
    return ProbeServer(server, thread, registry, collector)
