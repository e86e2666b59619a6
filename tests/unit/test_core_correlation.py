"""Correlation engine: grouping, severity, revisions, closing, duplicates, state round trips."""

from __future__ import annotations

import pytest
from fastavro.validation import validate

from schemas import serde
from schemas.topics import person_key
from streams.core.correlation import (
    CorrelationConfig,
    CorrelationEngine,
    CorrelationState,
    Correlator,
    evidence_of,
)
from streams.core.ids import stable_id
from streams.core.types import Out, Record

T0 = 1_793_577_600_000  # 2026-11-01T00:00Z
MIN = 60_000
HOUR = 60 * MIN


# -- record factories (also used by the escalation, feed and validation tests) --------------------------

def alert(eid: str, at: int, person: str | None = "p1", severity: str = "MEDIUM", site: str = "s1",
          tenant: int = 1, kind: str = "GEOFENCE_BREACH") -> Record:
    return {"event_id": eid, "tenant_id": tenant, "site_id": site, "person_id": person, "occurred_at": at,
            "received_at": at + 500, "alert_type": kind, "severity": severity, "message": f"{kind} {eid}",
            "source": "noc"}


def finding(eid: str, at: int, person: str | None = "p1", severity: str = "HIGH", site: str = "s1",
            tenant: int = 1) -> Record:
    return {"event_id": eid, "tenant_id": tenant, "site_id": site, "person_id": person, "occurred_at": at,
            "received_at": at + 1000, "finding_type": "SLEEPING_ON_DUTY", "severity": severity,
            "evidence_summary": f"asleep at post ({eid})", "auditor_id": "aud-1",
            "evidence_urls": [f"https://evidence.example/{eid}/0.jpg"]}


def anomaly(aid: str, at: int, person: str | None = "p1", severity: str = "HIGH", site: str = "s1",
            tenant: int = 1) -> Record:
    return {"anomaly_id": aid, "tenant_id": tenant, "site_id": site, "person_id": person, "window_id": f"w-{aid}",
            "baseline_id": "b1", "metric": "phone_events", "observed": 42.0, "expected": 10.0, "stddev": 4.0,
            "threshold": 3.0, "score": 8.0, "severity": severity, "window_start": at - 5 * MIN, "window_end": at}


def fraud(sid: str, at: int, prob: float = 0.9, person: str = "p1", site: str = "s1", tenant: int = 1) -> Record:
    level = "CRITICAL" if prob >= 0.8 else "HIGH" if prob >= 0.6 else "MEDIUM" if prob >= 0.3 else "LOW"
    return {"score_id": sid, "event_id": f"att-{sid}", "tenant_id": tenant, "site_id": site, "person_id": person,
            "device_id": "d1", "shift_id": None, "event_type": "CHECK_IN", "occurred_at": at,
            "fraud_probability": prob, "risk_level": level, "model_version": "rules-v1",
            "reasons": [{"feature": "distance_m", "value": 812.0, "contribution": 1.7,
                         "description": "checked in 812 m outside the geofence"}],
            "feature_names": ["distance_m", "gps_accuracy_m"], "features": [812.0, float("nan")]}


def encodes(outs: list[Out]) -> list[bytes]:
    """Every Out must fit its Avro schema (strict validation, and a lossless encode/decode round trip);
    returns the encoded bytes (for determinism checks)."""
    store = serde.store()
    encoded = []
    for o in outs:
        validate(o.record, store.current[o.stem].parsed, raise_errors=True)
        data = serde.encode(o.stem, o.record)
        assert serde.decode(data, expected=o.stem) == o.record
        encoded.append(data)
    return encoded


# -- tests ---------------------------------------------------------------------------------------------

