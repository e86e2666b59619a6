from __future__ import annotations

import json

from sinks.batching import Backoff, BatchPolicy, lag, next_offsets
from sinks.metrics import LAG, lag_from_stats, record_lag


def test_batch_is_due_by_size_or_age() -> None:
    p = BatchPolicy(max_records=100, max_ms=500)
    assert not p.due(0, 10_000)
    assert not p.due(99, 499)
    assert p.due(100, 0)
    assert p.due(1, 500)


def test_room_bounds_the_batch_and_wait_targets_the_deadline() -> None:
    p = BatchPolicy(max_records=100, max_ms=500)
    assert p.room(0) == 100 and p.room(100) == 0 and p.room(150) == 0
    assert p.wait_ms(0, 0) == 500
    assert p.wait_ms(10, 200) == 300
    assert p.wait_ms(10, 900) == 0


def test_backoff_grows_and_caps() -> None:
    b = Backoff(first_s=0.2, factor=2, max_s=1.0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 10)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_next_offsets_are_max_plus_one_per_partition() -> None:
    got = next_offsets([("a", 0, 5), ("a", 0, 3), ("a", 1, 0), ("b", 0, 9), ("a", 0, 7)])
    assert got == {("a", 0): 8, ("a", 1): 1, ("b", 0): 10}


def test_lag() -> None:
    assert lag(10, 4) == 6
    assert lag(10, -1001) == 10  # nothing committed yet
    assert lag(10, 12) == 0


def test_lag_from_librdkafka_stats() -> None:
    stats = {"topics": {"noc.activity": {"partitions": {"0": {"consumer_lag": 5}, "1": {"consumer_lag": -1},
                                                        "-1": {"consumer_lag": 3}}}}}
    lags = lag_from_stats(json.dumps(stats))
    assert lags == {("noc.activity", 0): 5}
    record_lag(lags)
    assert LAG.labels("noc.activity", "0")._value.get() == 5
