"""Prometheus metrics of the sink workers (consumer lag per partition makes a stall visible)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

LAG = Gauge("noc_sink_consumer_lag", "Records not yet committed by the sink, per partition", ["topic", "partition"])
ROWS = Counter("noc_sink_rows_total", "Rows sent to Postgres (after in-batch dedup)", ["table"])
DEAD = Counter("noc_sink_dead_letters_total", "Records the sink stored as dead letters", ["reason"])
BATCHES = Counter("noc_sink_batches_total", "Batches committed")
RETRIES = Counter("noc_sink_db_retries_total", "Batch writes retried because Postgres was unreachable")
FLUSH = Histogram("noc_sink_flush_seconds", "Seconds to write and commit one batch",
                  buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def lag_from_stats(stats_json: str) -> dict[tuple[str, int], int]:
    """Per-partition consumer lag from librdkafka's statistics JSON (unknown lags, -1, are skipped)."""
    stats: dict[str, Any] = json.loads(stats_json)
    out: dict[tuple[str, int], int] = {}
    for topic, t in stats.get("topics", {}).items():
        for pid, p in t.get("partitions", {}).items():
            part = int(pid)
            lag = int(p.get("consumer_lag", -1))
            if part >= 0 and lag >= 0:
                out[(topic, part)] = lag
    return out


def record_lag(lags: dict[tuple[str, int], int]) -> None:
    for (topic, part), value in lags.items():
        LAG.labels(topic, str(part)).set(value)
