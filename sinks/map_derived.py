"""Record -> row for the derived topics: signal windows, baselines, anomalies, incidents, fraud scores."""

from __future__ import annotations

import math
from typing import Any

import orjson

from sinks.map_inputs import Record, ts
from sinks.tables import Row, TableSpec


def as_json(value: Any) -> str:
    """JSON text for a JSONB column (NaN/inf, which JSON lacks, become null)."""
    return orjson.dumps(value).decode()


WINDOWS = TableSpec(
    "windows", "signal_windows",
    ("window_id", "scope", "tenant_id", "site_id", "person_id", "window_start", "window_end", "phone_events_count",
     "location_updates_count", "movement_distance_meters", "tasks_completed_count", "tour_checkpoints_scanned",
     "tours", "event_count", "late_event_count"),
    key=("window_id", "tenant_id", "window_start"), on_conflict="update", partition_column="window_start")


def window_row(r: Record) -> Row:
    return (r["window_id"], r["scope"], r["tenant_id"], r["site_id"], r["person_id"], ts(r["window_start"]),
            ts(r["window_end"]), r["phone_events_count"], r["location_updates_count"],
            r["movement_distance_meters"], r["tasks_completed_count"], r["tour_checkpoints_scanned"],
            as_json(r["tours"]), r["event_count"], r["late_event_count"])


# Latest state wins: an update with an older updated_at (redelivery, reordering) is ignored.
BASELINES = TableSpec(
    "baselines", "baselines",
    ("baseline_id", "tenant_id", "site_id", "metric", "hour_of_week", "sample_count", "mean", "m2", "stddev",
     "is_stable", "dynamic_threshold", "false_positive_rate", "feedback_total", "false_positives",
     "last_threshold_update", "updated_at"),
    key=("baseline_id", "tenant_id"), on_conflict="update", newer="updated_at")


def baseline_row(r: Record) -> Row:
    return (r["baseline_id"], r["tenant_id"], r["site_id"], r["metric"], r["hour_of_week"], r["sample_count"],
            r["mean"], r["m2"], r["stddev"], r["is_stable"], r["dynamic_threshold"], r["false_positive_rate"],
            r["feedback_total"], r["false_positives"], ts(r["last_threshold_update"]), ts(r["updated_at"]))


ANOMALIES = TableSpec(
    "anomalies", "anomalies",
    ("anomaly_id", "tenant_id", "site_id", "person_id", "window_id", "baseline_id", "metric", "observed",
     "expected", "stddev", "threshold", "score", "severity", "window_start", "window_end"),
    key=("anomaly_id", "tenant_id"), on_conflict="update")


def anomaly_row(r: Record) -> Row:
    return (r["anomaly_id"], r["tenant_id"], r["site_id"], r["person_id"], r["window_id"], r["baseline_id"],
            r["metric"], r["observed"], r["expected"], r["stddev"], r["threshold"], r["score"], r["severity"],
            ts(r["window_start"]), ts(r["window_end"]))


# The highest revision wins; an equal or lower one (redelivery, reordering) is ignored.
INCIDENTS = TableSpec(
    "incidents", "incidents",
    ("incident_id", "tenant_id", "site_id", "person_id", "status", "combined_severity", "kinds",
     "related_event_ids", "evidence", "title", "first_seen", "last_seen", "revision", "updated_at"),
    key=("incident_id", "tenant_id"), on_conflict="update", newer="revision", strict=True)


def incident_row(r: Record) -> Row:
    return (r["incident_id"], r["tenant_id"], r["site_id"], r["person_id"], r["status"], r["combined_severity"],
            list(r["kinds"]), list(r["related_event_ids"]), as_json(r["evidence"]), r["title"],
            ts(r["first_seen"]), ts(r["last_seen"]), r["revision"], ts(r["updated_at"]))


INCIDENT_EVENTS = TableSpec(
    "incident_events", "incident_events",
    ("incident_id", "event_id", "tenant_id", "kind", "severity", "occurred_at", "summary"),
    key=("incident_id", "tenant_id", "event_id"))


def incident_event_rows(r: Record) -> list[Row]:
    return [(r["incident_id"], e["event_id"], r["tenant_id"], e["kind"], e["severity"], ts(e["occurred_at"]),
             e["summary"]) for e in r["evidence"]]


FRAUD_SCORES = TableSpec(
    "fraud_scores", "fraud_scores",
    ("score_id", "event_id", "tenant_id", "site_id", "person_id", "device_id", "shift_id", "event_type",
     "occurred_at", "fraud_probability", "risk_level", "model_version", "reasons", "feature_names", "features"),
    key=("score_id", "tenant_id", "occurred_at"), partition_column="occurred_at")


def fraud_score_row(r: Record) -> Row:
    reasons = [{**x, "value": _finite(x["value"]), "contribution": _finite(x["contribution"])} for x in r["reasons"]]
    return (r["score_id"], r["event_id"], r["tenant_id"], r["site_id"], r["person_id"], r["device_id"],
            r["shift_id"], r["event_type"], ts(r["occurred_at"]), r["fraud_probability"], r["risk_level"],
            r["model_version"], as_json(reasons), list(r["feature_names"]), [float(v) for v in r["features"]])


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
