"""SITE-scope windows and baselines from the PERSON windows of the pipeline, keyed by site.

The pipeline (per person partition) emits PERSON ``signal_window`` records when its partition clock passes a
window's end. The edge forwards each of them, keyed by site, to a site-keyed topic, followed by a *clock
marker* ``(source partition, clock)`` broadcast to every site partition (same producer, so in each site
partition the marker comes after the windows it covers). :class:`SiteStage` consumes that stream:

* A SITE window ``[start, end)`` of a site is the sum of the PERSON windows naming that site for that window
  (counters, metres, tours by tour id; ``checkpoints_expected`` thus comes from the tours of the guards on duty
  there). Contributions are kept by person ``window_id``: a redelivered person window counts once.
* The site partition's watermark is the minimum over the ``sources`` person partitions of their clocks (a
  person window ending by it has arrived), known only once every source has reported, except sources the edge
  announced *empty* (their activity partition holds no record at all: they would never report). Strict, so
  deterministic: a backlog read in any interleaving closes the same windows with the same contributions.
  (Live, a person partition that reported and then went idle holds the sites; every partition has activity
  in practice.) A site window closes when the watermark reaches its end; windows close per site in time
  order and go to the site's :class:`SiteBaselines` (anomalies, baseline records). A person window arriving
  after its site window closed is dropped (counted as ``late``).
* Correlation of a site's evidence about no person (key ``tenant:site:<id>``): the site's statistical anomalies
  and the alerts and audit findings about the site that the pipeline announces on the feed (``alert_created`` /
  ``finding_created`` with no person; :func:`site_evidence`). The edge forwards those feed events like the
  person windows, so a piece of time ``t`` has arrived once the watermark passes ``t``; pieces are held until
  then and, as windows close, correlated in ``(event time, kind, id)`` order with the anomalies of those windows,
  each preceded by the incident timers due before it (as the pipeline does for person keys, and with the same
  :class:`~streams.core.correlation.Correlator`). So the site's incidents hold alerts, findings and anomalies
  alike, and are the same whatever the interleaving. (The pipeline leaves site-keyed evidence to this stage.)
  A piece arriving after the watermark passed it (live only: an idle sparse topic woke up) is correlated at once.
* Feedback (a ticket resolved FALSE_POSITIVE / FRAUD_CONFIRMED whose ``related_event_id`` is an anomaly id, or
  the id of an incident of the site holding anomalies: each of them is reviewed) and on-demand retunes are
  routed to the site's baselines; scheduled retunes happen inside :meth:`SiteBaselines.observe_window` in
  window event time.

Sans-I/O and deterministic: per site the output depends only on which person windows arrived before the
watermark passed them, never on their order (contributions are summed in window-id order). State keys (for a
changelogged table; ``q`` is the site partition): ``"<q>|clk"`` (source clocks) and
``"<q>|site|<tenant>:<site>"`` (open windows, ``closed_to`` and the baselines, one value so they change
together). Replays drive it in-process with one partition (``q = 0``): see :meth:`SiteStage.run_person_outputs`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from schemas.topics import PERSON_PARTITIONS, person_key
from streams.core.baselines import BaselineConfig, SiteBaselines, Verdict, verdict_from_resolution
from streams.core.correlation import CorrelationConfig, CorrelationState, Correlator
from streams.core.feed import FEED_STEM, feed_events
from streams.core.ids import event_time, evidence_id
from streams.core.types import Out, Record
from streams.core.windows import SIGNALS, WindowConfig, window_id

# Feed events announcing site evidence, and the stem of the record each carries as its payload.
EVIDENCE_FEED = {"alert_created": "noc_alert", "finding_created": "audit_finding"}
# Order of simultaneous pieces (then their ids): fixed, so correlation does not depend on arrival.
EVIDENCE_RANK = {"noc_alert": 0, "audit_finding": 1, "anomaly": 2}
MAX_INCIDENT_LINKS = 256  # per site: incidents whose anomalies a ticket on the incident can review


@dataclass(frozen=True, slots=True)
class SiteConfig:
    windows: WindowConfig = field(default_factory=WindowConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    correlation: CorrelationConfig = field(default_factory=CorrelationConfig)
    sources: int = PERSON_PARTITIONS  # person partitions whose clocks make the watermark


def site_evidence(out: Out) -> tuple[str, Record] | None:
    """``(stem, record)`` when ``out`` is the feed event of an alert or finding about a site and no person: the
    evidence the pipeline leaves to the site stage's correlation (the edge forwards it, keyed by site)."""
    if out.stem != FEED_STEM or out.record.get("person_id") or not out.record.get("site_id"):
        return None
    stem = EVIDENCE_FEED.get(str(out.record.get("type")))
    if stem is None:
        return None
    return stem, orjson.loads(out.record["payload"])


