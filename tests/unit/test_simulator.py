"""The simulator's pure generator: determinism, scenario rates, labels, ordering, encoding, settings."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter

import pytest

from schemas import serde
from simulator.config import DAY_MS, HOUR_MS, SCENARIOS, SimConfig, parse_duration, parse_time
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
    for kind in SCENARIOS:
        if sim.stats.scenarios[kind]:
            assert frauds[kind] >= sim.stats.scenarios[kind], kind
    for lb in labels:
        att = events[lb["event_id"]]  # each label is about an attendance event that exists
        assert (att["tenant_id"], att["person_id"]) == (lb["tenant_id"], lb["person_id"])
        assert lb["is_fraud"] == (lb["scenario"] != "NONE")
    # Non-fraud check-ins are labelled too (negatives), and they outnumber frauds.
    assert sum(1 for lb in labels if not lb["is_fraud"]) > sum(frauds.values())


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


def test_durations_and_times_parse() -> None:
    assert parse_duration("6h") == 6 * HOUR_MS
    assert parse_duration("1d12h") == 36 * HOUR_MS
    assert parse_duration("90") == 90_000
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("6 hours")
    assert parse_time("2026-11-01T06:00Z") == parse_time("2026-11-01T06:00:00+00:00")
    assert parse_time("2026-11-01") % DAY_MS == 0
