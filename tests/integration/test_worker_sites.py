"""The worker's site stage on the real broker: SITE windows, baseline records and statistical anomalies from a
simulated run; a ticket resolving an anomaly FALSE_POSITIVE and an on-demand retune change the baseline; the
worker no longer forwards tickets to the feed (the ticket sink does, after validating them)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from schemas import serde
from schemas.topics import topic
from simulator.config import HOUR_MS, MINUTE_MS, SimConfig
from simulator.produce import simulate
from streams.baselines_cli import retune
from streams.testkit import WorkerProcess, decoded, free_port, group_caught_up, read_topic, wait_for

pytestmark = pytest.mark.integration

SIM = SimConfig(seed=21, tenants=1, sites_per_tenant=3, guards_per_site=4, span=4 * HOUR_MS,
                scenario_rates={"GPS_SPOOFING": 0.3, "MISSED_TOUR": 0.2})
# Short-run baselines: raw 5-minute windows, stable after 3 samples, a low threshold so a 4 h run flags
# something, one review enough to retune. Passed through the environment; the defaults stay as they are.
SITE_CONFIG = {"baselines": {"min_samples": 3, "span_ms": 5 * MINUTE_MS, "cooldown_ms": 5 * MINUTE_MS,
                             "default_threshold": 2.0, "min_threshold": 1.0, "min_feedback": 1,
                             "min_stddev": 0.5, "rel_stddev": 0.1, "poisson_floor": 0.5}}


def _records(bootstrap: str, ns: str, short: str, stem: str) -> list[dict[str, Any]]:
    return decoded(read_topic(bootstrap, ns, short), stem)


def _ticket(anomaly: dict[str, Any]) -> bytes:
    at = int(anomaly["window_end"]) + HOUR_MS
    return serde.encode("ticket", {
        "event_id": f"evt-review-{anomaly['anomaly_id']}", "tenant_id": anomaly["tenant_id"],
        "site_id": anomaly["site_id"], "person_id": None, "occurred_at": at, "received_at": at,
        "ticket_id": f"tkt-review-{anomaly['anomaly_id']}", "ticket_no": None, "category": "OPERATIONS",
        "source": "USER", "status": "RESOLVED", "priority": "MEDIUM", "resolution": "FALSE_POSITIVE",
        "title": "site anomaly reviewed", "description": "", "related_event_id": anomaly["anomaly_id"],
        "actor": "supervisor-1"})


def test_site_windows_baselines_anomalies_feedback_and_retune(kafka_bootstrap: str, namespace: str,
                                                               tmp_path: Path) -> None:
    ns = namespace
    rep = simulate(SIM, kafka_bootstrap, ns, progress=None)
    assert rep.ok, rep.errors
    os.environ["NOC_SITE_CONFIG"] = json.dumps(SITE_CONFIG)
    try:
        w = WorkerProcess(ns, kafka_bootstrap, tmp_path / "faust", free_port(), tmp_path / "worker.log").start()
    finally:
        del os.environ["NOC_SITE_CONFIG"]
    try:
        wait_for(lambda: group_caught_up(kafka_bootstrap, ns), 40, "the worker to commit every input")
        stat: list[dict[str, Any]] = []

        def flagged() -> bool:
            stat[:] = [a for a in _records(kafka_bootstrap, ns, "anomalies", "anomaly")
                       if not a["baseline_id"].startswith("rule:")]
            return bool(stat)

        wait_for(flagged, 20, f"a statistical anomaly (worker log:\n{w.log_tail()})")
        windows = _records(kafka_bootstrap, ns, "signal-windows", "signal_window")
        site_windows = [x for x in windows if x["scope"] == "SITE"]
        assert site_windows and {x["site_id"] for x in site_windows} <= {x["site_id"] for x in windows
                                                                        if x["scope"] == "PERSON"}
        assert len({x["window_id"] for x in site_windows}) == len(site_windows)  # each SITE window once
        baselines = _records(kafka_bootstrap, ns, "baselines", "baseline")
        assert baselines and any(b["is_stable"] for b in baselines)
        # The site-stage process serves its own metrics (the worker's port + 1): what it read and produced.
        site_metrics: dict[str, float] = {}

        def site_stage_counted() -> bool:
            site_metrics.update(w.metrics(site_stage=True))
            return site_metrics.get('noc_worker_records_produced_total{topic="baselines"}', 0) >= len(baselines)

        wait_for(site_stage_counted, 20, "the site stage's metrics to count its baselines")
        assert site_metrics['noc_worker_records_produced_total{topic="signal-windows"}'] == len(site_windows)
        assert site_metrics['noc_worker_events_processed_total{topic="sites"}'] > 0
        assert site_metrics['noc_worker_site_stage_records_total{kind="counted"}'] > 0
        a = stat[0]
        assert a["person_id"] is None and a["baseline_id"] in {b["baseline_id"] for b in baselines}
        events = _records(kafka_bootstrap, ns, "events", "noc_event")
        assert any(e["type"] == "anomaly_detected" and e["payload"].find(a["anomaly_id"]) >= 0 for e in events)
        before = [b for b in baselines if b["baseline_id"] == a["baseline_id"]][-1]

        # Feedback: the anomaly's ticket is resolved FALSE_POSITIVE.
        p = Producer({"bootstrap.servers": kafka_bootstrap, "socket.timeout.ms": 10_000})
        p.produce(topic("tickets", ns), _ticket(a), f"tkt-review-{a['anomaly_id']}".encode())
        assert p.flush(30) == 0
        got: list[dict[str, Any]] = []

        def baseline_where(pred: Any) -> bool:
            got[:] = [b for b in _records(kafka_bootstrap, ns, "baselines", "baseline")
                      if b["baseline_id"] == a["baseline_id"] and pred(b)]
            return bool(got)

        wait_for(lambda: baseline_where(lambda b: b["feedback_total"] >= 1), 20, "the feedback's baseline record")
        assert got[-1]["false_positive_rate"] == 1.0 and got[-1]["false_positives"] == 1

        # On-demand retune (`noc baselines retune`): one review, all false positives -> threshold raised,
        # stamped in event time.
        assert retune(argparse.Namespace(bootstrap=kafka_bootstrap, namespace=ns, tenant=None, site=None)) == 0
        wait_for(lambda: baseline_where(lambda b: b["last_threshold_update"] is not None), 20, "a retuned baseline")
        tuned = got[-1]
        assert tuned["dynamic_threshold"] > before["dynamic_threshold"]
        assert tuned["last_threshold_update"] >= a["window_end"]

        # The worker no longer forwards tickets to the feed as ticket_updated (the ticket sink does).
        events = _records(kafka_bootstrap, ns, "events", "noc_event")
        assert not [e for e in events if e["type"] == "ticket_updated"]
        assert w.alive(), w.log_tail()
    finally:
        w.stop()