class StateStore(Protocol):
    """The part of :class:`streams.core.pipeline.Store` the stage uses."""

    def get(self, key: str) -> Any: ...

    def put(self, partition: int, key: str, value: Any) -> None: ...

    def delete(self, partition: int, key: str) -> None: ...

    def keys(self) -> Iterable[str]: ...


# A person window's contribution: the five signals, event_count, late_event_count, {tour: [expected, scanned]}.
_N = len(SIGNALS) + 2


class SiteAgg:
    """One site: open SITE windows (contributions by person window id), how far it has closed, its baselines."""

    def __init__(self, tenant_id: int, site_id: str, cfg: SiteConfig) -> None:
        self.cfg = cfg
        self.tenant_id = tenant_id
        self.site_id = site_id
        self.open: dict[int, dict[str, list[Any]]] = {}
        self.closed_to: int | None = None  # every window ending at or before this has closed
        self.book = SiteBaselines.new(tenant_id, site_id, cfg.baselines)
        self.corr = CorrelationState()  # the site's incidents (key tenant:site:<id>)
        self.held: list[tuple[int, int, str, str, Record]] = []  # evidence waiting for the watermark, sorted
        self.links: dict[str, list[str]] = {}  # incident id -> its anomaly ids (newest incidents last)

    def to_dict(self) -> dict[str, Any]:
        d = {"v": 1, "tenant_id": self.tenant_id, "site_id": self.site_id,
             "open": [[s, {k: list(v) for k, v in sorted(c.items())}] for s, c in sorted(self.open.items())],
             "closed_to": self.closed_to, "book": self.book.to_dict()}
        if not self.corr.is_empty():
            d["corr"] = self.corr.to_dict()
        if self.held:
            d["held"] = [list(h) for h in self.held]
        if self.links:
            d["links"] = [[k, v] for k, v in self.links.items()]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], cfg: SiteConfig) -> SiteAgg:
        a = cls(int(d["tenant_id"]), str(d["site_id"]), cfg)
        a.open = {int(s): {k: list(v) for k, v in c.items()} for s, c in d["open"]}
        a.closed_to = d["closed_to"]
        a.book = SiteBaselines.from_dict(d["book"], cfg.baselines)
        a.corr = CorrelationState.from_dict(d.get("corr"))
        a.held = [(int(t), int(r), str(i), str(stem), rec) for t, r, i, stem, rec in d.get("held", [])]
        a.links = {str(k): list(v) for k, v in d.get("links", [])}
        return a

    def next_due(self) -> int | None:
        """Watermark at which something is next due: a window closes, a held piece of evidence is released or an
        incident times out."""
        due = [min(self.open) + self.cfg.windows.size_ms] if self.open else []
        if self.held:
            due.append(self.held[0][0])
        corr = self.corr.next_deadline(self.cfg.correlation)
        if corr is not None:
            due.append(corr)
        return min(due) if due else None

    def hold(self, stem: str, record: Record) -> bool:
        """Keep a piece of evidence until the watermark passes it; False when it is already known (redelivered)."""
        eid = evidence_id(stem, record)
        if self.corr.knows(eid) or any(h[2] == eid for h in self.held):
            return False
        item = (event_time(stem, record), EVIDENCE_RANK[stem], eid, stem, record)
        self.held.append(item)
        self.held.sort(key=lambda h: h[:3])
        return True

    def correlate(self, correlator: Correlator, pieces: list[tuple[int, int, str, str, Record]],
                  upto: int | None) -> list[Out]:
        """Correlate ``pieces`` in (time, kind, id) order, each after the incident timers due before it, then the
        timers due by ``upto``; incidents (with their feed events) out."""
        outs: list[Out] = []
        for t, _rank, _eid, stem, record in sorted(pieces, key=lambda h: h[:3]):
            outs.extend(self._timers(correlator, t - 1))
            for o in correlator.on_record(self.corr, stem, record):
                outs.append(o)
                outs.extend(feed_events(o.stem, o.record))
                self._link(o.record)
        if upto is not None:
            outs.extend(self._timers(correlator, upto))
        return outs

    def _timers(self, correlator: Correlator, upto: int) -> list[Out]:
        outs: list[Out] = []
        due = self.corr.next_deadline(self.cfg.correlation)
        while due is not None and due <= upto:
            for o in correlator.on_watermark(self.corr, due):
                outs.append(o)
                outs.extend(feed_events(o.stem, o.record))
            nxt = self.corr.next_deadline(self.cfg.correlation)
            if nxt == due:
                break
            due = nxt
        return outs

    def _link(self, incident: Record) -> None:
        anomalies = [e["event_id"] for e in incident["evidence"] if e["kind"] == "ANOMALY"]
        if not anomalies:
            return
        self.links.pop(incident["incident_id"], None)
        self.links[incident["incident_id"]] = anomalies
        while len(self.links) > MAX_INCIDENT_LINKS:  # bounded: the oldest incidents' links go first
            del self.links[next(iter(self.links))]

    def add(self, win: Record) -> str:
        """COUNTED, DUPLICATE or LATE (its site window already closed)."""
        start = int(win["window_start"])
        end = int(win["window_end"])
        if self.closed_to is not None and end <= self.closed_to:
            return "LATE"
        contribs = self.open.setdefault(start, {})
        wid = str(win["window_id"])
        if wid in contribs:
            return "DUPLICATE"
        tours = {str(t["tour_id"]): [int(t["checkpoints_expected"]), int(t["checkpoints_scanned"])]
                 for t in win.get("tours") or []}
        contribs[wid] = [*(win[s] for s in SIGNALS), int(win["event_count"]), int(win["late_event_count"]), tours]
        return "COUNTED"

    def close_upto(self, watermark: int, timezone: str, correlator: Correlator | None = None) -> list[Out]:
        """Close the windows ending by ``watermark`` (SITE windows, baseline records, anomalies); with a
        ``correlator``, then correlate their anomalies with the held evidence the watermark passed."""
        size = self.cfg.windows.size_ms
        outs: list[Out] = []
        pieces: list[tuple[int, int, str, str, Record]] = []
        for start in sorted(s for s in self.open if s + size <= watermark):
            win = self._window(start, self.open.pop(start))
            outs.append(Out("signal-windows", person_key(self.tenant_id, None, self.site_id), "signal_window", win))
            for o in self.book.observe_window(win, timezone):
                outs.append(o)
                if o.stem == "anomaly":
                    outs.extend(feed_events(o.stem, o.record))
                    pieces.append((event_time(o.stem, o.record), EVIDENCE_RANK[o.stem],
                                   evidence_id(o.stem, o.record), o.stem, o.record))
        if self.closed_to is None or watermark > self.closed_to:
            self.closed_to = watermark
        if correlator is not None:
            n = 0
            while n < len(self.held) and self.held[n][0] <= watermark:
                n += 1
            pieces.extend(self.held[:n])
            del self.held[:n]
            outs.extend(self.correlate(correlator, pieces, watermark))
        return outs

    def _window(self, start: int, contribs: dict[str, list[Any]]) -> Record:
        size = self.cfg.windows.size_ms
        n = [0] * _N
        dist = 0.0
        tours: dict[str, list[int]] = {}
        for wid in sorted(contribs):  # a fixed order: float sums do not depend on arrival
            c = contribs[wid]
            for i in range(_N):
                if i == 2:
                    dist += float(c[i])
                else:
                    n[i] += int(c[i])
            for tour, (exp, scan) in c[_N].items():
                acc = tours.setdefault(tour, [0, 0])
                acc[0] += exp
                acc[1] += scan
        return {
            "window_id": window_id("SITE", self.tenant_id, self.site_id, start, size), "scope": "SITE",
            "tenant_id": self.tenant_id, "site_id": self.site_id, "person_id": None, "window_start": start,
            "window_end": start + size, "phone_events_count": n[0], "location_updates_count": n[1],
            "movement_distance_meters": round(dist, 3), "tasks_completed_count": n[3],
            "tour_checkpoints_scanned": n[4],
            "tours": [{"tour_id": k, "checkpoints_expected": v[0], "checkpoints_scanned": v[1]}
                      for k, v in sorted(tours.items())],
            "event_count": n[5], "late_event_count": n[6]}


