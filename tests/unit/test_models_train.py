"""Metrics, dataset building with label joins, time split, refusal on thin data, training, compare-and-activate."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from models_world import world

from models.features import FEATURE_NAMES
from models.feedback import label_from_ticket
from models.metrics import evaluate, pr_auc, precision_at_recall, recall_by_group, roc_auc
from models.scoring import RuleScorer, Scorer, fraud_score_record, score_id
from models.train import (
    Dataset,
    TrainConfig,
    TrainingDataError,
    build_dataset,
    compare_on_holdout,
    fit,
    make_version,
    time_split,
    train_model,
)

FAST = TrainConfig(n_trees=40, max_depth=4)
NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def test_metrics_on_hand_computed_cases() -> None:
    y, p = [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]
    assert pr_auc(y, p) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert roc_auc(y, p) == pytest.approx(0.75)
    assert precision_at_recall(y, p, 0.8) == (pytest.approx(2 / 3), pytest.approx(0.7))
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5) and pr_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(pr_auc([0, 0], [0.1, 0.2])) and math.isnan(roc_auc([1, 1], [0.1, 0.2]))
    m = evaluate([1, 0, 0, 0, 1], [0.9, 0.1, 0.2, 0.3, 0.8])
    assert m.pr_auc == 1.0 and m.roc_auc == 1.0 and m.imbalance_ratio == 1.5 and m.to_dict()["positives"] == 2
    assert recall_by_group([1, 1, 0, 1], [0.9, 0.2, 0.9, 0.7], ["A", "B", "NONE", "A"], 0.5) == {"A": (2, 1.0),
                                                                                             "B": (1, 0.0)}


@pytest.fixture(scope="module")
def history() -> list[tuple[str, dict[str, Any]]]:
    return world(days=24, people=18, fraud_rate=0.1, seed=3)


def test_dataset_joins_simulator_labels_and_ticket_resolutions(history: list[tuple[str, dict[str, Any]]]) -> None:
    base = build_dataset(history)
    assert len(base) == 24 * 18 * 2 and base.unlabelled == 0 and base.X.shape[1] == len(FEATURE_NAMES)
    frauds = [e for e, y in zip(base.event_ids, base.y, strict=True) if y]
    legit = [e for e, y in zip(base.event_ids, base.y, strict=True) if not y]
    # a resolved ticket about a fraud score (by score id) says FALSE_POSITIVE; another about an event id says FRAUD
    late = int(base.times.max()) + 1
    tickets = [("ticket", _ticket("tk-1", score_id(frauds[0], "rules-v1"), "FALSE_POSITIVE", late)),
               ("ticket", _ticket("tk-2", legit[0], "FRAUD_CONFIRMED", late)),
               ("ticket", _ticket("tk-3", legit[1], "RESOLVED_OTHER", late))]
    ds = build_dataset([*history, *tickets])
    lab = dict(zip(ds.event_ids, ds.y.tolist(), strict=True))
    assert lab[frauds[0]] == 0 and lab[legit[0]] == 1 and lab[legit[1]] == 0
    assert ds.positives == base.positives
    # tenant filter
    assert len(build_dataset(history, tenant=2)) == 0


def _ticket(tid: str, related: str, resolution: str, t: int) -> dict[str, Any]:
    return {"event_id": f"{tid}-r", "tenant_id": 1, "site_id": None, "person_id": None, "occurred_at": t,
            "received_at": t, "ticket_id": tid, "ticket_no": None, "category": "SECURITY_FRAUD",
            "source": "SYSTEM_GENERATED", "status": "RESOLVED", "priority": "HIGH", "resolution": resolution,
            "title": "", "description": "", "related_event_id": related, "actor": "analyst"}


def test_time_split_has_no_leakage(history: list[tuple[str, dict[str, Any]]]) -> None:
    ds = build_dataset(history)
    train, test = time_split(ds, 0.25)
    assert len(train) + len(test) == len(ds) and abs(len(test) - 0.25 * len(ds)) <= 1
    assert train.times.max() <= test.times.min()
    with pytest.raises(ValueError):
        time_split(ds, 1.0)


def test_refuses_thin_data_saying_what_is_missing() -> None:
    ds = build_dataset(world(days=3, people=6, fraud_rate=0.0, seed=1))
    train, test = time_split(ds, 0.2)
    with pytest.raises(TrainingDataError) as err:
        train_model(train, test, "xgboost", 1, NOW, FAST)
    msg = str(err.value)
    assert "36 labelled attendance events (need at least 200)" in msg
    assert "0 fraud labels in the training period" in msg and "0 fraud labels in the holdout" in msg


def test_train_auto_keeps_the_better_model(history: list[tuple[str, dict[str, Any]]]) -> None:
    train, test = time_split(build_dataset(history), 0.3)
    r = train_model(train, test, "auto", 1, NOW, FAST)
    assert set(r.candidates) == {"xgboost", "lightgbm"}
    assert r.metrics.pr_auc == max(m.pr_auc for m in r.candidates.values())
    assert r.metrics.pr_auc > 0.8 and r.metrics.roc_auc > 0.9
    assert r.artifact.version == make_version(1, r.artifact.algorithm, NOW)
    assert r.metrics_dict()["train_size"] == len(train) and "candidates" in r.metrics_dict()
    assert make_version(None, "xgboost", NOW) == "global-xgb-20260401-120000-000"


def test_compare_on_the_same_holdout(history: list[tuple[str, dict[str, Any]]]) -> None:
    train, test = time_split(build_dataset(history), 0.3)
    good = Scorer(fit("xgboost", train, "t1-xgb-good", FAST))
    noise = Dataset(train.X, np.random.default_rng(0).permutation(train.y), train.times, train.event_ids,
                    train.scenarios, train.tenants)
    weak = Scorer(fit("xgboost", noise, "t1-xgb-weak", TrainConfig(n_trees=5, max_depth=2)))
    assert compare_on_holdout(good, None, test).activate
    c = compare_on_holdout(good, weak, test)
    assert c.activate and c.active_pr_auc is not None and c.candidate_pr_auc > c.active_pr_auc
    assert not compare_on_holdout(weak, good, test).activate
    assert not compare_on_holdout(good, good, test).activate  # a tie keeps the active model


def test_ticket_resolution_labels_the_prediction() -> None:
    att = {"event_id": "att-9", "tenant_id": 1, "site_id": "s-1", "person_id": "p-1", "occurred_at": 1000,
           "received_at": 1000, "event_type": "CHECK_IN", "shift_id": None, "lat": 0.0, "lon": 0.0,
           "accuracy_m": 5.0, "device_id": "d-1", "is_mock_location": True, "face_match_score": None}
    from models.features import INDEX, N_FEATURES

    vec = [float("nan")] * N_FEATURES
    vec[INDEX["is_check_in"]], vec[INDEX["is_mock_location"]] = 1.0, 1.0
    score = fraud_score_record(att, vec, RuleScorer().score(vec))
    confirmed = label_from_ticket(_ticket("tk", score["score_id"], "FRAUD_CONFIRMED", 5000), score)
    assert confirmed == {"label_id": "TICKET_RESOLUTION:att-9", "tenant_id": 1, "site_id": "s-1", "person_id": "p-1",
                         "event_id": "att-9", "is_fraud": True, "scenario": "GPS_SPOOFING",
                         "source": "TICKET_RESOLUTION", "occurred_at": 1000}
    fp = label_from_ticket(_ticket("tk", "att-9", "FALSE_POSITIVE", 5000), score)
    assert fp is not None and fp["is_fraud"] is False and fp["scenario"] == "NONE"
    assert fp["label_id"] == confirmed["label_id"]  # a later resolution replaces the earlier label
    assert label_from_ticket(_ticket("tk", "att-9", "DUPLICATE", 5000), score) is None
    assert label_from_ticket(dict(_ticket("tk", "att-9", "FRAUD_CONFIRMED", 5000), status="OPEN"), score) is None
    with pytest.raises(ValueError, match="not score"):
        label_from_ticket(_ticket("tk", "other", "FRAUD_CONFIRMED", 5000), score)
    from schemas.serde import store

    assert store().decode(store().encode("label", confirmed))[0] == "label"


def test_late_evidence_check_ins_are_not_fitted_on_but_stay_evaluated() -> None:
    """A MISSED_TOUR label on a check-in has no evidence at that punch: left out of fitting, not of the holdout."""
    from models.features import INDEX, N_FEATURES
    from models.train import fit_rows, late_evidence_rows

    n = 8
    X = np.zeros((n, N_FEATURES))
    X[:, INDEX["is_check_in"]] = [1, 1, 0, 1, 1, 0, 1, 0]
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=np.int8)
    scen = ["MISSED_TOUR", "GPS_SPOOFING", "MISSED_TOUR", "NONE", "MISSED_TOUR", "NONE", "NONE", "NONE"]
    ds = Dataset(X, y, np.arange(n, dtype=np.int64), [f"e{i}" for i in range(n)], scen, np.ones(n, dtype=np.int64))
    assert late_evidence_rows(ds).tolist() == [True, False, False, False, True, False, False, False]
    kept = fit_rows(ds)
    assert kept.event_ids == ["e1", "e2", "e3", "e5", "e6", "e7"]  # the check-out labelled MISSED_TOUR stays
    r_train, r_test = time_split(build_dataset(world(days=30, people=16, fraud_rate=0.12, seed=1)), 0.3)
    r = train_model(r_train, r_test, "xgboost", 1, NOW, FAST)
    assert r.test_size == len(r_test) and r.metrics.positives == r_test.positives  # the holdout is untouched
    assert r.late_evidence_excluded == int(late_evidence_rows(r_train).sum())
    assert r.metrics_dict()["late_evidence_excluded"] == r.late_evidence_excluded


def test_punches_older_than_the_activity_history_only_warm_up() -> None:
    """Activity is kept 30 days, attendance 90: older punches would be featurized without their activity."""
    from models.train import WARM_UP_MS, rows_from

    day = 86_400_000
    assert rows_from({}) is None and rows_from({"attendance": 5 * day}) is None
    assert rows_from({"attendance": 5 * day, "activity": 5 * day + 60_000}) is None  # same start: complete
    assert rows_from({"attendance": 0, "activity": 60 * day}) == 60 * day + WARM_UP_MS
    history = world(days=12, people=10, fraud_rate=0.2, seed=6)
    full = build_dataset(history)
    cut = int(np.sort(full.times)[len(full) // 2])
    part = build_dataset(history, rows_from_ms=cut)
    assert len(part) == int((full.times >= cut).sum()) and part.times.min() >= cut
    # the rows kept have exactly the features they have in the full replay (the state was warmed up)
    idx = {e: i for i, e in enumerate(full.event_ids)}
    rows = np.asarray([full.X[idx[e]] for e in part.event_ids])
    assert np.array_equal(rows, part.X, equal_nan=True)
