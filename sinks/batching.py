"""Batching and retry policy of the sink worker (pure: time is passed in)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_records: int = 5000  # flush at this many records (also the bound of the in-memory batch)
    max_ms: int = 500  # ... or when the oldest record has waited this long

    def due(self, count: int, age_ms: float) -> bool:
        return count >= self.max_records or (count > 0 and age_ms >= self.max_ms)

    def room(self, count: int) -> int:
        """How many more records to fetch before the batch is full (consumption pauses at 0)."""
        return max(0, self.max_records - count)

    def wait_ms(self, count: int, age_ms: float) -> float:
        """How long the next poll may block: until the batch is due, at most ``max_ms``."""
        return float(self.max_ms) if count == 0 else max(0.0, self.max_ms - age_ms)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential retry delays while the database is unreachable; never gives up (no record is skipped)."""

    first_s: float = 0.2
    factor: float = 2.0
    max_s: float = 5.0

    def delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based)."""
        return min(self.max_s, self.first_s * self.factor ** max(0, attempt - 1))


def next_offsets(offsets: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    """The offsets to commit for a batch: per (topic, partition), the highest offset seen + 1."""
    out: dict[tuple[str, int], int] = {}
    for topic, partition, offset in offsets:
        k = (topic, partition)
        if offset + 1 > out.get(k, -1):
            out[k] = offset + 1
    return out


def lag(high: int, position: int) -> int:
    """Records left to read in a partition (``position`` < 0 means none read yet: all of them count)."""
    return max(0, high - max(position, 0))
