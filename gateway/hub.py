"""In-process fan-out of the live feed: a bounded ring per tenant and one bounded queue per client.

Everything here runs on the event loop thread (the Kafka consumer thread hands batches over with
``loop.call_soon_threadsafe``), so registering a client and snapshotting the ring for its resume happen
atomically with respect to new events: nothing can slip between the replay and the live stream.

Delivery is batched: the app calls :meth:`Hub.add` for each consumed batch and :meth:`Hub.flush` once per short
tick (``ws_tick_s``). A flush builds one frame per (tenant, filters) group from the tick's events and offers the
*same bytes* to every client of the group through its ``direct`` writer (a client that is live, caught up and
writable); only a client that cannot take it now (paused for a resume, holding a backlog, its socket full) gets
the events in its own bounded queue, drained by its sender task. Per-event per-client Python work is gone from
the common path: the cost of a flush is one frame per group plus one write per client.

Resume contract (see docs in ws.py): every event carries ``event_id`` and a ``cursor`` ``"<partition>:<offset>"``.
A client that reconnects sends the last ``event_id`` (and cursor) it saw. If that id is still in this
process's ring the events after it are replayed from memory; otherwise, if the cursor is given, the gap is
read back from Kafka (the topic keeps 7 days). Each client remembers the highest offset queued per
partition and drops anything at or below it, so the replay and the live stream never duplicate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.event_messages import event_message

EVENTS_PREFIX = b'{"type":"events","events":['
EVENT_TYPES = frozenset({"alert_created", "finding_created", "finding_escalated", "anomaly_detected",
                         "incident_created", "incident_updated", "fraud_scored", "ticket_updated"})


def type_label(event_type: str) -> str:
    """A metric label for an event type: the type a producer wrote is not trusted to be one of ours."""
    return event_type if event_type in EVENT_TYPES else "other"


@dataclass(slots=True, eq=False)
class FeedEvent:
    tenant_id: int
    event_id: str
    type: str
    site_id: str | None
    person_id: str | None
    partition: int
    offset: int
    produced_ms: int  # Kafka record timestamp: when the producer sent it
    data: bytes  # the JSON object sent to clients, encoded once for all of them
    live: bool = True  # False for events read at start-up to warm the ring (no latency recorded)
    sent: bool = False  # set at its first WebSocket send in this process (latency is recorded once per event)
    doc_wire: bytes | None = None  # its documented one-event message, framed (gateway.event_messages), once built

    @property
    def cursor(self) -> str:
        return f"{self.partition}:{self.offset}"


def parse_cursor(text: str) -> tuple[int, int]:
    p, _, o = text.partition(":")
    if not (p.isdigit() and o.isdigit()):
        raise ValueError(f"cursor {text!r} is not '<partition>:<offset>'")
    return int(p), int(o)


@dataclass(slots=True)
class Filters:
    types: frozenset[str] | None = None  # None: every type
    site_ids: frozenset[str] | None = None

    def match(self, ev: FeedEvent) -> bool:
        return (self.types is None or ev.type in self.types) and (
            self.site_ids is None or (ev.site_id is not None and ev.site_id in self.site_ids))


    def key(self) -> tuple[frozenset[str] | None, frozenset[str] | None]:
        return self.types, self.site_ids


def ws_text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 5.2): what a server sends, byte for byte."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 65536:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return head + payload


BATCHED, PER_EVENT = "batched", "events"


Names = Callable[[int, str | None], str | None]


def no_names(tenant_id: int, person_id: str | None) -> str | None:
    return None


def per_event_frame(ev: FeedEvent, names: Names = no_names) -> bytes:
    """The event's documented one-event message as a WebSocket frame: built once per process, cached on the event.
    ``names`` gives a person's name (``gateway.people``), for the fields the documented contract names."""
    wire = ev.doc_wire
    if wire is None:
        wire = ev.doc_wire = ws_text_frame(event_message(ev.data, ev.type, names(ev.tenant_id, ev.person_id)))
    return wire


