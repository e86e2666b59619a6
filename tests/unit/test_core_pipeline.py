"""The pipeline composition, without Kafka: routing, the event-time clock, redelivery and bad input."""

from __future__ import annotations

import heapq
import random
import zlib
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import pytest

from models.scoring import ModelCache, RuleScorer, ScoreResult
from schemas import serde
from schemas.serde import MAGIC
from schemas.topics import person_key
from simulator.config import HOUR_MS, MINUTE_MS, SimConfig
from simulator.generate import generate
from streams.core.pipeline import (
    GRACE_MS,
    INPUT_STEMS,
    DictStore,
    Incoming,
    Pipeline,
    References,
    Result,
    iter_state,
    state_kinds,
)
from streams.core.types import Out

CFG = SimConfig(seed=5, tenants=1, sites_per_tenant=12, guards_per_site=3, span=12 * HOUR_MS,
                scenario_rates={"GHOST_SHIFT": 0.25, "MISSED_TOUR": 0.25, "GPS_SPOOFING": 0.15})
PARTITIONS = 6


@lru_cache(maxsize=1)
def _world() -> tuple[list[tuple[str, bytes]], list[Incoming]]:
    refs: list[tuple[str, bytes]] = []
    lanes: Counter[tuple[str, int]] = Counter()
    records: list[Incoming] = []
    for r in generate(CFG):
        value = serde.encode(r.stem, r.record)
        if r.topic.startswith("ref."):
            refs.append((r.topic, value))
        elif r.topic in INPUT_STEMS:
            p = zlib.crc32(r.key) % PARTITIONS
            records.append(Incoming(r.topic, p, lanes[(r.topic, p)], r.key, value, r.at))
            lanes[(r.topic, p)] += 1
    return refs, records


def _pipeline(models: ModelCache | None = None) -> Pipeline:
    refs = References()
    pipe = Pipeline(refs, models or ModelCache())
    for short, value in _world()[0]:
        assert pipe.apply_reference(short, value)
    refs.mark_loaded()
    return pipe


def _highwater(records: Sequence[Incoming]) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for r in records:
        ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), 0), r.offset + 1)
    return {(t, p): ends.get((t, p), 0) for t in ("attendance", "alerts", "audit-findings") for p in range(PARTITIONS)}


def _run(pipe: Pipeline, store: DictStore, records: Sequence[Incoming], batch: int = 500,
         highwater: dict[tuple[str, int], int] | None = None) -> list[Out]:
    outs: list[Out] = []
    for i in range(0, len(records), batch):
        res = pipe.process(store, records[i:i + batch], "t", highwater)
        res.commit()
        outs += res.outs
    return outs


def _final(outs: Sequence[Out]) -> dict[str, str]:
    """Final record per (topic, stable id), as repr (NaN-safe)."""
    ids = {"signal-windows": "window_id", "anomalies": "anomaly_id", "incidents": "incident_id",
           "fraud-scores": "score_id", "ticket-commands": "command_id", "finding-escalations": "finding_id",
           "events": "event_id", "dead-letters": "dead_letter_id"}
    out: dict[str, str] = {}
    for o in outs:
        out[f"{o.topic}:{o.record[ids[o.topic]]}"] = repr(o.record)
    return out


def _interleave(records: Sequence[Incoming], rng: random.Random) -> list[Incoming]:
    """A random consumption order that keeps every topic partition in offset order (what Kafka guarantees)."""
    lanes: dict[tuple[str, int], list[Incoming]] = {}
    for r in records:
        lanes.setdefault((r.topic, r.partition), []).append(r)
    weights = {k: rng.random() for k in lanes}
    keyed = [[(i * weights[k] * rng.uniform(0.5, 2.0), n, r) for i, r in enumerate(v)]
             for n, (k, v) in enumerate(lanes.items())]
    for lane in keyed:  # keep each lane's keys increasing
        for i in range(1, len(lane)):
            if lane[i][0] < lane[i - 1][0]:
                lane[i] = (lane[i - 1][0], lane[i][1], lane[i][2])
    return [r for _, _, r in heapq.merge(*keyed, key=lambda x: (x[0], x[1]))]


def test_routes_every_kind_of_output() -> None:
    outs = _run(_pipeline(), DictStore(), _world()[1], highwater=_highwater(_world()[1]))
    kinds = Counter(o.topic for o in outs)
    for short in ("signal-windows", "anomalies", "incidents", "fraud-scores", "ticket-commands",
                  "finding-escalations", "events"):
        assert kinds[short] > 0, kinds
    metrics = {o.record["metric"] for o in outs if o.topic == "anomalies"}
    assert {"silent_minutes_since_check_in", "tour_completion_ratio"} <= metrics
    scores = [o.record for o in outs if o.topic == "fraud-scores"]
    assert len({s["event_id"] for s in scores}) == len(scores)
    assert all(s["model_version"] == "rules-v1" and len(s["reasons"]) <= 3 for s in scores)


