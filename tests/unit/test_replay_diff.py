"""Diff of two namespaces' outputs: keys, latest incident revision, NaN-aware equality, rendering."""

from __future__ import annotations

import math
from typing import Any

from streams.replay_diff import Snapshot, diff, key_of, render, same


def _anomaly(aid: str, end: int = 1_000, **kw: Any) -> dict[str, Any]:
    return {"anomaly_id": aid, "window_end": end, "score": 4.2, "severity": "HIGH", **kw}


def _incident(iid: str, rev: int, first: int = 1_000, **kw: Any) -> dict[str, Any]:
    return {"incident_id": iid, "revision": rev, "first_seen": first, "status": "OPEN", **kw}


def _score(eid: str, version: str = "rules-v1", p: float = 0.5, at: int = 1_000) -> dict[str, Any]:
    return {"score_id": f"{eid}:{version}", "event_id": eid, "occurred_at": at, "fraud_probability": p,
            "model_version": version, "features": [1.0, math.nan]}


def _cmd(cid: str, at: int = 1_000, **kw: Any) -> dict[str, Any]:
    return {"command_id": cid, "issued_at": at, "category": "SECURITY_AUDIT", **kw}


def _snap(*items: tuple[str, dict[str, Any]], lo: int = 0, hi: int = 10_000) -> Snapshot:
    s = Snapshot(lo, hi)
    for kind, rec in items:
        s.add(kind, rec)
    return s


def test_identical_snapshots_diff_empty_even_with_nan_features() -> None:
    items = [("anomalies", _anomaly("a1")), ("incidents", _incident("i1", 1)), ("incidents", _incident("i1", 2)),
             ("fraud-scores", _score("e1")), ("ticket-commands", _cmd("audit:f1"))]
    rep = diff(_snap(*items), _snap(*items), "noc", "sb")
    assert rep.identical
    assert all(k.empty for k in rep.kinds)
    assert "identical" in render(rep)


def test_latest_incident_revision_wins_whatever_the_arrival_order() -> None:
    s = _snap(("incidents", _incident("i1", 3, status="CLOSED")), ("incidents", _incident("i1", 2)))
    assert s.records["incidents"]["i1"]["revision"] == 3
    assert s.records["incidents"]["i1"]["status"] == "CLOSED"


def test_added_removed_changed_per_kind_with_fields() -> None:
    base = _snap(("anomalies", _anomaly("a1")), ("anomalies", _anomaly("a2")), ("incidents", _incident("i1", 2)))
    other = _snap(("anomalies", _anomaly("a1", score=5.0)), ("anomalies", _anomaly("a3")),
                  ("incidents", _incident("i1", 3, status="CLOSED")))
    rep = diff(base, other, "noc", "sb")
    assert not rep.identical
    an = rep.by_kind()["anomalies"]
    assert an.added == ["a3"] and an.removed == ["a2"]
    assert [c.key for c in an.changed] == ["a1"] and an.changed[0].fields == {"score": (4.2, 5.0)}
    inc = rep.by_kind()["incidents"].changed[0]
    assert inc.fields == {"revision": (2, 3), "status": ("OPEN", "CLOSED")}
    text = render(rep)
    assert "+ a3" in text and "- a2" in text and "~ a1: score: 4.2 -> 5.0" in text
    d = rep.to_dict()
    assert d["identical"] is False and d["kinds"]["anomalies"]["added"] == ["a3"]


def test_scores_and_fraud_tickets_line_up_across_model_versions() -> None:
    fraud_a = _cmd("fraud:e1:rules-v1", related_kind="FRAUD_SCORE", related_event_id="e1:rules-v1",
                   category="SECURITY_FRAUD")
    fraud_b = _cmd("fraud:e1:xgb-7", related_kind="FRAUD_SCORE", related_event_id="e1:xgb-7",
                   category="SECURITY_FRAUD")
    assert key_of("ticket-commands", fraud_a) == key_of("ticket-commands", fraud_b) == "fraud:e1"
    rep = diff(_snap(("fraud-scores", _score("e1")), ("ticket-commands", fraud_a)),
               _snap(("fraud-scores", _score("e1", "xgb-7", 0.9)), ("ticket-commands", fraud_b)))
    sc = rep.by_kind()["fraud-scores"]
    assert not sc.added and not sc.removed
    assert set(sc.changed[0].fields) == {"score_id", "model_version", "fraud_probability"}
    assert set(rep.by_kind()["ticket-commands"].changed[0].fields) == {"command_id", "related_event_id"}


def test_records_outside_the_range_are_ignored() -> None:
    s = _snap(("anomalies", _anomaly("early", end=-1)), ("anomalies", _anomaly("late", end=10_000)),
              ("anomalies", _anomaly("in", end=9_999)), ("signal-windows", {"window_id": "w"}))
    assert list(s.records["anomalies"]) == ["in"]
    s.add_out("signal-windows", {"x": 1})  # not a diffed kind: ignored
    assert s.counts() == {"anomalies": 1, "incidents": 0, "fraud-scores": 0, "ticket-commands": 0}


def test_same_handles_nested_nan_and_types() -> None:
    assert same([1.0, math.nan], [1.0, math.nan])
    assert same({"a": [math.nan]}, {"a": [math.nan]})
    assert not same({"a": 1}, {"b": 1})
    assert not same([1.0], [1.0, 2.0])
    assert not same(1.0, math.nan)


def test_render_limits_long_lists() -> None:
    base = _snap()
    other = _snap(*[("anomalies", _anomaly(f"a{i:02d}")) for i in range(30)])
    text = render(diff(base, other), limit=5)
    assert "… 25 more" in text and text.count("  + a") == 5
