"""Composition of the core components: which record goes to which component, per-key state, the clock.

The worker (``streams.app``) hands each consumed Kafka record to :meth:`Pipeline.process` together with a
:class:`Store` (a Faust table in the worker, a dict in tests) and produces what comes back. Everything
here is sans-I/O and uses event time only.

Per partition ``p`` of the co-partitioned person-keyed inputs (attendance, activity, alerts,
audit-findings), state lives under keys ``"<p>|<kind>|<id>"`` so it can be written to changelog
partition ``p`` and rebuilt per partition:

* ``<p>|wm``: per-topic watermarks, the last processed offset per topic (the *offset marker*) and the
  partition clock. A topic partition's watermark is the maximum over its accepted records of
  ``min(event time, Kafka record timestamp)``: the record timestamp is bounded by the broker
  (``message.timestamp.after.max.ms``), so no record, whatever its fields claim, moves a watermark (and so
  the clock, and which later records are LATE) past the time the broker accepted it at. Legitimate
  producers stamp a record at or after its event time, so for them this is the event time.
* ``<p>|pend|<t>|<rank>|<id>``: records waiting for the clock (all four inputs).
* ``<p>|win|<person>``: telemetry windows (``streams.core.windows.PersonWindows``).
* ``<p>|ps|<person>`` / ``<p>|dev|<device>``: fraud feature state (``models.features``). Device state is
  partition-local: punches of two people on one device are only seen together when both people hash to
  the same partition (a known gap; ``device_registered`` from ref.people still flags a foreign device).
* ``<p>|corr|<key>``, ``<p>|esc|<key>``: correlation (of person keys: evidence about a site alone is
  correlated by the site stage, ``streams.core.sites``) and escalation state.

**Event-time sweep (determinism).** A record is LATE (dead-lettered) when it is more than ``grace`` behind
the watermark of its *own* topic partition — a property of that partition's order alone. Every other record
is held in ``pend`` and released when the partition clock passes it, in ``(event time, rank, id)`` order.
Before each released record, the window and incident timers due before its time fire, each at its own time
(a window closes at its end, an incident at its close time), so the result does not depend on where one
release step ends. The clock is ``activity watermark - grace - 1`` and is further held at
``watermark - grace - 1`` of any sparse input (attendance, alerts, findings) that still has unread records in
Kafka (the edge passes the end offsets it knows). Therefore, for input already in Kafka (a replay or a
backlog), no record can arrive behind the clock, and windows, anomalies, incidents, fraud scores and ticket
commands are the same whatever the topic interleaving, batching, crash or rebalance. Live, a sparse topic
that is idle (caught up) does not hold the clock; a record that then arrives behind the clock is processed
at once (counted as ``out_of_order``) — deterministic only while arrival skew stays under the grace.
A partition without activity has no clock: its held records wait for activity (stated, not hidden).

**Redelivery.** After a crash Kafka redelivers from the committed offset. The offset marker in ``<p>|wm``
is written last in each flush (after the outputs were acknowledged); records at or below it are skipped
(their effects are in the restored state), so state is not double-applied. Outputs of records above it are
re-emitted with the same ids (every id is derived from the input), which downstream upserts absorb.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.features import (
    DeviceState,
    PersonState,
    Roster,
    build_features,
    observe_activity,
    observe_attendance,
    reference_view,
)
from models.scoring import ModelCache, score_records
from schemas import contract
from schemas.serde import DecodeError, SchemaStore
from schemas.topics import person_key
from schemas.topics import topic as topic_name
from streams.core.correlation import CorrelationConfig, CorrelationState, Correlator
from streams.core.escalation import EscalationConfig, EscalationState, Escalator
from streams.core.feed import feed_events
from streams.core.ids import event_time, evidence_id
from streams.core.types import Out, Record
from streams.core.validate import (
    ReferenceData,
    ValidationConfig,
    dead_letter,
    dead_letter_for_decode_error,
    validate_input,
)
from streams.core.windows import PersonWindows, WindowConfig

MINUTE_MS = 60_000
GRACE_MS = 2 * MINUTE_MS

# The person-keyed inputs one pipeline partition reads, with the schema each carries.
INPUT_STEMS: dict[str, str] = {
    "attendance": "attendance_event",
    "activity": "activity_signal",
    "alerts": "noc_alert",
    "audit-findings": "audit_finding",
}
# Tie-break of records with the same event time: the order a human would read them in.
RANK: dict[str, int] = {"activity_signal": 0, "noc_alert": 1, "audit_finding": 2, "attendance_event": 3}
SPARSE = ("attendance", "alerts", "audit-findings")
REF_STEMS: dict[str, str] = {"ref.sites": "site", "ref.people": "person", "ref.shifts": "shift"}


class Store(Protocol):
    """Per-key state as plain JSON-able values. The worker backs it with a changelogged Faust table."""

    def get(self, key: str) -> Any: ...

    def put(self, partition: int, key: str, value: Any) -> None: ...

    def delete(self, partition: int, key: str) -> None: ...

    def keys(self) -> Iterable[str]: ...

    def write_through(self, partition: int, key: str, value: Any) -> None:
        """Write ``value`` durably while the caller keeps the live copy: the store may forget it (``get`` may
        then miss) until :meth:`keep` hands it back."""

    def keep(self, partition: int, key: str, value: Any) -> None:
        """Hold ``value`` (already written) again: the caller drops its live copy."""


class DictStore:
    """A :class:`Store` over a dict (tests, replays)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.writes = 0

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put(self, partition: int, key: str, value: Any) -> None:
        self.writes += 1
        self.data[key] = value

    def delete(self, partition: int, key: str) -> None:
        self.writes += 1
        self.data.pop(key, None)

    def keys(self) -> Iterable[str]:
        return list(self.data)

    def write_through(self, partition: int, key: str, value: Any) -> None:
        self.put(partition, key, value)

    def keep(self, partition: int, key: str, value: Any) -> None:
        self.data[key] = value


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1.2 µs more per consumed record
class Incoming:
    """One consumed Kafka record, as the edge saw it (treat as read-only)."""

    topic: str  # catalogue short name, e.g. "attendance"
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int  # Kafka record timestamp, epoch ms


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    grace_ms: int = GRACE_MS
    component: str = "noc-worker"
    windows: WindowConfig = field(default_factory=WindowConfig)
    correlation: CorrelationConfig = field(default_factory=CorrelationConfig)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    # Decoded states kept between batches per partition (speed); beyond it the cache is dropped after a flush
    # and refilled from the store (memory). 0 keeps none.
    max_cached_states: int = 100_000


