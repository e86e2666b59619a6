"""Reasons name the evidence in words, and a trained model's leading reason for each scenario is its evidence."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from models.features import FEATURE_NAMES, INDEX, N_FEATURES
from models.reasons import describe
from models.simsource import sim_history
from models.train import TrainConfig, build_dataset, time_split, train_model


def vec(**values: float) -> list[float]:
    v = [math.nan] * N_FEATURES
    for k, x in values.items():
        v[INDEX[k]] = x
    return v


def test_descriptions_say_what_was_seen() -> None:
    v = vec(tour_rounds_done=2.4, tour_rounds_due=6.0, tour_completion_ratio=0.4)
    assert describe("tour_completion_ratio", v) == "2 of 6 tour rounds done"
    assert describe("fixes_before_punch_1h", vec(fixes_before_punch_1h=0.0)) == \
        "no fixes on the approach to the site in the hour before"
    assert describe("speed_kmh_since_last_fix", vec(speed_kmh_since_last_fix=412.0, km_from_last_fix=41.2,
                                                    minutes_since_last_fix=6.0)) == \
        "41.2 km in 6 min since the previous fix: 412 km/h beyond both GPS errors"
    assert describe("geofence_distance_m", vec(geofence_distance_m=180.0, gps_accuracy_m=9.0)) == \
        "180 m outside the geofence with a 9 m GPS fix"
    assert describe("share_fixes_away_since_check_in", vec(share_fixes_away_since_check_in=0.75,
                                                           fixes_since_check_in=8.0)) == \
        "75% of 8 fixes since the check-in far from where it was made"
    assert describe("activity_since_check_in", vec(activity_since_check_in=0.0)) == \
        "no phone signal at all since the check-in"
    assert describe("face_match_score", vec(face_match_score=0.31)).startswith("face match 0.31: the selfie does not")
    assert describe("gps_accuracy_ratio_to_usual", vec(gps_accuracy_ratio_to_usual=0.1, gps_accuracy_m=1.0)) \
        .startswith("a 1 m fix, far more precise")
    assert describe("minutes_late_vs_habit", vec(minutes_late_vs_habit=42.0)) == \
        "42 min later than this guard usually arrives for a shift"
    assert describe("face_match_score", vec()) == "face match score: unknown"
    for name in FEATURE_NAMES:  # every feature describes a zero and a typical value without failing
        for x in (0.0, 1.0, 37.5):
            assert describe(name, vec(**{n: x for n in FEATURE_NAMES}))


# The evidence each scenario should be explained by (its leading reason, for most detected frauds).
EVIDENCE = {
    "BUDDY_PUNCHING": {"face_match_score", "device_registered", "device_other_people_24h", "device_new_for_person",
                       "activity_since_check_in", "fixes_since_check_in", "share_fixes_away_since_check_in",
                       "longest_signal_gap_min", "device_punches_24h"},
    "GPS_SPOOFING": {"is_mock_location", "gps_accuracy_m", "gps_accuracy_ratio_to_usual", "mock_fixes_2h",
                     "location_jumps_2h", "share_fixes_away_since_check_in", "approach_kmh", "fixes_before_punch_1h",
                     "km_from_last_fix", "speed_kmh_since_last_fix",
                     # at the check-out: the spoofer was not there to scan the checkpoints
                     "tour_completion_ratio", "tour_rounds_done", "longest_scan_gap_min"},
    "IMPOSSIBLE_TRAVEL": {"speed_kmh_since_last_fix", "speed_over_own_fastest", "km_from_last_fix",
                          "minutes_since_last_fix", "speed_kmh_since_last_punch", "approach_kmh"},
    "OFF_GEOFENCE": {"geofence_distance_m", "geofence_excess_over_accuracy_m", "geofence_distance_over_usual_acc",
                     "geofence_distance_vs_habit_m"},
    "GHOST_SHIFT": {"activity_since_check_in", "fixes_since_check_in", "longest_signal_gap_min", "shift_unknown",
                    "shift_missing", "rostered_here_now", "tour_completion_ratio", "tour_rounds_done",
                    "longest_scan_gap_min", "location_updates_2h", "phone_events_2h",
                    # half the ghosts punch out from home: the check-out's position is the evidence
                    "geofence_distance_m", "geofence_excess_over_accuracy_m", "geofence_distance_over_usual_acc",
                    "geofence_distance_vs_habit_m", "km_from_last_fix", "speed_over_own_fastest",
                    "speed_kmh_since_last_fix"},
    "MISSED_TOUR": {"tour_completion_ratio", "tour_rounds_done", "tour_rounds_due", "longest_scan_gap_min",
                    "scan_gap_phone_on_min",
                    "checkpoint_scans_2h"},
    "LATE_ARRIVAL": {"minutes_from_shift_start", "minutes_late_vs_habit", "minutes_from_usual_check_in"},
}


@pytest.fixture(scope="module")
def trained() -> tuple[object, object]:
    ds = build_dataset(sim_history(21, 8, variation="randomised", tenants=1, sites_per_tenant=8, guards_per_site=8,
                                   scenario_rate=0.35))
    fit_part, hold = time_split(ds, 0.25)
    res = train_model(fit_part, hold, "xgboost", None, datetime(2026, 12, 1, tzinfo=UTC),
                      TrainConfig(n_trees=80, max_depth=5))
    return res.scorer, ds


def test_each_scenarios_leading_reason_is_its_evidence(trained: tuple[object, object]) -> None:
    from models.scoring import Scorer
    from models.train import Dataset

    scorer, ds = trained
    assert isinstance(scorer, Scorer) and isinstance(ds, Dataset)
    results = scorer.score_many(ds.X.tolist())
    leading: dict[str, Counter[str]] = {}
    in_top3: dict[str, list[bool]] = {}
    for y, scen, r in zip(ds.y, ds.scenarios, results, strict=True):
        if y and r.fraud_probability >= 0.5 and r.reasons:
            leading.setdefault(scen, Counter())[r.reasons[0]["feature"]] += 1
            in_top3.setdefault(scen, []).append(any(x["feature"] in EVIDENCE[scen] for x in r.reasons))
    assert set(leading) == set(EVIDENCE), leading
    for scen, counts in leading.items():
        # the most frequent leading reason is the scenario's evidence, and nearly every flagged fraud has its
        # evidence among the three reasons given
        assert counts.most_common(1)[0][0] in EVIDENCE[scen], (scen, counts.most_common(5))
        assert sum(in_top3[scen]) / len(in_top3[scen]) >= 0.8, (scen, counts.most_common(5))
    # and the words: no raw feature name leaks into a description
    descs = [r["description"] for res in results[:500] for r in res.reasons]
    assert descs and not any("_" in d for d in descs)
    assert np.isfinite([res.fraud_probability for res in results]).all()
