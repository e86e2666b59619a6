"""The input loop's back-pressure (streams.sparse_first.SparseFirst): activity of a partition pauses once it ran
``hold`` records ahead of a sparse input of the same partition that has not reached its end, and resumes when
every sparse input of that partition has. No broker: end offsets and pause/resume calls are recorded."""

from __future__ import annotations

from streams.core.pipeline import SPARSE
from streams.sparse_first import SparseFirst


class Consumer:
    def __init__(self) -> None:
        self.ends: dict[tuple[str, int], int | None] = {}
        self.calls: list[tuple[str, int]] = []

    def flow(self, hold: int = 100) -> SparseFirst:
        return SparseFirst(lambda short, p: self.ends.get((short, p)), lambda p: self.calls.append(("pause", p)),
                           lambda p: self.calls.append(("resume", p)), hold=hold)


def _all_at_end(f: SparseFirst, c: Consumer, p: int, end: int = 10) -> None:
    for short in SPARSE:
        c.ends[(short, p)] = end
        f.at_end(short, p, end)


def test_activity_pauses_after_hold_records_ahead_of_an_unread_sparse_input() -> None:
    c = Consumer()
    f = c.flow(hold=100)
    f.after_batch({0, 1}, {0: 60, 1: 60})
    assert c.calls == []  # under the hold
    f.after_batch({0, 1}, {0: 50})
    assert c.calls == [("pause", 0)]  # 110 >= 100 on partition 0 only
    f.after_batch({0, 1}, {0: 10})
    assert c.calls == [("pause", 0)]  # paused once


def test_resumes_when_every_sparse_input_of_the_partition_reached_its_end() -> None:
    c = Consumer()
    f = c.flow(hold=10)
    f.after_batch({0}, {0: 10})
    c.ends.update({("attendance", 0): 5, ("alerts", 0): 0, ("audit-findings", 0): 3})
    f.at_end("attendance", 0, 5)
    f.at_end("alerts", 0, 0)  # an empty partition reports its end too
    assert c.calls == [("pause", 0)]
    f.at_end("activity", 0, 99)  # not a sparse input: ignored
    f.at_end("audit-findings", 0, 2)  # an end below the known end offset: records are still unread
    assert c.calls == [("pause", 0)]
    f.at_end("audit-findings", 0, 3)
    assert c.calls == [("pause", 0), ("resume", 0)]
    assert f.held[0] == 0 and not f.paused


def test_caught_up_partitions_never_pause_and_a_new_sparse_record_restarts_the_count() -> None:
    c = Consumer()
    f = c.flow(hold=10)
    _all_at_end(f, c, 0)
    f.after_batch({0}, {0: 1_000})
    assert c.calls == [] and f.held[0] == 0
    c.ends[("alerts", 0)] = 11  # librdkafka saw a new alert: unread until its EOF
    f.after_batch({0}, {0: 9})
    assert c.calls == []
    f.after_batch({0}, {0: 1})
    assert c.calls == [("pause", 0)]
    f.at_end("alerts", 0, 11)
    assert c.calls == [("pause", 0), ("resume", 0)]


def test_unknown_end_offsets_count_as_unread() -> None:
    c = Consumer()
    f = c.flow(hold=1)
    f.eof[("attendance", 3)] = 0  # an EOF, but librdkafka knows no end offset: not enough
    f.after_batch({3}, {3: 1})
    assert c.calls == [("pause", 3)]


def test_release_resumes_what_is_paused_and_forgets() -> None:
    c = Consumer()
    f = c.flow(hold=1)
    f.after_batch({0, 1, 2}, {0: 1, 2: 5})
    assert c.calls == [("pause", 0), ("pause", 2)]
    _all_at_end(f, c, 1)
    f.release()
    assert c.calls[2:] == [("resume", 0), ("resume", 2)]
    assert not f.paused and not f.held and not f.eof


def test_a_new_assignment_starts_paused_until_the_sparse_inputs_reached_their_ends() -> None:
    c = Consumer()
    f = c.flow(hold=1_000)
    f.start({1, 0})
    assert c.calls == [("pause", 0), ("pause", 1)]
    _all_at_end(f, c, 1)
    assert c.calls[2:] == [("resume", 1)]
    f.start({0, 1})  # already paused: not paused twice
    assert c.calls[3:] == [("pause", 1)]
