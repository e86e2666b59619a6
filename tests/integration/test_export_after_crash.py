"""`noc export` after two SIGKILLs of the worker: each stable id once, exactly the records of a clean run.

The worker's output topics are at-least-once: what it produced after its last commit is produced again by its
successor, so the topics hold some records twice. The export of those topics must equal, row for row, the
topic's distinct records (latest revision per id, or every revision), and for the records the pipeline makes
about people, the final records of the in-process reference run over the same inputs (no crash, no duplicate);
times are UTC timestamps in the Parquet file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from schemas import serde
from schemas.topics import topic
from simulator.config import HOUR_MS, SimConfig
from simulator.produce import simulate
from streams.export import export
from streams.export_dedup import Revisions
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
        offset = v.utcoffset()
        assert offset is not None and offset.total_seconds() == 0
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


def _ident(r: dict[str, Any], fields: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(r[f] for f in fields)


def _processed(w: WorkerProcess, n: int) -> Callable[[], bool]:
    return lambda: w.processed() >= n


def test_export_after_two_worker_kills_equals_the_clean_runs_records(kafka_bootstrap: str, namespace: str,
                                                                     tmp_path: Path) -> None:
    assert simulate(CFG, kafka_bootstrap, namespace, progress=None).ok
    port = free_port()
    extra = ["--batch-size", "1000", "--flush-records", "2000"]  # outputs per 1,000 records, commits per 2,000
    for n, name in enumerate(("a", "b")):
        w = WorkerProcess(namespace, kafka_bootstrap, tmp_path / name, port, tmp_path / f"{name}.log", extra).start()
        try:
            wait_for(_processed(w, 3000), 90, f"worker {n + 1} to process 3000 records", every_s=0.02)
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

    cases: list[tuple[str, str, str, Revisions]] = [
        ("fraud-scores", "score_id", "", "latest"), ("incidents", "incident_id", "revision", "latest"),
        ("incidents", "incident_id", "revision", "all"), ("signal-windows", "window_id", "", "latest")]
    repeated = 0
    for short, id_field, rev, mode in cases:
        out = tmp_path / f"{short}-{mode}.parquet"
        rep = export(kafka_bootstrap, namespace, short, None, None, "parquet", out, progress=None, revisions=mode)
        rows = _rows(out)
        assert rep.records == len(rows) and rep.skipped == 0
        raw = decoded(read_topic(kafka_bootstrap, namespace, short))
        fields = (id_field, rev) if mode == "all" else (id_field,)
        distinct: dict[Any, dict[str, Any]]
        clean: dict[Any, dict[str, Any]]
        if mode == "all":
            distinct = {_ident(r, fields): r for r in raw}
            clean = {_ident(r, fields): r for r in ref[short]}
        else:
            distinct = final_by_id(raw, id_field, rev or None)
            clean = final_by_id(ref[short], id_field, rev or None)
            repeated += rep.duplicates if not rev else 0
        keys = [_ident(r, fields) for r in rows]
        assert len(keys) == len(set(keys)), f"{short} ({mode}): an id written twice"
        assert rep.duplicates == len(raw) - len(distinct)
        # exactly the topic's distinct records, each at its latest revision (NaN features compared as text)
        assert sorted(map(repr, rows)) == sorted(repr(_ms(r)) for r in distinct.values()), f"{short} ({mode})"
        # and, for what the pipeline makes (about a person), exactly the clean run's records: incidents about a
        # site alone and SITE windows come from the site stage, which the in-process reference does not run
        mine = [r for r in rows if r.get("person_id") is not None and r.get("scope", "PERSON") == "PERSON"]
        want = [_ms(r) for r in clean.values() if r.get("person_id") is not None]
        assert want, f"the reference has no {short}"
        assert sorted(map(repr, mine)) == sorted(map(repr, want)), f"{short} ({mode}) differs from the clean run"
    # the crash did leave records twice in the topics (else this test would prove nothing about dedupe)
    assert repeated > 0

    # Hostile records in the topic (garbage, a truncated record, another schema's record): skipped and counted,
    # and the file holds exactly the rows of the export before them.
    before = _rows(tmp_path / "fraud-scores-latest.parquet")
    good = read_topic(kafka_bootstrap, namespace, "fraud-scores")[0]
    other = read_topic(kafka_bootstrap, namespace, "attendance")[0]
    p = Producer({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 30_000})
    for value in (b"\x00garbage", (good.value or b"")[:-7], other.value):
        p.produce(topic("fraud-scores", namespace), value, good.key, partition=good.partition)
    assert p.flush(30) == 0
    again = export(kafka_bootstrap, namespace, "fraud-scores", None, None, "parquet", tmp_path / "again.parquet",
                   progress=None)
    assert again.skipped == 3
    assert _rows(tmp_path / "again.parquet") == before
