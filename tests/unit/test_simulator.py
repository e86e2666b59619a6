"""The simulator's pure generator: determinism, scenario rates, labels, ordering, encoding, settings."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter

import pytest

from schemas import serde
from simulator.config import (
    AFTER_CHECK_IN_SCENARIOS,
    DAY_MS,
    HOUR_MS,
    SCENARIOS,
    SimConfig,
    parse_duration,
    parse_time,
)
from simulator.encoding import encoders, fastavro_encoder
from simulator.generate import TOPICS, SimRecord, Simulation, generate
from simulator.produce import BAD_TOPICS, malformed

SMALL = SimConfig(seed=3, tenants=1, sites_per_tenant=3, guards_per_site=5, span=DAY_MS, scenario_rate=0.3)


def _digest(cfg: SimConfig) -> str:
    enc = encoders()
    h = hashlib.sha256()
    for sr in generate(cfg):
        h.update(sr.topic.encode() + b"\0" + sr.key + b"\0" + enc[sr.stem](sr.record))
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    assert _digest(SMALL) == _digest(SMALL)
    other = SimConfig(seed=4, tenants=1, sites_per_tenant=3, guards_per_site=5, span=DAY_MS, scenario_rate=0.3)
    assert _digest(other) != _digest(SMALL)


@pytest.fixture(scope="module")
def week() -> tuple[list[SimRecord], Simulation]:
    # 8 sites x 8 guards over a week: a few hundred shifts, enough for rate checks within a few seconds.
    sim = Simulation(SimConfig(seed=11, tenants=1, sites_per_tenant=8, guards_per_site=8, span=7 * DAY_MS,
                               scenario_rate=0.35, late_rate=0.01))
    return list(sim), sim


def test_scenario_rates_within_binomial_tolerance(week: tuple[list[SimRecord], Simulation]) -> None:
    _, sim = week
    st = sim.stats
    per_kind = 0.35 / len(SCENARIOS)
    assert st.shifts > 300
    for kind in SCENARIOS:
        # BUDDY_PUNCHING needs a colleague on shift; the draws it could not honour are counted as fallbacks.
        drawn = st.scenarios[kind] + st.fallbacks[kind]
        mean = st.shifts * per_kind
        sd = math.sqrt(st.shifts * per_kind * (1 - per_kind))
        assert abs(drawn - mean) <= 4 * sd, (kind, drawn, mean)
    assert sum(st.scenarios.values()) > 0.7 * st.shifts * 0.35


def test_every_injected_scenario_is_labelled_and_labels_name_events(week: tuple[list[SimRecord], Simulation]) -> None:
    recs, sim = week
    events = {r.record["event_id"]: r.record for r in recs if r.topic == "attendance"}
    labels = [r.record for r in recs if r.topic == "labels"]
    assert labels, "the simulator must produce ground truth"
    frauds = Counter(lb["scenario"] for lb in labels if lb["is_fraud"])
    # Every fraudulent shift's check-in carries its scenario: as a fraud label, or (default "observable" mode,
    # GHOST_SHIFT / MISSED_TOUR) as a marker on a not-fraud label whose fraud label is on the check-out.
    shifts = Counter(lb["scenario"] for lb in labels if events[lb["event_id"]]["event_type"] == "CHECK_IN")
    for kind in SCENARIOS:
        if sim.stats.scenarios[kind]:
            assert shifts[kind] >= sim.stats.scenarios[kind], kind
            assert frauds[kind] > 0, kind
    for lb in labels:
        att = events[lb["event_id"]]  # each label is about an attendance event that exists
        assert (att["tenant_id"], att["person_id"]) == (lb["tenant_id"], lb["person_id"])
        if lb["is_fraud"]:
            assert lb["scenario"] != "NONE"
        elif lb["scenario"] != "NONE":
            assert lb["scenario"] in AFTER_CHECK_IN_SCENARIOS and att["event_type"] == "CHECK_IN", lb
    # Non-fraud check-ins are labelled too (negatives), and they outnumber frauds.
    assert sum(1 for lb in labels if not lb["is_fraud"]) > sum(frauds.values())


def _shift_labels(recs: list[SimRecord]) -> list[tuple[dict[str, object], dict[str, object] | None]]:
    """(check-in label, its check-out's label or None), each punch's label joined to the attendance event."""
    att = {r.record["event_id"]: r.record for r in recs if r.topic == "attendance"}
    label = {r.record["event_id"]: r.record for r in recs if r.topic == "labels"}
    by_person: dict[tuple[int, str], list[dict[str, object]]] = {}
    for a in sorted(att.values(), key=lambda a: (a["occurred_at"], a["event_id"])):
        by_person.setdefault((a["tenant_id"], a["person_id"]), []).append(a)
    out: list[tuple[dict[str, object], dict[str, object] | None]] = []
    for punches in by_person.values():
        for i, a in enumerate(punches):
            if a["event_type"] != "CHECK_IN":
                continue
            nxt = punches[i + 1] if i + 1 < len(punches) else None
            closes = nxt is not None and nxt["event_type"] == "CHECK_OUT"
            out.append((label[str(a["event_id"])], label[str(nxt["event_id"])] if closes and nxt else None))
    return out


def test_observable_labels_sit_on_the_punch_that_shows_the_fraud(week: tuple[list[SimRecord], Simulation]) -> None:
    recs, sim = week
    assert sim.cfg.shift_labels == "observable"  # the default
    pairs = _shift_labels(recs)
    rostered = {r.record["shift_id"] for r in recs if r.topic == "ref.shifts"}
    att = {r.record["event_id"]: r.record for r in recs if r.topic == "attendance"}
    seen: Counter[str] = Counter()
    for ci, co in pairs:
        kind = str(ci["scenario"])
        if kind in AFTER_CHECK_IN_SCENARIOS and co is not None:
            # the check-out is the fraud; the check-in only when the shift is visibly off the roster
            assert co["is_fraud"] and co["scenario"] == kind, (ci, co)
            shift = att[ci["event_id"]]["shift_id"]
            assert ci["is_fraud"] == (kind == "GHOST_SHIFT" and (shift is None or shift not in rostered)), ci
            seen[f"{kind}/out"] += 1
        elif kind == "LATE_ARRIVAL":
            assert ci["is_fraud"] and (co is None or not co["is_fraud"])
            seen[kind] += 1
    assert seen["GHOST_SHIFT/out"] >= 5 and seen["MISSED_TOUR/out"] >= 5 and seen["LATE_ARRIVAL"] >= 5, seen
    # ghost check-ins labelled fraud (unrostered) and not (rostered, a marker) both occur
    ghosts = [ci["is_fraud"] for ci, co in pairs if ci["scenario"] == "GHOST_SHIFT" and co is not None]
    assert any(ghosts) and not all(ghosts)
    assert sim.stats.deferred_labels["MISSED_TOUR"] > 0
    # a ghost punches out (to be paid): every ghost shift that ended inside the span has a check-out
    ended = [co for ci, co in pairs if ci["scenario"] == "GHOST_SHIFT"
             and int(str(ci["occurred_at"])) + 14 * HOUR_MS < sim.cfg.end]
    assert ended and sum(co is None for co in ended) <= 0.05 * len(ended)
    # confirmed fraud tickets name a punch labelled fraud
    fraud_ids = {r.record["event_id"] for r in recs if r.topic == "labels" and r.record["is_fraud"]}
    confirmed = {r.record["related_event_id"] for r in recs
                 if r.topic == "tickets" and r.record["resolution"] == "FRAUD_CONFIRMED"}
    assert confirmed and confirmed <= fraud_ids


def test_check_in_mode_keeps_shift_frauds_on_the_check_in() -> None:
    shift_kinds = {"GHOST_SHIFT": 0.15, "MISSED_TOUR": 0.15, "LATE_ARRIVAL": 0.15}
    cfg = SimConfig(seed=3, tenants=1, sites_per_tenant=4, guards_per_site=6, span=2 * DAY_MS,
                    scenario_rates=shift_kinds, shift_labels="check_in")
    pairs = _shift_labels(list(generate(cfg)))
    kinds = Counter(str(ci["scenario"]) for ci, _ in pairs if ci["is_fraud"])
    assert kinds["GHOST_SHIFT"] and kinds["MISSED_TOUR"] and kinds["LATE_ARRIVAL"]
    for ci, co in pairs:
        assert ci["is_fraud"] == (ci["scenario"] != "NONE")
        if ci["scenario"] in ("GHOST_SHIFT", "MISSED_TOUR", "LATE_ARRIVAL") and co is not None:
            assert not co["is_fraud"]
    both = [co for ci, co in _shift_labels(list(generate(SimConfig(
        seed=3, tenants=1, sites_per_tenant=4, guards_per_site=6, span=2 * DAY_MS, scenario_rates=shift_kinds,
        shift_labels="check_in_and_out")))) if ci["scenario"] == "MISSED_TOUR" and co is not None]
    assert both and all(co["is_fraud"] for co in both)


def test_buddy_punching_shares_a_device_between_people(week: tuple[list[SimRecord], Simulation]) -> None:
    recs, _ = week
    fraud_ids = {r.record["event_id"] for r in recs
                 if r.topic == "labels" and r.record["scenario"] == "BUDDY_PUNCHING"}
    assert fraud_ids
    people_by_device: dict[str, set[str]] = {}
    for r in recs:
        if r.topic == "attendance":
            people_by_device.setdefault(r.record["device_id"], set()).add(r.record["person_id"])
    buddy_devices = {r.record["device_id"] for r in recs
                     if r.topic == "attendance" and r.record["event_id"] in fraud_ids}
    assert any(len(people_by_device[d]) > 1 for d in buddy_devices)


def test_order_reference_first_then_arrival_time_and_late_events(week: tuple[list[SimRecord], Simulation]) -> None:
    recs, sim = week
    assert {r.topic for r in recs} <= set(TOPICS)
    first_event = next(i for i, r in enumerate(recs) if not r.topic.startswith("ref."))
    assert {r.topic for r in recs[:first_event]} >= {"ref.sites", "ref.people"}
    ats = [r.at for r in recs[first_event:]]
    assert all(a <= b for a, b in itertools.pairwise(ats)), "after the reference data, records come in time order"
    late = [r for r in recs if r.late and r.topic in ("attendance", "activity")]
    assert len(late) == sim.stats.late > 0
    # A label travels with its check-in, late or not.
    assert sum(1 for r in recs if r.late and r.topic == "labels") == sum(1 for r in late if r.topic == "attendance")
    assert sim.stats.late_beyond_grace > 0  # some fall beyond the pipeline's 2-min grace, to exercise LATE


def test_keys_keep_a_person_in_one_partition(week: tuple[list[SimRecord], Simulation]) -> None:
    recs, _ = week
    for r in recs:
        if r.topic in ("attendance", "activity", "labels"):
            assert r.key == f"{r.record['tenant_id']}:{r.record['person_id']}".encode()


def test_compiled_encoder_is_byte_identical_to_fastavro_on_every_record() -> None:
    enc = encoders()
    slow = {stem: fastavro_encoder(sv) for stem, sv in serde.store().current.items()}
    seen: Counter[str] = Counter()
    for sr in generate(SMALL):
        data = enc[sr.stem](sr.record)
        assert data == slow[sr.stem](sr.record), sr
        seen[sr.stem] += 1
        if seen[sr.stem] <= 50:  # decoding is slower; a sample per stem proves the round trip
            assert serde.decode(data, expected=sr.stem) == serde.decode(serde.encode(sr.stem, sr.record))
    assert set(seen) >= {"attendance_event", "activity_signal", "noc_alert", "audit_finding", "ticket", "label",
                         "site", "person", "shift"}


def test_malformed_payloads_are_rejected_with_a_reason() -> None:
    import random

    rng = random.Random(1)
    value = serde.encode("noc_alert", next(sr.record for sr in generate(SMALL) if sr.topic == "alerts"))
    reasons = set()
    for _ in range(50):
        with pytest.raises(serde.DecodeError) as exc:
            serde.decode(malformed(value, rng), expected="noc_alert")
        reasons.add(exc.value.reason)
    assert reasons <= {"MALFORMED", "UNKNOWN_SCHEMA", "WRONG_SCHEMA", "MISSING_FIELD"}
    assert "alerts" in BAD_TOPICS


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        SimConfig(scenario_rates={"TELEPORT": 0.1}).validate()
    with pytest.raises(ValueError, match="sum to at most 1"):
        SimConfig(scenario_rates={"GHOST_SHIFT": 0.8, "MISSED_TOUR": 0.5}).validate()
    with pytest.raises(ValueError, match="span"):
        SimConfig(span=0).validate()
    with pytest.raises(ValueError, match=">= 1"):
        SimConfig(tenants=0).validate()
    with pytest.raises(ValueError, match="late_rate"):
        SimConfig(late_rate=0.9).validate()
    with pytest.raises(ValueError, match="shift_labels"):
        SimConfig(shift_labels="check_out").validate()  # type: ignore[arg-type]


def test_durations_and_times_parse() -> None:
    assert parse_duration("6h") == 6 * HOUR_MS
    assert parse_duration("1d12h") == 36 * HOUR_MS
    assert parse_duration("90") == 90_000
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("6 hours")
    assert parse_time("2026-11-01T06:00Z") == parse_time("2026-11-01T06:00:00+00:00")
    assert parse_time("2026-11-01") % DAY_MS == 0
