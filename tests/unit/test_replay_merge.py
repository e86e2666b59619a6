"""The deterministic merge: per-partition order kept, heads ordered by (effective time, topic, partition, offset)."""

from __future__ import annotations

import itertools
import random

from streams.replay_merge import HOLD_LEAD_MS, Item, merge, sort_key


def _part(topic: str, p: int, stamps: list[int]) -> list[Item]:
    return [Item(topic, p, off, ts, None, f"{topic}/{p}/{off}".encode()) for off, ts in enumerate(stamps)]


def test_keeps_offset_order_within_a_partition_even_for_late_records() -> None:
    late = _part("activity", 0, [10, 20, 5, 30])  # offset 2 is late (event time 5)
    other = _part("activity", 1, [1, 6, 15, 25])
    got = list(merge([late, other]))
    mine = [i.offset for i in got if i.partition == 0]
    assert mine == [0, 1, 2, 3]
    assert [(i.partition, i.offset) for i in got] == [(1, 0), (1, 1), (0, 0), (1, 2), (0, 1), (0, 2), (1, 3), (0, 3)]


def test_same_output_whatever_the_order_of_the_streams() -> None:
    rng = random.Random(7)
    streams = [_part(t, p, sorted(rng.randrange(0, 1000) for _ in range(20)))
               for t in ("activity", "alerts", "audit-findings") for p in range(3)]
    expected = [(i.topic, i.partition, i.offset) for i in merge(streams)]
    for perm in itertools.islice(itertools.permutations(streams), 0, 50, 7):
        assert [(i.topic, i.partition, i.offset) for i in merge(list(perm))] == expected
    assert len(expected) == 9 * 20


def test_ties_break_by_topic_rank_then_partition_then_offset() -> None:
    a = _part("alerts", 2, [100])
    b = _part("activity", 3, [100])
    c = _part("activity", 1, [100])
    ref = _part("ref.sites", 0, [100])
    got = [(i.topic, i.partition) for i in merge([a, b, c, ref])]
    # alerts are held back by the pipeline, so they are fed HOLD_LEAD_MS early and come first
    assert got == [("alerts", 2), ("ref.sites", 0), ("activity", 1), ("activity", 3)]


def test_held_topics_are_fed_ahead_by_the_lead() -> None:
    att = Item("attendance", 0, 0, 10 * 60_000 + HOLD_LEAD_MS, None, None)
    act = Item("activity", 0, 0, 20 * 60_000, None, None)
    assert sort_key(att) < sort_key(act)
    assert [i.topic for i in merge([[act], [att]])] == ["attendance", "activity"]


def test_empty_streams() -> None:
    assert list(merge([])) == []
    assert [i.offset for i in merge([[], _part("activity", 0, [1, 2])])] == [0, 1]