def test_records_within_window_fold_into_one_incident_with_revisions() -> None:
    eng = CorrelationEngine()
    o1 = eng.process("noc_alert", alert("a1", T0))
    o2 = eng.process("anomaly", anomaly("n1", T0 + 10 * MIN))
    o3 = eng.process("audit_finding", finding("f1", T0 + 20 * MIN))  # within 15 min of last_seen
    outs = o1 + o2 + o3
    encodes(outs)
    assert [o.topic for o in outs] == ["incidents"] * 3
    ids = {o.record["incident_id"] for o in outs}
    assert len(ids) == 1
    assert [o.record["revision"] for o in outs] == [1, 2, 3]
    last = o3[0].record
    assert last["status"] == "OPEN"
    assert last["related_event_ids"] == ["a1", "n1", "f1"]
    assert last["kinds"] == ["ANOMALY", "AUDIT_FINDING", "NOC_ALERT"]
    assert (last["first_seen"], last["last_seen"]) == (T0, T0 + 20 * MIN)
    assert last["updated_at"] == T0 + 20 * MIN
    assert o1[0].key == person_key(1, "p1", "s1") == b"1:p1"
    assert last["incident_id"] == stable_id("inc", "1:p1", "a1")


def test_record_outside_window_starts_new_incident_and_old_one_still_closes() -> None:
    eng = CorrelationEngine()
    first = eng.process("noc_alert", alert("a1", T0))[0].record
    second = eng.process("noc_alert", alert("a2", T0 + 16 * MIN))[0].record
    assert second["incident_id"] != first["incident_id"]
    assert second["revision"] == 1
    closed = eng.advance(T0 + 60 * MIN)
    assert [(o.record["incident_id"], o.record["status"], o.record["revision"]) for o in closed] == [
        (first["incident_id"], "CLOSED", 2)]
    assert closed[0].record["updated_at"] == T0 + 60 * MIN
    closed2 = eng.advance(T0 + 76 * MIN)
    assert [o.record["incident_id"] for o in closed2] == [second["incident_id"]]
    assert all(not s.incidents for s in eng.states.values())  # only dedupe ids remain


def test_different_people_and_person_less_records_group_by_site() -> None:
    eng = CorrelationEngine()
    a = eng.process("noc_alert", alert("a1", T0, person="p1"))[0]
    b = eng.process("noc_alert", alert("a2", T0 + MIN, person="p2"))[0]
    c = eng.process("noc_alert", alert("a3", T0 + MIN, person=None, site="s1", kind="DOOR_FORCED"))[0]
    d = eng.process("audit_finding", finding("f1", T0 + 2 * MIN, person=None, site="s1"))[0]
    e = eng.process("audit_finding", finding("f2", T0 + 2 * MIN, person=None, site="s2"))[0]
    assert len({a.record["incident_id"], b.record["incident_id"], c.record["incident_id"],
                e.record["incident_id"]}) == 4
    assert d.record["incident_id"] == c.record["incident_id"] and d.record["revision"] == 2
    assert c.key == b"1:site:s1" and c.record["person_id"] is None
    other_tenant = eng.process("noc_alert", alert("a9", T0, person="p1", tenant=2))[0]
    assert other_tenant.key == b"2:p1" and other_tenant.record["revision"] == 1


def test_duplicate_delivery_neither_opens_nor_counts_twice() -> None:
    eng = CorrelationEngine()
    rec = alert("a1", T0)
    assert len(eng.process("noc_alert", rec)) == 1
    assert eng.process("noc_alert", dict(rec)) == []
    eng.process("anomaly", anomaly("n1", T0 + MIN))
    assert eng.process("anomaly", anomaly("n1", T0 + MIN)) == []
    closed = eng.advance(T0 + 2 * HOUR)
    assert closed[0].record["related_event_ids"] == ["a1", "n1"]
    # redelivered after the incident closed: remembered, still nothing
    assert eng.process("noc_alert", rec) == []
    # ... until the dedupe horizon has passed
    eng.advance(T0 + 25 * HOUR)
    assert eng.states == {}


def test_combined_severity_highest_and_raised_when_three_kinds_agree() -> None:
    eng = CorrelationEngine()
    r1 = eng.process("noc_alert", alert("a1", T0, severity="LOW"))[0].record
    assert r1["combined_severity"] == "LOW"
    r2 = eng.process("anomaly", anomaly("n1", T0 + MIN, severity="MEDIUM"))[0].record
    assert r2["combined_severity"] == "MEDIUM"  # highest of two kinds, not raised
    r3 = eng.process("audit_finding", finding("f1", T0 + 2 * MIN, severity="LOW"))[0].record
    assert r3["combined_severity"] == "HIGH"  # three kinds agree: MEDIUM raised one level
    r4 = eng.process("fraud_score", fraud("x1", T0 + 3 * MIN, prob=0.85))[0].record
    assert r4["combined_severity"] == "CRITICAL"  # CRITICAL stays CRITICAL when raised
    assert r4["kinds"] == ["ANOMALY", "AUDIT_FINDING", "FRAUD_SCORE", "NOC_ALERT"]
    assert r4["title"].startswith("CRITICAL FRAUD_SCORE: fraud probability 0.85")
    encodes([Out("incidents", b"k", "correlated_incident", r) for r in (r1, r2, r3, r4)])


