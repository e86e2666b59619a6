"""The simulator produces into the real broker; a consumer reads every record back and decodes it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas import serde
from schemas.topics import BY_SHORT, topic
from simulator.config import HOUR_MS, SimConfig
from simulator.generate import TOPICS
from simulator.produce import simulate

pytestmark = pytest.mark.integration


def _read_all(bootstrap: str, names: list[str], deadline_s: float = 60.0) -> list[tuple[str, bytes, bytes]]:
    """Every record of ``names``, read until each partition reaches the end offset it had when we started
    (so a short read says which partition fell behind, and how far, instead of only a total)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "socket.timeout.ms": 10_000})
    try:
        ends: dict[tuple[str, int], int] = {}
        meta = c.list_topics(timeout=10)
        for n in names:
            for p in meta.topics[n].partitions:
                low, high = c.get_watermark_offsets(TopicPartition(n, p), timeout=10)
                if high > low:
                    ends[(n, p)] = high
        c.assign([TopicPartition(n, p, 0) for n, p in ends])
        out: list[tuple[str, bytes, bytes]] = []
        at: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + deadline_s
        while any(at.get(tp, -1) + 1 < end for tp, end in ends.items()):
            behind = {f"{n}[{p}]": f"{at.get((n, p), -1) + 1}/{end}" for (n, p), end in ends.items()
                      if at.get((n, p), -1) + 1 < end}
            assert time.monotonic() < deadline, f"read {len(out)} records in {deadline_s:.0f} s; behind: {behind}"
            for m in c.consume(1000, timeout=1.0):
                assert m.error() is None, m.error()
                p, off = m.partition(), m.offset()
                assert p is not None and off is not None
                at[(str(m.topic()), p)] = off
                out.append((str(m.topic()), m.key() or b"", m.value() or b""))
        return out
    finally:
        c.close()


def test_every_simulated_record_comes_back_and_decodes(kafka_bootstrap: str, namespace: str) -> None:
    cfg = SimConfig(seed=5, tenants=1, sites_per_tenant=3, guards_per_site=6, span=48 * HOUR_MS, scenario_rate=0.3)
    rep = simulate(cfg, kafka_bootstrap, namespace, progress=None)
    assert rep.ok and rep.total > 5_000, rep.errors
    names = [topic(s, namespace) for s in TOPICS]
    got = _read_all(kafka_bootstrap, names)
    assert len(got) == rep.total
    short_of = {topic(s, namespace): s for s in TOPICS}
    per_topic: Counter[str] = Counter()
    ids: set[tuple[str, str]] = set()
    for name, key, value in got:
        short = short_of[name]
        rec = serde.decode(value, expected=BY_SHORT[short].schema)
        per_topic[short] += 1
        if short in ("attendance", "activity"):
            assert key == f"{rec['tenant_id']}:{rec['person_id']}".encode()
            ids.add((short, rec["event_id"]))
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
