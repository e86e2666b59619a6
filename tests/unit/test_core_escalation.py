"""Escalation: one ticket command per HIGH/CRITICAL finding (under redelivery and restarts), fraud 24 h rule."""

from __future__ import annotations

import json
import random

import pytest
from test_core_correlation import HOUR, MIN, T0, encodes, finding, fraud

from schemas.topics import person_key
from simulator.config import HOUR_MS, SimConfig
from simulator.generate import generate
from streams.core.correlation import CorrelationEngine
from streams.core.escalation import (
    EscalationConfig,
    EscalationEngine,
    EscalationState,
    Escalator,
    audit_ticket_ids,
    fraud_ticket_ids,
)
from streams.core.ids import stable_id
from streams.core.types import Out


def test_high_and_critical_findings_yield_ticket_command_and_escalation() -> None:
    eng = EscalationEngine()
    outs = eng.process("audit_finding", finding("f1", T0, severity="CRITICAL"))
    encodes(outs)
    assert [o.topic for o in outs] == ["ticket-commands", "finding-escalations"]
    cmd, esc = outs[0].record, outs[1].record
    assert cmd["command_id"] == "audit:f1"
    assert cmd["ticket_id"] == stable_id("tkt", "audit", "f1") == audit_ticket_ids("f1")[1]
    assert outs[0].key == cmd["ticket_id"].encode()
    assert (cmd["category"], cmd["source"], cmd["priority"]) == ("SECURITY_AUDIT", "SYSTEM_GENERATED", "URGENT")
    assert cmd["related_event_id"] == "f1" and cmd["related_kind"] == "AUDIT_FINDING" and cmd["issued_at"] == T0
    assert "https://evidence.example/f1/0.jpg" in cmd["description"]
    assert esc == {"finding_id": "f1", "tenant_id": 1, "site_id": "s1", "person_id": "p1", "severity": "CRITICAL",
                   "escalated_to_ticket": True, "escalation_ticket_id": cmd["ticket_id"], "escalated_at": T0,
                   "evidence_summary": "asleep at post (f1)"}
    assert outs[1].key == person_key(1, "p1", "s1")
    high = eng.process("audit_finding", finding("f2", T0, severity="HIGH", person=None))
    assert high[0].record["priority"] == "HIGH" and high[1].key == b"1:site:s1"
    encodes(high)


@pytest.mark.parametrize("severity", ["LOW", "MEDIUM"])
def test_lower_findings_are_not_escalated(severity: str) -> None:
    eng = EscalationEngine()
    assert eng.process("audit_finding", finding("f1", T0, severity=severity)) == []
    assert eng.states == {}
    assert eng.process("noc_alert", {"tenant_id": 1}) == []


def test_redelivery_yields_nothing_or_identical_records() -> None:
    eng = EscalationEngine()
    f = finding("f1", T0)
    first = eng.process("audit_finding", f)
    assert eng.process("audit_finding", dict(f)) == []
    reemit = EscalationEngine(EscalationConfig(reemit_on_redelivery=True))
    a = reemit.process("audit_finding", f)
    b = reemit.process("audit_finding", f)
    assert encodes(a) == encodes(b) == encodes(first)
    x = reemit.process("fraud_score", fraud("x1", T0))
    assert encodes(reemit.process("fraud_score", fraud("x1", T0))) == encodes(x)


def test_lost_state_gives_the_same_ids_so_the_sink_upserts() -> None:
    f = finding("f1", T0)
    before = EscalationEngine().process("audit_finding", f)
    after_restart_without_state = EscalationEngine().process("audit_finding", f)
    assert encodes(before) == encodes(after_restart_without_state)


def test_fraud_threshold_and_24h_cooldown_by_event_time() -> None:
    eng = EscalationEngine()
    assert eng.process("fraud_score", fraud("x0", T0, prob=0.79)) == []
    first = eng.process("fraud_score", fraud("x1", T0, prob=0.8))
    encodes(first)
    cmd = first[0].record
    assert (cmd["category"], cmd["related_kind"], cmd["priority"]) == ("SECURITY_FRAUD", "FRAUD_SCORE", "HIGH")
    assert (cmd["command_id"], cmd["ticket_id"]) == fraud_ticket_ids("x1")
    assert "812 m outside the geofence" in cmd["evidence_summary"]
    assert eng.process("fraud_score", fraud("x1", T0, prob=0.8)) == []  # redelivery
    assert eng.process("fraud_score", fraud("x2", T0 + 23 * HOUR, prob=0.99)) == []  # inside 24 h
    assert eng.process("fraud_score", fraud("x3", T0 - 23 * HOUR, prob=0.99)) == []  # late, still inside
    other = eng.process("fraud_score", fraud("y1", T0 + HOUR, prob=0.97, person="p2"))
    assert other[0].record["priority"] == "URGENT"  # another person has its own cooldown
    nxt = eng.process("fraud_score", fraud("x4", T0 + 24 * HOUR, prob=0.9))
    assert len(nxt) == 1 and nxt[0].record["issued_at"] == T0 + 24 * HOUR
    state = eng.states[b"1:p1"]
    assert state.last_fraud_at == T0 + 24 * HOUR
    late = eng.process("fraud_score", fraud("x5", T0 - 30 * HOUR, prob=0.9))  # >24 h before every ticket
    assert len(late) == 1
    assert state.last_fraud_at == T0 + 24 * HOUR  # the cooldown stays anchored at the latest