def test_anomaly_titles_show_a_z_score_only_when_there_is_a_baseline() -> None:
    eng = CorrelationEngine()
    baseline = eng.process("anomaly", anomaly("n1", T0))[0].record
    assert baseline["title"] == "HIGH ANOMALY: phone_events 42 vs expected 10 (z=8.00)"
    rule = dict(anomaly("n2", T0, person="p2"), baseline_id="rule:tour_completion_ratio",
                metric="tour_completion_ratio", observed=0.4915, expected=1.0, stddev=0.0, threshold=0.5,
                score=-0.0085, severity="MEDIUM")
    assert eng.process("anomaly", rule)[0].record["title"] == \
        "MEDIUM ANOMALY: tour_completion_ratio 0.4915 (rule limit 0.5)"


def test_same_kind_three_times_is_not_raised() -> None:
    eng = CorrelationEngine()
    outs = [eng.process("noc_alert", alert(f"a{i}", T0 + i * MIN, severity="HIGH"))[0] for i in range(3)]
    assert outs[-1].record["combined_severity"] == "HIGH"


def test_fraud_score_severity_mapping_and_low_scores_ignored() -> None:
    cfg = CorrelationConfig()
    assert evidence_of("fraud_score", fraud("x", T0, prob=0.5), cfg) is None  # MEDIUM
    high = evidence_of("fraud_score", fraud("x", T0, prob=0.7), cfg)
    crit = evidence_of("fraud_score", fraud("x", T0, prob=0.95), cfg)
    assert high is not None and high.severity == "HIGH" and high.kind == "FRAUD_SCORE"
    assert crit is not None and crit.severity == "CRITICAL"
    assert evidence_of("ticket", {"event_id": "t"}, cfg) is None
    strict = CorrelationConfig(min_severity="HIGH")
    assert evidence_of("noc_alert", alert("a", T0, severity="MEDIUM"), strict) is None
    eng = CorrelationEngine()
    assert eng.process("fraud_score", fraud("x", T0, prob=0.5)) == []
    assert eng.states == {}
    assert eng.process("ticket", {"tenant_id": 1}) == []


def test_min_records_rule_holds_back_until_n_and_drops_quiet_groups() -> None:
    eng = CorrelationEngine(CorrelationConfig(min_records=3))
    assert eng.process("noc_alert", alert("a1", T0)) == []
    assert eng.process("noc_alert", alert("a2", T0 + MIN)) == []
    out = eng.process("anomaly", anomaly("n1", T0 + 2 * MIN))
    assert len(out) == 1 and out[0].record["revision"] == 1
    assert out[0].record["related_event_ids"] == ["a1", "a2", "n1"]
    assert out[0].record["incident_id"] == stable_id("inc", "1:p1", "a1")
    # a pending group of one that goes quiet produces nothing at all
    assert eng.process("noc_alert", alert("b1", T0, person="p2")) == []
    closed = eng.advance(T0 + 3 * HOUR)
    assert [o.record["status"] for o in closed] == ["CLOSED"]
    assert eng.process("noc_alert", alert("b1", T0, person="p2")) == []  # remembered as seen


def test_duration_cap_closes_and_opens_a_new_incident() -> None:
    cfg = CorrelationConfig(max_duration_ms=35 * MIN)
    eng = CorrelationEngine(cfg)
    ids = []
    for i in range(6):  # every 10 minutes for 50 minutes: would chain forever without the cap
        outs = eng.process("noc_alert", alert(f"a{i}", T0 + i * 10 * MIN))
        outs += eng.advance(T0 + i * 10 * MIN)
        ids.append([(o.record["incident_id"], o.record["status"]) for o in outs])
    first = ids[0][0][0]
    assert all(x[0][0] == first for x in ids[:4])  # 0..30 min
    assert ids[4][0] != (first, "OPEN")  # 40 min: past the cap, a new incident ...
    assert (first, "CLOSED") in ids[4]  # ... and the capped one closed at first_seen + 35 min
    assert ids[5] == [(ids[4][0][0], "OPEN")]


