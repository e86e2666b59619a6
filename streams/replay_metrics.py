"""What-if metrics (pure): alert, incident and ticket volumes, and precision/recall against ground truth.

Ground truth comes from two places:

* the ``labels`` topic: per attendance ``event_id``, ``is_fraud`` (simulator, analyst or ticket-resolution
  labels; the latest label per event wins, in the order given);
* ticket resolutions on the ``tickets`` topic: FRAUD_CONFIRMED / FALSE_POSITIVE on a ticket whose
  ``related_event_id`` names the attendance event (or a fraud score of it).

Scored events are judged on the first, fraud tickets on both (separately: resolutions only exist for the
check-ins a supervisor looked at).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from models.scoring import event_id_of_score
from streams.core.types import Record
from streams.replay_diff import Snapshot

RESOLUTIONS = {"FRAUD_CONFIRMED": True, "FALSE_POSITIVE": False}


@dataclass
class Truth:
    labels: dict[str, bool] = field(default_factory=dict)  # attendance event_id -> is_fraud
    scenarios: dict[str, str] = field(default_factory=dict)
    resolutions: dict[str, bool] = field(default_factory=dict)  # event id (as named by the ticket) -> confirmed

    def add_label(self, rec: Record) -> None:
        self.labels[str(rec["event_id"])] = bool(rec["is_fraud"])
        self.scenarios[str(rec["event_id"])] = str(rec.get("scenario") or "NONE")

    def add_ticket(self, rec: Record) -> None:
        verdict = RESOLUTIONS.get(str(rec.get("resolution") or ""))
        rid = rec.get("related_event_id")
        if verdict is not None and rid and rec.get("status") in ("RESOLVED", "CLOSED"):
            self.resolutions[str(rid)] = verdict

    def extend(self, labels: Iterable[Record] = (), tickets: Iterable[Record] = ()) -> Truth:
        for r in labels:
            self.add_label(r)
        for r in tickets:
            self.add_ticket(r)
        return self

    def resolution_of(self, event_id: str) -> bool | None:
        """The resolution about an attendance event, whether the ticket named the event or one of its scores."""
        got = self.resolutions.get(event_id)
        if got is not None:
            return got
        for rid, verdict in self.resolutions.items():
            if ":" in rid and event_id_of_score(rid) == event_id:
                return verdict
        return None


@dataclass(frozen=True)
class PR:
    """Confusion counts over the items that have ground truth."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    def to_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
                "precision": self.precision, "recall": self.recall}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PR:
        return cls(int(d["tp"]), int(d["fp"]), int(d["fn"]), int(d["tn"]))


def confusion(predicted: set[str], truth: dict[str, bool]) -> PR:
    """``predicted`` positives judged against ``truth`` (items without truth are not counted)."""
    tp = sum(1 for k, v in truth.items() if v and k in predicted)
    fp = sum(1 for k, v in truth.items() if not v and k in predicted)
    fn = sum(1 for k, v in truth.items() if v and k not in predicted)
    tn = sum(1 for k, v in truth.items() if not v and k not in predicted)
    return PR(tp, fp, fn, tn)


@dataclass(frozen=True)
class Metrics:
    name: str
    volumes: dict[str, int]
    scores: PR  # scored events with p >= threshold vs labels
    tickets: PR  # events with a fraud ticket vs labels
    tickets_vs_resolutions: PR  # events with a fraud ticket vs supervisors' resolutions

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "volumes": self.volumes, "scores": self.scores.to_dict(),
                "tickets": self.tickets.to_dict(), "tickets_vs_resolutions": self.tickets_vs_resolutions.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metrics:
        return cls(str(d["name"]), {k: int(v) for k, v in d["volumes"].items()}, PR.from_dict(d["scores"]),
                   PR.from_dict(d["tickets"]), PR.from_dict(d["tickets_vs_resolutions"]))


def _fraud_ticket_events(snap: Snapshot) -> set[str]:
    return {key.removeprefix("fraud:") for key in snap.records["ticket-commands"] if key.startswith("fraud:")}


def metrics(name: str, snap: Snapshot, truth: Truth, fraud_threshold: float) -> Metrics:
    scores = snap.records["fraud-scores"]
    flagged = {eid for eid, r in scores.items() if float(r["fraud_probability"]) >= fraud_threshold}
    ticketed = _fraud_ticket_events(snap)
    cmds = snap.records["ticket-commands"].values()
    incidents = snap.records["incidents"].values()
    volumes = {
        "anomalies": len(snap.records["anomalies"]),
        "fraud_scores": len(scores),
        "fraud_alerts": len(flagged),
        "incidents": len(snap.records["incidents"]),
        "incidents_high_or_critical": sum(1 for r in incidents if r["combined_severity"] in ("HIGH", "CRITICAL")),
        "tickets": len(snap.records["ticket-commands"]),
        "fraud_tickets": sum(1 for r in cmds if r["category"] == "SECURITY_FRAUD"),
    }
    scored_truth = {eid: v for eid, v in truth.labels.items() if eid in scores}
    resolved: dict[str, bool] = {}
    for eid in scores:
        verdict = truth.resolution_of(eid)
        if verdict is not None:
            resolved[eid] = verdict
    return Metrics(name, volumes, confusion(flagged, scored_truth), confusion(ticketed, scored_truth),
                   confusion(ticketed, resolved))


def _fmt(v: float | None) -> str:
    return "  n/a" if v is None else f"{v:5.3f}"


def render(rows: list[Metrics]) -> str:
    """A side-by-side table: one column per configuration."""
    width = max(14, *(len(m.name) + 2 for m in rows))
    head = f"{'':34}" + "".join(f"{m.name:>{width}}" for m in rows)
    lines = [head]
    for vol in rows[0].volumes:
        lines.append(f"{vol:34}" + "".join(f"{m.volumes[vol]:>{width},}" for m in rows))
    for label, attr in (("fraud alerts vs labels", "scores"), ("fraud tickets vs labels", "tickets"),
                        ("fraud tickets vs resolutions", "tickets_vs_resolutions")):
        prs = [getattr(m, attr) for m in rows]
        lines.append(f"{label + ' precision':34}" + "".join(f"{_fmt(p.precision):>{width}}" for p in prs))
        lines.append(f"{label + ' recall':34}" + "".join(f"{_fmt(p.recall):>{width}}" for p in prs))
        lines.append(f"{'  (tp/fp/fn)':34}" + "".join(f"{f'{p.tp}/{p.fp}/{p.fn}':>{width}}" for p in prs))
    return "\n".join(lines)
