"""infra/grafana: every query of the dashboards and every alerting rule names a metric the code exports (or, for
the brokers, the one Strimzi's Kafka metrics configuration exports)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client import REGISTRY, CollectorRegistry

import gateway.feed_metrics
import gateway.metrics
import sinks.metrics
from infra.config import REPO_ROOT
from infra.probes import ReadinessCollector
from streams.metrics import WorkerMetrics

GRAFANA = REPO_ROOT / "infra" / "grafana"
BROKER_METRICS = {"kafka_server_replicamanager_underreplicatedpartitions"}  # Strimzi's JMX exporter rules
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
            "gauge": ("",), "info": ("_info",)}


def _names(registry: CollectorRegistry) -> set[str]:
    out = set()
    for family in registry.collect():
        out.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return out


def exported() -> set[str]:
    assert gateway.metrics and gateway.feed_metrics and sinks.metrics  # imported for their registrations
    names = _names(WorkerMetrics().registry) | {n for n in _names(REGISTRY) if n.startswith("noc_")}
    ready = CollectorRegistry()
    ready.register(ReadinessCollector("x", {}))
    return names | _names(ready)


def _referenced(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:noc|kafka)_[a-z0-9_]+)\b", expr))


def _dashboard_exprs(name: str) -> list[str]:
    doc: dict[str, Any] = json.loads((GRAFANA / name).read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    assert exprs and all(p.get("targets") for p in doc["panels"] if p["type"] != "row"), name
    return exprs


def test_pipeline_dashboard_covers_the_stages_and_names_only_exported_metrics() -> None:
    known = exported() | BROKER_METRICS
    exprs = _dashboard_exprs("nocstream-pipeline.json")
    used = set().union(*(_referenced(e) for e in exprs))
    assert used <= known, f"not exported: {sorted(used - known)}"
    for needed in ("noc_worker_events_processed_total", "noc_worker_records_produced_total", "noc_sink_rows_total",
                   "noc_worker_consumer_lag", "noc_sink_consumer_lag", "noc_worker_dead_letters_total",
                   "noc_worker_batch_seconds_bucket", "noc_worker_commit_seconds_bucket",
                   "noc_worker_restore_seconds_sum", "noc_worker_active_model", "noc_worker_site_stage_records_total",
                   "noc_ready"):
        assert needed in used, needed


def test_gateway_dashboard_names_only_exported_metrics() -> None:
    known = exported()
    used = set().union(*(_referenced(e) for e in _dashboard_exprs("nocstream-gateway.json")))
    assert used <= known, f"not exported: {sorted(used - known)}"


def test_alert_rules_name_exported_metrics_and_cover_the_failures() -> None:
    doc = yaml.safe_load((GRAFANA / "nocstream-alerts.yaml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    known = exported() | BROKER_METRICS
    for r in rules:
        assert set(r) >= {"alert", "expr", "for", "labels", "annotations"}, r.get("alert")
        assert r["labels"]["severity"] in ("warning", "critical")
        assert re.fullmatch(r"\d+m", r["for"])
        names = _referenced(r["expr"])
        assert names and names <= known, f"{r['alert']}: not exported: {sorted(names - known)}"
        assert r["expr"].count("(") == r["expr"].count(")"), r["alert"]
    assert {r["alert"] for r in rules} >= {"NocWorkerLagGrowing", "NocSinkLagGrowing", "NocDeadLetterRateHigh",
                                           "NocWorkerNoOutput", "NocSinkNoOutput", "NocNotReady",
                                           "KafkaUnderReplicatedPartitions"}
