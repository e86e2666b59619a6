"""The simulator produces into the real broker; a consumer reads every record back and decodes it."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from schemas import serde
from schemas.topics import BY_SHORT
from simulator.config import HOUR_MS, SimConfig
from simulator.generate import TOPICS
from simulator.produce import simulate
from streams.testkit import read_topic

pytestmark = pytest.mark.integration


def test_every_simulated_record_comes_back_and_decodes(kafka_bootstrap: str, namespace: str) -> None:
    cfg = SimConfig(seed=5, tenants=1, sites_per_tenant=3, guards_per_site=6, span=48 * HOUR_MS, scenario_rate=0.3)
    rep = simulate(cfg, kafka_bootstrap, namespace, progress=None)
    assert rep.ok and rep.total > 5_000, rep.errors
    # Each partition is read to the end offset it has now (a short read names the partitions behind, and how far).
    got = [r for short in TOPICS for r in read_topic(kafka_bootstrap, namespace, short, timeout_s=60)]
    assert len(got) == rep.total
    per_topic: Counter[str] = Counter()
    ids: set[tuple[str, str]] = set()
    for r in got:
        rec = serde.decode(r.value, expected=BY_SHORT[r.topic].schema)
        per_topic[r.topic] += 1
        if r.topic in ("attendance", "activity"):
            assert r.key == f"{rec['tenant_id']}:{rec['person_id']}".encode()
            ids.add((r.topic, rec["event_id"]))
    assert per_topic == rep.produced
    assert len(ids) == rep.produced["attendance"] + rep.produced["activity"], "event ids are unique"


def test_noc_simulate_command_reports_and_refuses_missing_topics(kafka_bootstrap: str, namespace: str) -> None:
    env_args = ["--bootstrap", kafka_bootstrap, "--namespace", namespace, "--quiet", "--seed", "2",
                "--tenants", "1", "--sites", "2", "--guards", "3", "--span", "8h", "--bad-rate", "0.01"]
    done = subprocess.run([sys.executable, "-m", "infra.cli", "simulate", *env_args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "delivery failures 0, undelivered 0" in done.stdout
    assert f"{namespace}.activity" in done.stdout
    missing = subprocess.run([sys.executable, "-m", "infra.cli", "simulate", "--bootstrap", kafka_bootstrap,
                              "--namespace", namespace + "x", "--span", "1h", "--quiet"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert "missing topics" in missing.stderr and "noc topics apply" in missing.stderr
