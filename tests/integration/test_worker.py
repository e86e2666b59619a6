"""The worker as a real subprocess against the real broker: a simulated run with injected scenarios and bad
input, checked against the in-process reference (same core, records fed one partition at a time)."""

from __future__ import annotations

import copy
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from schemas import serde
from schemas.serde import MAGIC
from schemas.topics import person_key, topic
from simulator.config import HOUR_MS, MINUTE_MS, SimConfig
from simulator.produce import simulate
from streams.core.pipeline import GRACE_MS, DictStore
from streams.core.sites import SiteStage
from streams.site_stage import site_stage_caught_up
from streams.testkit import (
    WorkerProcess,
    decoded,
    final_by_id,
    free_port,
    group_caught_up,
    read_topic,
    reference_outputs,
    wait_for,
)

pytestmark = pytest.mark.integration

SCENARIO_CFG = SimConfig(seed=5, tenants=1, sites_per_tenant=12, guards_per_site=3, span=12 * HOUR_MS,
                         scenario_rates={"GHOST_SHIFT": 0.25, "MISSED_TOUR": 0.25, "GPS_SPOOFING": 0.15,
                                         "IMPOSSIBLE_TRAVEL": 0.15})


def _produce_bad(bootstrap: str, ns: str) -> dict[str, bytes]:
    """One record per dead-letter reason the worker must handle; returns reason -> the bytes sent."""
    atts = decoded(read_topic(bootstrap, ns, "attendance"))
    acts = read_topic(bootstrap, ns, "activity")
    base: dict[str, Any] = copy.deepcopy(atts[0])
    bad: dict[str, tuple[str, int | None, bytes, bytes]] = {}

    def att(**changes: Any) -> bytes:
        rec = dict(base, **changes)
        return serde.encode("attendance_event", rec)

    bad["MALFORMED"] = ("attendance", None, b"k", b"definitely not avro")
    bad["UNKNOWN_SCHEMA"] = ("attendance", None, b"k", MAGIC + b"\x01\x02\x03\x04\x05\x06\x07\x08" + b"\x00")
    bad["WRONG_SCHEMA"] = ("alerts", None, b"k", serde.encode("attendance_event", base))
    bad["UNKNOWN_TENANT"] = ("attendance", None, person_key(999, "p"), att(event_id="bad-tenant", tenant_id=999))
    bad["UNKNOWN_SITE"] = ("attendance", None, b"k2", att(event_id="bad-site", site_id="no-such-site"))
    future = int(time.time() * 1000) + 365 * 24 * HOUR_MS
    bad["FUTURE_EVENT"] = ("attendance", None, b"k3", att(event_id="bad-future", occurred_at=future))
    # LATE: an activity signal hours behind the watermark of its person's partition.
    first = acts[0]
    late = dict(serde.decode(first.value), event_id="bad-late", occurred_at=SCENARIO_CFG.start + 10 * MINUTE_MS)
    bad["LATE"] = ("activity", first.partition, first.key or b"", serde.encode("activity_signal", late))
    p = Producer({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000})
    for short, part, key, value in bad.values():
        if part is None:
            p.produce(topic(short, ns), value, key)
        else:
            p.produce(topic(short, ns), value, key, partition=part)
    assert p.flush(30) == 0
    return {reason: v[3] for reason, v in bad.items()}


