"""Feature semantics, bounded state, and no training/serving skew."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
import pytest
from models_world import world

from models.features import (
    FEATURE_HASH,
    FEATURE_NAMES,
    INDEX,
    MAX_ACTIVITY,
    MAX_DEVICE_PUNCHES,
    DeviceState,
    HistoryFeaturizer,
    PersonState,
    Roster,
    build_features,
    observe_activity,
    observe_attendance,
    pack_activity,
)
from schemas.serde import store

T = 1_772_420_400_000  # 2026-03-02 06:00 Africa/Nairobi (03:00 UTC)
MIN = 60_000
SITE = {"tenant_id": 1, "site_id": "s-1", "name": "HQ", "timezone": "Africa/Nairobi", "lat": -1.2921, "lon": 36.8219,
        "geofence_radius_m": 100.0, "active": True, "updated_at": 0,
        "tours": [{"tour_id": "t", "checkpoint_ids": ["a", "b", "c"], "interval_minutes": 60}]}
PERSON = {"tenant_id": 1, "person_id": "p-1", "name": "A", "role": "GUARD", "home_site_id": "s-1",
          "device_ids": ["d-1"], "usual_check_in_minute": 360, "active": True, "updated_at": 0}
SHIFT = {"tenant_id": 1, "shift_id": "sh-1", "person_id": "p-1", "site_id": "s-1", "starts_at": T,
         "ends_at": T + 8 * 60 * MIN, "status": "SCHEDULED", "updated_at": 0}


def att(t: int, kind: str = "CHECK_IN", lat: float = -1.2921, lon: float = 36.8219, **kw: Any) -> dict[str, Any]:
    rec = {"event_id": f"e-{t}-{kind}", "tenant_id": 1, "site_id": "s-1", "person_id": "p-1", "occurred_at": t,
           "received_at": t, "event_type": kind, "shift_id": "sh-1", "lat": lat, "lon": lon, "accuracy_m": 10.0,
           "device_id": "d-1", "is_mock_location": False, "face_match_score": 0.9}
    rec.update(kw)
    return rec


def act(t: int, kind: str, **kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"event_id": f"a-{t}", "tenant_id": 1, "site_id": "s-1", "person_id": "p-1",
                           "occurred_at": t, "received_at": t, "kind": kind, "device_id": "d-1", "lat": None,
                           "lon": None, "accuracy_m": None, "is_mock_location": False, "checkpoint_id": None}
    rec.update(kw)
    return rec


def f(vec: list[float], name: str) -> float:
    return vec[INDEX[name]]


def test_feature_hash_is_sha256_of_the_names() -> None:
    assert FEATURE_HASH == hashlib.sha256("\n".join(FEATURE_NAMES).encode()).hexdigest()
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_first_check_in_on_site_on_time() -> None:
    v = build_features(att(T + 2 * MIN), PersonState(), DeviceState(), SITE, PERSON, SHIFT)
    assert f(v, "is_check_in") == 1.0
    assert f(v, "geofence_distance_m") == 0.0
    assert f(v, "minutes_from_shift_start") == pytest.approx(2.0)
    assert f(v, "minutes_from_usual_check_in") == pytest.approx(2.0)  # 06:02 local vs usual 06:00
    assert f(v, "local_hour") == pytest.approx(6 + 2 / 60)
    assert f(v, "device_registered") == 1.0 and f(v, "device_new_for_person") == 1.0
    assert f(v, "shift_missing") == 0.0 and f(v, "shift_unknown") == 0.0 and f(v, "shift_other_person") == 0.0
    for name in ("km_from_last_fix", "speed_kmh_since_last_fix", "minutes_since_check_in", "tour_completion_ratio"):
        assert math.isnan(f(v, name)), name  # no history, not a check-out


def test_missing_reference_data_gives_nan_not_zero() -> None:
    v = build_features(att(T, shift_id="ghost", face_match_score=None), PersonState(), DeviceState(), None, None, None)
    for name in ("geofence_distance_m", "device_registered", "minutes_from_shift_start", "face_match_score",
                 "minutes_from_usual_check_in"):
        assert math.isnan(f(v, name)), name
    assert f(v, "shift_unknown") == 1.0


def test_off_geofence_distance_and_accuracy_discount() -> None:
    # ~1.11 km north of the centre, radius 100 m, accuracy 300 m
    v = build_features(att(T, lat=-1.2921 + 0.01, accuracy_m=300.0), PersonState(), DeviceState(), SITE, PERSON, SHIFT)
    assert f(v, "geofence_distance_m") == pytest.approx(1112 - 100, abs=3)
    assert f(v, "geofence_excess_over_accuracy_m") == pytest.approx(1112 - 100 - 300, abs=3)


def test_impossible_travel_from_a_location_update() -> None:
    ps, ds = PersonState(), DeviceState()
    observe_activity(ps, act(T - 10 * MIN, "LOCATION_UPDATE", lat=-1.2921 + 0.5, lon=36.8219, accuracy_m=10.0))
    v = build_features(att(T), ps, ds, SITE, PERSON, SHIFT)
    assert f(v, "km_from_last_fix") == pytest.approx(55.6, abs=0.2)
    assert f(v, "minutes_since_last_fix") == pytest.approx(10.0)
    assert f(v, "speed_kmh_since_last_fix") == pytest.approx(333, abs=3)  # 55.6 km in 10 min
    assert math.isnan(f(v, "speed_kmh_since_last_punch"))


def test_buddy_punching_on_a_shared_device() -> None:
    ps_other, ps, ds = PersonState(), PersonState(), DeviceState()
    other = att(T - 5 * MIN, person_id="p-2", device_id="d-1")
    build_features(other, ps_other, ds, SITE, None, None)
    observe_attendance(ps_other, ds, other)
    v = build_features(att(T, device_id="d-1"), ps, ds, SITE, PERSON, SHIFT)
    assert f(v, "device_other_people_24h") == 1.0 and f(v, "device_punches_24h") == 1.0
    v2 = build_features(att(T, device_id="d-9"), ps, DeviceState(), SITE, PERSON, SHIFT)
    assert f(v2, "device_registered") == 0.0
    # 24 h later the other person's punch has left the window
    later = build_features(att(T + 25 * 60 * MIN, device_id="d-1"), ps, ds, SITE, PERSON, None)
    assert f(later, "device_other_people_24h") == 0.0


def test_check_out_tour_completion_and_activity_windows() -> None:
    ps, ds = PersonState(), DeviceState()
    a_in = att(T)
    build_features(a_in, ps, ds, SITE, PERSON, SHIFT)
    observe_attendance(ps, ds, a_in)
    for i, cp in enumerate(["a", "b", "c", "a"]):  # one round of 3 checkpoints and a bit, in the first hour
        observe_activity(ps, act(T + (10 + i) * MIN, "TOUR_CHECKPOINT_SCANNED", checkpoint_id=cp, tour_id="t",
                                 lat=-1.2921, lon=36.8219, accuracy_m=5.0))
    observe_activity(ps, act(T + 7 * 60 * MIN, "PHONE_EVENT"))
    observe_activity(ps, act(T + 7 * 60 * MIN + 1, "LOCATION_UPDATE", lat=-1.2921, lon=36.8219, is_mock_location=True))
    v = build_features(att(T + 8 * 60 * MIN, "CHECK_OUT"), ps, ds, SITE, PERSON, SHIFT)
    assert f(v, "minutes_since_check_in") == pytest.approx(480)
    assert f(v, "tour_rounds_done") == pytest.approx(4 / 3)  # 4 scans of a 3-checkpoint tour
    assert f(v, "tour_rounds_due") == 8.0  # a round every 60 min for 8 h
    assert f(v, "tour_completion_ratio") == pytest.approx(4 / 3 / 8)
    assert f(v, "longest_scan_gap_min") == pytest.approx(480 - 13)  # the last scan to the check-out
    assert f(v, "longest_signal_gap_min") == pytest.approx(7 * 60 - 13)  # the last scan to the phone event
    assert f(v, "scan_gap_phone_on_min") == pytest.approx(60)  # the phone signalled an hour before the check-out
    assert f(v, "fixes_since_check_in") == 5.0 and f(v, "share_fixes_away_since_check_in") == 0.0
    assert f(v, "rostered_here_now") == 1.0
    assert f(v, "activity_since_check_in") == 6.0
    assert f(v, "phone_events_2h") == 1.0 and f(v, "location_updates_2h") == 1.0
    assert f(v, "checkpoint_scans_2h") == 0.0  # scans were 7 h ago
    assert f(v, "mock_fixes_2h") == 1.0
    assert f(v, "punch_sequence_error") == 0.0
    assert f(v, "minutes_from_shift_end") == pytest.approx(0.0)
    assert math.isnan(f(v, "minutes_from_usual_check_in"))  # check-outs only


def test_usual_check_in_is_site_local_and_circular() -> None:
    site = dict(SITE, timezone="Europe/London")
    person = dict(PERSON, usual_check_in_minute=23 * 60 + 50)
    t = 1_751_328_000_000 - 50 * MIN  # 2025-06-30 23:10 UTC = 2025-07-01 00:10 BST
    v = build_features(att(t), PersonState(), DeviceState(), site, person, None)
    assert f(v, "minutes_from_usual_check_in") == pytest.approx(20.0)
    assert f(v, "local_hour") == pytest.approx(10 / 60)


def test_state_is_bounded_and_pruned_by_event_time() -> None:
    ps, ds = PersonState(), DeviceState()
    for i in range(3 * MAX_ACTIVITY):
        observe_activity(ps, act(T + i * 1000, "PHONE_EVENT"))
    assert len(ps.activity) <= MAX_ACTIVITY
    observe_activity(ps, act(T + 5 * 60 * MIN, "PHONE_EVENT"))
    assert len(ps.activity) == 1  # everything else is older than 2 h of event time
    for i in range(3 * MAX_DEVICE_PUNCHES):
        a = att(T + i * MIN, person_id=f"p-{i}")
        observe_attendance(PersonState(), ds, a)
    assert len(ds.punches) == MAX_DEVICE_PUNCHES
    for i in range(40):
        observe_attendance(ps, ds, att(T + i * MIN, device_id=f"d-{i}"))
    assert len(ps.devices) <= 16 and len(ps.check_ins) <= 32


def test_state_round_trips_through_json() -> None:
    ps, ds = PersonState(), DeviceState()
    observe_activity(ps, act(T - MIN, "TOUR_CHECKPOINT_SCANNED", checkpoint_id="a", lat=1.0, lon=2.0, accuracy_m=3.0))
    observe_attendance(ps, ds, att(T))
    ps2 = PersonState.from_dict(json.loads(json.dumps(ps.to_dict())))
    ds2 = DeviceState.from_dict(json.loads(json.dumps(ds.to_dict())))
    assert ps2 == ps and ds2 == ds
    assert PersonState.from_dict(None) == PersonState() and DeviceState.from_dict({}) == DeviceState()
    from dataclasses import fields

    assert set(ps.to_dict()) == {f.name for f in fields(PersonState)}  # every field is stored
    d = ps.to_dict()
    d["activity"].append(99)  # the stored value is a copy, not the live state
    assert len(ps.activity) == 1
    # one int per signal, ordered by time, (t, kind, mocked, jump) recoverable
    assert list(ps.activity) == [pack_activity(T - MIN, 3, 0, 0)] and ps.activity[0] >> 5 == T - MIN
    assert pack_activity(T, 0, 1, 1) < pack_activity(T + 1, 0, 0, 0)
    # states written before the packing: [t, kind, mocked, jump] lists, or three fields before the jump flag
    old = dict(d, activity=[[T - 2 * MIN, 1, 1], [T - MIN, 3, 0, 1]], unknown_field=1)
    assert list(PersonState.from_dict(old).activity) == [pack_activity(T - 2 * MIN, 1, 1, 0),
                                                         pack_activity(T - MIN, 3, 0, 1)]


def _same(a: list[float], b: list[float]) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))


def _worker_like(records: list[tuple[str, dict[str, Any]]]) -> dict[str, list[float]]:
    """Vectors as a live worker computes them: Avro-decoded records in delivery order, states kept as JSON
    table values between events (keyed by tenant and person / device), separate reference tables."""
    serde = store()
    persons: dict[tuple[int, str], str] = {}  # Faust-like tables: JSON values
    devices: dict[tuple[int, str], str] = {}
    sites: dict[tuple[int, str], dict[str, Any]] = {}
    people: dict[tuple[int, str], dict[str, Any]] = {}
    shifts: dict[tuple[int, str], dict[str, Any]] = {}
    live: dict[str, list[float]] = {}
    roster = Roster()
    for stem, rec in records:
        if stem not in ("site", "person", "shift", "activity_signal", "attendance_event"):
            continue
        _, rec = serde.decode(serde.encode(stem, rec))  # over the wire
        tn = int(rec["tenant_id"])
        if stem == "site":
            sites[(tn, rec["site_id"])] = rec
        elif stem == "person":
            people[(tn, rec["person_id"])] = rec
        elif stem == "shift":
            shifts[(tn, rec["shift_id"])] = rec
            roster.add(rec)
        elif stem == "activity_signal":
            ps = PersonState.from_dict(json.loads(persons.get((tn, rec["person_id"]), "{}")))
            observe_activity(ps, rec)
            persons[(tn, rec["person_id"])] = json.dumps(ps.to_dict())
        else:
            pk, dk = (tn, rec["person_id"]), (tn, rec["device_id"])
            ps = PersonState.from_dict(json.loads(persons.get(pk, "{}")))
            ds = DeviceState.from_dict(json.loads(devices.get(dk, "{}")))
            shift = shifts.get((tn, rec["shift_id"])) if rec["shift_id"] else \
                roster.covering(shifts, tn, rec["person_id"], rec["occurred_at"])
            vec = build_features(rec, ps, ds, sites.get((tn, rec["site_id"])), people.get(pk), shift)
            live[rec["event_id"]] = vec
            observe_attendance(ps, ds, rec, vec)
            persons[pk] = json.dumps(ps.to_dict())
            devices[dk] = json.dumps(ds.to_dict())
    return live


def test_training_rows_equal_live_scoring_vectors() -> None:
    """The training path (HistoryFeaturizer over a replay) and a live worker give bit-identical vectors."""
    records = world(days=4, people=9, fraud_rate=0.3, seed=5)
    training = {rec["event_id"]: vec for rec, vec in HistoryFeaturizer().run(records)}
    assert len(training) == 9 * 4 * 2
    live = _worker_like(records)
    assert live.keys() == training.keys()
    mismatched = [e for e in live if not _same(live[e], training[e])]
    assert not mismatched, mismatched[:3]
    # and the featurizer is deterministic
    again = {rec["event_id"]: vec for rec, vec in HistoryFeaturizer().run(records)}
    assert all(_same(again[e], training[e]) for e in training)


def test_simulated_stream_gives_the_same_vectors_to_training_and_scoring() -> None:
    """Same check on the simulator's stream (late deliveries, fraud scenarios, shared devices), and the
    dataset rows used for training are those vectors."""
    from models.simsource import sim_history
    from models.train import build_dataset

    records = list(sim_history(3, 2, tenants=2, sites_per_tenant=2, guards_per_site=4, late_rate=0.05,
                               scenario_rate=0.4))
    training = {rec["event_id"]: vec for rec, vec in HistoryFeaturizer().run(records)}
    live = _worker_like(records)
    assert len(training) > 40 and live.keys() == training.keys()
    assert not [e for e in live if not _same(live[e], training[e])]
    ds = build_dataset(records)
    assert ds.positives > 0 and len(ds) > 40
    assert all(_same(list(ds.X[i]), live[e]) for i, e in enumerate(ds.event_ids))


def test_reference_views_keep_every_field_the_features_read() -> None:
    """People and shifts are held as views (name, role and audit fields dropped): the vectors are the same."""
    from models.features import reference_view

    person, shift = reference_view("person", PERSON), reference_view("shift", SHIFT)
    assert "name" not in person and "updated_at" not in shift and reference_view("site", SITE) is SITE
    for kind, t in (("CHECK_IN", T + 5 * MIN), ("CHECK_OUT", T + 9 * 60 * MIN)):
        ps, ds = PersonState(), DeviceState()
        observe_activity(ps, act(T - MIN, "LOCATION_UPDATE", lat=-1.2921, lon=36.8219, accuracy_m=5.0))
        full = build_features(att(t, kind, device_id="dev-other"), ps, ds, SITE, PERSON, SHIFT)
        view = build_features(att(t, kind, device_id="dev-other"), ps, ds, SITE, person, shift)
        assert _same(full, view)


def test_roster_finds_the_shift_a_punch_does_not_name() -> None:
    roster, shifts = Roster(), {}
    for k, start in enumerate((T - 24 * 60 * MIN, T, T + 24 * 60 * MIN)):
        sh = {**SHIFT, "shift_id": f"sh-{k}", "starts_at": start, "ends_at": start + 8 * 60 * MIN}
        shifts[(1, sh["shift_id"])] = sh
        roster.add(sh)
    assert roster.covering(shifts, 1, "p-1", T + 10 * MIN)["shift_id"] == "sh-1"
    assert roster.covering(shifts, 1, "p-1", T + 14 * 60 * MIN) is None  # between shifts
    assert roster.covering(shifts, 1, "p-2", T) is None
    for k in range(10):  # bounded per person
        roster.add({**SHIFT, "shift_id": f"x-{k}", "starts_at": T + k * MIN, "ends_at": T + k * MIN + 1})
    assert len(roster.by_person[(1, "p-1")]) == 6
    named = build_features(att(T + 5 * MIN, shift_id=None), PersonState(), DeviceState(), SITE, PERSON,
                           shifts[(1, "sh-1")])
    ghost = build_features(att(T + 5 * MIN, shift_id=None), PersonState(), DeviceState(), SITE, PERSON, None)
    assert f(named, "rostered_here_now") == 1.0 and f(named, "shift_missing") == 1.0
    assert f(named, "minutes_from_shift_start") == pytest.approx(5.0)
    assert f(ghost, "rostered_here_now") == 0.0 and math.isnan(f(ghost, "minutes_from_shift_start"))
