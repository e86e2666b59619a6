"""Correlation: alerts, anomalies, audit findings and high fraud scores about one person (or, when about no
one, one site) that arrive close together in event time fold into one CorrelatedIncident.

Rules (all event time; see /work/notes/api-correlation.md for the contract the edge relies on):

* Grouping key: ``person_key(tenant, person_id, site_id)`` — the person, else the site. A key can hold a
  few incidents at once (an incident stays OPEN for ``inactivity_ms`` but only takes evidence within
  ``window_ms`` of it, so a later burst opens a new incident while the old one waits to close).
* A record joins the most recent incident of its key when its time lies within ``window_ms`` of the
  incident's [first_seen, last_seen], the incident is not yet due to close, the incident would not
  span more than ``max_duration_ms``, and it holds fewer than ``max_evidence`` pieces. Otherwise it
  starts a new incident; a key holds at most ``max_open`` incidents (a storm closes the oldest early,
  with ``updated_at`` the event time of the piece that pushed it out).
* An incident is published (revision 1, OPEN) once it has ``min_records`` pieces; until then it is
  *pending* and produces nothing (a pending group that goes quiet is dropped silently).
* Every further piece is a new revision (+1, same incident_id). The close revision (CLOSED) comes
  when the watermark passes ``min(last_seen + inactivity_ms, first_seen + max_duration_ms)``; its
  ``updated_at`` is that time, not the watermark, so output does not depend on how often the edge ticks.
* Severity of a piece: the record's ``severity`` (alerts, findings, anomalies — the anomaly detector
  derives it from |score| / threshold); a fraud score's risk level HIGH -> HIGH, CRITICAL -> CRITICAL
  (LOW and MEDIUM scores are not evidence). ``combined_severity`` is the highest piece severity,
  raised one level (at most CRITICAL) when three or more distinct kinds agree.
* An incident's tenant, site and person are those of its first piece (a guard's evidence from two sites
  within the window is one incident about that guard; each piece keeps its own time and summary).
* Duplicates (an id already in an incident of the key, or in one closed less than
  ``dedupe_horizon_ms`` ago) change nothing and produce nothing.
"""

from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass, field
from typing import Any

from schemas.topics import person_key
from streams.core.ids import event_time, evidence_id, stable_id
from streams.core.types import Out, Record

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS

SEVERITIES: tuple[str, ...] = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
RANK = {s: i for i, s in enumerate(SEVERITIES)}
KIND_OF_STEM = {"noc_alert": "NOC_ALERT", "anomaly": "ANOMALY", "audit_finding": "AUDIT_FINDING",
                "fraud_score": "FRAUD_SCORE"}
# Fraud risk levels are on the same four-step scale; only HIGH and CRITICAL scores are evidence (by default).
FRAUD_SEVERITY = {"LOW": "LOW", "MEDIUM": "MEDIUM", "HIGH": "HIGH", "CRITICAL": "CRITICAL"}
KINDS: tuple[str, ...] = ("NOC_ALERT", "ANOMALY", "AUDIT_FINDING", "FRAUD_SCORE")
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
AGREEING_KINDS = 3  # this many distinct kinds raise the combined severity one level
SUMMARY_MAX = 100
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class CorrelationConfig:
    window_ms: int = 15 * MINUTE_MS
    inactivity_ms: int = 60 * MINUTE_MS
    max_duration_ms: int = 6 * HOUR_MS
    min_records: int = 1
    max_evidence: int = 20  # per incident; the next piece starts a new incident (bounded state)
    max_open: int = 2  # incidents held per key; a new one beyond this closes the oldest early
    min_severity: str = "LOW"
    fraud_min_risk: str = "HIGH"
    dedupe_horizon_ms: int = 24 * HOUR_MS
    max_remembered: int = 32  # per key: ids of closed incidents' evidence kept for dedupe

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.inactivity_ms <= 0 or self.max_duration_ms <= 0:
            raise ValueError("window_ms, inactivity_ms and max_duration_ms must be positive")
        if self.min_records < 1 or self.max_evidence < self.min_records or self.max_open < 1:
            raise ValueError("need 1 <= min_records <= max_evidence and max_open >= 1")
        if self.min_severity not in RANK or self.fraud_min_risk not in RANK:
            raise ValueError(f"severities are {', '.join(SEVERITIES)}")


