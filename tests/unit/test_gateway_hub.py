"""The fan-out hub: rings, filters, resume, dedupe and bounded queues (no services)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.app import FlushTicker
from gateway.hub import Client, FeedEvent, Filters, Hub, Overflow, SharedFrame, TenantRing, parse_cursor, ws_text_frame


def ev(n: int, tenant: int = 1, type_: str = "alert_created", site: str | None = "s-1", partition: int = 0,
       event_id: str | None = None) -> FeedEvent:
    return FeedEvent(tenant, event_id or f"e{n}", type_, site, None, partition, n, 0, b"{}")


def jev(n: int, type_: str = "alert_created", partition: int = 0) -> FeedEvent:
    """An event whose JSON carries its id, as the consumer encodes it."""
    return FeedEvent(1, f"e{n}", type_, "s-1", None, partition, n, 0,
                     orjson.dumps({"type": type_, "event_id": f"e{n}", "cursor": f"{partition}:{n}"}))


def ids(client: Client) -> list[str]:
    """What the client's sender will send, in order: the replay, then the live queue."""
    return [e.event_id for e in (*client.replay, *client.queue)]


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


# -- ticks: one shared frame per filter group ---------------------------------------------------------------------

def _direct(client: Client, frames: list[SharedFrame], ok: list[bool] | None = None) -> None:
    def write(frame: SharedFrame) -> bool:
        if ok is not None and not ok[0]:
            return False
        frames.append(frame)
        return True
    client.direct = write


def _frame_ids(frame: SharedFrame) -> list[str]:
    return [e["event_id"] for e in orjson.loads(frame.payload())["events"]]


def test_a_tick_sends_one_frame_per_group_with_the_same_bytes_in_order() -> None:
    hub = Hub(100)
    got: dict[str, list[SharedFrame]] = {"a": [], "b": [], "f": []}
    a, b = Client(1, 10, paused=False), Client(1, 10, paused=False)
    f = Client(1, 10, Filters(frozenset({"fraud_scored"}), None), paused=False)
    for name, c in (("a", a), ("b", b), ("f", f)):
        _direct(c, got[name])
        hub.attach(c, None)
    hub.add([jev(n, type_="fraud_scored" if n % 2 else "alert_created") for n in range(6)])
    assert all(not frames for frames in got.values())  # nothing leaves before the flush
    assert hub.flush() == 3
    assert len(got["a"]) == len(got["b"]) == len(got["f"]) == 1
    assert got["a"][0].wire() is got["b"][0].wire()  # encoded once for the group
    assert _frame_ids(got["a"][0]) == [f"e{n}" for n in range(6)]
    assert _frame_ids(got["f"][0]) == ["e1", "e3", "e5"]
    assert not a.queue and a.last_offset == {0: 5} and f.last_offset == {0: 5}
    assert hub.flush() == 0 and len(got["a"]) == 1  # nothing pending: nothing sent


def test_a_client_that_cannot_take_the_frame_gets_a_gap_free_queue_and_rejoins_after_draining() -> None:
    hub = Hub(100)
    frames: list[SharedFrame] = []
    ok = [False]
    c = Client(1, 100, paused=False)
    _direct(c, frames, ok)
    hub.attach(c, None)
    hub.publish([jev(0), jev(1)])  # socket full: queued instead
    ok[0] = True
    hub.publish([jev(2)])  # writable again, but a backlog is queued: it must queue behind it (order)
    assert frames == [] and ids(c) == ["e0", "e1", "e2"]
    c.take(10)  # the sender drained the backlog
    hub.publish([jev(3), jev(4)])
    assert [_frame_ids(fr) for fr in frames] == [["e3", "e4"]] and not c.queue


def test_events_added_before_a_ring_resume_are_not_sent_twice() -> None:
    hub = Hub(100)
    frames: list[SharedFrame] = []
    other = Client(1, 100, paused=False)
    hub.attach(other, None)
    hub.publish([jev(0), jev(1)])
    hub.add([jev(2), jev(3)])  # in the ring and pending when the client resumes
    c = Client(1, 100, paused=False)
    _direct(c, frames)
    assert hub.attach(c, "e0") == ("ring", 3)
    assert ids(c) == ["e1", "e2", "e3"]
    hub.flush()
    assert frames == [] and ids(c) == ["e1", "e2", "e3"]
    c.take(10)
    hub.publish([jev(4)])
    assert [_frame_ids(fr) for fr in frames] == [["e4"]]


def test_changing_filters_moves_a_client_to_its_new_group() -> None:
    hub = Hub(100)
    frames: list[SharedFrame] = []
    c = Client(1, 100, paused=False)
    _direct(c, frames)
    hub.attach(c, None)
    hub.publish([jev(0, type_="alert_created")])
    hub.set_filters(c, Filters(frozenset({"fraud_scored"}), None))
    hub.publish([jev(1, type_="alert_created"), jev(2, type_="fraud_scored")])
    assert [_frame_ids(fr) for fr in frames] == [["e0"], ["e2"]]


def test_shared_path_handles_several_partitions_and_skips_out_of_order_batches() -> None:
    hub = Hub(100)
    frames: list[SharedFrame] = []
    c = Client(1, 100, paused=False)
    _direct(c, frames)
    hub.attach(c, None)
    hub.publish([jev(5, partition=0), jev(7, partition=1), jev(6, partition=0)])
    assert len(frames) == 1 and c.last_offset == {0: 6, 1: 7}
    # Not in offset order (a partition never delivers so): no shared frame; the per-event rule applies, an offset
    # at or below the highest one queued counts as already sent.
    hub.publish([jev(9, partition=0), jev(8, partition=0)])
    assert len(frames) == 1 and ids(c) == ["e9"]


def test_ws_text_frame_lengths() -> None:
    assert ws_text_frame(b"x" * 125)[:2] == bytes((0x81, 125))
    assert ws_text_frame(b"x" * 126)[:4] == bytes((0x81, 126, 0, 126))
    big = ws_text_frame(b"x" * 70_000)
    assert big[:2] == bytes((0x81, 127)) and int.from_bytes(big[2:10], "big") == 70_000 and len(big) == 70_010


def test_flush_ticker_sends_the_first_event_at_once_and_batches_the_rest() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        hub = Hub(100)
        flushed: list[float] = []
        def flush() -> int:
            flushed.append(loop.time())
            return 0
        hub.flush = flush  # type: ignore[method-assign]
        ticker = FlushTicker(loop, hub, 0.05, 40_000)
        t0 = loop.time()
        ticker.kick()
        await asyncio.sleep(0)  # the first kick after a quiet spell: on the next loop step
        assert len(flushed) == 1 and flushed[0] - t0 < 0.02
        ticker.kick()
        ticker.kick()  # coalesced into one scheduled flush
        await asyncio.sleep(0.1)
        return [t - t0 for t in flushed]

    times = asyncio.run(main())
    assert len(times) == 2 and times[1] >= 0.045
