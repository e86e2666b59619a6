"""Running as a fleet: probes, graceful shutdown (SIGTERM) and the restart supervisor, on real processes.

A graceful stop must finish and commit the batch in hand and leave the group, exiting 0 within 30 s: the group
has no member left at once (no session timeout to wait out), and a successor redoes nothing (the worker's
``redelivered_skipped`` stays 0; the sink's rows equal its committed offsets).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from test_sink_faults import _count, _produce_activity
from test_worker_recovery import _assert_matches_reference, _members, _produce

from gateway.config import GatewayConfig
from gateway.testing import running_gateway
from infra.config import REPO_ROOT
from schemas.topics import PERSON_PARTITIONS, topic
from sinks.migrate import migrate
from streams.input_loop import pipeline_group
from streams.testkit import WorkerProcess, free_port, group_caught_up, wait_for

pytestmark = pytest.mark.integration
STOP_BOUND_S = 30.0


def probe(port: int, path: str) -> int:
    """HTTP status of a probe (0: nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def _stop(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(STOP_BOUND_S + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return code, time.monotonic() - t0


def _metric(w: WorkerProcess, name: str) -> float:
    return sum(v for k, v in w.metrics().items() if k.startswith(name))


def test_worker_sigterm_commits_the_batch_in_hand_leaves_the_group_and_exits_0(
        kafka_bootstrap: str, namespace: str, tmp_path: Path) -> None:
    rep = _produce(kafka_bootstrap, namespace)
    port = free_port()
    extra = ["--batch-size", "500", "--flush-records", "100000", "--flush-every", "60"]  # commits only at the stop
    first = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "a", port, tmp_path / "a.log", extra).start()
    try:
        wait_for(lambda: probe(port, "/readyz") == 200, 90, "the worker to be ready")
        assert probe(port, "/healthz") == 200
        wait_for(lambda: probe(port + 1, "/readyz") == 200, 60, "the site-stage process to be ready")
        assert probe(port + 1, "/healthz") == 200
        wait_for(lambda: _metric(first, "noc_worker_events_processed_total") >= 3000, 90,
                 "the worker to process 3000 records", every_s=0.02)
        assert first.proc is not None
        code, took = _stop(first.proc)
    finally:
        if first.alive():
            first.kill()
    print(f"worker graceful stop: {took:.2f} s")
    assert code == 0, first.log_tail()
    assert took < STOP_BOUND_S, f"graceful stop took {took:.1f} s"
    # Left the group on the way out: no member for the coordinator to time out.
    assert _members(kafka_bootstrap, pipeline_group(namespace)) == 0
    assert not group_caught_up(kafka_bootstrap, namespace), "the worker finished the input before the stop"
    second = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "b", port, tmp_path / "b.log").start()
    try:
        wait_for(lambda: group_caught_up(kafka_bootstrap, namespace), 120, "the second worker to catch up")
        processed = _metric(second, "noc_worker_events_processed_total")
        redone = _metric(second, "noc_worker_redelivered_skipped_total")
    finally:
        second.stop()
    assert 0 < processed < rep.total
    assert redone == 0, "a graceful stop left processed records uncommitted"
    _assert_matches_reference(kafka_bootstrap, namespace)


def _committed_sum(bootstrap: str, ns: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sink-{ns}", "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic("activity", ns), p) for p in range(PERSON_PARTITIONS)]
        return sum(max(0, tp.offset) for tp in c.committed(tps, timeout=10))
    finally:
        c.close()


def _sink_cmd(dsn: str, bootstrap: str, ns: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "infra.cli", "sink", "--dsn", dsn, "--bootstrap", bootstrap, "--namespace", ns,
            "--topics", "activity", "--group", f"sink-{ns}", "--batch-size", "2000", "--no-publish",
            "--metrics-port", str(port), *extra]


def test_sink_sigterm_commits_what_it_wrote_leaves_the_group_and_exits_0(
        kafka_bootstrap: str, namespace: str, pg_schema: tuple[str, str], tmp_path: Path) -> None:
    dsn = pg_schema[0]
    n = 100_000
    migrate(dsn)
    _produce_activity(kafka_bootstrap, topic("activity", namespace), n)
    port = free_port()
    log = tmp_path / "sink.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(_sink_cmd(dsn, kafka_bootstrap, namespace, port), cwd=REPO_ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: probe(port, "/readyz") == 200, 60, "the sink to be ready")
        assert probe(port, "/healthz") == 200
        wait_for(lambda: _count(dsn) >= 10_000, 90, "the sink to store 10,000 rows")
        code, took = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"sink graceful stop: {took:.2f} s")
    assert code == 0, log.read_text()[-3000:]
    assert took < STOP_BOUND_S, f"graceful stop took {took:.1f} s"
    stored = _count(dsn)
    assert 10_000 <= stored < n
    assert _committed_sum(kafka_bootstrap, namespace) == stored  # every row written was committed, nothing more
    assert _members(kafka_bootstrap, f"sink-{namespace}") == 0
    done = subprocess.run(_sink_cmd(dsn, kafka_bootstrap, namespace, free_port(), "--until-caught-up"),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["records"] == n - stored  # nothing read twice
    assert _count(dsn) == n


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def test_noc_run_restarts_a_killed_worker_and_passes_sigterm_through(kafka_bootstrap: str, namespace: str,
                                                                      tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "infra.cli", "run", "--restart", "--backoff", "0.5", "--", "worker",
           "--namespace", namespace, "--bootstrap", kafka_bootstrap, "--metrics-port", str(port),
           "--data-dir", str(tmp_path / "w")]
    log = tmp_path / "run.log"
    with log.open("ab") as out:
        sup = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: probe(port, "/readyz") == 200, 90, "the supervised worker to be ready")
        first = _children(sup.pid)
        assert len(first) == 1
        os.kill(first[0], signal.SIGKILL)
        wait_for(lambda: _children(sup.pid) not in ([], first), 30, "the supervisor to start a new worker")
        wait_for(lambda: probe(port, "/readyz") == 200, 90, "the restarted worker to be ready")
        second = _children(sup.pid)
        code, took = _stop(sup)
    finally:
        if sup.poll() is None:
            sup.kill()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert took < STOP_BOUND_S
    assert "exited with -9" in text and "restarting in 0.5 s" in text
    assert not any(Path(f"/proc/{p}").exists() for p in second), "the child outlived the supervisor"


def test_gateway_probes_answer_on_a_running_gateway(kafka_bootstrap: str, namespace: str,
                                                    pg_schema: tuple[str, str]) -> None:
    cfg = dataclasses.replace(GatewayConfig(), dsn=pg_schema[0], bootstrap=kafka_bootstrap, namespace=namespace)
    with running_gateway(cfg) as url:
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        assert (probe(port, "/healthz"), probe(port, "/readyz")) == (200, 200)
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as resp:
            checks = json.loads(resp.read())["checks"]
        assert checks["database"] == {"ok": True, "detail": "answers"} and checks["feed consumer"]["ok"] is True