@dataclass(frozen=True, slots=True)
class Evidence:
    event_id: str
    kind: str  # EvidenceKind symbol
    severity: str
    occurred_at: int
    summary: str
    tenant_id: int
    site_id: str
    person_id: str | None

    def to_avro(self) -> Record:
        return {"event_id": self.event_id, "kind": self.kind, "severity": self.severity,
                "occurred_at": self.occurred_at, "summary": self.summary}


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 3] + "..."  # ASCII: keeps the str compact


def _summary(stem: str, r: Record) -> str:
    if stem == "noc_alert":
        return _clip(f"{r['alert_type']}: {r['message']}" if r.get("message") else str(r["alert_type"]))
    if stem == "audit_finding":
        return _clip(f"{r['finding_type']}: {r['evidence_summary']}")
    if stem == "anomaly":
        if str(r["baseline_id"]).startswith("rule:"):  # a duty rule: no baseline, so no z-score to show
            return _clip(f"{r['metric']} {r['observed']:.4g} (rule limit {r['threshold']:.4g})")
        return _clip(f"{r['metric']} {r['observed']:.4g} vs expected {r['expected']:.4g} (z={r['score']:.2f})")
    reasons = r.get("reasons") or []
    why = f": {reasons[0]['description']}" if reasons else ""
    return _clip(f"fraud probability {r['fraud_probability']:.2f} on {r['event_type']}{why}")


def correlation_key(stem: str, record: Record) -> bytes:
    """The grouping (and partition) key: the person, else the site."""
    return person_key(int(record["tenant_id"]), record.get("person_id"), record.get("site_id"))


def evidence_of(stem: str, record: Record, config: CorrelationConfig | None = None) -> Evidence | None:
    """The piece of evidence a record contributes, or None when it is not correlation evidence."""
    cfg = config or CorrelationConfig()
    kind = KIND_OF_STEM.get(stem)
    if kind is None:
        return None
    if stem == "fraud_score":
        severity = FRAUD_SEVERITY[str(record["risk_level"])]
        if RANK[severity] < RANK[cfg.fraud_min_risk]:
            return None
    else:
        severity = str(record["severity"])
    if RANK[severity] < RANK[cfg.min_severity]:
        return None
    return Evidence(evidence_id(stem, record), kind, severity, event_time(stem, record), _summary(stem, record),
                    int(record["tenant_id"]), str(record["site_id"]), record.get("person_id"))


@functools.lru_cache(maxsize=4096)
def _incident_id(key: str, first_event_id: str) -> str:
    return stable_id("inc", key, first_event_id)