class SharedFrame:
    """The events of one tick for one filter group, encoded once (JSON, then the WebSocket frame) for all.

    ``mode`` BATCHED: one ``{"type":"events","events":[...]}`` message; PER_EVENT: one message per event, the
    frames written together (each event's frame is built once per process and cached on the event)."""

    __slots__ = ("_payload", "_wire", "events", "mode", "names")

    def __init__(self, events: list[FeedEvent], mode: str = BATCHED, names: Names = no_names) -> None:
        self.events = events
        self.mode = mode
        self.names = names
        self._payload: bytes | None = None
        self._wire: bytes | None = None

    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = EVENTS_PREFIX + b",".join(e.data for e in self.events) + b"]}"
        return self._payload

    def wire(self) -> bytes:
        if self._wire is None:
            if self.mode == PER_EVENT:
                self._wire = b"".join([per_event_frame(e, self.names) for e in self.events])
            else:
                self._wire = ws_text_frame(self.payload())
        return self._wire


class Overflow(Exception):
    """The client's queue is full: it reads slower than events arrive."""


@dataclass(eq=False)
class Client:
    tenant_id: int
    max_queue: int
    filters: Filters = field(default_factory=Filters)
    queue: deque[FeedEvent] = field(default_factory=deque)  # live events waiting for the client's sender
    last_offset: dict[int, int] = field(default_factory=dict)  # partition -> highest offset queued
    overflowed: bool = False
    paused: bool = False  # while a Kafka resume is in flight, live events queue up but are not sent
    wake: Callable[[], None] = lambda: None
    # Writes a shared frame straight to the client's socket; False when it cannot right now (the hub then
    # queues the events for the sender task instead). None: the client always goes through its queue.
    direct: Callable[[SharedFrame], bool] | None = None
    max_bytes: int = 1 << 62  # the live queue's bound by bytes (besides ``max_queue`` events)
    queued_bytes: int = 0
    # A resume's replay (ring or Kafka read-back), sent ahead of ``queue`` in frames of its own. It is bounded by
    # the ring or by the read-back's limits, not by ``max_queue``: a replay longer than the live queue is
    # delivered page by page instead of closing the client as slow.
    replay: deque[FeedEvent] = field(default_factory=deque)
    mode: str = BATCHED  # BATCHED: {"type":"events","events":[...]} frames; PER_EVENT: one event per message

    def offer(self, ev: FeedEvent, replay: bool = False) -> None:
        if ev.offset <= self.last_offset.get(ev.partition, -1):
            return  # already queued or sent (replay and live overlap)
        if replay:
            self.replay.append(ev)
        else:
            if not self.filters.match(ev):
                return
            size = len(ev.data)
            if len(self.queue) >= self.max_queue or self.queued_bytes + size > self.max_bytes:
                self.overflowed = True
                self.wake()
                raise Overflow
            self.queue.append(ev)
            self.queued_bytes += size
        self.last_offset[ev.partition] = ev.offset
        if not self.paused:
            self.wake()

    @property
    def backlog(self) -> bool:
        return bool(self.replay or self.queue)

    def take(self, limit: int) -> list[FeedEvent]:
        """Up to ``limit`` events: the replay first, then live ones (never both in one batch)."""
        if self.replay:
            n = min(limit, len(self.replay))
            return [self.replay.popleft() for _ in range(n)]
        n = min(limit, len(self.queue))
        out = [self.queue.popleft() for _ in range(n)]
        self.queued_bytes -= sum(len(e.data) for e in out)
        return out


class TenantRing:
    """A tenant's latest events for resume, bounded by count (``size``) and by bytes (``max_bytes``)."""

    def __init__(self, size: int, max_bytes: int = 1 << 62) -> None:
        self.events: deque[FeedEvent] = deque()
        self.ids: dict[str, FeedEvent] = {}  # bounded with ``events``: an id is dropped with its event
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0

    def add(self, ev: FeedEvent) -> bool:
        """Keep the event; False if its id is already held (a producer retry: never push it twice)."""
        if ev.event_id in self.ids:
            return False
        self.events.append(ev)
        self.ids[ev.event_id] = ev
        self.bytes += len(ev.data)
        while self.events and (len(self.events) > self.size or self.bytes > self.max_bytes):
            old = self.events.popleft()
            self.bytes -= len(old.data)
            if self.ids.get(old.event_id) is old:
                del self.ids[old.event_id]
        return True

    def after(self, event_id: str) -> list[FeedEvent] | None:
        """Events held after ``event_id``, or None when it is not held (evicted, or never seen here)."""
        anchor = self.ids.get(event_id)
        if anchor is None:
            return None
        out: list[FeedEvent] = []
        found = False
        for ev in self.events:
            if found:
                out.append(ev)
            elif ev is anchor:
                found = True
        return out