def test_max_evidence_cap_bounds_an_incident() -> None:
    eng = CorrelationEngine(CorrelationConfig(max_evidence=3))
    outs = [eng.process("noc_alert", alert(f"a{i}", T0 + i * 1000))[0].record for i in range(4)]
    assert outs[2]["revision"] == 3 and len(outs[2]["evidence"]) == 3
    assert outs[3]["incident_id"] != outs[0]["incident_id"]


def test_out_of_order_evidence_joins_and_moves_first_seen_back() -> None:
    eng = CorrelationEngine()
    eng.process("noc_alert", alert("a1", T0 + 10 * MIN))
    r = eng.process("anomaly", anomaly("n1", T0))[0].record
    assert r["first_seen"] == T0 and r["last_seen"] == T0 + 10 * MIN
    assert r["updated_at"] == T0 + 10 * MIN and r["revision"] == 2
    assert r["related_event_ids"] == ["a1", "n1"]  # arrival order


def test_record_after_close_time_opens_new_incident_even_before_watermark() -> None:
    eng = CorrelationEngine(CorrelationConfig(window_ms=2 * HOUR, inactivity_ms=HOUR))
    a = eng.process("noc_alert", alert("a1", T0))[0].record
    b = eng.process("noc_alert", alert("a2", T0 + 61 * MIN))[0].record  # in window, but a1 is due to close
    assert a["incident_id"] != b["incident_id"]


def test_state_round_trip_mid_stream_gives_identical_output() -> None:
    records = [("noc_alert", alert("a1", T0)), ("anomaly", anomaly("n1", T0 + 5 * MIN)),
               ("fraud_score", fraud("x1", T0 + 7 * MIN)), ("audit_finding", finding("f1", T0 + 9 * MIN)),
               ("noc_alert", alert("a2", T0 + 9 * MIN, person=None))]
    straight = CorrelationEngine()
    out1 = [o for s, r in records for o in straight.process(s, r)] + straight.advance(T0 + 3 * HOUR)
    resumed = CorrelationEngine()
    out2 = [o for s, r in records[:2] for o in resumed.process(s, r)]
    import json

    resumed = CorrelationEngine.from_dict(json.loads(json.dumps(resumed.to_dict())))  # through plain JSON
    out2 += [o for s, r in records[2:] for o in resumed.process(s, r)] + resumed.advance(T0 + 3 * HOUR)
    assert encodes(out1) == encodes(out2)
    assert [o.key for o in out1] == [o.key for o in out2]


def test_determinism_same_input_same_bytes() -> None:
    def run() -> list[bytes]:
        eng = CorrelationEngine()
        outs: list[Out] = []
        for i in range(30):
            person = f"p{i % 4}" if i % 5 else None
            outs += eng.process("noc_alert", alert(f"a{i}", T0 + i * 3 * MIN, person=person,
                                                   severity=("LOW", "HIGH", "MEDIUM")[i % 3]))
            outs += eng.process("anomaly", anomaly(f"n{i}", T0 + i * 3 * MIN + 1, person=person))
            outs += eng.advance(T0 + i * 3 * MIN - 30 * MIN)
        outs += eng.advance(T0 + 10 * HOUR)
        return encodes(outs)

    assert run() == run()


def test_correlator_per_key_api_and_deadlines() -> None:
    c = Correlator()
    state = CorrelationState()
    assert state.next_deadline() is None and state.is_empty()
    c.on_record(state, "noc_alert", alert("a1", T0))
    assert state.next_deadline(c.config) == T0 + HOUR
    assert c.on_watermark(state, T0 + HOUR - 1) == []
    out = c.on_watermark(state, T0 + HOUR)
    assert out[0].record["status"] == "CLOSED"
    assert state.next_deadline(c.config) == T0 + 24 * HOUR  # the dedupe id expires then
    c.on_watermark(state, T0 + 24 * HOUR)
    assert state.is_empty()
    assert CorrelationState.from_dict(None).is_empty()
    with pytest.raises(ValueError):
        CorrelationState.from_dict({"v": 99})