@dataclass(slots=True)
class Incident:
    """An incident being built: pending (revision 0) until it has ``min_records`` pieces, then published."""

    key: str
    evidence: list[Evidence]
    revision: int = 0
    updated_at: int = 0

    @property
    def incident_id(self) -> str:
        return _incident_id(self.key, self.evidence[0].event_id)

    @property
    def first_seen(self) -> int:
        return min(e.occurred_at for e in self.evidence)

    @property
    def last_seen(self) -> int:
        return max(e.occurred_at for e in self.evidence)

    def close_at(self, cfg: CorrelationConfig) -> int:
        return min(self.last_seen + cfg.inactivity_ms, self.first_seen + cfg.max_duration_ms)

    def accepts(self, ev: Evidence, cfg: CorrelationConfig) -> bool:
        first, last, t = self.first_seen, self.last_seen, ev.occurred_at
        return (first - cfg.window_ms <= t <= last + cfg.window_ms
                and t < self.close_at(cfg)
                and max(last, t) - min(first, t) <= cfg.max_duration_ms
                and len(self.evidence) < cfg.max_evidence)

    def to_avro(self, status: str) -> Record:
        kinds = sorted({e.kind for e in self.evidence})
        top = max(RANK[e.severity] for e in self.evidence)
        combined = SEVERITIES[min(top + (1 if len(kinds) >= AGREEING_KINDS else 0), len(SEVERITIES) - 1)]
        lead = next(e for e in self.evidence if RANK[e.severity] == top)
        first = self.evidence[0]
        title = f"{combined} {lead.kind}: {lead.summary}"
        if len(self.evidence) > 1:
            title += f" (+{len(self.evidence) - 1} more: {', '.join(kinds)})"
        return {
            "incident_id": self.incident_id, "tenant_id": first.tenant_id, "site_id": first.site_id,
            "person_id": first.person_id, "status": status, "combined_severity": combined, "kinds": kinds,
            "related_event_ids": [e.event_id for e in self.evidence],
            "evidence": [e.to_avro() for e in self.evidence], "title": _clip(title),
            "first_seen": self.first_seen, "last_seen": self.last_seen, "revision": self.revision,
            "updated_at": self.updated_at,
        }

    def to_dict(self) -> dict[str, Any]:
        """Compact: kind and severity as one small int, and site/person only where a piece differs from the
        first (tenant never does: it is part of the key). Keeps a table entry small (see the memory test)."""
        head = self.evidence[0]
        ev: list[list[Any]] = []
        for e in self.evidence:
            row: list[Any] = [e.event_id, KIND_CODE[e.kind] * len(SEVERITIES) + RANK[e.severity], e.occurred_at,
                              e.summary]
            if (e.site_id, e.person_id) != (head.site_id, head.person_id):
                row += [e.site_id, e.person_id]
            ev.append(row)
        return {"key": self.key, "rev": self.revision, "upd": self.updated_at, "t": head.tenant_id,
                "s": head.site_id, "p": head.person_id, "ev": ev}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        tenant, site, person = int(d["t"]), str(d["s"]), d["p"]
        ev = []
        for row in d["ev"]:
            kind, sev = divmod(int(row[1]), len(SEVERITIES))
            s_id, p_id = (str(row[4]), row[5]) if len(row) > 4 else (site, person)
            ev.append(Evidence(str(row[0]), KINDS[kind], SEVERITIES[sev], int(row[2]), str(row[3]), tenant, s_id, p_id))
        return cls(str(d["key"]), ev, int(d["rev"]), int(d["upd"]))


