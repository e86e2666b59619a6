"""Training history from the in-memory simulator (``noc train --from-sim SEED``, tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

DAY_MS = 86_400_000


def sim_history(seed: int, days: float, variation: str = "standard",
                **overrides: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(stem, record)`` pairs of a seeded simulation covering ``days``, in stream order (streamed, not stored).

    ``variation`` is how frauds and look-alikes are drawn (``simulator.variation``; training uses
    ``randomised``); ``overrides`` are further :class:`simulator.config.SimConfig` fields (tenants, ...).
    """
    from simulator.config import SimConfig
    from simulator.generate import generate

    cfg = SimConfig(seed=seed, span=round(days * DAY_MS), variation=variation, **overrides)
    for sr in generate(cfg):
        yield sr.stem, sr.record