def test_remembered_ids_are_bounded() -> None:
    c = Correlator(CorrelationConfig(max_remembered=10))
    state = CorrelationState()
    for i in range(30):
        c.on_record(state, "noc_alert", alert(f"a{i:02d}", T0 + i * 20 * MIN))
    c.on_watermark(state, T0 + 20 * HOUR)
    assert len(state.seen) == 10 and "a29" in state.seen


@pytest.mark.parametrize("kwargs", [dict(window_ms=0), dict(min_records=0), dict(min_records=5, max_evidence=3),
                                    dict(min_severity="SEVERE"), dict(max_open=0)])
def test_config_is_validated(kwargs: dict[str, int | str]) -> None:
    with pytest.raises(ValueError):
        CorrelationConfig(**kwargs)  # type: ignore[arg-type]


def test_engine_counts_open_incidents() -> None:
    eng = CorrelationEngine(CorrelationConfig(min_records=2))
    eng.process("noc_alert", alert("a1", T0))
    assert eng.open_incidents() == 0
    eng.process("noc_alert", alert("a2", T0 + MIN))
    assert eng.open_incidents() == 1


def test_max_open_closes_the_oldest_incident_early() -> None:
    eng = CorrelationEngine(CorrelationConfig(max_open=2, max_evidence=1))
    o1 = eng.process("noc_alert", alert("a1", T0))
    o2 = eng.process("noc_alert", alert("a2", T0 + MIN))
    o3 = eng.process("noc_alert", alert("a3", T0 + 2 * MIN))
    assert len(o1) == len(o2) == 1
    assert [(o.record["incident_id"], o.record["status"]) for o in o3] == [
        (o1[0].record["incident_id"], "CLOSED"), (stable_id("inc", "1:p1", "a3"), "OPEN")]
    assert o3[0].record["updated_at"] == T0 + 2 * MIN and o3[0].record["revision"] == 2
    assert len(eng.states[b"1:p1"].incidents) == 2
    assert eng.process("noc_alert", alert("a1", T0)) == []  # remembered after the early close


def _table_bytes_per_key(dicts: list[dict[str, object]]) -> float:
    """Heap bytes per key of the states as a Faust table holds them (JSON-decoded plain dicts)."""
    import json
    import tracemalloc

    blobs = [json.dumps(d) for d in dicts]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        held = [json.loads(b) for b in blobs]
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(held) == len(dicts)
    return used / len(dicts)


def test_state_size_is_bounded_and_10k_people_fit_in_200_mb() -> None:
    c = Correlator()
    uid = "-e0c3f6b2-9d1a-4c7e-8b1f-5a2d"  # uuid-length ids, like the producers'

    def storm(i: int) -> dict[str, object]:  # worst case: every cap full (2 incidents x 20 + 32 remembered ids)
        s = CorrelationState()
        for j in range(200):
            r = alert(f"{i:06d}-{j:03d}{uid}", T0 + j * 1000, person=f"person-{i:06d}{uid}")
            r["message"] = "x" * 500
            c.on_record(s, "noc_alert", r)
        c.on_watermark(s, T0 + 150 * 1000)
        assert sum(len(x.evidence) for x in s.incidents) <= 40 and len(s.seen) <= 32
        return s.to_dict()

    def typical(i: int) -> dict[str, object]:  # a closed incident of three, and a new one open
        s = CorrelationState()
        for j in range(3):
            c.on_record(s, "noc_alert", alert(f"{i:06d}-{j}{uid}", T0 + j * MIN, person=f"person-{i:06d}"))
        c.on_watermark(s, T0 + 2 * HOUR)
        c.on_record(s, "anomaly", anomaly(f"{i:06d}-n{uid}", T0 + 3 * HOUR, person=f"person-{i:06d}"))
        return s.to_dict()

    worst = _table_bytes_per_key([storm(i) for i in range(200)])
    usual = _table_bytes_per_key([typical(i) for i in range(1000)])
    assert worst < 24 * 1024  # hard bound per key: 10,000 keys all at their caps stay near 200 MB
    assert usual * 10_000 < 50 * 2**20  # realistic state of 10,000 people: far below 200 MB


