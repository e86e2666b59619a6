"""In-process fan-out of the live feed: a bounded ring per tenant and one bounded queue per client.

Everything here runs on the event loop thread (the Kafka consumer thread hands batches over with
``loop.call_soon_threadsafe``), so registering a client and snapshotting the ring for its resume happen
atomically with respect to new events: nothing can slip between the replay and the live stream.

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


class Overflow(Exception):
    """The client's queue is full: it reads slower than events arrive."""


@dataclass(eq=False)
class Client:
    tenant_id: int
    max_queue: int
    filters: Filters = field(default_factory=Filters)
    queue: deque[FeedEvent] = field(default_factory=deque)
    last_offset: dict[int, int] = field(default_factory=dict)  # partition -> highest offset queued
    overflowed: bool = False
    paused: bool = False  # while a Kafka resume is in flight, live events queue up but are not sent
    wake: Callable[[], None] = lambda: None

    def offer(self, ev: FeedEvent, replay: bool = False) -> None:
        if ev.offset <= self.last_offset.get(ev.partition, -1):
            return  # already queued or sent (replay and live overlap)
        if not replay and not self.filters.match(ev):
            return
        if not replay and len(self.queue) >= self.max_queue:  # a replay is bounded by the ring size instead
            self.overflowed = True
            self.wake()
            raise Overflow
        self.queue.append(ev)
        self.last_offset[ev.partition] = ev.offset
        if not self.paused:
            self.wake()

    def take(self, limit: int) -> list[FeedEvent]:
        n = min(limit, len(self.queue))
        return [self.queue.popleft() for _ in range(n)]


class TenantRing:
    def __init__(self, size: int) -> None:
        self.events: deque[FeedEvent] = deque(maxlen=size)
        self.ids: dict[str, FeedEvent] = {}

    def add(self, ev: FeedEvent) -> bool:
        """Keep the event; False if its id is already held (a producer retry: never push it twice)."""
        if ev.event_id in self.ids:
            return False
        if len(self.events) == self.events.maxlen:
            old = self.events[0]
            if self.ids.get(old.event_id) is old:
                del self.ids[old.event_id]
        self.events.append(ev)
        self.ids[ev.event_id] = ev
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
    def __init__(self, ring_size: int) -> None:
        self.ring_size = ring_size
        self.rings: dict[int, TenantRing] = {}
        self.clients: dict[int, set[Client]] = {}
        self.on_overflow: Callable[[Client], None] = lambda c: None
        self.n_clients = 0

    def ring(self, tenant_id: int) -> TenantRing:
        r = self.rings.get(tenant_id)
        if r is None:
            r = self.rings[tenant_id] = TenantRing(self.ring_size)
        return r

    def publish(self, events: Iterable[FeedEvent]) -> int:
        """Hand events to the ring and to matching clients of the same tenant; returns events accepted."""
        accepted = 0
        for ev in events:
            if not self.ring(ev.tenant_id).add(ev):
                continue
            accepted += 1
            if not ev.live:
                continue  # warm-up history: kept for resume only
            for client in tuple(self.clients.get(ev.tenant_id, ())):
                if client.overflowed:
                    continue
                try:
                    client.offer(ev)
                except Overflow:
                    self.on_overflow(client)
        return accepted

    def attach(self, client: Client, resume_from: str | None) -> tuple[str, int]:
        """Register ``client`` and queue its replay; returns (how it resumed, events replayed).

        ``how`` is ``"live"`` (no resume asked), ``"ring"`` (replayed from memory) or ``"miss"`` (the id is not
        held here: the caller falls back to Kafka offsets, with the client paused meanwhile).
        """
        group = self.clients.setdefault(client.tenant_id, set())
        if client not in group:
            group.add(client)
            self.n_clients += 1
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
        # watermark), so merge the two by offset rather than just putting the read-back first.
        merged = sorted([*keep, *client.queue], key=lambda e: (e.partition, e.offset))
        client.queue.clear()
        client.queue.extend(merged)
        for e in keep:
            client.last_offset[e.partition] = max(client.last_offset.get(e.partition, -1), e.offset)
        client.paused = False
        client.wake()
        return len(keep)
