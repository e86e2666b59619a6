"""Counters fed by the live feed this gateway consumes: predictions, detections, fraud tickets."""

from __future__ import annotations

import orjson

from gateway.hub import FeedEvent, type_label
from gateway.metrics import FEED_EVENTS, FRAUD_DETECTIONS, FRAUD_TICKETS, ML_PREDICTION_LATENCY, ML_PREDICTIONS

MAX_PREDICTION_LATENCY_S = 300.0  # larger gaps are replays of old event time, not scoring latency
RISKS = frozenset({"LOW", "MEDIUM", "HIGH", "CRITICAL"})
MAX_MODEL_LABELS = 100  # model versions come from the feed's producers: label at most this many, then "other"
_model_labels: set[str] = set()


def model_label(version: str) -> str:
    if version in _model_labels:
        return version
    if len(_model_labels) >= MAX_MODEL_LABELS or len(version) > 100:
        return "other"
    _model_labels.add(version)
    return version


def observe_feed(batch: list[FeedEvent]) -> None:
    for ev in batch:
        if not ev.live:
            continue
        FEED_EVENTS.labels(type_label(ev.type)).inc()
        if ev.type not in ("fraud_scored", "ticket_updated"):
            continue
        payload = orjson.loads(ev.data).get("payload")
        if not isinstance(payload, dict):
            continue
        if ev.type == "fraud_scored":
            risk = str(payload.get("risk_level") or "UNKNOWN")
            risk = risk if risk in RISKS else "UNKNOWN"
            ML_PREDICTIONS.labels(model_label(str(payload.get("model_version") or "unknown")), risk).inc()
            occurred = payload.get("occurred_at")
            if isinstance(occurred, int):
                lat = (ev.produced_ms - occurred) / 1000
                if 0 <= lat <= MAX_PREDICTION_LATENCY_S:
                    ML_PREDICTION_LATENCY.observe(lat)
            if risk in ("HIGH", "CRITICAL"):
                FRAUD_DETECTIONS.labels(risk).inc()
        elif (payload.get("version") == 1 and payload.get("related_kind") == "FRAUD_SCORE") or (
                payload.get("version") == 1 and "FRAUD" in str(payload.get("category", "")).upper()):
            FRAUD_TICKETS.inc()