def test_output_does_not_depend_on_interleaving_or_batching() -> None:
    records = _world()[1]
    hw = _highwater(records)
    want = _final(_run(_pipeline(), DictStore(), sorted(records, key=lambda r: (r.topic != "activity",)),
                       batch=10_000, highwater=hw))
    for seed in range(3):
        rng = random.Random(seed)
        order = _interleave(records, rng)
        # the consumer only knows end offsets of what it has fetched: simulate by revealing them as consumed
        got = _final(_run(_pipeline(), DictStore(), order, batch=rng.choice([1, 37, 400]), highwater=hw))
        assert got == want, f"interleaving {seed}: {len(set(got) ^ set(want))} ids differ"


def test_redelivery_after_a_crash_changes_nothing() -> None:
    records = sorted(_world()[1], key=lambda r: (r.partition, r.topic != "activity", r.offset))
    hw = _highwater(records)
    want = _final(_run(_pipeline(), DictStore(), records, highwater=hw))
    store = DictStore()
    cut = len(records) // 2
    first = _run(_pipeline(), store, records[:cut], highwater=hw)
    # The crash: the state (changelog) got further than the committed offsets, which are 300 records back.
    again = _run(_pipeline(), store, records[cut - 300:], highwater=hw)
    assert _final(first + again) == want
    skipped = _pipeline().process(store, records[:10], "t", hw)
    assert skipped.skipped == 10 and not skipped.outs


def test_uncommitted_results_leave_the_store_alone() -> None:
    store = DictStore()
    res = _pipeline().process(store, _world()[1][:200], "t")
    assert res.outs and store.writes == 0
    res.commit()
    assert store.writes > 0
    assert state_kinds(store)["wm"] >= 1
    assert list(iter_state(store, res.sessions[0].p if res.sessions else 0, "wm")) == []  # wm is not a kind|id


def _one(pipe: Pipeline, store: DictStore, topic: str, partition: int, offset: int, value: bytes | None,
         key: bytes = b"k", timestamp: int = CFG.end) -> Result:
    """One record, by default with the Kafka timestamp of the end of the simulated span (after every event)."""
    res = pipe.process(store, [Incoming(topic, partition, offset, key, value, timestamp)], "t")
    res.commit()
    return res


def test_bad_input_goes_to_dead_letters_with_reason_and_bytes() -> None:
    pipe, store = _pipeline(), DictStore()
    _run(pipe, store, [r for r in _world()[1] if r.partition == 0][:300])
    att = next(serde.decode(r.value) for r in _world()[1] if r.topic == "attendance")
    act_rec = next(r for r in _world()[1] if r.topic == "activity" and r.partition == 0)
    cases: dict[str, tuple[str, bytes]] = {
        "MALFORMED": ("attendance", b"nope"),
        "UNKNOWN_SCHEMA": ("attendance", MAGIC + b"\x00" * 8 + b"\x00"),
        "WRONG_SCHEMA": ("alerts", serde.encode("attendance_event", att)),
        "UNKNOWN_TENANT": ("attendance", serde.encode("attendance_event", dict(att, tenant_id=999))),
        "UNKNOWN_SITE": ("attendance", serde.encode("attendance_event", dict(att, site_id="no-such-site"))),
        "FUTURE_EVENT": ("attendance", serde.encode("attendance_event",
                                                    dict(att, occurred_at=att["received_at"] + 400 * 24 * HOUR_MS))),
        "LATE": ("activity", serde.encode("activity_signal", dict(serde.decode(act_rec.value), event_id="late",
                                                                      occurred_at=CFG.start - 10 * MINUTE_MS))),
    }
    for n, (reason, (topic, value)) in enumerate(cases.items()):
        res = _one(pipe, store, topic, 0, 100_000 + n, value)
        dls = [o.record for o in res.outs if o.topic == "dead-letters"]
        assert [d["reason"] for d in dls] == [reason]
        assert dls[0]["value"] == value and dls[0]["source_topic"] == f"t.{topic}"
        assert dict(res.dead_letters) == {reason: 1}
    assert res.late == 1


