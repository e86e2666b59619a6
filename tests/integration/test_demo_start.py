"""``noc demo`` run twice on one namespace continues the simulated time instead of replaying it (which the
worker could only dead-letter as LATE), live and fast-forward; the live world back-fills up to now and stamps
nothing in the future; without an active fraud model the demo trains and activates one."""

from __future__ import annotations

import argparse
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.cli_demo import DAY_MS, MINUTE_MS, children, latest_activity, resume_start, simulator_args
from models.registry import Registry
from schemas import serde
from simulator.config import HOUR_MS, SimConfig, parse_time
from simulator.produce import simulate
from streams.testkit import read_topic

pytestmark = pytest.mark.integration


def test_a_repeated_demo_simulates_from_the_day_after_the_latest_activity(kafka_bootstrap: str,
                                                                         namespace: str) -> None:
    assert resume_start(kafka_bootstrap, namespace) is None  # empty: the simulator's default start
    cfg = SimConfig(seed=3, tenants=1, sites_per_tenant=2, guards_per_site=2, span=30 * HOUR_MS)
    rep = simulate(cfg, kafka_bootstrap, namespace, progress=None)
    assert rep.ok and rep.produced["activity"] > 0
    start = resume_start(kafka_bootstrap, namespace)
    assert start is not None
    at = datetime.strptime(start, "%Y-%m-%dT%H:%M%z")
    end = datetime.fromtimestamp(cfg.end / 1000, UTC)
    # midnight after the last simulated activity, which lies within the simulated span
    assert at.hour == at.minute == 0 and end <= at
    assert (at - end).total_seconds() <= 2 * 86_400
    # --fast: the fast-forward world resumes there, and ends at now at the latest
    now = int(datetime.now(UTC).timestamp() * 1000)
    args = argparse.Namespace(seed=42, rate=None, span="30d", port=8080, fast=True, backfill="14d")
    opts, _ = simulator_args(args, kafka_bootstrap, namespace, now_ms=now)
    assert opts is not None and opts[opts.index("--start") + 1] == start
    assert parse_time(start) + int(opts[opts.index("--span") + 1].removesuffix("ms")) == min(
        parse_time(start) + 30 * DAY_MS, now)
    sim = dict(children(args, opts))["simulator"]
    assert sim[sim.index("--start") + 1] == start
    # live: the minute after the newest activity (it is older than the back-fill: from now - 14 days instead)
    args.fast = False
    latest = latest_activity(kafka_bootstrap, namespace)
    assert latest is not None and latest < parse_time(start)
    opts, _ = simulator_args(args, kafka_bootstrap, namespace, now_ms=now)
    assert opts is not None and "--live" in opts
    begin = parse_time(opts[opts.index("--start") + 1])
    if latest > now - 14 * DAY_MS:
        assert begin == (latest // MINUTE_MS + 1) * MINUTE_MS
    else:
        assert begin == (now - 14 * DAY_MS) // MINUTE_MS * MINUTE_MS
    opts, _ = simulator_args(args, kafka_bootstrap, namespace, now_ms=latest + HOUR_MS)
    assert opts is not None and parse_time(opts[opts.index("--start") + 1]) == (latest // MINUTE_MS + 1) * MINUTE_MS


def test_the_demo_trains_and_activates_a_first_model_when_none_is_active(kafka_bootstrap: str, namespace: str,
                                                                         pg_schema: tuple[str, str],
                                                                         tmp_path: Path) -> None:
    dsn, _ = pg_schema
    args = argparse.Namespace(seed=42, rate=2000, span="30d", port=8080)
    assert "trainer" not in dict(children(args)) and "simulator" not in dict(children(args))
    cmd = dict(children(args, train=True))["trainer"]
    done = subprocess.run([*cmd, "--bootstrap", kafka_bootstrap, "--namespace", namespace, "--dsn", dsn],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "NOC_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    row = Registry(dsn).active(None)
    assert row is not None and row.version in done.stdout and Path(row.artifact_path).is_file()
    # Running workers hot-reload from the model-events topic: the activation is there for them.
    events = [serde.decode(r.value) for r in read_topic(kafka_bootstrap, namespace, "model-events")]
    assert [(e["model_version"], e["action"]) for e in events] == [(row.version, "ACTIVATED")]
