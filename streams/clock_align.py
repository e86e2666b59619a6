"""Back-pressure for the input loop: keep the partitions' clocks close while some of them are catching up.

The site stage closes a SITE window only once every person partition's clock passed it
(:mod:`streams.core.sites`), so until then it holds every PERSON window forwarded for it, decoded. Over a
backlog librdkafka runs some partitions far ahead of others: over the 10,000-person bench the clocks spread by
40-170 minutes of event time and the site stage process held ~75k open contributions (~40 MB) until the slowest
partition caught up at the very end.

So an activity partition whose clock is more than ``skew_ms`` ahead of the slowest partition that still has
unread activity is paused, until it is within ``slack_ms``. Only partitions with unread records count as slow:
live, every partition is at its end and a quiet one (no activity, its clock stands still) holds nobody back.
The slowest one is never paused by this, so the slowest always moves.

:class:`Pauses` keeps one pause per partition whatever its reasons (this and :mod:`streams.sparse_first`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

MINUTE_MS = 60_000
SKEW_MS = 15 * MINUTE_MS  # three 5-minute windows
SLACK_MS = 5 * MINUTE_MS


class Pauses:
    """Pause an activity partition while at least one reason holds it; resume when none does."""

    def __init__(self, pause: Callable[[int], None], resume: Callable[[int], None]) -> None:
        self._pause = pause
        self._resume = resume
        self.reasons: dict[int, set[str]] = {}

    def hold(self, p: int, why: str) -> None:
        held = self.reasons.setdefault(p, set())
        if not held:
            self._pause(p)
        held.add(why)

    def free(self, p: int, why: str) -> None:
        held = self.reasons.get(p)
        if held and why in held:
            held.discard(why)
            if not held:
                del self.reasons[p]
                self._resume(p)

    def release(self) -> None:
        """Resume everything (the assignment is about to change)."""
        for p in sorted(self.reasons):
            self._resume(p)
        self.reasons.clear()


class ClockAlign:
    """``behind(p)``: activity partition ``p`` has records librdkafka knows of and has not handed over yet."""

    def __init__(self, behind: Callable[[int], bool], pause: Callable[[int], None], resume: Callable[[int], None],
                 skew_ms: int = SKEW_MS, slack_ms: int = SLACK_MS) -> None:
        self.behind = behind
        self.pause = pause
        self.resume = resume
        self.skew_ms = skew_ms
        self.slack_ms = slack_ms
        self.clocks: dict[int, int] = {}
        self.paused: set[int] = set()

    def update(self, partitions: Iterable[int], clocks: Mapping[int, int]) -> None:
        """``clocks``: partition clocks moved by the batch just processed (none: re-check, e.g. at an end)."""
        for p, c in clocks.items():
            self.clocks[p] = max(c, self.clocks.get(p, c))
        parts = sorted(partitions)
        slow = [self.clocks[q] for q in parts if q in self.clocks and self.behind(q)]
        floor = min(slow) if slow else None
        for p in parts:
            clock = self.clocks.get(p)
            if floor is None or clock is None:
                ahead = False
            else:
                ahead = clock > floor + (self.slack_ms if p in self.paused else self.skew_ms)
            if ahead and p not in self.paused:
                self.paused.add(p)
                self.pause(p)
            elif not ahead and p in self.paused:
                self.paused.discard(p)
                self.resume(p)

    def release(self) -> None:
        """Forget the clocks (the assignment is about to change; :class:`Pauses` resumes the partitions)."""
        self.clocks.clear()
        self.paused.clear()