@dataclass(slots=True)
class Result:
    """What one call produced, plus counts the edge turns into metrics."""

    outs: list[Out] = field(default_factory=list)
    processed: Counter[str] = field(default_factory=Counter)  # by topic short name
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason
    skipped: int = 0  # redelivered records at or below the offset marker
    late: int = 0
    out_of_order: int = 0  # released on arrival: the clock had passed it (live, an idle sparse topic woke up)
    scored: int = 0
    fraud_detections: int = 0  # scores >= the fraud threshold
    fraud_tickets: int = 0
    score_seconds: float = 0.0  # feature + scoring time, when the pipeline was given a timer
    sessions: list[_Session] = field(default_factory=list)  # state writes, applied by commit()
    # Partition clocks this call moved (partition -> clock): every PERSON window ending by it has been emitted.
    # The edge forwards them after the windows as site-stage clock markers (streams.core.sites).
    clocks: dict[int, int] = field(default_factory=dict)

    def commit(self) -> None:
        """Write the state changes to the store (offset marker last). The edge calls it after the outputs
        are delivered, so a crash in between re-emits outputs rather than losing them. A partition's session
        stays open across calls until flushed, so this also writes the changes of earlier uncommitted calls
        (see :meth:`Pipeline.commit`)."""
        for session in self.sessions:
            session.flush(f"{session.p}|wm")
        self.sessions.clear()

    def merge(self, other: Result) -> None:
        self.outs.extend(other.outs)
        self.processed.update(other.processed)
        self.dead_letters.update(other.dead_letters)
        self.sessions.extend(s for s in other.sessions if s not in self.sessions)
        for p, c in other.clocks.items():
            self.clocks[p] = max(c, self.clocks.get(p, c))
        for name in ("skipped", "late", "out_of_order", "scored", "fraud_detections", "fraud_tickets", "score_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class References:
    """Latest site, person and shift records from the compacted reference topics."""

    def __init__(self) -> None:
        self.sites: dict[tuple[int, str], Record] = {}
        self.people: dict[tuple[int, str], Record] = {}
        self.shifts: dict[tuple[int, str], Record] = {}
        self.roster = Roster()  # each person's latest shifts, for punches that name none
        self.valid = ReferenceData()

    def apply(self, stem: str, record: Record) -> None:
        tenant = int(record["tenant_id"])
        if stem == "site":
            self.sites[(tenant, record["site_id"])] = record
            self.valid.add_site(record)
        elif stem == "person":
            self.people[(tenant, record["person_id"])] = reference_view(stem, record)
        elif stem == "shift":
            view = self.shifts[(tenant, record["shift_id"])] = reference_view(stem, record)
            self.roster.add(view)

    def mark_loaded(self) -> None:
        self.valid.loaded = True


class _Session:
    """Reads through to the store once per key, buffers writes, flushes them (offset marker last).

    Component states (``ps``, ``dev``, ``win``, ``corr``, ``esc``) stay decoded between batches in ``objs``
    (the partition's write-back cache, owned by the pipeline); they are serialised (``to_dict``) only when
    flushed, once per dirty key per batch, and written through (:meth:`Store.write_through`): the live copy is
    the only one in memory, the store holds a key again (:meth:`Store.keep`) when the cache drops it."""

    def __init__(self, store: Store, partition: int, objs: dict[str, Any], max_objs: int = 100_000,
                 through: set[str] | None = None) -> None:
        self.max_objs = max_objs
        self.store = store
        self.p = partition
        self.objs = objs
        self.through = set() if through is None else through  # keys of objs written through (store may miss them)
        self.cache: dict[str, Any] = {}
        self.dirty: set[str] = set()
        self.absent: set[str] = set()  # keys the store did not have: deleting them again writes nothing
        # Pending records added since the last flush and still pending (most are released before the flush
        # and never reach the store): written at the flush.
        self.pend: dict[str, Any] = {}
        self.flushed = False

    def get(self, key: str) -> Any:
        if key not in self.cache:
            value = self.cache[key] = self.store.get(key)
            if value is None:
                self.absent.add(key)
        return self.cache[key]

    def obj(self, key: str, load: Callable[[Any], Any]) -> Any:
        o = self.objs.get(key)
        if o is None:
            o = self.objs[key] = load(self.store.get(key))
        return o

    def put(self, key: str, value: Any) -> None:
        self.cache[key] = value
        self.dirty.add(key)

    def mark(self, key: str) -> None:
        """The cached object of ``key`` changed."""
        self.cache.pop(key, None)
        self.dirty.add(key)

    def delete(self, key: str) -> None:
        if self.objs.pop(key, None) is not None:
            self.through.discard(key)
            self.absent.discard(key)  # it lives here, whatever the store holds: write the deletion
        elif key not in self.cache:
            self.get(key)
        self.cache[key] = None
        self.dirty.add(key)

    def flush(self, marker_key: str) -> None:
        for key in sorted(self.pend):
            self.store.put(self.p, key, self.pend[key])
        self.pend.clear()
        dropping = len(self.objs) > self.max_objs  # the cache is dropped after this flush
        for key in sorted(self.dirty - {marker_key}):
            if key in self.objs:
                if dropping:
                    self.store.put(self.p, key, self.objs[key].to_dict())
                else:
                    self.store.write_through(self.p, key, self.objs[key].to_dict())
                    self.through.add(key)
                continue
            value = self.cache[key]
            if value is None:
                if key not in self.absent:
                    self.store.delete(self.p, key)
            else:
                self.store.put(self.p, key, value)
        if marker_key in self.dirty:
            self.store.put(self.p, marker_key, self.cache[marker_key])
        if dropping:
            for key in sorted(self.through - self.dirty):  # written through by an earlier flush
                self.store.keep(self.p, key, self.objs[key].to_dict())
            self.through.clear()
            self.objs.clear()
        self.dirty.clear()
        self.absent.clear()
        self.flushed = True


@dataclass(slots=True)
class _Index:
    """In-memory index of one partition: pending keys (sorted) and timers (rebuilt from the store)."""

    pending: list[str] = field(default_factory=list)  # sorted pend keys
    # pend key -> (event time, stem, record), for those added in this process
    items: dict[str, tuple[int, str, Record]] = field(default_factory=dict)
    timers: list[tuple[int, str]] = field(default_factory=list)  # heap of (event time, state key); lazy
    due: dict[str, int] = field(default_factory=dict)  # state key -> its current timer time


def _pend_key(p: int, t: int, rank: int, rid: str) -> str:
    return f"{p}|pend|{t:015d}|{rank}|{rid}"


class Pipeline:
    """Routes records of the person-keyed inputs to the core components; see the module doc."""

    def __init__(self, refs: References, models: ModelCache, config: PipelineConfig | None = None,
                 schemas: SchemaStore | None = None, timer: Callable[[], float] | None = None) -> None:
        """``timer`` (e.g. ``time.perf_counter``) only measures scoring latency for metrics; never decides."""
        self.timer = timer
        self.refs = refs
        self.models = models
        self.config = config or PipelineConfig()
        self.schemas = schemas or SchemaStore()
        self.correlator = Correlator(self.config.correlation)
        self.escalator = Escalator(self.config.escalation)
        self._window_grace = self.config.windows.grace_ms
        self._validation = self.config.validation
        self._index: dict[int, _Index] = {}
        self._objs: dict[int, dict[str, Any]] = {}  # per partition: decoded component states
        self._through: dict[int, set[str]] = {}  # per partition: which of them only the changelog also holds
        self._open: dict[int, _Session] = {}  # per partition: the session not flushed yet

    # -- partition lifecycle ---------------------------------------------------------------------

    def forget_partitions(self, partitions: Iterable[int] | None = None) -> None:
        """Drop in-memory indexes (after a rebalance); they are rebuilt from the store on next use."""
        if partitions is None:
            self._index.clear()
            self._objs.clear()
            self._through.clear()
            self._open.clear()
        for p in partitions or ():
            self._index.pop(p, None)
            self._objs.pop(p, None)
            self._through.pop(p, None)
            self._open.pop(p, None)

    def _session(self, store: Store, p: int) -> _Session:
        """The partition's open session: unflushed writes stay visible to the next call."""
        s = self._open.get(p)
        if s is None or s.flushed or s.store is not store:
            s = self._open[p] = _Session(store, p, self._objs.setdefault(p, {}), self.config.max_cached_states,
                                         self._through.setdefault(p, set()))
        return s

    def commit(self) -> None:
        """Flush every open session (offset marker last in each). An edge may call :meth:`process` several
        times, deliver each result's outputs, and write the state once with this (fewer state writes: a key
        changed in many calls is written once); it must deliver all those outputs first."""
        for session in self._open.values():
            session.flush(f"{session.p}|wm")
        self._open.clear()

    def _idx(self, store: Store, p: int) -> _Index:
        idx = self._index.get(p)
        if idx is None:
            idx = _Index()
            pend_prefix, corr_prefix, win_prefix = f"{p}|pend|", f"{p}|corr|", f"{p}|win|"
            for key in store.keys():
                if key.startswith(pend_prefix):
                    idx.pending.append(key)
                elif key.startswith(win_prefix):
                    self._set_timer(idx, key, self._win_due(PersonWindows.from_dict(store.get(key),
                                                                                    self.config.windows)))
                elif key.startswith(corr_prefix):
                    cst = CorrelationState.from_dict(store.get(key))
                    self._set_timer(idx, key, cst.next_deadline(self.config.correlation))
            idx.pending.sort()
            self._index[p] = idx
        return idx

    # -- the entry points ------------------------------------------------------------------------

    def process(self, store: Store, batch: Iterable[Incoming], namespace: str = "noc",
                highwater: Mapping[tuple[str, int], int | None] | None = None) -> Result:
        """Process consumed records (any partitions, in consumption order).

        ``highwater``: the end offsets the consumer knows for the sparse inputs (attendance, alerts,
        audit-findings) per (topic short, partition), None when not known yet; a sparse input with unread records
        holds its partition's clock back (omitted: nothing is held). No clock is read: FUTURE_EVENT is judged
        against each record's Kafka timestamp (``Incoming.timestamp``) and its ``received_at``.
        Call ``result.commit()`` before the next call (after producing ``result.outs``)."""
        result = Result()
        by_partition: dict[int, list[Incoming]] = {}
        for inc in batch:
            by_partition.setdefault(inc.partition, []).append(inc)
        for p in sorted(by_partition):
            session = self._session(store, p)
            idx = self._idx(store, p)
            wm_key = f"{p}|wm"
            wm: dict[str, Any] = session.get(wm_key) or {"wm": {}, "off": {}, "clock": None}
            taken = False
            for inc in by_partition[p]:
                taken = self._one(session, idx, wm, inc, namespace, result) or taken
            if taken:
                session.put(wm_key, wm)
            self._advance(session, idx, p, highwater, result)
            result.sessions.append(session)
        return result

    def tick(self, store: Store, partitions: Iterable[int],
             highwater: Mapping[tuple[str, int], int | None] | None = None) -> Result:
        """Move the clocks of partitions that got no records (a sparse topic finished catching up)."""
        result = Result()
        for p in sorted(partitions):
            session = self._session(store, p)
            if session.get(f"{p}|wm") is None:
                continue
            self._advance(session, self._idx(store, p), p, highwater, result)
            result.sessions.append(session)
        return result

    def _one(self, s: _Session, idx: _Index, wm: dict[str, Any], inc: Incoming, ns: str, res: Result) -> bool:
        """One consumed record of partition ``inc.partition`` with its watermark record ``wm`` (updated here;
        the caller stores it). False: skipped (redelivered)."""
        p = inc.partition
        if inc.offset <= wm["off"].get(inc.topic, -1):
            res.skipped += 1  # redelivered after a crash: its effects are in the restored state
            return False
        wm["off"][inc.topic] = inc.offset
        res.processed[inc.topic] += 1
        stem = INPUT_STEMS[inc.topic]
        try:
            _, record = self.schemas.decode(inc.value, stem)
        except DecodeError as err:
            self._dead(res, dead_letter_for_decode_error(
                err, source_topic=topic_name(inc.topic, ns), partition=p, offset=inc.offset,
                component=self.config.component, key=inc.key, value=inc.value, record_timestamp=inc.timestamp),
                err.reason)
            return True
        verdict = validate_input(stem, record, self.refs.valid, inc.timestamp, self._validation)
        if not verdict.ok:
            reason = verdict.reason or "INVALID"
            self._dead(res, self._letter(inc, ns, reason, verdict.detail), reason)
            return True
        t = event_time(stem, record)
        topic_wm = wm["wm"].get(inc.topic)
        if topic_wm is not None and t < topic_wm - self.config.grace_ms:
            res.late += 1
            detail = f"event time {t} is {topic_wm - t} ms behind the watermark {topic_wm} of its topic " \
                     f"partition (grace {self.config.grace_ms} ms)"
            self._dead(res, self._letter(inc, ns, "LATE", detail), "LATE")
            return True
        mark = t if t <= inc.timestamp else inc.timestamp  # see the module doc: bounded by the broker time
        if topic_wm is None or mark > topic_wm:
            wm["wm"][inc.topic] = mark
        if stem != "activity_signal":
            res.outs.extend(feed_events(stem, record))  # alert_created / finding_created: as they arrive
        key = _pend_key(p, t, RANK[stem], evidence_id(stem, record))
        pending = idx.pending
        i = bisect.bisect_left(pending, key)
        if i == len(pending) or pending[i] != key:  # else: the same record is already waiting
            pending.insert(i, key)
            s.pend[key] = {"stem": stem, "record": record}
            idx.items[key] = (t, stem, record)
        clock = wm["clock"]
        if clock is not None and t <= clock:  # live only: a sparse topic that was idle got an old record
            res.out_of_order += 1
            self._release(s, idx, p, clock, res)
        return True

    def _letter(self, inc: Incoming, ns: str, reason: str, detail: str) -> Out:
        return dead_letter(source_topic=topic_name(inc.topic, ns), partition=inc.partition, offset=inc.offset,
                           reason=reason, detail=detail, component=self.config.component, key=inc.key,
                           value=inc.value, record_timestamp=inc.timestamp)

    def _dead(self, res: Result, out: Out, reason: str) -> None:
        res.outs.append(out)
        res.dead_letters[reason] += 1

    # -- the clock -------------------------------------------------------------------------------------

    def _advance(self, s: _Session, idx: _Index, p: int, highwater: Mapping[tuple[str, int], int | None] | None,
                 res: Result) -> None:
        """clock = activity watermark - grace - 1, held at (watermark - grace - 1) of every lagging sparse input.

        Any record not LATE on its own topic partition has event time > that, so in a replay nothing arrives
        behind the clock and the release order is the event-time order whatever the topic interleaving."""
        wm_key = f"{p}|wm"
        wm: dict[str, Any] | None = s.get(wm_key)
        if wm is None or "activity" not in wm["wm"]:
            return
        grace = self.config.grace_ms
        clock = int(wm["wm"]["activity"]) - grace - 1
        for short in SPARSE:
            if highwater is None or (short, p) not in highwater:
                continue
            hw = highwater[(short, p)]
            if hw is None or hw > wm["off"].get(short, -1) + 1:  # unread records (or not known yet)
                seen = wm["wm"].get(short)
                if seen is None:
                    return  # records of it wait unread: nothing can be released yet
                clock = min(clock, int(seen) - grace - 1)
        if wm["clock"] is None or clock > wm["clock"]:
            wm["clock"] = clock
            s.put(wm_key, wm)
            self._release(s, idx, p, clock, res)
            res.clocks[p] = clock

    def _release(self, s: _Session, idx: _Index, p: int, clock: int, res: Result) -> None:
        """Sweep event time up to ``clock``: pending records in (time, rank, id) order, each preceded by the
        window and incident timers due before it; finally the timers due at or before ``clock``. Timers fire at
        their own time (not the clock), so the outcome does not depend on where one step ends."""
        upto = bisect.bisect_right(idx.pending, _pend_key(p, clock, 9, "\x7f"))
        keys, idx.pending[:upto] = idx.pending[:upto], []
        items: list[tuple[int, str, Record]] = []
        held = idx.items
        for key in keys:
            item = held.pop(key, None)
            if item is None:  # restored from the store
                stored = s.get(key)
                if stored is not None:
                    stem, record = stored["stem"], stored["record"]
                    item = (event_time(stem, record), stem, record)
            if s.pend.pop(key, None) is None:  # not added since the last flush: an earlier flush wrote it
                s.delete(key)
            if item is not None:
                items.append(item)
        timers = idx.timers
        for t, stem, record in items:
            if timers and timers[0][0] < t:  # (the check of _fire_timers, inline: it runs per record)
                self._fire_timers(s, idx, p, t - 1, res)
            if stem == "activity_signal":
                self._activity(s, idx, p, t, record, res)
            elif stem == "attendance_event":
                self._attendance(s, idx, p, t, record, res)
            else:
                self._evidence(s, idx, p, stem, record, res)
        self._fire_timers(s, idx, p, clock, res)

    def _fire_timers(self, s: _Session, idx: _Index, p: int, upto: int, res: Result) -> None:
        heap = idx.timers
        win_prefix = f"{p}|win|"
        while heap and heap[0][0] <= upto:
            due, key = heapq.heappop(heap)
            if idx.due.get(key) != due:
                continue  # superseded
            del idx.due[key]
            if key.startswith(win_prefix):
                pw = s.obj(key, self._load_windows)
                # watermark = window end + grace: closes exactly the windows that ended by ``due``
                for out in pw.advance(due + self._window_grace):
                    self._window_out(s, idx, p, out, res)
                self._store_win(s, idx, key, pw)
            else:
                cst = s.obj(key, CorrelationState.from_dict)
                for out in self.correlator.on_watermark(cst, due):
                    res.outs.append(out)
                    res.outs.extend(feed_events(out.stem, out.record))
                self._store_corr(s, idx, key, cst)

    def _set_timer(self, idx: _Index, key: str, due: int | None) -> None:
        if due is None:
            idx.due.pop(key, None)
            return
        if idx.due.get(key) != due:
            idx.due[key] = due
            heapq.heappush(idx.timers, (due, key))

    def _win_due(self, pw: PersonWindows) -> int | None:
        """Event time at which the person's next window closes (its deadline is a watermark: end + grace)."""
        d = pw.next_deadline()
        return None if d is None else d - self._window_grace

    # -- components --------------------------------------------------------------------------------------

    def _load_windows(self, d: Any) -> PersonWindows:
        assert d is not None, "a window timer without window state"
        return PersonWindows.from_dict(d, self.config.windows)

    def _windows(self, s: _Session, wkey: str, rec: Record) -> PersonWindows:
        pw: PersonWindows | None = s.objs.get(wkey)  # cached (nearly always): no loader built per signal
        if pw is None:
            cfg = self.config.windows
            pw = s.obj(wkey, lambda d: PersonWindows.new(int(rec["tenant_id"]), rec["person_id"], cfg)
                       if d is None else PersonWindows.from_dict(d, cfg))
        return pw

    def _store_win(self, s: _Session, idx: _Index, wkey: str, pw: PersonWindows) -> None:
        s.mark(wkey)
        self._set_timer(idx, wkey, self._win_due(pw))

    def _window_out(self, s: _Session, idx: _Index, p: int, out: Out, res: Result) -> None:
        res.outs.append(out)
        if out.stem == "anomaly":
            res.outs.extend(feed_events(out.stem, out.record))
            self._evidence(s, idx, p, out.stem, out.record, res)

    def _activity(self, s: _Session, idx: _Index, p: int, t: int, rec: Record, res: Result) -> None:
        who = f"{rec['tenant_id']}:{rec['person_id']}"
        wkey = f"{p}|win|{who}"
        pw = self._windows(s, wkey, rec)
        observed = pw.observe_activity(rec, t + self._window_grace)
        for out in observed.outs:
            self._window_out(s, idx, p, out, res)
        if observed.status != "IGNORED":
            self._store_win(s, idx, wkey, pw)
        if observed.status != "COUNTED":
            return  # DUPLICATE (or not this person's): already in the feature state too
        pkey = f"{p}|ps|{who}"
        ps = s.obj(pkey, PersonState.from_dict)
        observe_activity(ps, rec)
        s.mark(pkey)

    def _attendance(self, s: _Session, idx: _Index, p: int, t: int, att: Record, res: Result) -> None:
        tenant = int(att["tenant_id"])
        site = self.refs.sites.get((tenant, att["site_id"]))
        wkey = f"{p}|win|{tenant}:{att['person_id']}"
        pw = self._windows(s, wkey, att)
        for out in pw.observe_attendance(att, site, t + self._window_grace):
            self._window_out(s, idx, p, out, res)
        self._store_win(s, idx, wkey, pw)
        t0 = self.timer() if self.timer else 0.0
        pkey = f"{p}|ps|{tenant}:{att['person_id']}"
        dkey = f"{p}|dev|{tenant}:{att['device_id']}"
        ps, ds = s.obj(pkey, PersonState.from_dict), s.obj(dkey, DeviceState.from_dict)
        shift = self.refs.shifts.get((tenant, att["shift_id"])) if att.get("shift_id") else \
            self.refs.roster.covering(self.refs.shifts, tenant, att["person_id"], int(att["occurred_at"]))
        vec = build_features(att, ps, ds, site, self.refs.people.get((tenant, att["person_id"])), shift)
        observe_attendance(ps, ds, att, vec)
        s.mark(pkey)
        s.mark(dkey)
        score = score_records(self.models, [(att, vec)])[0]
        if self.timer:
            res.score_seconds += self.timer() - t0
        res.scored += 1
        res.outs.append(Out("fraud-scores", person_key(tenant, att["person_id"]), "fraud_score", score))
        res.outs.extend(feed_events("fraud_score", score))
        if score["fraud_probability"] >= self.config.escalation.fraud_threshold:
            res.fraud_detections += 1
        self._evidence(s, idx, p, "fraud_score", score, res)

    def _evidence(self, s: _Session, idx: _Index, p: int, stem: str, record: Record, res: Result) -> None:
        """Escalation and correlation of one released record (alert, finding, anomaly or fraud score)."""
        key = person_key(int(record["tenant_id"]), record.get("person_id"), record.get("site_id")).decode()
        ekey = f"{p}|esc|{key}"
        est = s.obj(ekey, EscalationState.from_dict)
        escalated = self.escalator.on_record(est, stem, record)
        if escalated:
            s.mark(ekey)
            for out in escalated:
                res.outs.append(out)
                res.outs.extend(feed_events(out.stem, out.record))
                if out.topic == "ticket-commands" and out.record.get("category") == "SECURITY_FRAUD":
                    res.fraud_tickets += 1
        if not record.get("person_id"):
            return  # about a site alone: correlated by the site stage, with the site's anomalies (core.sites)
        ckey = f"{p}|corr|{key}"
        cst = s.obj(ckey, CorrelationState.from_dict)
        incidents = self.correlator.on_record(cst, stem, record)
        if incidents:
            self._store_corr(s, idx, ckey, cst)
            for out in incidents:
                res.outs.append(out)
                res.outs.extend(feed_events(out.stem, out.record))

    def _store_corr(self, s: _Session, idx: _Index, ckey: str, cst: CorrelationState) -> None:
        if cst.is_empty():
            s.delete(ckey)
            self._set_timer(idx, ckey, None)
            return
        s.mark(ckey)
        self._set_timer(idx, ckey, cst.next_deadline(self.config.correlation))

    # -- reference data ------------------------------------------------------------------------------

    def apply_reference(self, short: str, value: bytes | None) -> bool:
        """Apply one ref-topic record; False when it does not decode or is outside the input contract (then it is
        not applied: the last valid version of the entity stays)."""
        if value is None:
            return True  # tombstones: keep the last known version (shifts and sites are referenced by history)
        try:
            stem, record = self.schemas.decode(value, expected=REF_STEMS[short])
        except DecodeError:
            return False
        if contract.check(stem, record, None) is not None:
            return False
        self.refs.apply(stem, record)
        return True


def iter_state(store: Store, partition: int, kind: str) -> Iterator[tuple[str, Any]]:
    """State entries of one kind in one partition (tests and diagnostics)."""
    prefix = f"{partition}|{kind}|"
    for key in sorted(k for k in store.keys() if k.startswith(prefix)):
        yield key[len(prefix):], store.get(key)


def state_kinds(store: Store) -> Mapping[str, int]:
    """How many entries of each kind the store holds (diagnostics, the benchmark's state size)."""
    counts: Counter[str] = Counter()
    for key in store.keys():
        parts = key.split("|")
        counts[parts[1] if len(parts) > 1 else key] += 1
    return counts