@dataclass(slots=True)
class SiteResult:
    outs: list[Out] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # windows COUNTED/DUPLICATE/LATE, feedback, retunes
    writes: dict[tuple[int, str], Any] = field(default_factory=dict)

    def commit(self, store: StateStore) -> None:
        """Write the changed state (after the outputs were delivered: a crash in between re-emits them)."""
        for (q, key), value in sorted(self.writes.items()):
            store.put(q, key, value.to_dict() if isinstance(value, SiteAgg) else value)
        self.writes.clear()


class SiteStage:
    """Per site partition: person windows, clock markers, feedback and retune requests in; SITE windows,
    statistical anomalies (plus their feed events) and baseline records out. See the module doc."""

    def __init__(self, timezone_of: Callable[[int, str], str], cfg: SiteConfig | None = None) -> None:
        """``timezone_of(tenant, site)``: the site's IANA zone from reference data ("UTC" when unknown)."""
        self.cfg = cfg or SiteConfig()
        self.timezone_of = timezone_of
        self.correlator = Correlator(self.cfg.correlation)
        self._aggs: dict[str, SiteAgg] = {}  # decoded states, by state key
        self._clk: dict[int, dict[str, Any]] = {}  # per partition: source clocks and empty sources
        self._due: dict[int, dict[str, int]] = {}  # per partition: state key -> next due watermark

    def forget(self) -> None:
        """Drop decoded state and indexes (after a rebalance); rebuilt from the store on next use."""
        self._aggs.clear()
        self._clk.clear()
        self._due.clear()

    # -- state ---------------------------------------------------------------------------------------

    def _index(self, store: StateStore, q: int) -> dict[str, int]:
        due = self._due.get(q)
        if due is None:
            due = self._due[q] = {}
            prefix = f"{q}|site|"
            for key in store.keys():
                if key.startswith(prefix):
                    d = self._agg(store, key).next_due()
                    if d is not None:
                        due[key] = d
        return due

    def _agg(self, store: StateStore, key: str, tenant: int = 0, site: str = "") -> SiteAgg:
        a = self._aggs.get(key)
        if a is None:
            d = store.get(key)
            a = SiteAgg.from_dict(d, self.cfg) if d is not None else SiteAgg(tenant, site, self.cfg)
            self._aggs[key] = a
        return a

    def _touch(self, store: StateStore, q: int, key: str, a: SiteAgg, res: SiteResult) -> None:
        res.writes[(q, key)] = a  # serialised once per batch, at commit
        due = self._index(store, q)
        d = a.next_due()
        if d is None:
            due.pop(key, None)
        else:
            due[key] = d

    def _clocks(self, store: StateStore, q: int) -> dict[str, Any]:
        """``{"src": {source: clock}, "empty": [sources announced empty]}`` of partition ``q``."""
        c = self._clk.get(q)
        if c is None:
            d = store.get(f"{q}|clk") or {}
            c = self._clk[q] = {"src": {k: int(v) for k, v in d.get("src", {}).items()},
                                "empty": sorted(int(p) for p in d.get("empty", []))}
        return c

    def _site_keys(self, store: StateStore, prefix: str) -> list[str]:
        return sorted({k for k in [*store.keys(), *self._aggs] if k.startswith(prefix)})

    def watermark(self, store: StateStore, q: int) -> int | None:
        c = self._clocks(store, q)
        src: dict[str, int] = c["src"]
        required = {str(p) for p in range(self.cfg.sources) if p not in c["empty"]}
        if not src or not required <= set(src):
            return None
        return min(src.values())

    # -- inputs --------------------------------------------------------------------------------------------

    def window(self, store: StateStore, q: int, win: Record, res: SiteResult) -> None:
        """A PERSON signal_window forwarded by site (SITE windows and windows naming no site are ignored)."""
        if win.get("scope") != "PERSON" or not win.get("site_id"):
            res.counts["ignored"] += 1
            return
        tenant, site = int(win["tenant_id"]), str(win["site_id"])
        key = f"{q}|site|{tenant}:{site}"
        a = self._agg(store, key, tenant, site)
        status = a.add(win)
        res.counts[status.lower()] += 1
        if status == "COUNTED":
            self._touch(store, q, key, a, res)

    def clock(self, store: StateStore, q: int, source: int, clock_ms: int, res: SiteResult) -> None:
        """A person partition's clock passed ``clock_ms``: close the site windows the watermark now covers."""
        c = self._clocks(store, q)
        src = c["src"]
        if src.get(str(source), -(1 << 62)) >= clock_ms:
            return  # redelivered or older: clocks only move forward
        src[str(source)] = clock_ms
        self._write_clocks(q, c, res)
        self.advance(store, q, res)

    def empty(self, store: StateStore, q: int, source: int, res: SiteResult) -> None:
        """Person partition ``source`` has no activity at all (the edge saw its end offset at 0): it will not
        report a clock, so the watermark does not wait for it (until it reports one)."""
        c = self._clocks(store, q)
        if source in c["empty"]:
            return
        c["empty"] = sorted({*c["empty"], source})
        self._write_clocks(q, c, res)
        self.advance(store, q, res)

    def _write_clocks(self, q: int, c: dict[str, Any], res: SiteResult) -> None:
        res.writes[(q, f"{q}|clk")] = {"src": dict(sorted(c["src"].items())), "empty": list(c["empty"])}

    def advance(self, store: StateStore, q: int, res: SiteResult) -> None:
        wm = self.watermark(store, q)
        if wm is None:
            return
        due = self._index(store, q)
        for _, key in sorted((d, k) for k, d in due.items() if d <= wm):
            a = self._agg(store, key)
            outs = a.close_upto(wm, self.timezone_of(a.tenant_id, a.site_id), self.correlator)
            res.outs.extend(outs)
            res.counts["site_windows"] += sum(o.stem == "signal_window" for o in outs)
            res.counts["anomalies"] += sum(o.stem == "anomaly" for o in outs)
            res.counts["incident_revisions"] += sum(o.stem == "correlated_incident" for o in outs)
            self._touch(store, q, key, a, res)

    def evidence(self, store: StateStore, q: int, stem: str, record: Record, res: SiteResult) -> None:
        """An alert or finding about a site and no person (:func:`site_evidence`): held until the watermark passes
        it, then correlated with the site's anomalies; at once if the watermark has passed it already."""
        tenant, site = int(record["tenant_id"]), str(record["site_id"])
        key = f"{q}|site|{tenant}:{site}"
        a = self._agg(store, key, tenant, site)
        if not a.hold(stem, record):
            res.counts["evidence_duplicate"] += 1
            return
        res.counts["evidence"] += 1
        wm = self.watermark(store, q)
        if wm is not None and a.held[0][0] <= wm:  # behind the watermark: correlated now
            res.counts["evidence_behind_watermark"] += 1
            pieces = [h for h in a.held if h[0] <= wm]
            a.held = [h for h in a.held if h[0] > wm]
            outs = a.correlate(self.correlator, pieces, None)
            res.outs.extend(outs)
            res.counts["incident_revisions"] += len([o for o in outs if o.stem == "correlated_incident"])
        self._touch(store, q, key, a, res)

    def feedback(self, store: StateStore, q: int, tenant: int, site: str | None, anomaly_id: str,
                 verdict: Verdict, at_ms: int, res: SiteResult) -> None:
        """A review of an anomaly, or of every anomaly of an incident of the site (``anomaly_id`` is then the
        incident id); routed to its site (or, site unknown, to whichever site of ``q`` raised it)."""
        prefix = f"{q}|site|{tenant}:"
        keys = [f"{prefix}{site}"] if site else self._site_keys(store, prefix)
        for key in keys:
            if key not in self._aggs and store.get(key) is None:
                continue
            a = self._agg(store, key)
            ids = [anomaly_id] if anomaly_id in a.book.pending else a.links.get(anomaly_id, [])
            reviewed = [i for i in ids if i in a.book.pending]
            if not reviewed:
                continue
            for i in reviewed:
                res.outs.extend(a.book.feedback(i, verdict, at_ms))
                res.counts["feedback"] += 1
            self._touch(store, q, key, a, res)

    def retune(self, store: StateStore, q: int, tenant: int | None, site: str | None, at_ms: int | None,
               res: SiteResult) -> None:
        """On-demand retune of the sites of partition ``q`` (optionally one tenant / one site) at ``at_ms``
        (default: the partition's watermark, so the stamp is event time)."""
        at = at_ms if at_ms is not None else self.watermark(store, q)
        if at is None:
            return
        prefix = f"{q}|site|"
        for key in self._site_keys(store, prefix):
            t, _, s = key[len(prefix):].partition(":")
            if (tenant is not None and int(t) != tenant) or (site is not None and s != site):
                continue
            a = self._agg(store, key)
            res.outs.extend(a.book.retune(at))
            res.counts["retuned_sites"] += 1
            self._touch(store, q, key, a, res)

    def ticket(self, store: StateStore, q: int, ticket: Record, res: SiteResult,
               broker_time_ms: int | None = None) -> None:
        """A ticket change: when it resolves an anomaly (``related_event_id``) as FALSE_POSITIVE or
        FRAUD_CONFIRMED, that is review feedback for the anomaly's baseline (see :func:`ticket_feedback`)."""
        fb = ticket_feedback(ticket, broker_time_ms)
        if fb is not None:
            self.feedback(store, q, fb["tenant_id"], fb["site_id"], fb["anomaly_id"], fb["verdict"], fb["at"], res)

    # -- in-process driver (replay, tests) --------------------------------------------------------------

    def run_person_outputs(self, store: StateStore, outs: Iterable[Out], clocks: dict[int, int],
                           res: SiteResult | None = None, empty: Iterable[int] = ()) -> SiteResult:
        """What the worker's site agent does with one pipeline result, in one partition (``q = 0``): the PERSON
        windows among ``outs``, then the pipeline's partition ``clocks`` (``Result.clocks``). ``empty``: person
        partitions without any activity record (they never report a clock)."""
        res = res or SiteResult()
        for o in outs:
            if o.stem == "signal_window":
                self.window(store, 0, o.record, res)
            else:
                ev = site_evidence(o)
                if ev is not None:
                    self.evidence(store, 0, ev[0], ev[1], res)
        for source in sorted(empty):
            self.empty(store, 0, source, res)
        for source, clock in sorted(clocks.items()):
            self.clock(store, 0, source, clock, res)
        return res


