"""Hostile inputs to the fraud features, the calibration and the artifact: bounded state, no leaks between
people, refusal of a malformed calibration."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from models_world import world

from models.artifact import Artifact, ArtifactError
from models.calibration import apply, cross_fitted, fit_isotonic
from models.features import MAX_TOURS, HistoryFeaturizer, PersonState


def _hostile(records: list[tuple[str, dict[str, Any]]], person: str) -> list[tuple[str, dict[str, Any]]]:
    """The same history with a flood of hostile activity for one person: hundreds of distinct tours, NaN and
    huge accuracies, positions at the poles, signals stamped out of order."""
    out: list[tuple[str, dict[str, Any]]] = []
    n = 0
    for stem, rec in records:
        out.append((stem, rec))
        if stem == "activity_signal" and rec["person_id"] == person:
            t = int(rec["occurred_at"])
            for k in range(3):
                n += 1
                out.append(("activity_signal", {
                    **rec, "event_id": f"hostile-{n}", "occurred_at": t - k * 90_000, "kind": "TOUR_CHECKPOINT_SCANNED",
                    "tour_id": f"evil-{n}", "checkpoint_id": f"cp-{n}", "lat": 89.99 if k else -89.99, "lon": 179.99,
                    "accuracy_m": [math.nan, 1e12, -5.0][k], "is_mock_location": k == 1}))
    return out


def test_hostile_activity_of_one_person_changes_nobody_elses_vectors_and_stays_bounded() -> None:
    clean = world(days=5, people=8, fraud_rate=0.2, seed=9)
    victim = next(r["person_id"] for s, r in clean if s == "activity_signal")
    base = {r["event_id"]: v for r, v in HistoryFeaturizer().run(clean)}
    feat = HistoryFeaturizer()
    hostile = {r["event_id"]: (r["person_id"], v) for r, v in feat.run(_hostile(clean, victim))}
    assert hostile.keys() == base.keys()
    others = [e for e, (p, _) in hostile.items() if p != victim]
    assert others
    for e in others:  # exactly the clean run's vectors (NaN equal to NaN)
        assert np.array_equal(np.asarray(hostile[e][1]), np.asarray(base[e]), equal_nan=True), e
    for e, (p, v) in hostile.items():
        if p == victim:
            assert all(not math.isinf(x) for x in v), e
    ps = feat.persons[(1, victim)]
    assert len(ps.since_in_tours) <= MAX_TOURS and len(ps.activity) <= 512
    assert PersonState.from_dict(json.loads(json.dumps(ps.to_dict()))).to_dict() == ps.to_dict()


def test_state_written_before_the_new_fields_still_loads() -> None:
    old = {"last_fix": [1.0, 0.0, 0.0, 5.0], "activity": [[1, 1, 0]], "check_ins": [1], "open_check_in": 1,
           "open_site": "s", "since_in_activity": 2, "since_in_checkpoints": ["a"], "devices": {"d": 1}}
    ps = PersonState.from_dict(old)
    assert ps.since_in_tours == {} and ps.open_pos is None and ps.max_scan_gap == 0 and ps.fast_kmh is None


def test_isotonic_calibration_is_monotone_bounded_and_cross_fitted() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-(z - 1)))).astype(np.int8)
    cal = fit_isotonic(z, y)
    p = apply(cal, np.linspace(-10, 10, 201))
    assert np.all(np.diff(p) >= 0) and p.min() >= 0.001 and p.max() <= 0.999
    # calibrated: the mean score of the rows above 0.8 is close to their observed fraud share
    q = cross_fitted(z, y)
    hi = q >= 0.8
    assert hi.sum() > 100 and abs(float(y[hi].mean()) - float(q[hi].mean())) < 0.05
    assert np.all(fit_isotonic([1.0, 2.0], [0, 0])["y"] == np.array([0.001]))  # no fraud at all: never 0


@pytest.mark.parametrize("cal", [{"method": "platt"}, {"method": "isotonic", "x": [1.0], "y": []},
                                 {"method": "isotonic", "x": [], "y": []}, "isotonic"])
def test_malformed_calibration_in_an_artifact_is_refused(cal: object) -> None:
    doc = {"format": "nocstream-model/1", "version": "v", "algorithm": "xgboost", "feature_names": [],
           "feature_hash": "h", "margin_offset": 0.0, "booster": "{}", "calibration": cal}
    with pytest.raises(ArtifactError, match="calibration"):
        Artifact.from_bytes(json.dumps(doc).encode())
