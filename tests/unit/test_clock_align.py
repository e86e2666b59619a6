"""The input loop's clock alignment (streams.clock_align): an activity partition far ahead in event time of the
slowest partition that still has unread records pauses until it is close again; one pause per partition
whatever its reasons (Pauses). No broker: pause/resume calls are recorded."""

from __future__ import annotations

from streams.clock_align import ClockAlign, Pauses

M = 60_000


class Calls(list[tuple[str, int]]):
    def pause(self, p: int) -> None:
        self.append(("pause", p))

    def resume(self, p: int) -> None:
        self.append(("resume", p))


def _align(behind: set[int], calls: Calls) -> ClockAlign:
    return ClockAlign(lambda p: p in behind, calls.pause, calls.resume, skew_ms=15 * M, slack_ms=5 * M)


def test_a_partition_far_ahead_of_the_slowest_unread_one_pauses_until_it_is_close_again() -> None:
    calls, behind = Calls(), {0, 1, 2}
    a = _align(behind, calls)
    a.update({0, 1, 2}, {0: 100 * M, 1: 110 * M, 2: 116 * M})
    assert calls == [("pause", 2)]  # 16 min ahead of partition 0; partition 1 (10 min) goes on
    a.update({0, 1, 2}, {0: 108 * M})
    assert calls == [("pause", 2)]  # 8 min ahead: not yet within the 5 min slack
    a.update({0, 1, 2}, {0: 112 * M, 1: 112 * M})
    assert calls == [("pause", 2), ("resume", 2)]


def test_the_slowest_never_pauses_and_clocks_only_move_forward() -> None:
    calls, behind = Calls(), {0, 1}
    a = _align(behind, calls)
    a.update({0, 1}, {0: 0, 1: 60 * M})
    assert calls == [("pause", 1)]
    a.update({0, 1}, {1: 0})  # an older clock is ignored
    assert a.clocks[1] == 60 * M and calls == [("pause", 1)]


def test_partitions_at_their_end_hold_nobody_back() -> None:
    calls, behind = Calls(), {0, 1}
    a = _align(behind, calls)
    a.update({0, 1}, {0: 0, 1: 60 * M})
    behind.discard(0)  # partition 0 read everything it has (live, a quiet partition): its clock stands still
    a.update({0, 1}, {})
    assert calls == [("pause", 1), ("resume", 1)]
    a.update({0, 1, 3}, {})  # partition 3 has no clock yet: it holds nobody back either
    behind.clear()
    a.update({0, 1, 2}, {2: 500 * M})  # nobody behind: nothing pauses
    assert calls == [("pause", 1), ("resume", 1)]


def test_release_forgets_the_clocks() -> None:
    calls = Calls()
    a = _align({0, 1}, calls)
    a.update({0, 1}, {0: 0, 1: 60 * M})
    a.release()
    assert not a.clocks and not a.paused


def test_pauses_pause_once_and_resume_when_no_reason_is_left() -> None:
    calls = Calls()
    ps = Pauses(calls.pause, calls.resume)
    ps.hold(3, "sparse")
    ps.hold(3, "clock")
    assert calls == [("pause", 3)]
    ps.free(3, "sparse")
    ps.free(3, "other")  # not a reason it was held for
    assert calls == [("pause", 3)]
    ps.free(3, "clock")
    assert calls == [("pause", 3), ("resume", 3)]
    ps.free(3, "clock")  # already free
    ps.hold(1, "clock")
    ps.hold(2, "sparse")
    ps.release()
    assert calls[2:] == [("pause", 1), ("pause", 2), ("resume", 1), ("resume", 2)] and not ps.reasons