class Hub:
    """Rings and clients per tenant. Only tenants ``accepts`` says yes to get a ring (the gateway passes "has a
    token"), and at most ``max_tenants``: the tenant id of a feed record is chosen by its producer, so the
    number of rings must not follow it. Events of other tenants are counted in ``dropped_unknown``."""

    def __init__(self, ring_size: int, ring_max_bytes: int = 1 << 62, max_tenants: int = 10_000,
                 accepts: Callable[[int], bool] = lambda tenant: True) -> None:
        self.ring_size = ring_size
        self.ring_max_bytes = ring_max_bytes
        self.max_tenants = max_tenants
        self.accepts = accepts
        self.dropped_unknown = 0
        self.person_name: Names = no_names  # names for the per-event messages (the app sets gateway.people's)
        self.rings: dict[int, TenantRing] = {}
        self.clients: dict[int, set[Client]] = {}
        self.on_overflow: Callable[[Client], None] = lambda c: None
        # Called after a group's frame went out directly to ``n`` clients (metrics, latency).
        self.on_direct: Callable[[list[FeedEvent], int], None] = lambda evs, n: None
        self.n_clients = 0
        self.pending: dict[int, list[FeedEvent]] = {}  # tenant -> live events added since the last flush
        self._groups: dict[int, list[tuple[Filters, str, list[Client]]]] = {}  # tenant -> clients by filters, mode

    def ring(self, tenant_id: int) -> TenantRing:
        r = self.rings.get(tenant_id)
        if r is None:
            r = TenantRing(self.ring_size, self.ring_max_bytes)
            if len(self.rings) < self.max_tenants:
                self.rings[tenant_id] = r
        return r

    def add(self, events: Iterable[FeedEvent]) -> int:
        """Keep events in the rings and queue the live ones for the next :meth:`flush`; returns events accepted."""
        accepted = 0
        for ev in events:
            ring = self.rings.get(ev.tenant_id)
            if ring is None:
                if not self.accepts(ev.tenant_id) or len(self.rings) >= self.max_tenants:
                    self.dropped_unknown += 1
                    continue
                ring = self.ring(ev.tenant_id)
            if not ring.add(ev):
                continue
            accepted += 1
            if not ev.live:
                continue  # warm-up history: kept for resume only
            if ev.tenant_id in self.clients:
                self.pending.setdefault(ev.tenant_id, []).append(ev)
        return accepted

    def publish(self, events: Iterable[FeedEvent]) -> int:
        """:meth:`add` then :meth:`flush` at once (no batching window)."""
        accepted = self.add(events)
        self.flush()
        return accepted

    def flush(self) -> int:
        """Deliver the events added since the last flush; returns how many clients took a shared frame."""
        pending, self.pending = self.pending, {}
        direct = 0
        for tenant, evs in pending.items():
            for filters, mode, members in self._groups_of(tenant):
                if filters.types is None and filters.site_ids is None:
                    matching = evs
                else:
                    matching = [e for e in evs if filters.match(e)]
                if matching:
                    direct += self._deliver(SharedFrame(matching, mode, self.person_name), members)
        return direct

    def _deliver(self, frame: SharedFrame, members: list[Client]) -> int:
        evs = frame.events
        low: dict[int, int] = {}
        high: dict[int, int] = {}
        ordered = True  # offsets rise within each partition (the consumer's order): then a frame is all-or-nothing
        for e in evs:
            if e.partition not in low:
                low[e.partition] = e.offset
            elif e.offset <= high[e.partition]:
                ordered = False
            high[e.partition] = max(e.offset, high.get(e.partition, -1))
        sent = 0
        for client in members:
            if client.overflowed:
                continue
            # Fast path: caught up (nothing queued, nothing of this frame seen before) and writable now.
            if (ordered and client.direct is not None and not client.queue and not client.replay and not client.paused
                    and all(client.last_offset.get(p, -1) < o for p, o in low.items()) and client.direct(frame)):
                client.last_offset.update(high)
                sent += 1
                continue
            try:
                for ev in evs:
                    client.offer(ev)
            except Overflow:
                self.on_overflow(client)
        if sent:
            self.on_direct(evs, sent)
        return sent

    def _groups_of(self, tenant: int) -> list[tuple[Filters, str, list[Client]]]:
        groups = self._groups.get(tenant)
        if groups is None:
            by_key: dict[tuple[frozenset[str] | None, frozenset[str] | None, str], tuple[Filters, str, list[Client]]]
            by_key = {}
            for c in self.clients.get(tenant, ()):
                by_key.setdefault((*c.filters.key(), c.mode), (c.filters, c.mode, []))[2].append(c)
            groups = self._groups[tenant] = list(by_key.values())
        return groups

    def set_mode(self, client: Client, mode: str) -> None:
        client.mode = mode
        self._groups.pop(client.tenant_id, None)

    def set_filters(self, client: Client, filters: Filters) -> None:
        client.filters = filters
        self._groups.pop(client.tenant_id, None)

    def attach(self, client: Client, resume_from: str | None) -> tuple[str, int]:
        """Register ``client`` and queue its replay; returns (how it resumed, events replayed).

        ``how`` is ``"live"`` (no resume asked), ``"ring"`` (replayed from memory) or ``"miss"`` (the id is not
        held here: the caller falls back to Kafka offsets, with the client paused meanwhile).
        """
        group = self.clients.setdefault(client.tenant_id, set())
        if client not in group:
            group.add(client)
            self.n_clients += 1
            self._groups.pop(client.tenant_id, None)
        if resume_from is None:
            return "live", 0
        after = self.ring(client.tenant_id).after(resume_from)
        if after is None:
            return "miss", 0
        anchor = self.ring(client.tenant_id).ids[resume_from]
        client.last_offset[anchor.partition] = max(client.last_offset.get(anchor.partition, -1), anchor.offset)
        n = 0
        for ev in after:
            if client.filters.match(ev):
                client.offer(ev, replay=True)
                n += 1
        return "ring", n

    def detach(self, client: Client) -> None:
        group = self.clients.get(client.tenant_id)
        if group is not None and client in group:
            group.discard(client)
            self.n_clients -= 1
            self._groups.pop(client.tenant_id, None)
            if not group:
                del self.clients[client.tenant_id]

    def client_count(self) -> int:
        return self.n_clients

    @staticmethod
    def complete_resume(client: Client, replay: list[FeedEvent], after: tuple[int, int] | None) -> int:
        """Put events read back from Kafka ahead of the live events queued meanwhile; unpause the client.

        ``after`` is the client's cursor: only events past it are kept. Events already queued live are
        skipped, so the overlap between what Kafka returned and what the live consumer delivered is sent once.
        """
        queued = {(e.partition, e.offset) for e in client.queue}
        keep = [e for e in replay
                if e.tenant_id == client.tenant_id and client.filters.match(e) and (e.partition, e.offset) not in queued
                and (after is None or e.partition != after[0] or e.offset > after[1])]
        # The read-back may reach past live events already queued (the live consumer can lag behind the high
        # watermark), so merge the two by offset rather than just putting the read-back first. The merged whole
        # is the replay (sent first, page by page); the live queue starts empty again.
        merged = sorted([*client.replay, *keep, *client.queue], key=lambda e: (e.partition, e.offset))
        client.queue.clear()
        client.queued_bytes = 0
        client.replay.clear()
        client.replay.extend(merged)
        for e in keep:
            client.last_offset[e.partition] = max(client.last_offset.get(e.partition, -1), e.offset)
        client.paused = False
        client.wake()
        return len(keep)
