"""Compare two namespaces' outputs for one time range: what a replay added, removed or changed (pure).

A :class:`Snapshot` holds, per kind, the records that belong to the range, keyed so that the same
real-world thing has the same key in both namespaces:

* anomalies by ``anomaly_id`` (event time: window_end);
* incidents by ``incident_id``, latest revision only (event time: first_seen);
* fraud scores by the scored attendance ``event_id`` — the score_id carries the model version, and a
  what-if with another model must line up with the live score of the same event (event time: occurred_at);
* ticket commands by ``command_id``, except fraud tickets, keyed ``fraud:<attendance event id>`` for the
  same reason (event time: issued_at).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from models.scoring import event_id_of_score
from streams.core.types import Record

KINDS: tuple[str, ...] = ("anomalies", "incidents", "fraud-scores", "ticket-commands")
STEM_OF: dict[str, str] = {"anomalies": "anomaly", "incidents": "correlated_incident",
                           "fraud-scores": "fraud_score", "ticket-commands": "ticket_command"}
KIND_OF_STEM = {v: k for k, v in STEM_OF.items()}


def key_of(kind: str, rec: Record) -> str:
    if kind == "anomalies":
        return str(rec["anomaly_id"])
    if kind == "incidents":
        return str(rec["incident_id"])
    if kind == "fraud-scores":
        return str(rec["event_id"])
    if rec.get("related_kind") == "FRAUD_SCORE" and rec.get("related_event_id"):
        return "fraud:" + event_id_of_score(str(rec["related_event_id"]))
    return str(rec["command_id"])


def time_of(kind: str, rec: Record) -> int:
    field_name = {"anomalies": "window_end", "incidents": "first_seen", "fraud-scores": "occurred_at",
                  "ticket-commands": "issued_at"}[kind]
    return int(rec[field_name])


@dataclass
class Snapshot:
    """The outputs of one namespace over [from_ms, to_ms), per kind, by key."""

    from_ms: int | None = None
    to_ms: int | None = None
    records: dict[str, dict[str, Record]] = field(default_factory=lambda: {k: {} for k in KINDS})

    def in_range(self, t: int) -> bool:
        return (self.from_ms is None or t >= self.from_ms) and (self.to_ms is None or t < self.to_ms)

    def add(self, kind: str, rec: Record) -> None:
        if kind not in self.records or not self.in_range(time_of(kind, rec)):
            return
        key = key_of(kind, rec)
        bucket = self.records[kind]
        if kind == "incidents":
            old = bucket.get(key)
            if old is not None and int(old["revision"]) > int(rec["revision"]):
                return
        bucket[key] = rec

    def add_out(self, topic_short: str, rec: Record) -> None:
        if topic_short in self.records:
            self.add(topic_short, rec)

    def extend(self, kind: str, recs: Iterable[Record]) -> None:
        for r in recs:
            self.add(kind, r)

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.records.items()}


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (fraud score features use NaN for missing values)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@dataclass(frozen=True)
class Change:
    key: str
    fields: dict[str, tuple[Any, Any]]  # field -> (base value, other value)


@dataclass
class KindDiff:
    kind: str
    base_count: int
    other_count: int
    added: list[str] = field(default_factory=list)  # in other, not in base
    removed: list[str] = field(default_factory=list)  # in base, not in other
    changed: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


@dataclass
class DiffReport:
    base: str
    other: str
    kinds: list[KindDiff]

    @property
    def identical(self) -> bool:
        return all(k.empty for k in self.kinds)

    def by_kind(self) -> dict[str, KindDiff]:
        return {k.kind: k for k in self.kinds}

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "other": self.other, "identical": self.identical, "kinds": {
            k.kind: {"base_count": k.base_count, "other_count": k.other_count, "added": k.added, "removed": k.removed,
                     "changed": [{"key": c.key, "fields": {f: list(v) for f, v in c.fields.items()}}
                                 for c in k.changed]} for k in self.kinds}}


def diff(base: Snapshot, other: Snapshot, base_name: str = "base", other_name: str = "other") -> DiffReport:
    """What ``other`` added, removed and changed relative to ``base``, per kind, keys sorted."""
    out = []
    for kind in KINDS:
        a, b = base.records[kind], other.records[kind]
        kd = KindDiff(kind, len(a), len(b), added=sorted(set(b) - set(a)), removed=sorted(set(a) - set(b)))
        for key in sorted(set(a) & set(b)):
            ra, rb = a[key], b[key]
            fields = {f: (ra.get(f), rb.get(f)) for f in sorted(set(ra) | set(rb)) if not same(ra.get(f), rb.get(f))}
            if fields:
                kd.changed.append(Change(key, fields))
        out.append(kd)
    return DiffReport(base_name, other_name, out)


def _short(v: Any, width: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= width else text[: width - 1] + "…"


def render(report: DiffReport, limit: int = 20) -> str:
    """Human-readable diff: one summary line per kind, then up to ``limit`` ids per list."""
    lines = [f"diff {report.other} against {report.base}: " + ("identical" if report.identical else "DIFFERENT")]
    for k in report.kinds:
        lines.append(f"{k.kind}: {len(k.added)} added, {len(k.removed)} removed, {len(k.changed)} changed "
                     f"({k.base_count} in {report.base}, {k.other_count} in {report.other})")
        for sign, keys in (("+", k.added), ("-", k.removed)):
            for key in keys[:limit]:
                lines.append(f"  {sign} {key}")
            if len(keys) > limit:
                lines.append(f"  {sign} … {len(keys) - limit} more")
        for c in k.changed[:limit]:
            parts = "; ".join(f"{f}: {_short(a, 30)} -> {_short(b, 30)}" for f, (a, b) in c.fields.items())
            lines.append(f"  ~ {c.key}: {parts}")
        if len(k.changed) > limit:
            lines.append(f"  ~ … {len(k.changed) - limit} more")
    return "\n".join(lines)
