"""The judgement of each ``noc verify`` check: the figure it shows and where it turns from ✓ to ✗."""

from __future__ import annotations

import math

from infra.verify import (
    Check,
    judge_baselines,
    judge_checkpoints,
    judge_correlation,
    judge_escalation,
    judge_fraud_tickets,
    judge_latency,
    judge_model,
    judge_routes,
    judge_websocket,
    render,
)


def test_checkpoints_pass_only_when_some_were_scanned() -> None:
    assert judge_checkpoints({"s1": 0, "s2": 0}) == Check(
        "tour checkpoints collected", False, "0 checkpoints scanned in the last 2 h over 2 site(s)")
    assert judge_checkpoints({}).ok is False
    ok = judge_checkpoints({"s1": 3, "s2": 12})
    assert ok.ok and ok.figure == "15 checkpoints scanned in the last 2 h over 2 site(s) (most: 12 at s2)"


def test_correlation_needs_an_incident_with_related_alerts() -> None:
    fraud_only = [{"kinds": ["FRAUD_SCORE"], "evidence": [{"kind": "FRAUD_SCORE"}]}]
    assert not judge_correlation(fraud_only).ok
    assert not judge_correlation([]).ok
    two = [*fraud_only, {"kinds": ["ANOMALY", "NOC_ALERT"],
                         "evidence": [{"kind": "NOC_ALERT"}, {"kind": "NOC_ALERT"}, {"kind": "ANOMALY"}]}]
    c = judge_correlation(two)
    assert c.ok and c.figure == ("2 correlated incident(s), 1 across several kinds, 1 with related alerts "
                                 "(most in one: 2)")


def test_escalation_needs_every_high_finding_escalated_and_a_ticket() -> None:
    assert judge_escalation(4, 4, 4).ok
    assert not judge_escalation(4, 3, 3).ok  # one HIGH/CRITICAL finding without its ticket
    assert not judge_escalation(0, 0, 0).ok  # nothing to show: not verified
    assert not judge_escalation(2, 2, 0).ok  # escalated but no SECURITY_AUDIT ticket reached the database
    assert judge_escalation(4, 3, 3).figure == "3 of 4 HIGH/CRITICAL findings escalated; 3 SECURITY_AUDIT ticket(s)"


def test_baselines_need_stable_rows_with_a_rate_and_a_threshold() -> None:
    good = {"is_stable": True, "false_positive_rate": 0.25, "dynamic_threshold": 3.0, "feedback_total": 4}
    c = judge_baselines([good, {**good, "false_positive_rate": 0.0, "dynamic_threshold": 3.45}], 10)
    assert c.ok and c.figure == ("2 of 10 baselines stable; mean FP rate 12.50%, dynamic threshold 3.00-3.45; "
                                 "8 review(s) fed back")
    assert not judge_baselines([], 10).ok
    assert not judge_baselines([{**good, "dynamic_threshold": math.nan}], 1).ok
    assert not judge_baselines([{**good, "false_positive_rate": 1.5}], 1).ok
    assert not judge_baselines([{**good, "is_stable": False}], 1).ok


def test_model_needs_an_active_model_with_both_figures() -> None:
    met = {"pr_auc": 0.9684, "precision_at_80_recall": 0.994, "positives": 120, "negatives": 9000}
    c = judge_model([{"version": "old", "is_active": False, "metrics": met},
                     {"version": "v2", "is_active": True, "metrics": met}])
    assert c.ok and c.figure == ("active v2: PR-AUC 0.968, precision at 80% recall 0.994, 120 fraud / 9000 normal "
                                 "holdout samples")
    assert not judge_model([{"version": "old", "is_active": False, "metrics": met}]).ok
    assert not judge_model([]).ok
    assert not judge_model([{"version": "v3", "is_active": True, "metrics": {"pr_auc": 0.9}}]).ok
    assert not judge_model([{"version": "v3", "is_active": True,
                             "metrics": {"pr_auc": None, "precision_at_80_recall": 0.5}}]).ok


def test_fraud_tickets_need_their_scores_at_or_above_the_threshold() -> None:
    c = judge_fraud_tickets(7, {"NOC-2026-000001": 0.91, "NOC-2026-000002": 0.8})
    assert c.ok and c.figure == "7 auto-created SECURITY_FRAUD ticket(s): NOC-2026-000001 91%, NOC-2026-000002 80%"
    assert not judge_fraud_tickets(7, {"NOC-2026-000001": 0.91, "NOC-2026-000002": None}).ok
    assert not judge_fraud_tickets(1, {"NOC-2026-000001": 0.79}).ok
    assert not judge_fraud_tickets(0, {}).ok


def test_routes_need_success_within_500_ms() -> None:
    fine = [("/a/", 200, "success", 12.0), ("/b/", 200, "success", 499.0)]
    c = judge_routes(fine)
    assert c.ok and c.figure == "2 of 2 routes answered success, slowest 499 ms"
    slow = judge_routes([*fine, ("/c/", 200, "success", 500.0)])
    assert not slow.ok and slow.figure.endswith("failing: /c/ 200 success 500 ms")
    missing = judge_routes([*fine, ("/d/", 404, "error", 3.0)])
    assert not missing.ok and "/d/ 404 error 3 ms" in missing.figure
    assert not judge_routes([("/e/", 200, None, 3.0)]).ok  # 200 without the envelope
    assert not judge_routes([]).ok


def test_websocket_needs_an_event() -> None:
    assert judge_websocket("alert_created", 1.25, "waited").figure == "alert_created after 1.2 s (waited)"
    assert not judge_websocket(None, 30, "waited").ok


def test_latency_weighs_the_average_by_broadcasts_and_bounds_p95_by_the_worst_type() -> None:
    rows = [{"type": "a", "broadcast": 3, "avg_latency_ms": 100.0, "p95_latency_ms": 200.0},
            {"type": "b", "broadcast": 1, "avg_latency_ms": 500.0, "p95_latency_ms": 499.0},
            {"type": "c", "broadcast": 0, "avg_latency_ms": None, "p95_latency_ms": None}]
    c = judge_latency(rows)
    assert c.ok and c.figure.startswith("avg 200 ms, p95 <= 499 ms over 4 broadcasts")
    assert not judge_latency([{**rows[0], "avg_latency_ms": 300.0}]).ok  # avg at the target
    assert not judge_latency([{**rows[0], "p95_latency_ms": 500.0}]).ok
    assert not judge_latency([rows[2]]).ok  # nothing broadcast in the hour
    assert not judge_latency([]).ok


def test_render_marks_each_check() -> None:
    assert render([Check("a", True, "1"), Check("b", False, "2")]) == "✓ a: 1\n✗ b: 2"