def test_evidence_from_another_site_survives_the_compact_state() -> None:
    import json

    c = Correlator()
    state = CorrelationState()
    c.on_record(state, "noc_alert", alert("a1", T0, site="s1"))
    out = c.on_record(state, "audit_finding", finding("f1", T0 + MIN, site="s2"))[0].record
    assert out["site_id"] == "s1"  # the incident's site is its first piece's
    again = CorrelationState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert again.incidents[0].evidence[1].site_id == "s2"


# -- a site's statistical anomalies in correlation (the site stage, streams.core.sites) ------------------------

def _site_drive(items: list[tuple[str, object]], roundtrip_every: int = 0) -> list[Out]:
    """Person windows ("w"), clock markers ("c"), site evidence as the pipeline's feed event ("e") and tickets
    ("t") into one site partition, committed after each; optionally the state reloaded from JSON now and then."""
    import json

    from test_site_stage import SMALL

    from streams.core.pipeline import DictStore
    from streams.core.sites import SiteConfig, SiteResult, SiteStage, site_evidence

    st, store = SiteStage(lambda t, s: "UTC", SiteConfig(sources=2, baselines=SMALL)), DictStore()
    outs: list[Out] = []
    for i, (kind, x) in enumerate(items):
        res = SiteResult()
        if kind == "w":
            st.window(store, 0, x, res)  # type: ignore[arg-type]
        elif kind == "c":
            st.clock(store, 0, x[0], x[1], res)  # type: ignore[index]
        elif kind == "t":
            st.ticket(store, 0, x, res)  # type: ignore[arg-type]
        else:
            ev = site_evidence(x)  # type: ignore[arg-type]
            assert ev is not None
            st.evidence(store, 0, ev[0], ev[1], res)
        res.commit(store)
        outs += res.outs
        if roundtrip_every and i % roundtrip_every == 0:
            store.data = json.loads(json.dumps(store.data))
            st.forget()
    return outs


def _site_alert() -> tuple[Record, Out]:
    """A HIGH alert about site s1 and no one, two minutes before the end of the history's spike window, and the
    feed event the pipeline announces it with."""
    from test_site_stage import SIZE
    from test_site_stage import T0 as S0

    from streams.core.feed import feed_events

    a = alert("door-1", S0 + 67 * SIZE - 2 * MIN, person=None, severity="HIGH", kind="DOOR_FORCED")
    (ev,) = feed_events("noc_alert", a)
    return a, ev


def _incidents(outs: list[Out]) -> dict[str, Record]:
    final: dict[str, Record] = {}
    for o in outs:
        if o.stem == "correlated_incident":
            final[o.record["incident_id"]] = o.record
    return final


def test_a_site_anomaly_joins_the_sites_incident_like_any_other_evidence() -> None:
    from test_site_stage import _history

    a, ev = _site_alert()
    outs = _site_drive([("e", ev), *_history()])
    spikes = [o.record for o in outs if o.stem == "anomaly" and o.record["observed"] >= 120]
    assert spikes
    inc = [i for i in _incidents(outs).values() if a["event_id"] in i["related_event_ids"]]
    assert len(inc) == 1
    i = inc[0]
    assert i["kinds"] == ["ANOMALY", "NOC_ALERT"] and i["person_id"] is None and i["site_id"] == "s1"
    assert spikes[0]["anomaly_id"] in i["related_event_ids"]
    assert i["incident_id"] == stable_id("inc", "1:site:s1", "door-1")  # the alert came first in event time
    assert spikes[0]["severity"] == "CRITICAL"  # the spike is severe: the incident takes its severity
    assert i["combined_severity"] == "CRITICAL" and i["status"] == "OPEN"  # the history ends before its close
    encodes([o for o in outs if o.stem in ("correlated_incident", "noc_event", "anomaly")])  # the contracts hold
    feed = [o.record["type"] for o in outs if o.stem == "noc_event" and o.record["type"].startswith("incident_")]
    assert feed.count("incident_created") == len(_incidents(outs))


