"""Escalation rules: HIGH/CRITICAL audit findings and fraud scores >= 0.80 become ticket commands.

Exactly one ticket per trigger, by two independent means:

1. Ids are derived from the trigger (``audit:<finding_id>`` / ``fraud:<score_id>`` and a sha1 ticket id), so
   a redelivered or replayed trigger yields a byte-identical command and the ticket sink's upsert on
   command_id / ticket_id keeps one ticket — even if this state was lost in a restart.
2. The per-key state remembers which findings were escalated, so a redelivery normally produces nothing
   (``reemit_on_redelivery=True`` re-emits the identical records instead, for edges that may have
   persisted state but lost the produce; the sink's upsert makes that harmless).

The fraud rule is stateful: at most one SECURITY_FRAUD ticket per person per ``fraud_cooldown_ms`` (24 h)
of event time, measured from the last fraud ticket's trigger time. That part does need the state (a
Faust changelogged table); with it lost, a second score inside the 24 h could open a second ticket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.topics import person_key
from streams.core.ids import stable_id
from streams.core.types import Out, Record

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
ESCALATED_SEVERITIES = frozenset({"HIGH", "CRITICAL"})
FINDING_PRIORITY = {"HIGH": "HIGH", "CRITICAL": "URGENT"}
URGENT_FRAUD_PROBABILITY = 0.95
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class EscalationConfig:
    fraud_threshold: float = 0.80
    fraud_cooldown_ms: int = DAY_MS
    dedupe_horizon_ms: int = 7 * DAY_MS  # must exceed fraud_cooldown_ms (the cooldown reads these times)
    max_remembered: int = 64
    reemit_on_redelivery: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.fraud_threshold <= 1.0:
            raise ValueError("fraud_threshold must be in (0, 1]")
        if not 0 <= self.fraud_cooldown_ms < self.dedupe_horizon_ms or self.max_remembered < 1:
            raise ValueError("need 0 <= fraud_cooldown_ms < dedupe_horizon_ms and max_remembered >= 1")


def audit_ticket_ids(finding_id: str) -> tuple[str, str]:
    """``(command_id, ticket_id)`` for an audit finding's ticket."""
    return f"audit:{finding_id}", stable_id("tkt", "audit", finding_id)


def fraud_ticket_ids(score_id: str) -> tuple[str, str]:
    """``(command_id, ticket_id)`` for a fraud score's ticket."""
    return f"fraud:{score_id}", stable_id("tkt", "fraud", score_id)


