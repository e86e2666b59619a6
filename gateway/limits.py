"""Rate limits for hostile or runaway clients: token buckets keyed by token or client address, bounded in keys.

A :class:`RateLimiter` remembers at most ``max_keys`` buckets (least recently used first out), so a flood of
distinct addresses or made-up tokens costs a bounded amount of memory: a forgotten key starts again with a full
bucket, which only ever errs towards letting a request through. Every answer that refuses says when to retry
(``Retry-After``, whole seconds).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BoundedLRU", "RateLimiter", "retry_after_s"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    """A dict that keeps at most ``max_keys`` entries, dropping the least recently used."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_keys:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


class RateLimiter:
    """Token buckets: ``rate`` tokens per second up to ``burst``; :meth:`take` spends one (or ``cost``).

    A rate of 0 (or less) disables the limiter: every :meth:`take` succeeds.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._buckets: BoundedLRU[object, list[float]] = BoundedLRU(max_keys)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _level(self, key: object, now: float) -> list[float]:
        b = self._buckets.get(key)
        if b is None:
            b = [self.burst, now]
            self._buckets.put(key, b)
        else:
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        return b

    def take(self, key: object, cost: float = 1.0) -> float:
        """Spend ``cost``; returns 0 when allowed, else the seconds until it would be (nothing is spent then)."""
        if not self.enabled:
            return 0.0
        b = self._level(key, self._clock())
        if b[0] >= cost:
            b[0] -= cost
            return 0.0
        return (cost - b[0]) / self.rate

    def blocked(self, key: object) -> float:
        """Seconds until one unit is available for ``key`` (0: available now); spends nothing."""
        if not self.enabled:
            return 0.0
        b = self._buckets.get(key)
        if b is None:
            return 0.0
        level = min(self.burst, b[0] + (self._clock() - b[1]) * self.rate)
        return 0.0 if level >= 1 else (1 - level) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_s(wait_s: float) -> str:
    """The ``Retry-After`` value for a wait: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