def test_site_correlation_does_not_depend_on_arrival_redelivery_or_restarts() -> None:
    from test_site_stage import _history

    _a, ev = _site_alert()
    history = _history()
    clean = _site_drive([("e", ev), *history])
    # the alert forwarded at any moment before the watermark passes it, twice, with state reloads
    passes = next(n for n, (k, x) in enumerate(history) if k == "c" and x[0] == 1  # type: ignore[index]
                  and x[1] >= ev.record["timestamp"])  # type: ignore[index]
    for at in (10, passes - 3, passes):
        items = [*history[:at], ("e", ev), *history[at:at + 5], ("e", ev), *history[at + 5:]]
        assert _incidents(_site_drive(items, roundtrip_every=5)) == _incidents(clean), at
    assert [o.record for o in _site_drive([*history[:40], ("e", ev), *history[40:]]) if o.stem != "noc_event"] \
        == [o.record for o in clean if o.stem != "noc_event"]


def test_a_false_positive_ticket_on_a_site_incident_feeds_its_anomalies_baselines() -> None:
    from test_site_stage import _history

    a, ev = _site_alert()
    outs = _site_drive([("e", ev), *_history()])
    (inc,) = [i for i in _incidents(outs).values() if a["event_id"] in i["related_event_ids"]]
    anomaly_ids = [e["event_id"] for e in inc["evidence"] if e["kind"] == "ANOMALY"]
    anomalies = {o.record["anomaly_id"]: o.record for o in outs if o.stem == "anomaly"}
    ticket = {"tenant_id": 1, "site_id": "s1", "status": "RESOLVED", "resolution": "FALSE_POSITIVE",
              "related_event_id": inc["incident_id"], "occurred_at": inc["last_seen"] + HOUR}
    again = _site_drive([("e", ev), *_history(), ("t", ticket), ("t", ticket)])
    fed = [o.record for o in again[len(outs):] if o.stem == "baseline"]
    assert sorted(b["baseline_id"] for b in fed) == sorted(anomalies[i]["baseline_id"] for i in anomaly_ids)
    assert all(b["false_positive_rate"] == 1.0 and b["feedback_total"] == 1 for b in fed)  # the repeat: nothing
    # a ticket naming an incident without anomalies (or unknown) reviews nothing
    other = {**ticket, "related_event_id": stable_id("inc", "1:site:s1", "nope")}
    assert _site_drive([("e", ev), *_history(), ("t", other)]) == outs


def test_the_pipeline_leaves_site_evidence_to_the_site_stage_which_correlates_it_as_one_engine_would() -> None:
    """Over a simulated world run through the pipeline and the site stage in batches of two sizes: no incident
    about a site alone comes from the pipeline; the site stage's incidents are exactly those of one correlation
    engine fed the site evidence and the site anomalies in event-time order; and they do not depend on batching."""
    import zlib
    from collections import Counter

    from models.scoring import ModelCache
    from simulator.config import HOUR_MS, SimConfig
    from simulator.generate import generate
    from streams.core.ids import event_time, evidence_id
    from streams.core.pipeline import INPUT_STEMS, DictStore, Incoming, Pipeline, References
    from streams.core.sites import EVIDENCE_RANK, SiteStage, site_evidence

    sim = SimConfig(seed=11, tenants=1, sites_per_tenant=4, guards_per_site=3, span=12 * HOUR_MS,
                    alerts_per_site_hour=2.0)

    def run(batch: int) -> tuple[list[Out], list[Out], int]:
        refs = References()
        pipe = Pipeline(refs, ModelCache())
        records: list[Incoming] = []
        lanes: Counter[tuple[str, int]] = Counter()
        for r in generate(sim):
            value = serde.encode(r.stem, r.record)
            if r.topic.startswith("ref."):
                pipe.apply_reference(r.topic, value)
            if r.topic in INPUT_STEMS:
                p = zlib.crc32(r.key) % 6
                records.append(Incoming(r.topic, p, lanes[(r.topic, p)], r.key, value, r.at))
                lanes[(r.topic, p)] += 1
        refs.mark_loaded()
        st = SiteStage(lambda t, s: "UTC")
        silent = set(range(6)) - {r.partition for r in records if r.topic == "activity"}
        store, sstore = DictStore(), DictStore()
        pouts: list[Out] = []
        souts: list[Out] = []
        for i in range(0, len(records), batch):
            res = pipe.process(store, records[i:i + batch], "t")
            res.commit()
            pouts += res.outs
            sres = st.run_person_outputs(sstore, res.outs, res.clocks, empty=silent)
            sres.commit(sstore)
            souts += sres.outs
        wm = st.watermark(sstore, 0)
        assert wm is not None
        return pouts, souts, wm

    pouts, souts, wm = run(1000)
    assert not [o for o in pouts if o.stem == "correlated_incident" and o.record["person_id"] is None]
    pieces = [(event_time(stem, rec), EVIDENCE_RANK[stem], evidence_id(stem, rec), stem, rec)
              for stem, rec in (site_evidence(o) for o in pouts if site_evidence(o) is not None)]  # type: ignore[misc]
    pieces += [(event_time("anomaly", o.record), EVIDENCE_RANK["anomaly"], o.record["anomaly_id"], "anomaly",
                o.record) for o in souts if o.stem == "anomaly"]
    eng = CorrelationEngine()
    want: list[Out] = []
    for t, _r, _i, stem, rec in sorted(p for p in pieces if p[0] <= wm):
        want += eng.advance(t - 1)
        want += eng.process(stem, rec)
    want += eng.advance(wm)
    got = _incidents(souts)
    assert got and got == _incidents(want)
    assert any("NOC_ALERT" in i["kinds"] for i in got.values())
    _p, souts_500, _w = run(500)
    assert _incidents(souts_500) == got


