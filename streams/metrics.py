"""Prometheus metrics of the stream worker, served on an HTTP port (``noc worker --metrics-port``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class WorkerMetrics:
    """One registry per worker (tests can build several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("noc_worker_events_processed", "Input records processed, by topic", ["topic"],
                              registry=r)
        self.dead_letters = Counter("noc_worker_dead_letters", "Records dead-lettered, by reason", ["reason"],
                                    registry=r)
        self.late = Counter("noc_worker_late_events", "Events later than the window grace", registry=r)
        self.redelivered = Counter("noc_worker_redelivered_skipped",
                                   "Redelivered records skipped (already in the restored state)", registry=r)
        self.lag = Gauge("noc_worker_consumer_lag", "High watermark minus the next offset to process",
                         ["topic", "partition"], registry=r)
        self.predictions = Counter("noc_worker_ml_predictions", "Attendance events scored", registry=r)
        self.prediction_latency = Histogram(
            "noc_worker_ml_prediction_seconds", "Feature building + scoring time per scored event (micro-batched)",
            buckets=(0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1), registry=r)
        self.fraud_detections = Counter("noc_worker_fraud_detections", "Fraud scores at or above the ticket threshold",
                                        registry=r)
        self.fraud_tickets = Counter("noc_worker_fraud_tickets_created", "SECURITY_FRAUD ticket commands issued",
                                     registry=r)
        self.outputs = Counter("noc_worker_records_produced", "Records produced, by topic", ["topic"], registry=r)
        self.batch_seconds = Histogram("noc_worker_batch_seconds", "Processing time of one consumed batch",
                                       registry=r)
        self.active_model = Gauge("noc_worker_active_model",
                                  'Fraud model in use (1), per tenant; tenant "*" is the global model or the rules',
                                  ["tenant", "model_version"], registry=r)
        self.site_records = Counter("noc_worker_site_stage_records",
                                    "Site-stage records by outcome (PERSON windows counted, SITE windows, bad, ...)",
                                    ["kind"], registry=r)
        self.commit_seconds = Histogram("noc_worker_commit_seconds",
                                        "State flush (acknowledged) plus offset commit, per commit", registry=r)
        self.restore_seconds = Histogram("noc_worker_restore_seconds",
                                         "Changelog restore of newly assigned partitions, per assignment",
                                         buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600), registry=r)
        self.duplicate_acks = Counter("noc_worker_duplicate_acks_repaired",
                                      "Duplicate offsets removed from Faust's acked list (streams.faust_acks)",
                                      registry=r)

    def loop_timing(self, what: str, seconds: float) -> None:
        """A batch loop's state flush + offset commit (``commit``) or changelog restore (``restore``) took this."""
        (self.commit_seconds if what == "commit" else self.restore_seconds).observe(seconds)

    def set_models(self, versions: dict[int | None, str], fallback: str) -> None:
        """The active model per tenant (``None``: the global model); ``fallback`` when there is none at all."""
        self.active_model.clear()
        for tenant, version in versions.items():
            self.active_model.labels("*" if tenant is None else str(tenant), version).set(1)
        if None not in versions:
            self.active_model.labels("*", fallback).set(1)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
