"""Hostile records produced to a running worker mid-stream, on the real broker.

The same simulated world is produced to two namespaces. In one, a worker reads the first half, then a forged
clock (a real guard's punch and activity with both times a year ahead, the records stamped minutes ahead of the
broker's clock) and records outside the input contract arrive on the guards' own partitions, then the second
half. The worker keeps going, dead-letters each hostile record with its reason and bytes, nothing else is LATE,
and every output equals the in-process reference over the clean namespace. The broker itself refuses a record
stamped further ahead than the input topics' ``message.timestamp.after.max.ms``: its producer sees the error.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import ConfigResource

from infra.topics_admin import admin, apply_topics, delete_namespace
from schemas import contract, serde
from schemas.topics import topic
from simulator.config import HOUR_MS, MINUTE_MS, SimConfig
from simulator.generate import generate
from simulator.produce import run
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

CFG = SimConfig(seed=21, tenants=1, sites_per_tenant=6, guards_per_site=3, span=10 * HOUR_MS, late_rate=0.0,
                scenario_rates={"GHOST_SHIFT": 0.2, "MISSED_TOUR": 0.2, "GPS_SPOOFING": 0.2})
YEAR_MS = 365 * 24 * HOUR_MS
TIMEOUT_S = 30.0
OUTPUTS = {"fraud-scores": ("score_id", None), "incidents": ("incident_id", "revision"),
           "signal-windows": ("window_id", None), "anomalies": ("anomaly_id", None),
           "ticket-commands": ("command_id", None), "finding-escalations": ("finding_id", None)}


@pytest.fixture
def clean_namespace(kafka_bootstrap: str) -> Iterator[str]:
    ns = f"tc{time.time_ns() % 10**10}"
    apply_topics(kafka_bootstrap, ns)
    yield ns
    delete_namespace(kafka_bootstrap, ns)


def _first(bootstrap: str, ns: str, short: str) -> tuple[dict[str, Any], bytes, int]:
    """A record of the first half already in ``short``: (decoded, key, partition)."""
    r = next(r for r in read_topic(bootstrap, ns, short) if r.key and r.key.startswith(b"1:"))
    return serde.decode(r.value), r.key or b"", r.partition


def _hostile(bootstrap: str, ns: str) -> list[tuple[str, int, bytes, bytes, int, str]]:
    """(short, partition, key, value, record timestamp, expected reason) of each hostile record, aimed at the
    partitions of real guards."""
    now = int(time.time() * 1000)
    att, att_key, att_p = _first(bootstrap, ns, "attendance")
    act, act_key, act_p = _first(bootstrap, ns, "activity")
    alert, alert_key, alert_p = _first(bootstrap, ns, "alerts")
    finding, finding_key, finding_p = _first(bootstrap, ns, "audit-findings")
    ticket, ticket_key, ticket_p = _first(bootstrap, ns, "tickets")
    ahead = {"occurred_at": att["occurred_at"] + YEAR_MS, "received_at": att["received_at"] + YEAR_MS}
    out = [
        # the forged clock: both times a year ahead, stamped five minutes ahead of the broker's clock
        ("attendance", att_p, att_key, serde.encode("attendance_event", {**att, **ahead, "event_id": "hx-clock-1"}),
         now + 5 * MINUTE_MS, "FUTURE_EVENT"),
        ("activity", act_p, act_key, serde.encode("activity_signal", {
            **act, "event_id": "hx-clock-2", "occurred_at": act["occurred_at"] + YEAR_MS,
            "received_at": act["received_at"] + YEAR_MS}), now + 5 * MINUTE_MS, "FUTURE_EVENT"),
        ("tickets", ticket_p, ticket_key, serde.encode("ticket", {
            **ticket, "event_id": "hx-clock-3", "occurred_at": ticket["occurred_at"] + YEAR_MS}), now, "FUTURE_EVENT"),
        ("attendance", att_p, att_key, serde.encode("attendance_event", {**att, "event_id": "hx-nan",
                                                                         "lat": float("nan")}), now, "OUT_OF_RANGE"),
        ("alerts", alert_p, alert_key, serde.encode("noc_alert", {**alert, "event_id": "hx-long",
                                                                  "message": "x" * 100_000}), now, "TOO_LONG"),
        ("activity", act_p, act_key, serde.encode("activity_signal", {**act, "event_id": "hx-colon",
                                                                      "person_id": "a:b"}), now, "BAD_ID"),
        ("audit-findings", finding_p, finding_key, serde.encode("audit_finding", {
            **finding, "event_id": "hx-nul", "evidence_summary": "a\x00b"}), now, "BAD_TEXT"),
        ("alerts", alert_p, alert_key, serde.encode("noc_alert", {**alert, "event_id": "hx-max",
                                                                  "occurred_at": 2**63 - 1}), now, "OUT_OF_RANGE"),
        ("activity", act_p, act_key, b"\xc3\x01garbage", now, "MALFORMED"),
    ]
    for *_, reason in out:  # the reasons are the contract's (or the decoder's)
        assert reason in contract.CONTRACT_REASONS | {"MALFORMED"}
    return out


def _produce(bootstrap: str, ns: str, records: list[tuple[str, int, bytes, bytes, int, str]]) -> list[KafkaError]:
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    p = Producer({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000, "message.timeout.ms": 20_000,
                  "linger.ms": 0})
    for short, part, key, value, ts, _ in records:
        p.produce(topic(short, ns), value, key, partition=part, timestamp=ts, on_delivery=delivered)
        p.flush(TIMEOUT_S)  # one request per record: a refused one fails alone
    assert p.flush(TIMEOUT_S) == 0
    return errors


def _nan_free(v: Any) -> Any:
    """``v`` with NaN (a missing fraud feature) as a string, so equal records compare equal."""
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, dict):
        return {k: _nan_free(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_nan_free(x) for x in v]
    return v


def _outputs(bootstrap: str, ns: str) -> dict[str, dict[str, Any]]:
    return {short: final_by_id(decoded(read_topic(bootstrap, ns, short)), id_field, rev)
            for short, (id_field, rev) in OUTPUTS.items()}


def _reference(bootstrap: str, ns: str) -> tuple[dict[str, dict[str, Any]], Counter[tuple[str, bytes]]]:
    """The in-process pipeline over the clean namespace, and the site stage over its PERSON windows and final
    partition clocks (as tests/integration/test_worker.py builds it); and its dead letters (reason, bytes)."""
    ref = reference_outputs(bootstrap, ns)
    clock: dict[int, int] = {}
    for r in read_topic(bootstrap, ns, "activity"):
        t = serde.decode(r.value)["occurred_at"]
        clock[r.partition] = max(clock.get(r.partition, t), t)
    tz = {(s["tenant_id"], s["site_id"]): s["timezone"] for s in decoded(read_topic(bootstrap, ns, "ref.sites"))}
    sites = SiteStage(lambda t, s: tz.get((t, s), "UTC")).run_person_outputs(
        DictStore(), ref, {p: c - GRACE_MS - 1 for p, c in clock.items()}, empty=set(range(6)) - set(clock)).outs
    by: dict[str, list[dict[str, Any]]] = {}
    for o in [*ref, *sites]:
        by.setdefault(o.topic, []).append(o.record)
    letters = Counter((d["reason"], d["value"]) for d in by.get("dead-letters", []))
    return {short: final_by_id(by.get(short, []), id_field, rev) for short, (id_field, rev) in OUTPUTS.items()}, letters


def test_hostile_records_mid_stream_change_no_other_output(kafka_bootstrap: str, namespace: str,
                                                           clean_namespace: str, tmp_path: Path) -> None:
    world = list(generate(CFG))
    half = len(world) // 2
    assert run(world, kafka_bootstrap, clean_namespace, progress=None).ok
    assert run(world[:half], kafka_bootstrap, namespace, progress=None).ok

    # the input topics carry the broker's bound on CreateTime (none into the past)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic("attendance", namespace))
    client = admin(kafka_bootstrap)  # (kept: the futures fail once the handle is collected)
    cfg = client.describe_configs([res], request_timeout=TIMEOUT_S)[res].result(timeout=TIMEOUT_S)
    assert cfg["message.timestamp.after.max.ms"].value == str(contract.BROKER_MAX_FUTURE_MS)
    assert int(cfg["message.timestamp.before.max.ms"].value) == 2**63 - 1

    w = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "faust", free_port(), tmp_path / "worker.log").start()
    try:
        wait_for(lambda: group_caught_up(kafka_bootstrap, namespace), 300, "the worker to read the first half")
        hostile = _hostile(kafka_bootstrap, namespace)
        assert _produce(kafka_bootstrap, namespace, hostile) == []  # inside the broker's bound: accepted
        # stamped beyond message.timestamp.after.max.ms: the broker refuses it, its producer sees why
        act, act_key, act_p = _first(kafka_bootstrap, namespace, "activity")
        refused = serde.encode("activity_signal", {**act, "event_id": "hx-refused"})
        errors = _produce(kafka_bootstrap, namespace, [("activity", act_p, act_key, refused,
                                                        int(time.time() * 1000) + contract.BROKER_MAX_FUTURE_MS
                                                        + 10 * MINUTE_MS, "")])
        assert [e.code() for e in errors] == [KafkaError.INVALID_TIMESTAMP]
        assert run(world[half:], kafka_bootstrap, namespace, progress=None).ok
        wait_for(lambda: group_caught_up(kafka_bootstrap, namespace), 300, "the worker to read everything")
        wait_for(lambda: site_stage_caught_up(kafka_bootstrap, namespace), 180, "the site stage to catch up")
        assert w.alive(), w.log_tail()  # it kept going
        metrics = w.metrics()
    finally:
        w.stop()
    assert metrics, w.log_tail()
    assert all(refused != r.value for r in read_topic(kafka_bootstrap, namespace, "activity"))

    # each hostile record: one dead letter with its reason and original bytes, counted by reason; the others'
    # dead letters are the clean run's
    reference, clean_letters = _reference(kafka_bootstrap, clean_namespace)
    letters = decoded(read_topic(kafka_bootstrap, namespace, "dead-letters"))
    got = Counter((d["reason"], d["value"]) for d in letters)
    assert got == Counter((reason, value) for _, _, _, value, _, reason in hostile) + clean_letters
    for reason, n in Counter(reason for *_, reason in hostile).items():
        assert metrics.get(f'noc_worker_dead_letters_total{{reason="{reason}"}}', 0) == n, reason
    assert metrics.get("noc_worker_late_events_total", 0) == 0  # nothing else became LATE

    # every other output: the in-process reference over the clean namespace
    mine = _outputs(kafka_bootstrap, namespace)
    assert mine["fraud-scores"] and mine["signal-windows"] and mine["incidents"]
    assert _nan_free(mine) == _nan_free(reference)