@dataclass(slots=True)
class EscalationState:
    """Per person key (``person_key``): the command ids issued (``audit:<finding>``, ``fraud:<score>``) with
    their trigger's event time, bounded by a horizon and a count. ``to_dict`` is plain JSON-able data."""

    issued: dict[str, int] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.issued

    @property
    def last_fraud_at(self) -> int | None:
        """Trigger time of the latest fraud ticket remembered."""
        times = [t for k, t in self.issued.items() if k.startswith("fraud:")]
        return max(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        return {"v": STATE_VERSION, "issued": dict(self.issued)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> EscalationState:
        if not d:
            return cls()
        if d.get("v") != STATE_VERSION:
            raise ValueError(f"unknown escalation state version {d.get('v')!r}")
        return cls({str(k): int(v) for k, v in d["issued"].items()})


def _urls(finding: Record) -> str:
    urls = finding.get("evidence_urls") or []
    return ("\nEvidence: " + " ".join(urls)) if urls else ""


def audit_outputs(finding: Record) -> list[Out]:
    """The ticket command and the finding_escalation record for one HIGH/CRITICAL finding (pure)."""
    fid = str(finding["event_id"])
    command_id, ticket_id = audit_ticket_ids(fid)
    sev, at = str(finding["severity"]), int(finding["occurred_at"])
    who = f" about {finding['person_id']}" if finding.get("person_id") else ""
    auditor = f"\nReported by auditor {finding['auditor_id']}." if finding.get("auditor_id") else ""
    cmd = {
        "command_id": command_id, "ticket_id": ticket_id, "tenant_id": int(finding["tenant_id"]),
        "site_id": finding["site_id"], "person_id": finding.get("person_id"), "category": "SECURITY_AUDIT",
        "source": "SYSTEM_GENERATED", "priority": FINDING_PRIORITY[sev],
        "title": f"{sev} audit finding {finding['finding_type']} at site {finding['site_id']}{who}",
        "description": f"{finding['evidence_summary']}{auditor}{_urls(finding)}",
        "related_event_id": fid, "related_kind": "AUDIT_FINDING",
        "evidence_summary": str(finding["evidence_summary"]), "issued_at": at,
    }
    esc = {
        "finding_id": fid, "tenant_id": int(finding["tenant_id"]), "site_id": finding["site_id"],
        "person_id": finding.get("person_id"), "severity": sev, "escalated_to_ticket": True,
        "escalation_ticket_id": ticket_id, "escalated_at": at, "evidence_summary": str(finding["evidence_summary"]),
    }
    key = person_key(int(finding["tenant_id"]), finding.get("person_id"), finding["site_id"])
    return [Out("ticket-commands", ticket_id.encode(), "ticket_command", cmd),
            Out("finding-escalations", key, "finding_escalation", esc)]


def fraud_outputs(score: Record) -> list[Out]:
    """The SECURITY_FRAUD ticket command for one fraud score (pure; the cooldown is the caller's)."""
    sid = str(score["score_id"])
    command_id, ticket_id = fraud_ticket_ids(sid)
    p = float(score["fraud_probability"])
    reasons = "; ".join(f"{r['description']} ({r['feature']}={r['value']:.4g})" for r in score.get("reasons") or [])
    summary = f"fraud probability {p:.2f} ({score['risk_level']}) on {score['event_type']} {score['event_id']}"
    cmd = {
        "command_id": command_id, "ticket_id": ticket_id, "tenant_id": int(score["tenant_id"]),
        "site_id": score["site_id"], "person_id": score["person_id"], "category": "SECURITY_FRAUD",
        "source": "SYSTEM_GENERATED", "priority": "URGENT" if p >= URGENT_FRAUD_PROBABILITY else "HIGH",
        "title": f"Suspected attendance fraud by {score['person_id']} at site {score['site_id']}",
        "description": f"{summary}, model {score['model_version']}." + (f"\nReasons: {reasons}" if reasons else ""),
        "related_event_id": sid, "related_kind": "FRAUD_SCORE",
        "evidence_summary": summary + (f": {reasons}" if reasons else ""), "issued_at": int(score["occurred_at"]),
    }
    return [Out("ticket-commands", ticket_id.encode(), "ticket_command", cmd)]


class Escalator:
    """The per-key rules. ``on_record`` mutates the state and returns the records to produce."""

    def __init__(self, config: EscalationConfig | None = None) -> None:
        self.config = config or EscalationConfig()

    def on_record(self, state: EscalationState, stem: str, record: Record) -> list[Out]:
        if stem == "audit_finding":
            return self.on_finding(state, record)
        if stem == "fraud_score":
            return self.on_fraud_score(state, record)
        return []

    def on_finding(self, state: EscalationState, finding: Record) -> list[Out]:
        if finding["severity"] not in ESCALATED_SEVERITIES:
            return []
        command_id, _ = audit_ticket_ids(str(finding["event_id"]))
        if command_id in state.issued:
            return audit_outputs(finding) if self.config.reemit_on_redelivery else []
        self._remember(state, command_id, int(finding["occurred_at"]))
        return audit_outputs(finding)

    def on_fraud_score(self, state: EscalationState, score: Record) -> list[Out]:
        cfg = self.config
        if float(score["fraud_probability"]) < cfg.fraud_threshold:
            return []
        command_id, _ = fraud_ticket_ids(str(score["score_id"]))
        if command_id in state.issued:  # redelivery of a score that opened a ticket
            return fraud_outputs(score) if cfg.reemit_on_redelivery else []
        at = int(score["occurred_at"])
        # Cooldown against every remembered fraud ticket, so a late score cannot slip in before the last one.
        if any(k.startswith("fraud:") and abs(at - t) < cfg.fraud_cooldown_ms for k, t in state.issued.items()):
            return []
        self._remember(state, command_id, at)
        return fraud_outputs(score)

    def _remember(self, state: EscalationState, command_id: str, at: int) -> None:
        cfg = self.config
        state.issued[command_id] = at
        horizon = max(state.issued.values()) - cfg.dedupe_horizon_ms
        kept = {k: t for k, t in state.issued.items() if t > horizon}
        if len(kept) > cfg.max_remembered:  # bounded: keep the newest
            kept = dict(sorted(kept.items(), key=lambda kv: (kv[1], kv[0]))[-cfg.max_remembered:])
        state.issued = kept


class EscalationEngine:
    """Drives an :class:`Escalator` over many keys in memory (replays, tests, a simple edge)."""

    def __init__(self, config: EscalationConfig | None = None) -> None:
        self.escalator = Escalator(config)
        self.states: dict[bytes, EscalationState] = {}

    def process(self, stem: str, record: Record) -> list[Out]:
        if stem not in ("audit_finding", "fraud_score"):
            return []
        key = person_key(int(record["tenant_id"]), record.get("person_id"), record.get("site_id"))
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = EscalationState()
        outs = self.escalator.on_record(state, stem, record)
        if state.is_empty():
            del self.states[key]
        return outs

    def to_dict(self) -> dict[str, Any]:
        return {k.decode(): s.to_dict() for k, s in sorted(self.states.items())}

    @classmethod
    def from_dict(cls, d: dict[str, Any], config: EscalationConfig | None = None) -> EscalationEngine:
        eng = cls(config)
        eng.states = {k.encode(): EscalationState.from_dict(v) for k, v in d.items()}
        return eng
