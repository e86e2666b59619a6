"""Replay steps do not depend on how partitions are grouped into processes: any grouping, merged, yields the
same steps as one process reading every partition (the property behind ``noc replay --procs N``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.pipeline import DictStore, Incoming
from streams.core.types import Out
from streams.replay_buckets import aligned, assign_groups, bucketed, width_for
from streams.replay_merge import Item
from streams.replay_procs import Step, _merge_steps, run_steps


@dataclass
class _Res:
    outs: list[Out] = field(default_factory=list)
    clocks: dict[int, int] = field(default_factory=dict)

    def commit(self) -> None:
        pass


class _Echo:
    """A stand-in pipeline whose outputs show every record it was fed, in order, with per-partition state."""

    def __init__(self) -> None:
        self.seen: Counter[int] = Counter()

    def process(self, store: DictStore, batch: Iterable[Incoming], source: str,
                highwater: Mapping[tuple[str, int], int | None]) -> _Res:
        res = _Res()
        for inc in batch:
            self.seen[inc.partition] += 1
            res.outs.append(Out("x", b"k", "s", {"p": inc.partition, "t": inc.topic, "o": inc.offset,
                                                 "n": self.seen[inc.partition]}))
            res.clocks[inc.partition] = max(res.clocks.get(inc.partition, inc.timestamp), inc.timestamp)
        return res

    def tick(self, store: DictStore, partitions: Iterable[int],
             highwater: Mapping[tuple[str, int], int | None]) -> _Res:
        res = _Res()
        for p in partitions:
            res.outs.append(Out("x", b"k", "s", {"p": p, "end": self.seen[p]}))
        return res


TOPICS = ("activity", "attendance", "alerts")


@st.composite
def _world(draw: st.DrawFn) -> tuple[dict[tuple[str, int], list[Item]], list[list[int]], int]:
    parts = draw(st.integers(1, 5))
    streams: dict[tuple[str, int], list[Item]] = {}
    for p in range(parts):
        for t in TOPICS:
            deltas = draw(st.lists(st.integers(-400_000, 900_000), max_size=25))  # late records included
            ts, at = [], 1_000_000_000
            for d in deltas:
                at += d
                ts.append(at)
            streams[(t, p)] = [Item(t, p, o, x, b"k", b"v") for o, x in enumerate(ts)]
    order = draw(st.permutations(list(range(parts))))
    cut = sorted(draw(st.sets(st.integers(1, max(1, parts - 1)), max_size=parts - 1))) if parts > 1 else []
    groups = [sorted(order[a:b]) for a, b in zip([0, *cut], [*cut, parts], strict=True) if order[a:b]]
    width = draw(st.sampled_from([1000, 60_000, 600_000, 3_600_000]))
    return streams, groups, width


def _canon(steps: Iterable[Step]) -> list[Any]:
    return [(s.bucket, sorted(s.counts.items()), s.max_ts,
             [(p.partition, [([o.record for o in outs], clock) for outs, clock in p.lanes]) for p in s.parts])
            for s in steps]


def _run(streams: dict[tuple[str, int], list[Item]], group: list[int], width: int) -> list[Step]:
    pipes = [(_Echo(), DictStore()) for _ in range(2)]  # two lanes, as a what-if replay has
    mine = [v for (_, p), v in sorted(streams.items()) if p in group]
    return list(run_steps(mine, group, pipes, width, "src", {}))  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(_world())
def test_any_grouping_merges_to_the_one_process_steps(world: tuple[dict[tuple[str, int], list[Item]],
                                                                   list[list[int]], int]) -> None:
    streams, groups, width = world
    everything = sorted({p for _, p in streams})
    one = _canon(_run(streams, everything, width))
    many = _canon(_merge_steps([iter(_run(streams, g, width)) for g in groups]))
    assert many == one
    # every record fed exactly once, each stream in its own offset order
    fed = [r for s in one for p in s[3] for r in p[1][0][0] if "o" in r]
    assert len(fed) == sum(len(v) for v in streams.values())
    for (t, p) in streams:
        offs = [r["o"] for r in fed if r["t"] == t and r["p"] == p]
        assert offs == sorted(offs) == list(range(len(streams[(t, p)])))


def test_bucketed_runs_are_monotone_and_keep_a_late_record_in_place() -> None:
    items = [Item("activity", 0, o, ts, None, None) for o, ts in enumerate([0, 59_000, 61_000, 10_000, 125_000])]
    runs = list(bucketed(items, 60_000))
    assert [(k, [i.offset for i in r]) for k, r in runs] == [(0, [0, 1]), (1, [2, 3]), (2, [4])]
    # a held-back topic is bucketed by its record timestamp less the lead (30 minutes)
    att = list(bucketed([Item("attendance", 0, 0, 1_800_000, None, None)], 60_000))
    assert att[0][0] == 0
    both = list(aligned([iter(runs), iter(att)]))
    assert [k for k, _ in both] == [0, 1, 2] and len(both[0][1]) == 2


def test_width_and_groups() -> None:
    assert width_for(6 * 3_600_000, 236_000) == 184_000
    assert width_for(1000, 10**9) == 1000 and width_for(10**12, 1) == 3_600_000 and width_for(5, 0) == 3_600_000
    assert assign_groups({0: 10, 1: 10, 2: 1, 3: 30}, 2) == [[3], [0, 1, 2]]
    assert assign_groups({0: 0, 1: 0}, 8) == [[0], [1]]
    assert assign_groups({p: 1 for p in range(6)}, 1) == [list(range(6))]
