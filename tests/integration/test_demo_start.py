"""``noc demo`` run twice on one namespace continues the simulated time instead of replaying it (which the
worker could only dead-letter as LATE)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from infra.cli_demo import children, resume_start
from simulator.config import HOUR_MS, SimConfig
from simulator.produce import simulate

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
    args = argparse.Namespace(seed=42, rate=2000, span="30d", port=8080)
    sim = dict(children(args, start))["simulator"]
    assert sim[sim.index("--start") + 1] == start
