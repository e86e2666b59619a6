"""``noc verify`` against a real, shortened ``noc demo`` (its own namespace, schema and ports): the demo back-fills
a day up to now and carries on live; once the worker has caught up, every check of the runbook passes. The
demo's back-fill ends at now and nothing it produced is stamped in the future."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.tokens import create_token
from infra.cli_demo import latest_activity
from simulator.config import MINUTE_MS
from simulator.generate import TOPICS
from sinks.migrate import migrate
from streams.testkit import read_topic

pytestmark = pytest.mark.integration


def _free_port(n: int = 1) -> int:
    """A port p with p .. p+n-1 free (the demo's worker, site stage and sink take consecutive ones)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        if p + n < 65_000 and all(_free(p + i) for i in range(n)):
            return p
    raise RuntimeError("no free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait(what: str, cond: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(2)  # polling a separate process tree's progress: retry period, not synchronisation
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _verify(url: str, token: str, dsn: str, *extra: str) -> subprocess.CompletedProcess[str]:
    noc = shutil.which("noc") or sys.argv[0]
    return subprocess.run([noc, "verify", "--url", url, "--token", token, "--dsn", dsn, *extra],
                          capture_output=True, text=True, timeout=300)


def _acknowledge_a_ticket(url: str, token: str) -> bool:
    """Move one NEW ticket to OPEN through the REST API, as an operator would."""
    import json
    import urllib.request

    def call(path: str, body: dict[str, str] | None = None) -> dict[str, object]:
        req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    items = call("/api/v2/noc/tickets/?status=NEW&limit=1")["data"]["items"]  # type: ignore[index]
    if not items:
        return False
    call(f"/api/v2/noc/tickets/{items[0]['ticket_id']}/state", {"status": "OPEN", "note": "acknowledged"})
    return True


# the checks whose figures come from the data the demo makes (the others measure the gateway live)
DATA_CHECKS = ("tour checkpoints collected", "signal correlation", "audit escalation", "baseline tuning", "ML model",
               "fraud tickets", "REST routes < 500 ms")


@pytest.mark.timeout(1500)
def test_noc_verify_passes_against_a_demo(kafka_bootstrap: str, namespace: str, pg_schema: tuple[str, str],
                                          tmp_path: Path) -> None:
    dsn, _ = pg_schema
    migrate(dsn)
    _tid, token = create_token(dsn, 1, ["noc:manage"], label="verify test")
    port, metrics = _free_port(), _free_port(3)
    env = {**os.environ, "NOC_NAMESPACE": namespace, "NOC_BOOTSTRAP": kafka_bootstrap, "NOC_PG_DSN": dsn,
           "NOC_HOME": str(tmp_path)}
    noc = shutil.which("noc") or sys.argv[0]
    started = time.time_ns() // 1_000_000
    log = (tmp_path / "demo.out").open("w")
    demo = subprocess.Popen([noc, "demo", "--backfill", "1d", "--port", str(port), "--metrics-port", str(metrics),
                             "--duration", "1400"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        # the back-fill reaches now
        _wait("the back-fill to reach now", lambda: (latest_activity(kafka_bootstrap, namespace) or 0)
              >= time.time_ns() // 1_000_000 - 5 * MINUTE_MS, 600)
        done = time.time_ns() // 1_000_000
        stamps = [r.timestamp for short in TOPICS for r in read_topic(kafka_bootstrap, namespace, short)]
        assert stamps and max(stamps) <= time.time_ns() // 1_000_000  # nothing in the future
        assert min(stamps) >= started - 3 * 24 * 3_600_000  # a day back (rosters published up to 2 days ahead)
        assert done - started < 600_000

        # the checks on the demo's data pass once the worker, the sink and the trainer have caught up ...
        seen: list[str] = [""]

        def data_ready() -> bool:
            seen[0] = _verify(url, token, dsn, "--ws-wait", "0.5").stdout
            return all(f"✓ {name}:" in seen[0] for name in DATA_CHECKS)

        try:
            _wait("the checks on the demo's data to pass", data_ready, 600)
        finally:
            print(seen[0])
        # ... and then all of them, the live WebSocket event (moving a NEW ticket to OPEN when the live world is
        # quiet, as the runbook's ticket-broadcast check does) and the broadcast latency it leaves included. An
        # operator has changed a ticket before (no dashboard open): the gateway makes its Kafka producer on the
        # first change, which costs that change ~0.5 s before its event is published.
        assert _acknowledge_a_ticket(url, token)
        final = _verify(url, token, dsn, "--poke", "--ws-wait", "20")
        print(final.stdout, final.stderr[-2000:])
        assert final.stdout.count("✓") == 9 and "9 of 9 checks passed" in final.stdout
        assert final.returncode == 0
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
        log.close()
        print((tmp_path / "demo.out").read_text()[-3000:])