def test_hostile_site_evidence_on_the_internal_topic_is_skipped_and_changes_nothing_else() -> None:
    """Through the edge's dispatch (the internal topic's bytes): feed events that are not site evidence or whose
    record lacks what correlation reads are counted bad and skipped; every other output is that of a clean run."""
    import orjson
    from test_site_stage import SMALL, _history

    from schemas.serde import SchemaStore
    from streams.core.pipeline import DictStore
    from streams.core.sites import SiteConfig, SiteResult, SiteStage
    from streams.site_stage import SiteEdge, clock_envelope

    _a, ev = _site_alert()
    schemas = SchemaStore()

    def raw(kind: str, x: object) -> bytes:
        if kind == "w":
            return schemas.encode("signal_window", x)  # type: ignore[arg-type]
        if kind == "c":
            return clock_envelope(*x)  # type: ignore[misc]
        return schemas.encode("noc_event", x.record)  # type: ignore[attr-defined]

    def drive(values: list[bytes]) -> tuple[list[Out], int]:
        edge = SiteEdge.__new__(SiteEdge)  # the dispatch only: no worker, no broker
        edge.stage, edge.name, edge.schemas = SiteStage(lambda t, s: "UTC", SiteConfig(sources=2, baselines=SMALL)), \
            "t.sites", schemas
        store, outs, bad = DictStore(), [], 0
        for v in values:
            res = SiteResult()
            edge.apply(store, 0, v, res)
            res.commit(store)
            outs += res.outs
            bad += res.counts["bad"]
        return outs, bad

    clean = [raw(k, x) for k, x in [("e", ev), *_history()]]
    payload = orjson.loads(ev.record["payload"])

    def feed(**changes: object) -> bytes:
        return schemas.encode("noc_event", {**ev.record, **changes})

    hostile = [
        feed(payload="not json"),
        feed(payload=orjson.dumps({k: v for k, v in payload.items() if k != "severity"}).decode()),
        feed(payload=orjson.dumps({**payload, "severity": "BOGUS"}).decode()),
        feed(payload=orjson.dumps({**payload, "tenant_id": "one"}).decode()),
        feed(type="fraud_scored"),  # a feed event that is no site evidence
        feed(person_id="p1"),  # about a person: the pipeline correlates it
    ]
    want, bad = drive(clean)
    assert bad == 0 and _incidents(want)
    mixed = [*clean[:30], *hostile, *clean[30:]]
    got, bad = drive(mixed)
    assert bad == len(hostile) and got == want


def test_a_what_if_correlation_setting_reaches_the_site_stage_too() -> None:
    from streams.replay_config import apply_overrides

    cfg = apply_overrides(["correlation.window=60m"])
    assert cfg.pipeline.correlation.window_ms == cfg.sites.correlation.window_ms == HOUR