def test_fraud_ticket_for_score_without_reasons() -> None:
    s = fraud("x1", T0)
    s["reasons"] = []
    out = EscalationEngine().process("fraud_score", s)
    encodes(out)
    assert "Reasons" not in out[0].record["description"]


def test_state_is_bounded_serialisable_and_versioned() -> None:
    esc = Escalator(EscalationConfig(max_remembered=5))
    state = EscalationState()
    for i in range(20):
        esc.on_record(state, "audit_finding", finding(f"f{i:02d}", T0 + i * MIN))
    assert len(state.issued) == 5 and "audit:f19" in state.issued
    esc.on_record(state, "audit_finding", finding("old", T0 + 8 * 24 * HOUR))  # horizon drops the rest
    assert list(state.issued) == ["audit:old"]
    assert esc.on_record(state, "anomaly", {}) == []
    d = json.loads(json.dumps(state.to_dict()))
    assert EscalationState.from_dict(d) == state
    assert EscalationState.from_dict(None).is_empty()
    with pytest.raises(ValueError):
        EscalationState.from_dict({"v": 2})
    with pytest.raises(ValueError):
        EscalationConfig(fraud_threshold=0)
    with pytest.raises(ValueError):
        EscalationConfig(fraud_cooldown_ms=8 * 24 * HOUR)


SIM = SimConfig(seed=7, span=12 * HOUR_MS, audits_per_site_day=3.0, alerts_per_site_hour=0.5)


def simulated_run(redeliver: float, restart_every: int) -> tuple[list[Out], set[str], int]:
    """Simulator alerts and findings through correlation + escalation, with a share of records delivered twice
    and a restart (state through plain JSON, as a Faust table holds it) every ``restart_every`` records."""
    rng = random.Random(1)
    corr, esc = CorrelationEngine(), EscalationEngine()
    outs: list[Out] = []
    escalated: set[str] = set()
    inputs = watermark = 0
    for n, sim in enumerate(generate(SIM)):
        if sim.topic not in ("alerts", "audit-findings"):
            continue
        inputs += 1
        if sim.topic == "audit-findings" and sim.record["severity"] in ("HIGH", "CRITICAL"):
            escalated.add(sim.record["event_id"])
        for _ in range(2 if rng.random() < redeliver else 1):
            outs += corr.process(sim.stem, sim.record)
            outs += esc.process(sim.stem, sim.record)
        watermark = max(watermark, sim.at - 2 * MIN)
        outs += corr.advance(watermark)
        if restart_every and n % restart_every == 0:
            corr = CorrelationEngine.from_dict(json.loads(json.dumps(corr.to_dict())))
            esc = EscalationEngine.from_dict(json.loads(json.dumps(esc.to_dict())))
    outs += corr.advance(watermark + 3 * HOUR)
    return outs, escalated, inputs


def test_simulated_hours_every_high_finding_gets_exactly_one_ticket_command() -> None:
    outs, escalated, inputs = simulated_run(redeliver=0.1, restart_every=997)
    assert inputs > 100 and len(escalated) > 10
    encodes(outs)
    commands = [o.record for o in outs if o.topic == "ticket-commands"]
    assert sorted(c["related_event_id"] for c in commands) == sorted(escalated)  # exactly one each
    assert len({c["command_id"] for c in commands}) == len(commands)
    escalations = [o.record["finding_id"] for o in outs if o.topic == "finding-escalations"]
    assert sorted(escalations) == sorted(escalated)
    incidents = [o.record for o in outs if o.topic == "incidents"]
    by_id: dict[str, list[int]] = {}
    for inc in incidents:
        by_id.setdefault(inc["incident_id"], []).append(inc["revision"])
    assert all(revs == list(range(1, len(revs) + 1)) for revs in by_id.values())  # no gaps, no repeats
    closed = [i for i in incidents if i["status"] == "CLOSED"]
    assert len(closed) == len(by_id)  # every incident closed once the watermark passed
    folded = [e for i in closed for e in i["related_event_ids"]]
    assert len(folded) == len(set(folded)) == inputs  # every record counted exactly once


def test_redelivery_and_restarts_change_no_output_byte() -> None:
    clean, _, _ = simulated_run(redeliver=0.0, restart_every=0)
    messy, _, _ = simulated_run(redeliver=0.2, restart_every=101)
    assert [(o.topic, o.key) for o in messy] == [(o.topic, o.key) for o in clean]
    assert encodes(messy) == encodes(clean)
