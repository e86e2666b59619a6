"""`noc export` after two SIGKILLs of the worker: each stable id once, exactly the records of a clean run.

The worker's output topics are at-least-once: what it produced after its last commit is produced again by its
successor, so the topics hold some records twice. The export of those topics must equal, row for row, the final
records of the in-process reference run over the same inputs (no crash, no duplicate) — with times as UTC
timestamps in the Parquet file.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import serde
from simulator.config import HOUR_MS, SimConfig
from simulator.produce import simulate
from streams.export import export
from streams.testkit import (
    WorkerProcess,
    decoded,
    final_by_id,
    free_port,
    group_caught_up,
    read_topic,
    reference_outputs,
    wait_for,
)

pytestmark = pytest.mark.integration

CFG = SimConfig(seed=11, tenants=1, sites_per_tenant=30, guards_per_site=4, span=24 * HOUR_MS, scenario_rate=0.3)


def _ms(v: Any) -> Any:
    """A Parquet row back in the contract's terms (times as epoch ms), NaN made comparable."""
    if isinstance(v, datetime):
        assert v.tzinfo is not None and v.utcoffset() is not None and v.utcoffset().total_seconds() == 0
        return int(v.timestamp() * 1000)
    if isinstance(v, dict):
        return {k: _ms(x) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return [_ms(x) for x in v]
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return v


def _rows(path: Path) -> list[dict[str, Any]]:
    table = pq.read_table(path)
    for name in ("occurred_at", "updated_at", "first_seen", "window_start"):
        if name in table.schema.names:
            assert table.schema.field(name).type == pa.timestamp("ms", tz="UTC"), name
    return [_ms(r) for r in table.to_pylist()]


def test_export_after_two_worker_kills_equals_the_clean_runs_records(kafka_bootstrap: str, namespace: str,
                                                                     tmp_path: Path) -> None:
    assert simulate(CFG, kafka_bootstrap, namespace, progress=None).ok
    port = free_port()
    extra = ["--batch-size", "1000", "--flush-records", "2000"]  # outputs per 1,000 records, commits per 2,000
    for n, name in enumerate(("a", "b")):
        w = WorkerProcess(namespace, kafka_bootstrap, tmp_path / name, port, tmp_path / f"{name}.log", extra).start()
        try:
            wait_for(lambda w=w: w.processed() >= 3000, 90, f"worker {n + 1} to process 3000 records", every_s=0.02)
        finally:
            w.kill()  # SIGKILL: its outputs since the last commit are in Kafka and will be produced again
    assert not group_caught_up(kafka_bootstrap, namespace)
    last = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "c", port, tmp_path / "c.log").start()
    try:
        wait_for(lambda: group_caught_up(kafka_bootstrap, namespace), 180, "the third worker to catch up")
    finally:
        last.stop()

    store = serde.store()
    ref: dict[str, list[dict[str, Any]]] = {}
    for o in reference_outputs(kafka_bootstrap, namespace):  # canonical: through the contract's encoding
        ref.setdefault(o.topic, []).append(store.decode(store.encode(o.stem, o.record))[1])

    cases = [("fraud-scores", "score_id", None, "latest"), ("incidents", "incident_id", "revision", "latest"),
             ("incidents", "incident_id", "revision", "all"), ("signal-windows", "window_id", None, "latest")]
    repeated = 0
    for short, id_field, rev, mode in cases:
        out = tmp_path / f"{short}-{mode}.parquet"
        rep = export(kafka_bootstrap, namespace, short, None, None, "parquet", out, progress=None,
                     revisions=mode)  # type: ignore[arg-type]
        rows = _rows(out)
        assert rep.records == len(rows) and rep.skipped == 0
        if short == "signal-windows":  # the site stage's SITE windows are not in the in-process reference
            rows = [r for r in rows if r["scope"] == "PERSON"]
        raw = decoded(read_topic(kafka_bootstrap, namespace, short))
        if mode == "all":
            want = [_ms(r) for r in {(r[id_field], r[rev]): r for r in ref[short]}.values()]
            keys = [(r[id_field], r[rev]) for r in rows]
            assert rep.duplicates == len(raw) - len({(r[id_field], r[rev]) for r in raw})
        else:
            want = [_ms(r) for r in final_by_id(ref[short], id_field, rev).values()]
            keys = [r[id_field] for r in rows]
            assert rep.duplicates == len(raw) - len({r[id_field] for r in raw})
            repeated += rep.duplicates if rev is None else 0
        assert len(keys) == len(set(keys)), f"{short} ({mode}): an id written twice"
        assert want, f"the reference has no {short}"
        # exact equality with the clean run, row for row (NaN features compared as text)
        assert sorted(map(repr, rows)) == sorted(map(repr, want)), f"{short} ({mode}) differs from the clean run"
    # the crash did leave records twice in the topics (else this test would prove nothing about dedupe)
    assert repeated > 0
