"""What-if metrics: volumes and precision/recall against labels and ticket resolutions."""

from __future__ import annotations

from typing import Any

from streams.replay_diff import Snapshot
from streams.replay_metrics import PR, Metrics, Truth, confusion, metrics, render


def _score(eid: str, p: float) -> dict[str, Any]:
    return {"score_id": f"{eid}:m1", "event_id": eid, "occurred_at": 10, "fraud_probability": p}


def _fraud_cmd(eid: str) -> dict[str, Any]:
    return {"command_id": f"fraud:{eid}:m1", "related_kind": "FRAUD_SCORE", "related_event_id": f"{eid}:m1",
            "issued_at": 10, "category": "SECURITY_FRAUD"}


def _snap() -> Snapshot:
    s = Snapshot(0, 100)
    for eid, p in (("e1", 0.95), ("e2", 0.85), ("e3", 0.5), ("e4", 0.1), ("e5", 0.82)):
        s.add("fraud-scores", _score(eid, p))
    s.add("ticket-commands", _fraud_cmd("e1"))
    s.add("ticket-commands", _fraud_cmd("e2"))
    s.add("ticket-commands", {"command_id": "audit:f1", "issued_at": 10, "category": "SECURITY_AUDIT"})
    s.add("anomalies", {"anomaly_id": "a1", "window_end": 10})
    s.add("incidents", {"incident_id": "i1", "revision": 1, "first_seen": 10, "combined_severity": "HIGH"})
    s.add("incidents", {"incident_id": "i2", "revision": 1, "first_seen": 10, "combined_severity": "LOW"})
    return s


def _truth() -> Truth:
    labels = [{"event_id": e, "is_fraud": f, "scenario": "X" if f else "NONE"}
              for e, f in (("e1", True), ("e2", False), ("e3", True), ("e4", False), ("e5", True), ("zz", True))]
    tickets = [{"related_event_id": "e1", "resolution": "FRAUD_CONFIRMED", "status": "RESOLVED"},
               {"related_event_id": "e2:m0", "resolution": "FALSE_POSITIVE", "status": "CLOSED"},
               {"related_event_id": "e4", "resolution": "FALSE_POSITIVE", "status": "IN_PROGRESS"},  # not resolved
               {"related_event_id": "e5", "resolution": None, "status": "OPEN"}]
    return Truth().extend(labels, tickets)


def test_confusion_counts_only_items_with_truth() -> None:
    pr = confusion({"a", "b", "x"}, {"a": True, "b": False, "c": True, "d": False})
    assert (pr.tp, pr.fp, pr.fn, pr.tn) == (1, 1, 1, 1)
    assert pr.precision == 0.5 and pr.recall == 0.5
    empty = PR(0, 0, 0, 0)
    assert empty.precision is None and empty.recall is None


def test_metrics_volumes_and_precision_recall() -> None:
    m = metrics("live", _snap(), _truth(), fraud_threshold=0.8)
    assert m.volumes == {"anomalies": 1, "fraud_scores": 5, "fraud_alerts": 3, "incidents": 2,
                         "incidents_high_or_critical": 1, "tickets": 3, "fraud_tickets": 2}
    # flagged e1 (fraud), e2 (not), e5 (fraud); e3 missed; "zz" has no score, so it is not judged
    assert (m.scores.tp, m.scores.fp, m.scores.fn, m.scores.tn) == (2, 1, 1, 1)
    assert m.scores.precision == 2 / 3 and m.scores.recall == 2 / 3
    assert (m.tickets.tp, m.tickets.fp, m.tickets.fn) == (1, 1, 2)
    # resolutions: e1 confirmed (ticketed), e2 false positive (named by another model's score id, ticketed)
    assert (m.tickets_vs_resolutions.tp, m.tickets_vs_resolutions.fp) == (1, 1)


def test_raising_the_threshold_trades_recall_for_precision() -> None:
    low = metrics("low", _snap(), _truth(), 0.3)
    high = metrics("high", _snap(), _truth(), 0.9)
    assert low.volumes["fraud_alerts"] > high.volumes["fraud_alerts"]
    assert (low.scores.recall or 0) > (high.scores.recall or 0)
    assert (high.scores.precision or 0) >= (low.scores.precision or 0)


def test_round_trip_and_render() -> None:
    m = metrics("live", _snap(), _truth(), 0.8)
    assert Metrics.from_dict(m.to_dict()) == m
    text = render([m, metrics("what-if", _snap(), _truth(), 0.5)])
    assert "what-if" in text and "fraud alerts vs labels precision" in text and "0.667" in text


def test_later_label_replaces_earlier() -> None:
    t = Truth().extend([{"event_id": "e", "is_fraud": False, "scenario": "NONE"},
                        {"event_id": "e", "is_fraud": True, "scenario": "GPS_SPOOFING"}])
    assert t.labels == {"e": True} and t.scenarios == {"e": "GPS_SPOOFING"}
    assert t.resolution_of("e") is None