def test_worker_scenarios_bad_input_and_reference(kafka_bootstrap: str, namespace: str, tmp_path: Path) -> None:
    rep = simulate(SCENARIO_CFG, kafka_bootstrap, namespace, progress=None)
    assert rep.ok, rep.errors
    sent = _produce_bad(kafka_bootstrap, namespace)
    w = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "faust", free_port(), tmp_path / "worker.log").start()
    try:
        wait_for(lambda: group_caught_up(kafka_bootstrap, namespace), 150, "the worker to commit every input")
        wait_for(lambda: site_stage_caught_up(kafka_bootstrap, namespace), 30, "the site stage to catch up")
        metrics = w.metrics()
    finally:
        w.stop()
    assert metrics, w.log_tail()

    # -- bad input: each reason dead-lettered with its original bytes, counted by reason; the worker kept going
    dls = decoded(read_topic(kafka_bootstrap, namespace, "dead-letters"))
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for d in dls:
        by_reason.setdefault(d["reason"], []).append(d)
    for reason, value in sent.items():
        assert any(d["value"] == value for d in by_reason.get(reason, [])), (reason, Counter(by_reason))
        assert metrics.get(f'noc_worker_dead_letters_total{{reason="{reason}"}}', 0) >= 1, reason
    assert metrics["noc_worker_late_events_total"] >= 1

    # -- every valid attendance event scored exactly once (one score id per event)
    att_records = read_topic(kafka_bootstrap, namespace, "attendance")
    atts = decoded(att_records, "attendance_event")
    dead_ids = {serde.decode(d["value"])["event_id"] for d in dls
                if d["source_topic"] == topic("attendance", namespace) and d["reason"] not in
                ("MALFORMED", "UNKNOWN_SCHEMA")}
    scores = decoded(read_topic(kafka_bootstrap, namespace, "fraud-scores"))
    score_ids = {s["event_id"]: s["score_id"] for s in scores}
    assert len({s["score_id"] for s in scores}) == len(score_ids)  # no event with two different score ids
    # Punches after the partition's clock (activity watermark - grace) are still held back at the end of the
    # input: nothing later moves that partition's event time on.
    clock: dict[int, int] = {}
    for r in read_topic(kafka_bootstrap, namespace, "activity"):
        t = serde.decode(r.value)["occurred_at"]
        clock[r.partition] = max(clock.get(r.partition, t), t)
    held = set()
    for r in att_records:
        try:
            a = serde.decode(r.value, expected="attendance_event")
        except serde.DecodeError:
            continue
        if r.partition not in clock or a["occurred_at"] > clock[r.partition] - GRACE_MS:
            held.add(a["event_id"])
    assert set(score_ids) == {a["event_id"] for a in atts} - dead_ids - held
    assert all(len(s["reasons"]) <= 3 and s["model_version"] for s in scores)
    assert metrics["noc_worker_ml_predictions_total"] == len(score_ids)

    # -- the same outputs as the in-process reference (final state per stable id)
    ref = reference_outputs(kafka_bootstrap, namespace)
    ref_by_topic: dict[str, list[dict[str, Any]]] = {}
    for o in ref:
        ref_by_topic.setdefault(o.topic, []).append(o.record)
    got = {short: decoded(read_topic(kafka_bootstrap, namespace, short))
           for short in ("anomalies", "incidents", "signal-windows", "ticket-commands")}
    # -- the site stage (SITE windows, statistical anomalies): the same as SiteStage over the reference's PERSON
    # windows and final partition clocks (activity watermark - grace - 1)
    tz = {(s["tenant_id"], s["site_id"]): s["timezone"] for s in decoded(read_topic(kafka_bootstrap, namespace,
                                                                                       "ref.sites"))}
    site_ref = SiteStage(lambda t, s: tz.get((t, s), "UTC")).run_person_outputs(
        DictStore(), ref, {p: c - GRACE_MS - 1 for p, c in clock.items()},
        empty=set(range(6)) - set(clock)).outs  # partitions without activity never report a clock
    site_want = {"windows": [o.record for o in site_ref if o.stem == "signal_window"],
                 "anomalies": [o.record for o in site_ref if o.stem == "anomaly"]}
    assert site_want["windows"]
    site_got = {"windows": [w for w in got["signal-windows"] if w["scope"] == "SITE"],
                "anomalies": [a for a in got["anomalies"] if not a["baseline_id"].startswith("rule:")]}
    assert final_by_id(site_got["windows"], "window_id") == final_by_id(site_want["windows"], "window_id")
    assert final_by_id(site_got["anomalies"], "anomaly_id") == final_by_id(site_want["anomalies"], "anomaly_id")
    got["signal-windows"] = [w for w in got["signal-windows"] if w["scope"] == "PERSON"]
    got["anomalies"] = [a for a in got["anomalies"] if a["baseline_id"].startswith("rule:")]

    assert final_by_id(got["anomalies"], "anomaly_id") == final_by_id(ref_by_topic["anomalies"], "anomaly_id")
    # incidents about a site alone (its alerts, findings and statistical anomalies) come from the site stage
    site_incidents = [o.record for o in site_ref if o.stem == "correlated_incident"]
    assert final_by_id(got["incidents"], "incident_id", "revision") == \
        final_by_id(ref_by_topic.get("incidents", []) + site_incidents, "incident_id", "revision")
    assert final_by_id(got["signal-windows"], "window_id") == final_by_id(ref_by_topic["signal-windows"], "window_id")

    # -- injected scenarios show up as the right rule anomalies
    labels = decoded(read_topic(kafka_bootstrap, namespace, "labels"))
    by_metric: dict[str, set[str]] = {}
    for a in got["anomalies"]:
        by_metric.setdefault(a["metric"], set()).add(a["person_id"])
    # Only ghost shifts whose rule can have fired before the input ends (the partition clock stops with its last
    # activity): a ghost shift is flagged an hour into the shift. Missed tours: at least half are flagged.
    part_of = {serde.decode(r.value)["person_id"]: r.partition for r in att_records
               if r.partition in clock and r.key and r.key.startswith(b"1:")}  # the simulated, valid ones

    def observable(lb: dict[str, Any], after_ms: int) -> bool:
        p = part_of.get(lb["person_id"])
        return p is not None and lb["occurred_at"] + after_ms + 15 * MINUTE_MS <= clock[p] - GRACE_MS

    # (by scenario: whether a scenario's label says is_fraud is the simulator's labelling policy, not ours)
    ghosts = {lb["person_id"] for lb in labels if lb["scenario"] == "GHOST_SHIFT"
              and observable(lb, HOUR_MS)}
    missed = {lb["person_id"] for lb in labels if lb["scenario"] == "MISSED_TOUR"}
    assert ghosts and missed, Counter((lb["scenario"], lb["is_fraud"]) for lb in labels)
    assert ghosts & by_metric.get("silent_minutes_since_check_in", set()), (ghosts, by_metric)
    assert len(missed & by_metric.get("tour_completion_ratio", set())) >= len(missed) / 2, (missed, by_metric)

    # -- each HIGH/CRITICAL audit finding: exactly one ticket command id
    serious = set()
    for r in read_topic(kafka_bootstrap, namespace, "audit-findings"):
        f = serde.decode(r.value)
        if f["severity"] in ("HIGH", "CRITICAL") and r.partition in clock \
                and f["occurred_at"] <= clock[r.partition] - GRACE_MS:
            serious.add(f["event_id"])
    assert serious
    cmds = [c for c in got["ticket-commands"] if c["category"] == "SECURITY_AUDIT"]
    per_finding: dict[str, set[str]] = {}
    for c in cmds:
        per_finding.setdefault(c["related_event_id"], set()).add(c["command_id"])
    assert set(per_finding) == serious
    assert all(len(ids) == 1 for ids in per_finding.values())
    assert got["incidents"], "no incidents"
