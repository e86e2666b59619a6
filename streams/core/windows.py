"""Event-time telemetry windows per person and per site, with the NOC duty rules (ghost shift, missed tour).

Sans-I/O: each key (``tenant:person`` or ``tenant:site``) has a state object with pure-ish step methods
and ``to_dict``/``from_dict`` so an edge can keep it in a changelogged table. Time is the events'
``occurred_at`` and a watermark the caller passes in; the core never reads a clock.

* Windows are tumbling, ``[start, start + size)``, aligned to the epoch. One closes when the watermark
  reaches ``window_end + grace``; an event for a closed window is LATE (or DUPLICATE when its id was counted
  and the window closed less than ``dedup_retention_ms`` ago).
* A window is emitted when it counted a signal or overlaps a duty (a guard checked in and not yet out), so a
  silent guard on shift produces empty windows rather than nothing.
* Everything a closed window reports is independent of arrival order within the grace period (distances are
  computed at close from time-sorted fixes) except ``late_event_count``, which by definition counts arrivals
  after a later window had started.

* Duty: a CHECK_IN starts one (tours snapshotted from the site's reference record), a CHECK_OUT or
  ``max_duty_ms`` ends it. A round of each tour is due every ``interval_minutes`` after the check-in; a
  window's ``checkpoints_expected`` counts the checkpoints of rounds due in it (summed over guards at SITE
  scope), ``checkpoints_scanned`` the distinct checkpoints scanned in it.
* Rules on PERSON windows, once per duty (the statistical baselines are per site, see baselines.py):
  ghost shift: on duty ``ghost_after_ms`` with no signal at all since check-in; missed tour: after
  ``tour_rule_min_duty_ms`` on duty (or at its end) under ``tour_ratio_threshold`` of the due checkpoints
  scanned.

See /work/notes/api-windows.md for the contract with the Faust edge.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.topics import person_key
from streams.core.baselines import BaselineConfig, SiteBaselines, Verdict
from streams.core.geo import Fix, odometer
from streams.core.types import Out, Record

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS

Status = Literal["COUNTED", "DUPLICATE", "LATE", "IGNORED"]
Scope = Literal["PERSON", "SITE"]

SIGNALS: tuple[str, ...] = ("phone_events_count", "location_updates_count", "movement_distance_meters",
                            "tasks_completed_count", "tour_checkpoints_scanned")
# Counter slots in an open window, by activity kind.
_KIND_SLOT = {"PHONE_EVENT": 0, "LOCATION_UPDATE": 1, "TASK_COMPLETED": 2, "TOUR_CHECKPOINT_SCANNED": 3}
_ROW = 9  # values per window in the flat rolling view
_NO_COUNTS = (0, 0, 0, 0, 0, 0)  # the counters of a window without signals
GHOST_METRIC = "silent_minutes_since_check_in"
TOUR_METRIC = "tour_completion_ratio"


@dataclass(frozen=True, slots=True)
class WindowConfig:
    size_ms: int = 5 * MINUTE_MS
    grace_ms: int = 2 * MINUTE_MS
    rolling_ms: int = 120 * MINUTE_MS
    max_duty_ms: int = 14 * HOUR_MS  # a check-in never followed by a check-out ends after this
    dedup_retention_ms: int = 15 * MINUTE_MS  # counted ids of closed windows: redelivery -> DUPLICATE, not LATE
    ghost_after_ms: int = 60 * MINUTE_MS
    tour_rule_min_duty_ms: int = 4 * HOUR_MS
    tour_rule_min_expected: int = 8
    tour_ratio_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.grace_ms < 0 or self.rolling_ms < self.size_ms:
            raise ValueError("need size_ms > 0, grace_ms >= 0 and rolling_ms >= size_ms")


DEFAULT_CONFIG = WindowConfig()


@dataclass(slots=True)
class Observed:
    """What became of one input record: COUNTED, DUPLICATE (already counted: drop), LATE (its window closed:
    count a metric and dead-letter it with reason LATE) or IGNORED (not for this key); plus the records the
    step produced (windows closed by the watermark it carried)."""

    status: Status
    outs: list[Out] = field(default_factory=list)


def person_state_key(rec: Record) -> str:
    return f"{rec['tenant_id']}:{rec['person_id']}"


def site_state_key(rec: Record) -> str:
    return f"{rec['tenant_id']}:{rec['site_id']}"


def window_id(scope: str, tenant_id: int, entity: str, start: int, size_ms: int) -> str:
    return hashlib.sha1(f"{scope}|{tenant_id}|{entity}|{start}|{size_ms}".encode()).hexdigest()


def anomaly_id(win_id: str, metric: str) -> str:
    return hashlib.sha1(f"{win_id}|{metric}".encode()).hexdigest()


def rounds_due(duty_start: int, duty_end: int, interval_ms: int, lo: int, hi: int) -> int:
    """Tour rounds due in ``[lo, hi)``: one at ``duty_start + k * interval`` for k >= 1, up to the duty's end."""
    if interval_ms <= 0:
        return 0
    hi = min(hi, duty_end + 1)
    if hi <= lo:
        return 0
    first = max(1, -(-(lo - duty_start) // interval_ms))  # smallest k with start + k*iv >= lo
    last = (hi - 1 - duty_start) // interval_ms  # largest k with start + k*iv < hi
    return max(0, last - first + 1)


def tours_of(site: Record | None) -> list[list[Any]]:
    """``[[tour_id, checkpoints, interval_ms], ...]`` from a ref.sites record."""
    if not site:
        return []
    return [[t["tour_id"], len(t["checkpoint_ids"]), int(t["interval_minutes"]) * MINUTE_MS]
            for t in site.get("tours") or []]


class _Acc:
    """An open window: counted ids, counters, fixes and scanned checkpoints."""

    __slots__ = ("fixes", "ids", "last_t", "n", "scanned", "site")

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.n = [0, 0, 0, 0, 0, 0]  # phone, location, tasks, scans, events, late
        self.fixes: list[list[Any]] = []  # [who, t, lat, lon, accuracy]
        self.scanned: dict[str, set[str]] = {}
        self.site: list[Any] | None = None  # [t, site_id] of the latest signal
        self.last_t = -1

    def to_dict(self) -> dict[str, Any]:
        return {"ids": sorted(self.ids), "n": list(self.n), "fx": [list(f) for f in self.fixes],
                "cp": {k: sorted(v) for k, v in sorted(self.scanned.items())}, "site": self.site, "last": self.last_t}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Acc:
        a = cls()
        a.ids = set(d["ids"])
        a.n = list(d["n"])
        a.fixes = [list(f) for f in d["fx"]]
        a.scanned = {k: set(v) for k, v in d["cp"].items()}
        a.site = list(d["site"]) if d["site"] is not None else None
        a.last_t = int(d["last"])
        return a


class _Windows:
    """Window bookkeeping shared by the person and the site scope."""

    scope: Scope = "PERSON"

    def __init__(self, tenant_id: int, entity: str, cfg: WindowConfig = DEFAULT_CONFIG) -> None:
        self.cfg = cfg
        self.tenant_id = tenant_id
        self.entity = entity
        self.site_id: str | None = None
        self.open: dict[int, _Acc] = {}
        self.closed_to: int | None = None  # every window starting before this has closed
        self.max_start: int | None = None
        self.recent: dict[int, list[str]] = {}  # start -> counted ids, for recently closed windows
        self.anchors: dict[str, list[Any]] = {}  # who -> last accepted fix [t, lat, lon, acc]
        # The rolling view, flat to stay small (mostly cached small ints): rows of _ROW values
        # [window index - rolling_base, phone, location, metres, tasks, scans, events, expected, scanned].
        self.rolling_base = 0
        self.rolling: list[int] = []
        self.duties: dict[str, dict[str, Any]] = {}  # person id -> duty
        # next_deadline(), cached (the pipeline asks after every signal); None: recompute. Reset wherever the
        # open windows, the duties' bounds or closed_to change.
        self._due: tuple[int | None] | None = None
        # A duty may have ended behind closed_to (set when one starts or ends; advance() then drops those).
        self._sweep_duties = True

    # -- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"v": 2, "scope": self.scope, "tenant_id": self.tenant_id, "entity": self.entity,
                "site_id": self.site_id, "open": [[s, a.to_dict()] for s, a in sorted(self.open.items())],
                "closed_to": self.closed_to, "max_start": self.max_start,
                "recent": [[s, list(ids)] for s, ids in sorted(self.recent.items())],
                "anchors": {k: list(v) for k, v in sorted(self.anchors.items())},
                "rolling": [self.rolling_base, *self.rolling],
                "duties": {k: _copy_duty(v) for k, v in sorted(self.duties.items())}, **self._extra_dict()}

    def _extra_dict(self) -> dict[str, Any]:
        return {}

    def _load(self, d: dict[str, Any]) -> None:
        if d.get("scope") != self.scope:
            raise ValueError(f"state is {d.get('scope')} scope, not {self.scope}")
        self.site_id = d["site_id"]
        self.open = {int(s): _Acc.from_dict(a) for s, a in d["open"]}
        self.closed_to = d["closed_to"]
        self.max_start = d["max_start"]
        self.recent = {int(s): list(ids) for s, ids in d["recent"]}
        self.anchors = {k: list(v) for k, v in d["anchors"].items()}
        self.rolling_base = int(d["rolling"][0]) if d["rolling"] else 0
        self.rolling = [int(x) for x in d["rolling"][1:]]
        self.duties = {k: _copy_duty(v) for k, v in d["duties"].items()}
        self._due = None

    # -- hooks ----------------------------------------------------------------------------------------

    def _who(self, rec: Record) -> str:
        return ""

    def _mine(self, rec: Record) -> bool:
        raise NotImplementedError

    def _key(self) -> bytes:
        raise NotImplementedError

    def _duty_tours(self, duty: dict[str, Any]) -> list[list[Any]]:
        return duty["tours"]  # (the caller only reads it)

    def _after_close(self, start: int, rec: Record, acc: _Acc | None) -> list[Out]:
        return []

    # -- steps ----------------------------------------------------------------------------------------

    def observe_activity(self, rec: Record, watermark_ms: int) -> Observed:
        """Count one activity_signal (after closing what ``watermark_ms`` closes)."""
        outs = self.advance(watermark_ms)
        kind = rec.get("kind", "")
        slot = _KIND_SLOT.get(kind)
        if slot is None or not self._mine(rec):
            return Observed("IGNORED", outs)
        size = self.cfg.size_ms
        t = int(rec["occurred_at"])
        start = t - t % size
        eid = str(rec["event_id"])
        acc = self.open.get(start)
        if acc is not None and eid in acc.ids:
            return Observed("DUPLICATE", outs)
        if self.closed_to is not None and start < self.closed_to:
            return Observed("DUPLICATE" if eid in self.recent.get(start, ()) else "LATE", outs)
        if acc is None:
            acc = self.open[start] = _Acc()
            self._due = None
        acc.ids.add(eid)
        n = acc.n
        n[slot] += 1
        n[4] += 1
        max_start = self.max_start
        if max_start is None or start > max_start:
            self.max_start = start
        elif start < max_start:
            n[5] += 1
        if t > acc.last_t:
            acc.last_t = t
        lat, lon = rec.get("lat"), rec.get("lon")
        if lat is not None and lon is not None:
            acc.fixes.append([self._who(rec), t, float(lat), float(lon), float(rec.get("accuracy_m") or 0.0)])
        if slot == 3 and rec.get("tour_id") and rec.get("checkpoint_id"):  # TOUR_CHECKPOINT_SCANNED
            acc.scanned.setdefault(str(rec["tour_id"]), set()).add(str(rec["checkpoint_id"]))
        mark = [t, str(rec["site_id"])]
        if acc.site is None or mark > acc.site:  # the latest signal's site; ties by name: order-free
            acc.site = mark
        return Observed("COUNTED", outs)

    def _attend(self, rec: Record, tours: list[list[Any]]) -> None:
        """Start (CHECK_IN) or end (CHECK_OUT) the duty of the record's person. Idempotent."""
        who = str(rec["person_id"])
        t = int(rec["occurred_at"])
        duty = self.duties.get(who)
        self._due = None
        self._sweep_duties = True
        if rec.get("event_type") == "CHECK_IN":
            if duty is not None and duty["start"] == t:
                return
            self.duties[who] = {"start": t, "end": t + self.cfg.max_duty_ms, "site": str(rec["site_id"]),
                                "tours": tours, "events": 0, "expected": 0, "scanned": 0, "fired": []}
        elif rec.get("event_type") == "CHECK_OUT" and duty is not None and duty["start"] <= t:
            duty["end"] = min(duty["end"], t)

    def advance(self, watermark_ms: int) -> list[Out]:
        """Close (emit) every window whose end + grace the watermark has reached, in time order."""
        size = self.cfg.size_ms
        boundary = (watermark_ms - self.cfg.grace_ms) // size * size  # windows ending by here close
        if self.closed_to is not None and boundary <= self.closed_to:
            # Nothing new can close (the common case: every signal inside the current window). The recent
            # ids and the rolling view only change when the boundary moves; a duty may have ended behind it.
            if self._sweep_duties:
                self._sweep_duties = False
                for who in [w for w, d in self.duties.items() if d["end"] <= self.closed_to]:
                    del self.duties[who]
                    self._due = None
            return []
        outs: list[Out] = []
        cursor = self.closed_to
        while True:
            nxt = self._next_window(cursor)
            if nxt is None or nxt + size > boundary:
                break
            outs.extend(self._close(nxt))
            cursor = nxt + size
        self.closed_to = boundary
        # nxt is also the first window at or after the new closed_to (it is >= boundary; nothing before it is
        # open or on duty, and the duties dropped below ended before boundary): next_deadline() without a search.
        self._due = (None if nxt is None else nxt + size + self.cfg.grace_ms,)
        for who in [w for w, d in self.duties.items() if d["end"] <= boundary]:
            del self.duties[who]  # ended before its windows closed (a check-out that arrived late)
        self._sweep_duties = False
        horizon = boundary - self.cfg.dedup_retention_ms
        recent = self.recent  # in window order (closed in order; loaded sorted)
        while recent:
            s = next(iter(recent))
            if s + size > horizon:
                break
            del recent[s]
        self._age_rolling(boundary)  # an idle key's view empties too
        return outs

    def next_deadline(self) -> int | None:
        """The watermark at which :meth:`advance` will next close a window (None: nothing pending)."""
        if self._due is None:
            s = self._next_window(self.closed_to)
            self._due = (None if s is None else s + self.cfg.size_ms + self.cfg.grace_ms,)
        return self._due[0]

    def _next_window(self, cursor: int | None) -> int | None:
        """The first window at or after ``cursor`` that has signals or overlaps a duty."""
        size = self.cfg.size_ms
        # A plain loop, not min() over a generator: this runs after every signal (hot in the worker).
        best: int | None = None
        if cursor is None:
            if self.open:
                best = min(self.open)
        else:
            for s in self.open:
                if s >= cursor and (best is None or s < best):
                    best = s
        for duty in self.duties.values():
            first = duty["start"] // size * size
            if cursor is not None and first < cursor:
                first = cursor
            if first < duty["end"] and (best is None or first < best):
                best = first
        return best

    def _close(self, start: int) -> list[Out]:
        cfg = self.cfg
        size = cfg.size_ms
        end = start + size
        acc = self.open.pop(start, None)
        n = acc.n if acc is not None else _NO_COUNTS
        # Movement: each phone's fixes in time order, from where it was last seen.
        dist = 0.0
        if acc is not None and acc.fixes:
            by_who: dict[str, list[Fix]] = {}
            for who, t, lat, lon, a in sorted(acc.fixes):  # (who, time, position): independent of arrival
                by_who.setdefault(who, []).append((t, lat, lon, a))
            for who, group in by_who.items():
                prev = self.anchors.get(who)
                d, anchor = odometer((prev[0], prev[1], prev[2], prev[3]) if prev else None, group)
                dist += d
                if anchor is not None:
                    self.anchors[who] = list(anchor)
        # Tours: expected from the duties overlapping this window, scanned from the signals.
        expected: dict[str, int] = {}
        for duty in self.duties.values():
            if duty["start"] < end and duty["end"] > start:
                for tour_id, cps, iv in self._duty_tours(duty):
                    due = rounds_due(duty["start"], duty["end"], iv, start, end)
                    if due:
                        expected[tour_id] = expected.get(tour_id, 0) + cps * due
        scanned = {k: len(v) for k, v in acc.scanned.items()} if acc is not None and acc.scanned else {}
        tours = [{"tour_id": k, "checkpoints_expected": expected.get(k, 0), "checkpoints_scanned": scanned.get(k, 0)}
                 for k in sorted(set(expected) | set(scanned))] if expected or scanned else []
        if acc is not None and acc.site is not None:
            self.site_id = acc.site[1]
        site_id = self.site_id or next((str(d["site"]) for d in self.duties.values()), "")
        wid = window_id(self.scope, self.tenant_id, self.entity, start, size)
        rec: Record = {
            "window_id": wid, "scope": self.scope, "tenant_id": self.tenant_id, "site_id": site_id,
            "person_id": self.entity if self.scope == "PERSON" else None, "window_start": start, "window_end": end,
            "phone_events_count": n[0], "location_updates_count": n[1], "movement_distance_meters": round(dist, 3),
            "tasks_completed_count": n[2], "tour_checkpoints_scanned": n[3], "tours": tours, "event_count": n[4],
            "late_event_count": n[5]}
        exp_total, scan_total = sum(expected.values()), sum(scanned.values())
        summary = [n[0], n[1], round(dist), n[2], n[3], n[4], exp_total, scan_total]
        if any(summary):
            if not self.rolling:
                self.rolling_base = start // size
            self.rolling += [start // size - self.rolling_base, *summary]
        self._age_rolling(end)
        if acc is not None and acc.ids:
            self.recent[start] = sorted(acc.ids)
        outs = [Out("signal-windows", self._key(), "signal_window", rec)]
        outs.extend(self._after_close(start, rec, acc))
        # Duties that ended inside this window are done; stale phones are forgotten (bounded site state).
        if self.duties:
            for who in [w for w, d in self.duties.items() if d["end"] <= end]:
                del self.duties[who]
        for who in [w for w, a in self.anchors.items() if w and a[0] < end - cfg.rolling_ms]:
            del self.anchors[who]
        return outs

    def _age_rolling(self, end: int) -> None:
        """Drop rows of windows that ended before ``end - rolling_ms``; rebase so offsets stay small."""
        size, r = self.cfg.size_ms, self.rolling
        first = -(-(end - self.cfg.rolling_ms) // size)  # index of the oldest window still in view
        drop = 0
        while drop < len(r) and self.rolling_base + r[drop] < first:
            drop += _ROW
        if drop:
            del r[:drop]
        if r and r[0]:
            shift = r[0]
            self.rolling_base += shift
            for i in range(0, len(r), _ROW):
                r[i] -= shift

    def rolling_view(self) -> dict[str, Any]:
        """The five signals summed over the windows of the last ``rolling_ms`` up to where windows are closed
        (the watermark's boundary), with checkpoints expected vs scanned. Metres are whole here."""
        r = self.rolling
        end = self.closed_to

        def total(i: int) -> int:
            return sum(r[i::_ROW])

        return {"window_start": None if end is None else end - self.cfg.rolling_ms, "window_end": end,
                "phone_events_count": total(1), "location_updates_count": total(2),
                "movement_distance_meters": float(total(3)), "tasks_completed_count": total(4),
                "tour_checkpoints_scanned": total(5), "event_count": total(6), "checkpoints_expected": total(7),
                "checkpoints_scanned": total(8), "windows": len(r) // _ROW}


def _copy_duty(d: dict[str, Any]) -> dict[str, Any]:
    out = dict(d)
    out["tours"] = [list(t) for t in d.get("tours", [])]
    out["fired"] = list(d.get("fired", []))
    return out


class PersonWindows(_Windows):
    """Windows of one guard (state key ``tenant:person``), plus the ghost-shift and missed-tour rules."""

    scope: Scope = "PERSON"

    @classmethod
    def new(cls, tenant_id: int, person_id: str, cfg: WindowConfig = DEFAULT_CONFIG) -> PersonWindows:
        return cls(tenant_id, person_id, cfg)

    @classmethod
    def from_dict(cls, d: dict[str, Any], cfg: WindowConfig = DEFAULT_CONFIG) -> PersonWindows:
        st = cls(int(d["tenant_id"]), str(d["entity"]), cfg)
        st._load(d)
        return st

    def _mine(self, rec: Record) -> bool:
        return int(rec["tenant_id"]) == self.tenant_id and rec.get("person_id") == self.entity

    def _key(self) -> bytes:
        return person_key(self.tenant_id, self.entity)

    def observe_attendance(self, rec: Record, site: Record | None, watermark_ms: int) -> list[Out]:
        """A CHECK_IN starts the guard's duty (tours from ``site``, the ref.sites record of its site);
        a CHECK_OUT ends it."""
        outs = self.advance(watermark_ms)
        if self._mine(rec):
            self._attend(rec, tours_of(site))
        return outs

    def _after_close(self, start: int, rec: Record, acc: _Acc | None) -> list[Out]:
        duty = self.duties.get(self.entity)
        end = start + self.cfg.size_ms
        if duty is None or duty["start"] >= end:
            return []
        cfg = self.cfg
        if acc is not None and acc.last_t >= duty["start"]:
            duty["events"] += acc.n[4]
        for t in rec["tours"]:
            duty["expected"] += t["checkpoints_expected"]
            duty["scanned"] += t["checkpoints_scanned"]
        on_duty = min(end, duty["end"]) - duty["start"]
        outs: list[Out] = []
        if GHOST_METRIC not in duty["fired"] and duty["events"] == 0 and on_duty >= cfg.ghost_after_ms:
            duty["fired"].append(GHOST_METRIC)
            minutes = on_duty / MINUTE_MS
            outs.append(self._rule_anomaly(rec, duty, GHOST_METRIC, minutes, 0.0, cfg.ghost_after_ms / MINUTE_MS,
                                           "HIGH"))
        due = on_duty >= cfg.tour_rule_min_duty_ms or end >= duty["end"]
        if TOUR_METRIC not in duty["fired"] and due and duty["expected"] >= cfg.tour_rule_min_expected:
            ratio = min(1.0, duty["scanned"] / duty["expected"])
            if ratio < cfg.tour_ratio_threshold:
                duty["fired"].append(TOUR_METRIC)
                sev = "HIGH" if ratio < cfg.tour_ratio_threshold / 2 else "MEDIUM"
                outs.append(self._rule_anomaly(rec, duty, TOUR_METRIC, ratio, 1.0, cfg.tour_ratio_threshold, sev))
        return outs

    def _rule_anomaly(self, win: Record, duty: dict[str, Any], metric: str, observed: float, expected: float,
                      threshold: float, severity: str) -> Out:
        site = str(duty["site"])
        rec: Record = {
            "anomaly_id": anomaly_id(win["window_id"], metric), "tenant_id": self.tenant_id, "site_id": site,
            "person_id": self.entity, "window_id": win["window_id"], "baseline_id": f"rule:{metric}",
            "metric": metric, "observed": round(float(observed), 6), "expected": expected, "stddev": 0.0,
            "threshold": threshold, "score": round(float(observed) - threshold, 6), "severity": severity,
            "window_start": win["window_start"], "window_end": win["window_end"]}
        return Out("anomalies", person_key(self.tenant_id, self.entity, site), "anomaly", rec)


class SiteWindows(_Windows):
    """Windows of one site (state key ``tenant:site``): everyone's signals there; expected checkpoints from
    every guard on duty. The edge repartitions activity and attendance by site to feed it."""

    scope: Scope = "SITE"

    def __init__(self, tenant_id: int, entity: str, cfg: WindowConfig = DEFAULT_CONFIG) -> None:
        super().__init__(tenant_id, entity, cfg)
        self.site_id = entity
        self.timezone = "UTC"
        self.tours: list[list[Any]] = []

    @classmethod
    def new(cls, tenant_id: int, site_id: str, cfg: WindowConfig = DEFAULT_CONFIG) -> SiteWindows:
        return cls(tenant_id, site_id, cfg)

    @classmethod
    def from_dict(cls, d: dict[str, Any], cfg: WindowConfig = DEFAULT_CONFIG) -> SiteWindows:
        st = cls(int(d["tenant_id"]), str(d["entity"]), cfg)
        st._load(d)
        st.timezone = str(d["timezone"])
        st.tours = [list(t) for t in d["tours"]]
        return st

    def _extra_dict(self) -> dict[str, Any]:
        return {"timezone": self.timezone, "tours": [list(t) for t in self.tours]}

    def _mine(self, rec: Record) -> bool:
        return int(rec["tenant_id"]) == self.tenant_id and rec.get("site_id") == self.entity

    def _who(self, rec: Record) -> str:
        return str(rec.get("person_id") or "")

    def _key(self) -> bytes:
        return person_key(self.tenant_id, None, self.entity)

    def _duty_tours(self, duty: dict[str, Any]) -> list[list[Any]]:
        return self.tours  # the site's current routes, whenever the guard checked in

    def observe_site(self, site: Record) -> None:
        """Take timezone and tours from a ref.sites record of this site."""
        if self._mine(site):
            self.timezone = str(site.get("timezone") or "UTC")
            self.tours = tours_of(site)

    def observe_attendance(self, rec: Record, watermark_ms: int) -> list[Out]:
        outs = self.advance(watermark_ms)
        if self._mine(rec):
            self._attend(rec, [])
        return outs


def with_baselines(book: SiteBaselines, timezone: str, outs: Iterable[Out]) -> list[Out]:
    """``outs`` of a SiteWindows step, each closed window followed by what the site's baselines make of it
    (anomalies, baseline records). The edge's site agent: ``with_baselines(book, sw.timezone, sw.advance(wm))``."""
    res: list[Out] = []
    for o in outs:
        res.append(o)
        if o.stem == "signal_window":
            res.extend(book.observe_window(o.record, timezone))
    return res


class TelemetryCore:
    """An in-memory driver over all keys: routes records to the per-key states, keeps the watermark (the
    highest ``occurred_at`` seen), advances due keys from a deadline heap, and feeds closed SITE windows to
    the site's baselines. For tests, replays and benchmarks; the Faust edge does the same with tables."""

    def __init__(self, cfg: WindowConfig = DEFAULT_CONFIG, bcfg: BaselineConfig | None = None) -> None:
        self.cfg = cfg
        self.bcfg = bcfg or BaselineConfig()
        self.persons: dict[str, PersonWindows] = {}
        self.sites: dict[str, SiteWindows] = {}
        self.books: dict[str, SiteBaselines] = {}
        self.site_refs: dict[str, Record] = {}
        self.watermark: int | None = None
        self.late = 0
        self.duplicates = 0
        self._heap: list[tuple[int, int, str]] = []

    def _person(self, rec: Record) -> PersonWindows:
        k = person_state_key(rec)
        st = self.persons.get(k)
        if st is None:
            st = self.persons[k] = PersonWindows.new(int(rec["tenant_id"]), str(rec["person_id"]), self.cfg)
        return st

    def _site(self, rec: Record) -> SiteWindows:
        k = site_state_key(rec)
        st = self.sites.get(k)
        if st is None:
            st = self.sites[k] = SiteWindows.new(int(rec["tenant_id"]), str(rec["site_id"]), self.cfg)
            ref = self.site_refs.get(k)
            if ref is not None:
                st.observe_site(ref)
        return st

    def _book(self, tenant_id: int, site_id: str) -> SiteBaselines:
        k = f"{tenant_id}:{site_id}"
        b = self.books.get(k)
        if b is None:
            b = self.books[k] = SiteBaselines.new(tenant_id, site_id, self.bcfg)
        return b

    def _schedule(self, kind: int, key: str, st: _Windows) -> None:
        d = st.next_deadline()
        if d is not None:
            heapq.heappush(self._heap, (d, kind, key))

    def _site_outs(self, st: SiteWindows, outs: Iterable[Out]) -> list[Out]:
        return with_baselines(self._book(st.tenant_id, st.entity), st.timezone, outs)

    def process(self, topic: str, rec: Record) -> tuple[Status | None, list[Out]]:
        """One record from ``activity``, ``attendance`` or ``ref.sites`` (other topics: ignored)."""
        if topic == "ref.sites":
            k = site_state_key(rec)
            self.site_refs[k] = rec
            if k in self.sites:
                self.sites[k].observe_site(rec)
            return None, []
        if topic not in ("activity", "attendance"):
            return None, []
        t = int(rec["occurred_at"])
        self.watermark = t if self.watermark is None else max(self.watermark, t)
        wm = self.watermark
        outs = self.advance(wm)
        p, s = self._person(rec), self._site(rec)
        status: Status | None = None
        if topic == "activity":
            res = p.observe_activity(rec, wm)
            status = res.status
            outs.extend(res.outs)
            outs.extend(self._site_outs(s, s.observe_activity(rec, wm).outs))
            self.late += status == "LATE"
            self.duplicates += status == "DUPLICATE"
        else:
            outs.extend(p.observe_attendance(rec, self.site_refs.get(site_state_key(rec)), wm))
            outs.extend(self._site_outs(s, s.observe_attendance(rec, wm)))
        self._schedule(0, person_state_key(rec), p)
        self._schedule(1, site_state_key(rec), s)
        return status, outs

    def advance(self, watermark_ms: int) -> list[Out]:
        """Close what the watermark closes, on every key that has something due."""
        outs: list[Out] = []
        heap = self._heap
        while heap and heap[0][0] <= watermark_ms:
            d, kind, key = heapq.heappop(heap)
            st: _Windows = self.persons[key] if kind == 0 else self.sites[key]
            if st.next_deadline() != d:
                continue  # stale entry: the key was advanced or rescheduled since
            got = st.advance(watermark_ms)
            outs.extend(self._site_outs(st, got) if isinstance(st, SiteWindows) else got)
            self._schedule(kind, key, st)
        return outs

    def flush(self) -> list[Out]:
        """Close everything that is open (end of a replay)."""
        if not self._heap:
            return []
        last = max(d for d, _, _ in self._heap)
        return self.advance(last + self.cfg.max_duty_ms + self.cfg.size_ms + self.cfg.grace_ms)

    def feedback(self, anomaly: Record, verdict: Verdict, at_ms: int) -> list[Out]:
        """Review outcome of an anomaly this core emitted (routed to its site's baselines)."""
        return self._book(int(anomaly["tenant_id"]), str(anomaly["site_id"])).feedback(
            str(anomaly["anomaly_id"]), verdict, at_ms)


__all__ = ["DEFAULT_CONFIG", "GHOST_METRIC", "SIGNALS", "TOUR_METRIC", "Observed", "PersonWindows",
           "SiteWindows", "Status", "TelemetryCore", "WindowConfig", "anomaly_id", "person_state_key",
           "rounds_due", "site_state_key", "tours_of", "window_id", "with_baselines"]
