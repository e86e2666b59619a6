"""The demo's live world: ``noc simulate --live`` back-fills from a start in the past up to now, then holds each
record until the clock reaches it. Nothing it produces is stamped in the future, the back-fill ends at now
(within the world's gap between two activity records), and what it produced is exactly the beginning of the
same world produced without pacing."""

from __future__ import annotations

import io
import time
from collections import Counter

import pytest

from simulator.config import HOUR_MS, MINUTE_MS, SimConfig
from simulator.encoding import encoders
from simulator.generate import STEM, TOPICS, Simulation
from simulator.produce import simulate
from streams.testkit import read_topic

pytestmark = pytest.mark.integration


class _Progress(io.StringIO):
    """The simulator's progress stream; tells when the back-fill has reached the clock."""

    def caught_up(self) -> bool:
        return "caught up with the clock" in self.getvalue()


def test_a_live_world_back_fills_up_to_now_and_stamps_nothing_in_the_future(kafka_bootstrap: str,
                                                                            namespace: str) -> None:
    now = time.time_ns() // 1_000_000
    cfg = SimConfig(seed=5, tenants=1, sites_per_tenant=4, guards_per_site=8, carry_in=True,
                    start=(now - 3 * HOUR_MS) // MINUTE_MS * MINUTE_MS, span=24 * HOUR_MS)
    progress = _Progress()
    # stops at the first record whose time has not come (the moment the back-fill reaches the clock)
    rep = simulate(cfg, kafka_bootstrap, namespace, live=True, progress=progress, stop=progress.caught_up)
    done = time.time_ns() // 1_000_000
    assert rep.ok and rep.stopped and rep.caught_up_s is not None and rep.total > 500

    got = {short: read_topic(kafka_bootstrap, namespace, short) for short in TOPICS}
    stamps = [r.timestamp for rs in got.values() for r in rs]
    assert len(stamps) == rep.total
    assert max(stamps) <= done  # nothing in the future
    assert min(stamps) >= cfg.start - 2 * 24 * HOUR_MS  # (rosters are published up to two days ahead)
    newest_activity = max(r.timestamp for r in got["activity"])
    assert now - 5 * MINUTE_MS <= newest_activity <= done  # the back-fill ends at now

    # exactly the first rep.total records of the same world, unpaced
    enc = encoders(sorted(set(STEM.values())))
    expected: Counter[tuple[str, bytes, bytes]] = Counter()
    for n, sr in enumerate(Simulation(cfg)):
        if n == rep.total:
            break
        expected[(sr.topic, sr.key, enc[sr.stem](sr.record))] += 1
    produced = Counter((short, r.key or b"", r.value or b"") for short, rs in got.items() for r in rs)
    assert produced == expected