@dataclass(slots=True)
class CorrelationState:
    """Everything the correlator keeps for one key. ``to_dict`` is plain JSON-able data for a Faust table."""

    incidents: list[Incident] = field(default_factory=list)  # open or pending, oldest first
    seen: dict[str, int] = field(default_factory=dict)  # evidence id of closed incidents -> its event time

    def is_empty(self) -> bool:
        return not self.incidents and not self.seen

    def knows(self, event_id: str) -> bool:
        return event_id in self.seen or any(e.event_id == event_id for i in self.incidents for e in i.evidence)

    def next_deadline(self, config: CorrelationConfig | None = None) -> int | None:
        """Earliest watermark at which :meth:`Correlator.on_watermark` would change this state."""
        cfg = config or CorrelationConfig()
        times = [i.close_at(cfg) for i in self.incidents]
        if self.seen:
            times.append(min(self.seen.values()) + cfg.dedupe_horizon_ms)
        return min(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        return {"v": STATE_VERSION, "incidents": [i.to_dict() for i in self.incidents], "seen": dict(self.seen)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CorrelationState:
        if not d:
            return cls()
        if d.get("v") != STATE_VERSION:
            raise ValueError(f"unknown correlation state version {d.get('v')!r}")
        return cls([Incident.from_dict(i) for i in d["incidents"]], {str(k): int(v) for k, v in d["seen"].items()})


class Correlator:
    """The per-key rules. Methods mutate the given state and return the records to produce."""

    def __init__(self, config: CorrelationConfig | None = None) -> None:
        self.config = config or CorrelationConfig()

    def on_record(self, state: CorrelationState, stem: str, record: Record) -> list[Out]:
        cfg = self.config
        ev = evidence_of(stem, record, cfg)
        if ev is None or state.knows(ev.event_id):
            return []
        key = correlation_key(stem, record)
        outs: list[Out] = []
        joinable = [i for i in state.incidents if i.accepts(ev, cfg)]
        if joinable:
            inc = max(joinable, key=lambda i: (i.last_seen, i.first_seen))
            inc.evidence.append(ev)
        else:
            inc = Incident(key.decode(), [ev])
            state.incidents.append(inc)
            while len(state.incidents) > cfg.max_open:  # bounded: a storm closes its oldest incidents early
                outs.extend(self._close(state, state.incidents.pop(0), ev.occurred_at))
        if inc.revision == 0 and len(inc.evidence) < cfg.min_records:
            return outs
        inc.revision += 1
        inc.updated_at = max(inc.updated_at, inc.last_seen)  # the latest event time known; never goes back
        outs.append(Out("incidents", key, "correlated_incident", inc.to_avro("OPEN")))
        return outs

    def _close(self, state: CorrelationState, inc: Incident, at: int) -> list[Out]:
        """Close (publish CLOSED, if it was published) and remember its evidence ids for dedupe."""
        for e in inc.evidence:
            state.seen[e.event_id] = e.occurred_at
        self._trim_seen(state)
        if inc.revision == 0:
            return []
        inc.revision += 1
        inc.updated_at = max(inc.updated_at, at)
        return [Out("incidents", inc.key.encode(), "correlated_incident", inc.to_avro("CLOSED"))]

    def on_watermark(self, state: CorrelationState, watermark_ms: int) -> list[Out]:
        """Close incidents whose close time the watermark has passed; forget expired dedupe ids."""
        cfg = self.config
        outs: list[Out] = []
        keep: list[Incident] = []
        for inc in state.incidents:
            due = inc.close_at(cfg)
            if due > watermark_ms:
                keep.append(inc)
            else:
                outs.extend(self._close(state, inc, due))
        state.incidents = keep
        horizon = watermark_ms - cfg.dedupe_horizon_ms
        state.seen = {k: t for k, t in state.seen.items() if t > horizon}
        self._trim_seen(state)
        return outs

    def _trim_seen(self, state: CorrelationState) -> None:
        if len(state.seen) > self.config.max_remembered:  # bounded: keep the newest ids
            newest = sorted(state.seen.items(), key=lambda kv: (kv[1], kv[0]))[-self.config.max_remembered:]
            state.seen = dict(newest)


class CorrelationEngine:
    """Drives a :class:`Correlator` over many keys in memory (replays, tests, a simple edge), with a deadline
    heap so that :meth:`advance` only touches keys that have something due."""

    def __init__(self, config: CorrelationConfig | None = None) -> None:
        self.correlator = Correlator(config)
        self.states: dict[bytes, CorrelationState] = {}
        self._deadline: dict[bytes, int] = {}  # the current deadline per key; heap entries that differ are stale
        self._heap: list[tuple[int, bytes]] = []

    @property
    def config(self) -> CorrelationConfig:
        return self.correlator.config

    def _track(self, key: bytes, state: CorrelationState) -> None:
        if state.is_empty():
            self.states.pop(key, None)
            self._deadline.pop(key, None)
            return
        deadline = state.next_deadline(self.config)
        if deadline is not None and self._deadline.get(key) != deadline:
            self._deadline[key] = deadline
            heapq.heappush(self._heap, (deadline, key))

    def process(self, stem: str, record: Record) -> list[Out]:
        if stem not in KIND_OF_STEM:
            return []
        key = correlation_key(stem, record)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = CorrelationState()
        outs = self.correlator.on_record(state, stem, record)
        self._track(key, state)
        return outs

    def advance(self, watermark_ms: int) -> list[Out]:
        """Apply the watermark to every key that has something due, in (deadline, key) order (deterministic)."""
        outs: list[Out] = []
        while self._heap and self._heap[0][0] <= watermark_ms:
            deadline, key = heapq.heappop(self._heap)
            if self._deadline.get(key) != deadline:
                continue  # stale: the key's deadline moved since
            del self._deadline[key]
            state = self.states[key]
            outs.extend(self.correlator.on_watermark(state, watermark_ms))
            self._track(key, state)
        return outs

    def open_incidents(self) -> int:
        return sum(1 for s in self.states.values() for i in s.incidents if i.revision > 0)

    def to_dict(self) -> dict[str, Any]:
        return {k.decode(): s.to_dict() for k, s in sorted(self.states.items())}

    @classmethod
    def from_dict(cls, d: dict[str, Any], config: CorrelationConfig | None = None) -> CorrelationEngine:
        eng = cls(config)
        for k, v in sorted(d.items()):
            key = k.encode()
            eng.states[key] = CorrelationState.from_dict(v)
            eng._track(key, eng.states[key])
        return eng
