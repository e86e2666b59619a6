"""streams.faust_acks: Faust's commit offset over an acked list that a bogus fetch gap doubled."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams import faust_acks

TP0 = TP("t.activity", 4)


def _consumer(acked: list[int], committed: int, gap: tuple[int, int] | None = None) -> Any:
    gaps: defaultdict[TP, IntervalTree] = defaultdict(IntervalTree)
    if gap:
        gaps[TP0].addi(*gap)
    return SimpleNamespace(_acked=defaultdict(list, {TP0: list(acked)}), _gap=gaps,
                           _committed_offset=defaultdict(lambda: None, {TP0: committed}),
                           _acked_index=defaultdict(set, {TP0: set(acked)}))


def _commit(c: Any, new_offset: Any) -> int | None:
    """One commit round: Faust's offset to commit, recorded as committed (as ``_commit_offsets`` does)."""
    offset: int | None = new_offset(c, TP0)
    if offset is not None:
        c._committed_offset[TP0] = offset
    return offset


def test_faust_alone_commits_one_offset_per_call_over_doubled_offsets() -> None:
    """The stall itself, on Faust's unpatched code: each offset acked and also covered by a gap."""
    original = faust_acks._original or Consumer._new_offset
    c = _consumer(list(range(458, 2360)), 458, gap=(458, 2360))
    offsets = [_commit(c, original) for _ in range(4)]
    assert offsets == [459, 460, 461, 462]  # one offset per commit interval


def test_repaired_commit_reaches_the_end_of_the_acked_run() -> None:
    seen: list[tuple[TP, int]] = []
    faust_acks.install(lambda tp, n: seen.append((tp, n)))
    try:
        c = _consumer(list(range(458, 2360)), 458, gap=(458, 2360))
        first = _commit(c, Consumer._new_offset)  # the gap is merged (doubling) inside this call
        second = _commit(c, Consumer._new_offset)
        assert (first, second) == (459, 2360)
        assert seen == [(TP0, 2360 - 459)]
        assert _commit(c, Consumer._new_offset) is None  # nothing left
    finally:
        faust_acks._listeners.clear()


def test_no_duplicates_no_change() -> None:
    faust_acks.install()
    c = _consumer([10, 11, 12, 14], 10)
    assert Consumer._new_offset(c, TP0) == 13
    assert c._acked[TP0] == [14]


def _seeking_consumer(fail: bool = False) -> Any:
    async def seek_to_committed() -> dict[TP, int]:
        assert not c.flow_active, "records must not flow while the seek moves the read offsets"
        if fail:
            raise TimeoutError("broker")
        return {TP0: 458}

    c = SimpleNamespace(flow_active=True, _read_offset=defaultdict(lambda: None, {TP0: 2359}),
                        _committed_offset=defaultdict(lambda: None), seek_to_committed=seek_to_committed)
    c.stop_flow = lambda: setattr(c, "flow_active", False)
    c.resume_flow = lambda: setattr(c, "flow_active", True)
    return c


def test_perform_seek_stops_the_flow_its_callers_resume() -> None:
    faust_acks.install()
    c = _seeking_consumer()
    asyncio.run(Consumer.perform_seek(c))
    assert c._read_offset[TP0] == 458 and c._committed_offset[TP0] == 458
    assert not c.flow_active  # recovery (and getmany) resume the flow after the seek


def test_perform_seek_failure_restores_the_flow() -> None:
    faust_acks.install()
    c = _seeking_consumer(fail=True)
    with pytest.raises(TimeoutError):
        asyncio.run(Consumer.perform_seek(c))
    assert c.flow_active
