"""Live pacing without a broker: a record is produced only once the (fake) clock has reached its time, and where a
live demo's world starts (back-fill window, resume after the newest activity)."""

from __future__ import annotations

import io

from infra.cli_demo import DAY_MS, MINUTE_MS, live_start
from simulator.config import HOUR_MS, SimConfig
from simulator.generate import SimRecord, Simulation
from simulator.produce import run

T = 1_796_000_000_000


class FakeClock:
    """Epoch ms that moves one minute each time it is read; remembers the reading at each produce decision."""

    def __init__(self, start: int) -> None:
        self.now = start
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        self.now += MINUTE_MS
        return self.now


def _records(times: list[int]) -> list[SimRecord]:
    cfg = SimConfig(seed=1, tenants=1, sites_per_tenant=1, guards_per_site=1, span=HOUR_MS)
    ref = next(iter(Simulation(cfg)))  # a site record: any encodable record will do
    return [SimRecord(ref.topic, ref.key, ref.stem, {**ref.record, "updated_at": t}, t) for t in times]


def _run(times: list[int], clock: FakeClock, stop: object = None) -> tuple[object, str]:
    out = io.StringIO()
    rep = run(_records(times), "127.0.0.1:1", "t", live=True, clock_ms=clock, progress=out, flush_timeout_s=0,
              stop=stop, extra_config={"log_level": 0})  # type: ignore[arg-type]
    return rep, out.getvalue()


def test_live_pacing_holds_each_record_until_the_clock_reaches_it() -> None:
    clock = FakeClock(T)
    rep, out = _run([T - HOUR_MS, T - MINUTE_MS, T + 30 * MINUTE_MS], clock)
    assert rep.total == 3 and rep.caught_up_s is not None  # type: ignore[attr-defined]
    assert "caught up with the clock after 2 records" in out  # the past is back-filled at once ...
    assert clock.now >= T + 30 * MINUTE_MS and clock.reads >= 29  # ... the future waited for, minute by minute


def test_a_stop_while_waiting_produces_nothing_more() -> None:
    clock = FakeClock(T)
    rep, _ = _run([T - HOUR_MS, T + DAY_MS], clock, stop=lambda: clock.now > T + 5 * MINUTE_MS)
    assert rep.total == 1 and rep.stopped and clock.now < T + 10 * MINUTE_MS  # type: ignore[attr-defined]


def test_not_live_nothing_waits() -> None:
    clock = FakeClock(T)
    rep = run(_records([T + DAY_MS, T + 2 * DAY_MS]), "127.0.0.1:1", "t", clock_ms=clock, progress=None,
              flush_timeout_s=0, extra_config={"log_level": 0})
    assert rep.total == 2 and rep.caught_up_s is None and clock.reads == 0


def test_where_a_live_demo_starts() -> None:
    now = T + 37_123
    # an empty namespace: the back-fill window, on a minute
    assert live_start(None, now, 14 * DAY_MS) == (now - 14 * DAY_MS) // MINUTE_MS * MINUTE_MS
    # activity from a run an hour ago: the minute after its newest record
    assert live_start(now - HOUR_MS, now, 14 * DAY_MS) == (now - HOUR_MS) // MINUTE_MS * MINUTE_MS + MINUTE_MS
    # activity a month old: no further back than the back-fill window
    assert live_start(now - 30 * DAY_MS, now, 14 * DAY_MS) == (now - 14 * DAY_MS) // MINUTE_MS * MINUTE_MS
    # simulated ahead of now by an earlier fast-forward run: after it (the simulator then waits for the clock)
    assert live_start(now + DAY_MS, now, 14 * DAY_MS) > now