def test_future_event_is_judged_by_broker_time_and_received_at_not_a_clock() -> None:
    """FUTURE_EVENT: an event time more than the contract's skew after the record's Kafka timestamp (which the
    broker bounds), or an event claiming to have happened more than a day after it was received (a wrong
    device clock), whatever today's date: the same verdict live and in a replay run any time later. An event
    stamped by the broker as it happened is processed, even dated well after today (a simulation running ahead)."""
    pipe, store = _pipeline(), DictStore()
    _run(pipe, store, [r for r in _world()[1] if r.partition == 0][:300])
    att = next(serde.decode(r.value) for r in _world()[1] if r.topic == "attendance" and r.partition == 0)
    ahead = 3_650 * 24 * HOUR_MS  # ten years after the simulated day
    wrong_clock = dict(att, event_id="wrong-clock", occurred_at=att["received_at"] + 25 * HOUR_MS)
    res = _one(pipe, store, "attendance", 0, 200_000, serde.encode("attendance_event", wrong_clock),
               timestamp=wrong_clock["occurred_at"])
    assert dict(res.dead_letters) == {"FUTURE_EVENT": 1}
    assert "received_at" in next(o.record["detail"] for o in res.outs if o.topic == "dead-letters")
    forged = dict(att, event_id="forged", occurred_at=att["occurred_at"] + ahead,
                  received_at=att["received_at"] + ahead)
    res = _one(pipe, store, "attendance", 0, 200_001, serde.encode("attendance_event", forged))
    assert dict(res.dead_letters) == {"FUTURE_EVENT": 1}
    assert "occurred_at" in next(o.record["detail"] for o in res.outs if o.topic == "dead-letters")
    in_step = dict(forged, event_id="far-ahead")
    res = _one(pipe, store, "attendance", 0, 200_002, serde.encode("attendance_event", in_step),
               timestamp=in_step["occurred_at"])
    assert not res.dead_letters and res.processed["attendance"] == 1


class _AlwaysFraud(RuleScorer):
    model_version = "stub-v1"

    def score_many(self, vectors: Sequence[Sequence[float]]) -> list[ScoreResult]:
        return [ScoreResult(0.93, "CRITICAL", "stub-v1", []) for _ in vectors]


def test_high_scores_issue_one_fraud_ticket_per_person_per_day() -> None:
    cache = ModelCache(rules=_AlwaysFraud())
    records = _world()[1]
    outs = _run(_pipeline(cache), DictStore(), records, highwater=_highwater(records))
    scores = [o.record for o in outs if o.topic == "fraud-scores"]
    assert scores and all(s["risk_level"] == "CRITICAL" for s in scores)
    fraud_cmds = [o.record for o in outs if o.topic == "ticket-commands" and o.record["category"] == "SECURITY_FRAUD"]
    people = Counter(c["person_id"] for c in fraud_cmds)
    assert people and max(people.values()) == 1  # the simulated span is under 24 h
    assert {c["person_id"] for c in fraud_cmds} == {s["person_id"] for s in scores}
    feed = [o.record for o in outs if o.topic == "events" and o.record["type"] == "fraud_scored"]
    assert len(feed) == len(scores)
    inc = [o.record for o in outs if o.topic == "incidents" and "FRAUD_SCORE" in o.record["kinds"]]
    assert inc


def test_held_back_until_the_clock_passes() -> None:
    pipe, store = _pipeline(), DictStore()
    att_rec = next(r for r in _world()[1] if r.topic == "attendance")
    att = serde.decode(att_rec.value)
    res = _one(pipe, store, "attendance", 0, 0, att_rec.value, person_key(att["tenant_id"], att["person_id"]))
    assert not [o for o in res.outs if o.topic == "fraud-scores"]  # no activity yet: no clock
    act = next(serde.decode(r.value) for r in _world()[1] if r.topic == "activity")
    after = dict(act, event_id="tick", occurred_at=att["occurred_at"] + GRACE_MS + 2)
    res = _one(pipe, store, "activity", 0, 0, serde.encode("activity_signal", after))
    assert [o.record["event_id"] for o in res.outs if o.topic == "fraud-scores"] == [att["event_id"]]


@pytest.mark.parametrize("value", [None, b"garbage"])
def test_reference_tombstones_and_garbage(value: bytes | None) -> None:
    assert _pipeline().apply_reference("ref.sites", value) is (value is None)


def test_tick_moves_a_held_clock() -> None:
    records = [r for r in _world()[1] if r.partition == 1]
    hw: dict[tuple[str, int], Any] = {(t, 1): None for t in ("attendance", "alerts", "audit-findings")}
    pipe, store = _pipeline(), DictStore()
    acts = [r for r in records if r.topic == "activity"]
    res = pipe.process(store, acts, "t", hw)  # sparse end offsets unknown: everything held
    res.commit()
    assert not [o for o in res.outs if o.topic == "signal-windows"]
    res = pipe.tick(store, [1, 5], {k: 0 for k in hw})
    res.commit()
    assert [o for o in res.outs if o.topic == "signal-windows"]


def test_result_reports_the_partition_clocks_it_moved() -> None:
    """The clocks the edge forwards to the site stage: every PERSON window ending by a clock was emitted."""
    pipe, store = _pipeline(), DictStore()
    records = _world()[1][:3000]
    res = pipe.process(store, records, "t")
    assert res.clocks and set(res.clocks) <= {r.partition for r in records}
    for p, clock in res.clocks.items():
        ends = [o.record["window_end"] for o in res.outs
                if o.stem == "signal_window" and o.record["person_id"] and zlib.crc32(o.key) % PARTITIONS == p]
        assert all(e <= clock for e in ends)
    res.commit()
    again = pipe.process(store, [], "t")
    assert again.clocks == {}  # nothing moved
    merged = Result()
    merged.merge(res)
    assert merged.clocks == res.clocks
