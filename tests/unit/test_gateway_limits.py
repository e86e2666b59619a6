"""Bounds against hostile clients and producers, without services: rate limiters, parameter parsing, the hub's
tenant, byte and replay bounds."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from gateway import api
from gateway.hub import Client, FeedEvent, Hub, Overflow, TenantRing
from gateway.limits import BoundedLRU, RateLimiter, retry_after_s


def _req(**params: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [],
                    "query_string": urlencode(params).encode()})


def ev(n: int, tenant: int = 1, size: int = 2) -> FeedEvent:
    return FeedEvent(tenant, f"e{n}", "alert_created", "s-1", None, 0, n, 0, b"x" * size)


def test_rate_limiter_spends_refills_and_says_when() -> None:
    now = [100.0]
    lim = RateLimiter(2.0, 3.0, max_keys=10, clock=lambda: now[0])
    assert [lim.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.take("a") == pytest.approx(0.5)  # one token short at 2/s
    assert lim.take("b") == 0.0  # buckets are per key
    now[0] += 0.5
    assert lim.take("a") == 0.0 and lim.take("a") > 0
    assert retry_after_s(0.01) == "1" and retry_after_s(2.2) == "3"
    assert RateLimiter(0, 0).take("x") == 0.0  # rate 0: off


def test_rate_limiter_and_lru_hold_at_most_max_keys() -> None:
    lim = RateLimiter(1.0, 1.0, max_keys=100)
    for i in range(10_000):
        lim.take(f"addr-{i}")
    assert len(lim) == 100
    lru: BoundedLRU[str, int] = BoundedLRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1
    lru.put("c", 3)  # b was the least recently used
    assert lru.get("b") is None and lru.get("a") == 1 and len(lru) == 2


@pytest.mark.parametrize("raw", ["--5", "-", "", "5.0", "1e3", "²", "٣", "0x10", " 5", "5 ", "9" * 13, "+5"])
def test_malformed_integers_are_a_400_naming_the_parameter(raw: str) -> None:
    with pytest.raises(api.ApiError) as err:
        api.q_int(_req(limit=raw), "limit", 50, 1, 200)
    assert err.value.status == 400 and "'limit'" in err.value.message


@pytest.mark.parametrize("raw", ["0001-01-01T00:00:00", "9999-12-31T23:59:59+00:00", "999999999999999", "²",
                                 "2026-13-01", "x" * 100, "1969-12-31T00:00:00Z", "2026-01-01T00:00:00+99:00"])
def test_malformed_or_extreme_times_are_a_400_naming_the_parameter(raw: str) -> None:
    with pytest.raises(api.ApiError) as err:
        api.q_time(_req(until=raw), "until")
    assert err.value.status == 400 and "'until'" in err.value.message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_an_integer_in_range_or_a_400(raw: str) -> None:
    try:
        value = api.q_int(_req(limit=raw), "limit", 50, 1, 200)
    except api.ApiError as exc:
        assert exc.status == 400
    else:
        assert 1 <= value <= 200 and value == int(raw) and raw.isascii()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.integers(min_value=-10**20, max_value=10**20).map(str),
                 st.datetimes().map(lambda d: d.isoformat())))
def test_any_text_is_a_usable_instant_or_a_400(raw: str) -> None:
    try:
        dt = api.q_time(_req(until=raw), "until")
    except api.ApiError as exc:
        assert exc.status == 400
    else:
        assert dt is not None and dt.tzinfo is not None and api.EARLIEST <= dt <= api.LATEST


def test_hub_keeps_no_ring_for_tenants_it_does_not_serve() -> None:
    known = {1}
    hub = Hub(10, max_tenants=2, accepts=known.__contains__)
    hub.add([ev(0, tenant=1), *[ev(n, tenant=1000 + n) for n in range(1, 500)]])
    assert set(hub.rings) == {1} and hub.dropped_unknown == 499
    known.update({2, 3, 4})
    hub.add([ev(1, tenant=2), ev(2, tenant=3), ev(3, tenant=4)])
    assert set(hub.rings) == {1, 2} and hub.dropped_unknown == 501  # at most max_tenants rings


def test_ring_and_client_queue_are_bounded_by_bytes_too() -> None:
    ring = TenantRing(1000, max_bytes=1000)
    for n in range(50):
        ring.add(ev(n, size=100))
    assert len(ring.events) == 10 and ring.bytes == 1000 and set(ring.ids) == {f"e{n}" for n in range(40, 50)}
    c = Client(1, max_queue=1000, max_bytes=250)
    c.offer(ev(0, size=100))
    c.offer(ev(1, size=100))
    with pytest.raises(Overflow):
        c.offer(ev(2, size=100))
    assert c.overflowed and c.queued_bytes == 200
    assert [e.event_id for e in c.take(10)] == ["e0", "e1"] and c.queued_bytes == 0


def test_a_replay_longer_than_the_live_queue_goes_out_in_pages_without_overflow() -> None:
    hub = Hub(5000)
    hub.publish([ev(n) for n in range(3000)])
    c = Client(1, max_queue=100)
    how, n = hub.attach(c, "e0")
    assert (how, n) == ("ring", 2999) and not c.overflowed and len(c.replay) == 2999
    hub.publish([ev(n) for n in range(3000, 3050)])  # live events queue behind the replay
    assert not c.overflowed and len(c.queue) == 50
    pages = []
    while c.backlog:
        pages.append(c.take(200))
    assert [e.offset for page in pages for e in page] == list(range(1, 3050))
    assert max(len(p) for p in pages) == 200


def test_concurrent_lookups_of_one_token_share_one_query() -> None:
    """1,000 connections re-checking one token at the same moment cost one query, not 1,000 queued for the pool."""
    import asyncio
    import contextlib
    from collections.abc import AsyncIterator
    from typing import Any

    from gateway.tokens import TokenVerifier

    queries: list[Any] = []

    class Conn:
        async def execute(self, sql: str, params: Any) -> Conn:
            queries.append(params)
            await asyncio.sleep(0.01)
            return self

        async def fetchone(self) -> tuple[str, int, list[str]]:
            return ("tid", 1, ["noc:view"])

    class Pool:
        @contextlib.asynccontextmanager
        async def connection(self) -> AsyncIterator[Conn]:
            yield Conn()

    async def main() -> None:
        verifier = TokenVerifier(Pool(), ttl_s=30)  # type: ignore[arg-type]
        token = "noc_abcd1234_" + "x" * 40
        got = await asyncio.gather(*[verifier.verify(token) for _ in range(1000)])
        assert {p.tenant_id for p in got if p is not None} == {1} and len(got) == 1000
        assert len(queries) == 1 and not verifier._in_flight

    asyncio.run(main())