def ticket_feedback(ticket: Record, broker_time_ms: int | None = None) -> dict[str, Any] | None:
    """The baseline feedback a ticket carries, or None: resolved (RESOLVED/CLOSED) as FALSE_POSITIVE or
    FRAUD_CONFIRMED with a ``related_event_id`` (an anomaly id, or the id of an incident whose anomalies are reviewed).
    Its time ``at`` (the baseline's ``updated_at`` only moves forward) is the ticket's ``occurred_at``, at most
    ``broker_time_ms`` (the record's Kafka timestamp) when given: a ticket stamped ahead moves it no further
    than the time the broker accepted it."""
    if ticket.get("status") not in ("RESOLVED", "CLOSED") or not ticket.get("related_event_id"):
        return None
    verdict = verdict_from_resolution(ticket.get("resolution"))
    if verdict is None:
        return None
    at = int(ticket["occurred_at"])
    if broker_time_ms is not None and broker_time_ms < at:
        at = broker_time_ms
    return {"tenant_id": int(ticket["tenant_id"]), "site_id": ticket.get("site_id"),
            "anomaly_id": str(ticket["related_event_id"]), "verdict": verdict, "at": at}


__all__ = ["SiteAgg", "SiteConfig", "SiteResult", "SiteStage", "site_evidence", "ticket_feedback"]
