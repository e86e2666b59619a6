"""The fan-out hub: rings, filters, resume, dedupe and bounded queues (no services)."""

from __future__ import annotations

import pytest

from gateway.hub import Client, FeedEvent, Filters, Hub, Overflow, TenantRing, parse_cursor


def ev(n: int, tenant: int = 1, type_: str = "alert_created", site: str | None = "s-1", partition: int = 0,
       event_id: str | None = None) -> FeedEvent:
    return FeedEvent(tenant, event_id or f"e{n}", type_, site, None, partition, n, 0, b"{}")


def ids(client: Client) -> list[str]:
    return [e.event_id for e in client.queue]


def test_ring_is_bounded_and_forgets_evicted_ids() -> None:
    ring = TenantRing(3)
    for n in range(5):
        assert ring.add(ev(n))
    assert [e.event_id for e in ring.events] == ["e2", "e3", "e4"]
    assert ring.after("e0") is None and ring.after("e1") is None
    assert [e.event_id for e in ring.after("e2") or []] == ["e3", "e4"]
    assert ring.after("e4") == []
    assert not ring.add(ev(9, event_id="e3"))  # a producer retry of a held id


def test_publish_goes_only_to_the_tenant_and_matching_filters() -> None:
    hub = Hub(10)
    a, b = Client(1, 10, paused=False), Client(2, 10, paused=False)
    f = Client(1, 10, Filters(frozenset({"fraud_scored"}), frozenset({"s-9"})), paused=False)
    for c in (a, b, f):
        hub.attach(c, None)
    hub.publish([ev(0), ev(1, tenant=2), ev(2, type_="fraud_scored", site="s-9"), ev(3, type_="fraud_scored"),
                 ev(4, type_="fraud_scored", site=None)])
    assert ids(a) == ["e0", "e2", "e3", "e4"] and ids(b) == ["e1"] and ids(f) == ["e2"]
    hub.detach(b)
    hub.publish([ev(5, tenant=2)])
    assert ids(b) == ["e1"] and hub.client_count() == 2


def test_warm_up_events_are_kept_for_resume_but_not_pushed() -> None:
    hub = Hub(10)
    c = Client(1, 10, paused=False)
    hub.attach(c, None)
    hub.publish([FeedEvent(1, "old", "alert_created", None, None, 0, 0, 0, b"{}", live=False)])
    assert ids(c) == [] and hub.ring(1).ids.keys() == {"old"}


def test_resume_from_the_ring_then_live_without_duplicates() -> None:
    hub = Hub(10)
    hub.publish([ev(n) for n in range(4)])
    c = Client(1, 10)
    how, n = hub.attach(c, "e1")
    assert (how, n) == ("ring", 2) and ids(c) == ["e2", "e3"]
    hub.publish([ev(3), ev(4)])  # e3 again from another partition replica/retry: no duplicate
    assert ids(c) == ["e2", "e3", "e4"]
    assert hub.attach(Client(1, 10), "gone") == ("miss", 0)


def test_kafka_resume_merges_read_back_before_live_and_skips_the_overlap() -> None:
    hub = Hub(2)
    c = Client(1, 10, paused=True)
    c.last_offset[0] = 1  # the client's cursor
    assert hub.attach(c, "e1") == ("miss", 0)
    hub.publish([ev(4), ev(5)])  # live while the read-back runs
    assert ids(c) == ["e4", "e5"]
    woke: list[bool] = []
    c.wake = lambda: woke.append(True)
    read = [ev(n) for n in (1, 2, 3, 4)] + [ev(7, tenant=2)]
    assert Hub.complete_resume(c, read, (0, 1)) == 2
    assert ids(c) == ["e2", "e3", "e4", "e5"] and not c.paused and woke


def test_a_full_queue_overflows_once_and_the_hub_reports_it() -> None:
    hub = Hub(100)
    slow, ok = Client(1, 2, paused=False), Client(1, 100, paused=False)
    flagged: list[Client] = []
    hub.on_overflow = flagged.append
    hub.attach(slow, None)
    hub.attach(ok, None)
    hub.publish([ev(n) for n in range(5)])
    assert flagged == [slow] and slow.overflowed and len(ok.queue) == 5
    with pytest.raises(Overflow):
        Client(1, 0).offer(ev(1))


def test_take_and_cursor_parsing() -> None:
    c = Client(1, 10)
    for n in range(3):
        c.offer(ev(n))
    assert [e.event_id for e in c.take(2)] == ["e0", "e1"] and ids(c) == ["e2"]
    assert parse_cursor("3:42") == (3, 42) and ev(5).cursor == "0:5"
    for bad in ("", "3", "a:1", "1:-2"):
        with pytest.raises(ValueError):
            parse_cursor(bad)


def test_resume_cannot_reach_another_tenants_events() -> None:
    hub = Hub(10)
    hub.publish([ev(0, tenant=2), ev(1, tenant=2), ev(2, tenant=1)])
    c = Client(1, 10)
    assert hub.attach(c, "e0") == ("miss", 0)  # tenant 2's id is not in tenant 1's ring
    assert Hub.complete_resume(c, [ev(1, tenant=2), ev(3, tenant=1)], (0, 0)) == 1
    assert ids(c) == ["e3"]


def test_kafka_resume_keeps_offset_order_when_the_read_back_overtakes_live() -> None:
    hub = Hub(5)
    c = Client(1, 10, paused=True)
    c.last_offset[0] = 4
    hub.attach(c, "gone")
    hub.publish([ev(7)])  # the live consumer is at 7 while the read-back reached 9
    assert Hub.complete_resume(c, [ev(n) for n in range(5, 10)], (0, 4)) == 4
    assert ids(c) == ["e5", "e6", "e7", "e8", "e9"]
    hub.publish([ev(8), ev(9), ev(10)])  # arriving live later: only the new one is queued
    assert ids(c) == ["e5", "e6", "e7", "e8", "e9", "e10"]
