"""Replay on the real broker: a simulated day as the "live" namespace, replayed into sandboxes.

Checks determinism (two replays are byte-identical and `noc replay diff` finds nothing), that a replay
never writes to the source's topics, that a changed threshold shows up in the diff in the expected
direction, and that exports open with pyarrow and fastavro.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fastavro
import pyarrow.parquet as pq
import pytest

from infra.cli import main as noc
from infra.topics_admin import apply_topics, delete_namespace
from schemas.topics import CATALOGUE, topic
from simulator.config import HOUR_MS, SimConfig
from simulator.produce import simulate
from streams.export import ExportError, export
from streams.replay import ReplayReport, ReplayRequest, read_snapshot, run_replay
from streams.replay_config import apply_overrides
from streams.replay_diff import diff
from streams.replay_io import consumer, end_offsets, offset_range, read_spans

pytestmark = pytest.mark.integration

SIM = SimConfig(seed=11, tenants=1, sites_per_tenant=6, guards_per_site=6, span=24 * HOUR_MS, scenario_rate=0.3)


@dataclass
class World:
    bootstrap: str
    live: str
    sandboxes: list[str]
    manifests: Path


@pytest.fixture(scope="module")
def world(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    live = "t" + uuid.uuid4().hex[:10]
    apply_topics(kafka_bootstrap, live)
    w = World(kafka_bootstrap, live, [], tmp_path_factory.mktemp("home") / "replays")  # = $NOC_HOME/replays
    try:
        rep = simulate(SIM, kafka_bootstrap, live, progress=None)
        assert rep.ok and rep.total > 5000
        yield w
    finally:
        for ns in [live, *w.sandboxes]:
            delete_namespace(kafka_bootstrap, ns)


def _replay(w: World, sets: list[str] | None = None, compare: bool = True, procs: int = 0) -> ReplayReport:
    sandbox = f"{w.live}r{len(w.sandboxes)}"
    w.sandboxes.append(sandbox)
    req = ReplayRequest(w.bootstrap, w.live, sandbox, SIM.start, SIM.end, apply_overrides(sets or []),
                        compare_live=compare, manifest_dir=w.manifests, progress=None, procs=procs)
    return run_replay(req)


def _all_records(bootstrap: str, namespace: str, shorts: list[str]) -> list[tuple[str, int, int, bytes, bytes]]:
    c = consumer(bootstrap)
    try:
        spans = [s for short in shorts for s in offset_range(c, short, topic(short, namespace), None, None)]
    finally:
        c.close()
    return [(i.topic, i.partition, i.offset, i.key or b"", i.value or b"") for i in read_spans(bootstrap, spans)]


@pytest.fixture(scope="module")
def twins(world: World) -> tuple[ReplayReport, ReplayReport]:
    names = [s.name(world.live) for s in CATALOGUE]
    before = end_offsets(world.bootstrap, names)
    a = _replay(world, procs=2)  # the person stage in two processes, three partitions each
    b = _replay(world, procs=1)
    # the source namespace ("live") is untouched: every one of its topics has the same end offsets
    assert end_offsets(world.bootstrap, names) == before
    return a, b


OUTPUTS = ["signal-windows", "baselines", "anomalies", "incidents", "fraud-scores", "ticket-commands",
           "finding-escalations", "events", "dead-letters"]


def test_two_replays_are_byte_identical_and_diff_empty(world: World, twins: tuple[ReplayReport, ReplayReport],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    a, b = twins
    assert a.total_in == b.total_in > 5000
    assert a.outputs == b.outputs
    assert a.outputs["fraud-scores"] > 0 and a.outputs["incidents"] > 0 and a.outputs["signal-windows"] > 0
    # the producer only ever named sandbox topics
    for rep in (a, b):
        assert rep.topics_written and all(t.startswith(rep.sandbox + ".") for t in rep.topics_written)
    # byte for byte, partition by partition, offset by offset
    ra = _all_records(world.bootstrap, a.sandbox, OUTPUTS)
    rb = _all_records(world.bootstrap, b.sandbox, OUTPUTS)
    assert len(ra) == sum(a.outputs.values())
    assert ra == rb
    # and the CLI agrees: exit 0, "identical"
    monkeypatch.setenv("NOC_HOME", str(world.manifests.parent))
    code = noc(["replay", "diff", b.sandbox, "--against", a.sandbox, "--from", "2026-11-01T00:00Z",
                "--to", "2026-11-02T00:00Z", "--bootstrap", world.bootstrap])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "identical" in out


def _digests(bootstrap: str, namespace: str) -> dict[str, str]:
    """Per output topic: SHA-256 over every record (partition, offset, timestamp, key, value), in order."""
    c = consumer(bootstrap)
    try:
        spans = {short: offset_range(c, short, topic(short, namespace), None, None) for short in OUTPUTS}
    finally:
        c.close()
    out = {}
    for short, sp in spans.items():
        h = hashlib.sha256()
        n = 0
        for i in read_spans(bootstrap, sp):
            for part in (f"{i.partition}:{i.offset}:{i.timestamp}:".encode(), i.key or b"", b"|", i.value or b""):
                h.update(part)
            n += 1
        out[short] = f"{n}:{h.hexdigest()}"
    return out


def test_procs_1_2_and_3_write_the_same_bytes_to_every_output_topic(
        world: World, twins: tuple[ReplayReport, ReplayReport]) -> None:
    a, b = twins
    assert (a.procs, b.procs) == (2, 1)
    want = _digests(world.bootstrap, b.sandbox)
    assert all(not v.startswith("0:") for k, v in want.items() if k not in ("dead-letters", "finding-escalations"))
    assert _digests(world.bootstrap, a.sandbox) == want
    c = _replay(world, procs=3, compare=False)  # two partitions per process
    assert c.procs == 3 and c.outputs == b.outputs
    assert _digests(world.bootstrap, c.sandbox) == want


def test_lower_fraud_threshold_adds_tickets(world: World, twins: tuple[ReplayReport, ReplayReport]) -> None:
    live_cfg, _ = twins
    what_if = _replay(world, ["fraud.threshold=0.05", "correlation.window=60m"])
    assert [m.name for m in what_if.metrics] == [what_if.sandbox, "live config"]
    mine, base = what_if.metrics
    # the in-process live lane matches the plain replay exactly
    assert live_cfg.metrics and base.volumes == live_cfg.metrics[0].volumes
    assert mine.volumes["fraud_alerts"] > base.volumes["fraud_alerts"]
    assert mine.volumes["fraud_tickets"] > base.volumes["fraud_tickets"]
    assert (mine.scores.recall or 0.0) >= (base.scores.recall or 0.0)
    assert mine.volumes["incidents"] <= base.volumes["incidents"]  # a wider window merges incidents
    rep = diff(read_snapshot(world.bootstrap, live_cfg.sandbox, SIM.start, SIM.end),
               read_snapshot(world.bootstrap, what_if.sandbox, SIM.start, SIM.end))
    assert not rep.identical
    tickets = rep.by_kind()["ticket-commands"]
    assert tickets.added and all(k.startswith("fraud:") for k in tickets.added)
    assert tickets.other_count > tickets.base_count
    assert not rep.by_kind()["fraud-scores"].added and not rep.by_kind()["fraud-scores"].removed
    assert not rep.by_kind()["fraud-scores"].changed  # same model: same scores; only what follows them moved


def test_a_warm_up_makes_a_mid_history_range_match_a_replay_of_everything(
        world: World, twins: tuple[ReplayReport, ReplayReport]) -> None:
    """State starts empty at --from, so a range that begins mid-history differs from what the live worker (or a
    replay of everything) made of it: baselines, duties and incidents begun earlier are unknown. With --warmup back
    to the start of the topics, the range's outputs are exactly those of the replay of everything."""
    a, _ = twins
    mid = SIM.start + 12 * HOUR_MS

    def replay_second_half(warmup_ms: int) -> ReplayReport:
        sandbox = f"{world.live}w{len(world.sandboxes)}"
        world.sandboxes.append(sandbox)
        return run_replay(ReplayRequest(world.bootstrap, world.live, sandbox, mid, SIM.end, compare_live=False,
                                        manifest_dir=world.manifests, progress=None, warmup_ms=warmup_ms))

    everything = read_snapshot(world.bootstrap, a.sandbox, mid, SIM.end)
    cold, warm = replay_second_half(0), replay_second_half(12 * HOUR_MS)
    assert warm.total_in > cold.total_in  # the warm-up read the first half too...
    assert warm.outputs["fraud-scores"] == cold.outputs["fraud-scores"]  # ...but produced only the range's outputs
    assert not diff(everything, read_snapshot(world.bootstrap, cold.sandbox, mid, SIM.end)).identical
    assert diff(everything, read_snapshot(world.bootstrap, warm.sandbox, mid, SIM.end)).identical


def test_diff_cli_exit_1_when_different(world: World, twins: tuple[ReplayReport, ReplayReport],
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = twins
    c = _replay(world, ["correlation.min_records=2"], compare=False)
    assert c.metrics and len(c.metrics) == 1
    monkeypatch.setenv("NOC_HOME", str(world.manifests.parent))
    code = noc(["replay", "diff", c.sandbox, "--against", a.sandbox, "--bootstrap", world.bootstrap])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "DIFFERENT" in out and "incidents:" in out and " removed" in out
    # both were replays, so their recorded what-if metrics are shown side by side
    assert "what-if metrics" in out and c.sandbox in out and "fraud alerts vs labels precision" in out


def test_export_parquet_and_avro_read_back(world: World, twins: tuple[ReplayReport, ReplayReport],
                                           tmp_path: Path) -> None:
    a, _ = twins
    pq_path, avro_path = tmp_path / "scores.parquet", tmp_path / "att.avro"
    r1 = export(world.bootstrap, a.sandbox, "fraud-scores", SIM.start, SIM.end, "parquet", pq_path, progress=None)
    table = pq.read_table(pq_path)
    assert table.num_rows == r1.records == a.outputs["fraud-scores"]
    assert str(table.schema.field("fraud_probability").type) == "double"
    assert table.schema.field("shift_id").nullable and not table.schema.field("event_id").nullable
    assert set(table.column("risk_level").to_pylist()) <= {"LOW", "MEDIUM", "HIGH", "CRITICAL"}
    r2 = export(world.bootstrap, world.live, "attendance", SIM.start, SIM.end, "avro", avro_path, progress=None)
    with avro_path.open("rb") as fo:
        reader = fastavro.reader(fo)
        assert reader.writer_schema is not None and reader.writer_schema["name"] == "io.nocstream.AttendanceEvent"
        rows = list(reader)
    assert len(rows) == r2.records > 0
    assert all(SIM.start - HOUR_MS <= r["occurred_at"] < SIM.end for r in rows)
    with pytest.raises(ExportError, match="no records"):
        export(world.bootstrap, world.live, "attendance", SIM.end + 10 * HOUR_MS, SIM.end + 11 * HOUR_MS, "avro",
               tmp_path / "empty.avro", progress=None)
    assert not (tmp_path / "empty.avro").exists()
    with pytest.raises(ExportError, match="does not exist"):
        export(world.bootstrap, "nosuchns", "attendance", None, None, "parquet", tmp_path / "x.parquet", progress=None)


def _run_worker_until_settled(bootstrap: str, ns: str, home: Path, settle_s: float = 6.0,
                              deadline_s: float = 150.0) -> int:
    """Run `noc worker` on ``ns`` until its output end offsets stop changing; returns the output count."""
    import subprocess
    import time

    from streams.app import worker_command, worker_env

    names = [topic(s, ns) for s in OUTPUTS]
    log = (home / "worker.log").open("w")
    proc = subprocess.Popen(worker_command(ns, bootstrap), env=worker_env(home), stdout=log, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    last, changed = -1, t0
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"worker exited with {proc.returncode}: {(home / 'worker.log').read_text()[-2000:]}")
            total = sum(end_offsets(bootstrap, names).values())
            now = time.monotonic()
            if total != last:
                last, changed = total, now
            elif total > 0 and now - changed >= settle_s:
                return total
            assert now - t0 < deadline_s, f"worker outputs still changing after {deadline_s}s ({total} records)"
            time.sleep(0.25)  # poll interval of the settle detector
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_replay_matches_the_live_worker(world: World, twins: tuple[ReplayReport, ReplayReport],
                                        tmp_path: Path) -> None:
    """The worker's outputs on the live namespace against the replay's, for the same range.

    Anomalies, fraud scores and ticket commands must be identical. Incidents may differ in a few
    revisions: the worker's Faust consumer can deliver an alert after the activity clock of its partition
    has passed it, and the pipeline then releases it later than the replay's event-time merge does
    (see the report); at least 90% of the incidents must be identical.
    """
    a, _ = twins
    assert _run_worker_until_settled(world.bootstrap, world.live, tmp_path) > 0
    rep = diff(read_snapshot(world.bootstrap, world.live, SIM.start, SIM.end),
               read_snapshot(world.bootstrap, a.sandbox, SIM.start, SIM.end), "worker", "replay")
    kinds = rep.by_kind()
    for kind in ("anomalies", "fraud-scores", "ticket-commands"):
        assert kinds[kind].empty, (kind, kinds[kind])
        assert kinds[kind].base_count == kinds[kind].other_count
    assert kinds["fraud-scores"].base_count > 0
    inc = kinds["incidents"]
    assert inc.base_count > 0
    off = len(inc.added) + len(inc.removed) + len(inc.changed)
    assert off <= 0.1 * inc.base_count, (off, inc.base_count)


def test_sink_into_its_own_schema(world: World, twins: tuple[ReplayReport, ReplayReport], pg_dsn: str) -> None:
    import psycopg

    from streams.replay_sink import drop_schema, schema_for, sink_sandbox

    a, _ = twins
    try:
        rep = sink_sandbox(pg_dsn, world.bootstrap, a.sandbox, world.live, sorted(a.outputs))
        assert rep.schema == schema_for(a.sandbox) and rep.records > 0
        snap = read_snapshot(world.bootstrap, a.sandbox, SIM.start, SIM.end)
        with psycopg.connect(rep.dsn, connect_timeout=10) as conn:
            schema = conn.execute("SELECT current_schema()").fetchone()
            assert schema is not None and schema[0] == rep.schema
            n_scores = conn.execute("SELECT count(*) FROM fraud_scores").fetchone()
            n_inc = conn.execute("SELECT count(*) FROM incidents").fetchone()
        assert n_scores is not None and n_scores[0] == a.outputs["fraud-scores"]
        assert n_inc is not None and n_inc[0] == len(snap.records["incidents"])
    finally:
        drop_schema(pg_dsn, a.sandbox)


def test_what_if_with_a_registered_model(world: World, twins: tuple[ReplayReport, ReplayReport],
                                         pg_schema: tuple[str, str], tmp_path: Path) -> None:
    import sys
    from datetime import UTC, datetime

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from models_world import world as model_world

    from models.artifact import write_artifact
    from models.registry import Registry
    from models.train import TrainConfig, build_dataset, fit
    from streams.replay_io import ReplayError

    a, _ = twins
    dsn, _schema = pg_schema
    version = f"xgb-replay-{uuid.uuid4().hex[:6]}"
    art = fit("xgboost", build_dataset(model_world(days=6, people=10, fraud_rate=0.15, seed=3)), version,
              TrainConfig(n_trees=8, max_depth=3))
    path, sha = write_artifact(art, tmp_path)
    Registry(dsn).register(art, path, sha, None, {}, datetime.now(UTC))

    sandbox = f"{world.live}m"
    world.sandboxes.append(sandbox)
    rep = run_replay(ReplayRequest(world.bootstrap, world.live, sandbox, SIM.start, SIM.end,
                                   apply_overrides([], model_version=version), dsn=dsn,
                                   manifest_dir=world.manifests, progress=None))
    assert [m.name for m in rep.metrics] == [sandbox, "live config"]
    assert rep.metrics[0].volumes["fraud_scores"] == rep.metrics[1].volumes["fraud_scores"] > 0
    d = diff(read_snapshot(world.bootstrap, a.sandbox, SIM.start, SIM.end),
             read_snapshot(world.bootstrap, sandbox, SIM.start, SIM.end))
    scores = d.by_kind()["fraud-scores"]
    # every event is scored by both; every score now names the what-if model
    assert not scores.added and not scores.removed
    assert len(scores.changed) == scores.base_count
    assert all(c.fields["model_version"][1] == version for c in scores.changed)
    with pytest.raises(ReplayError, match="not in the registry"):
        run_replay(ReplayRequest(world.bootstrap, world.live, f"{world.live}n", SIM.start, SIM.end,
                                 apply_overrides([], model_version="no-such-model"), dsn=dsn, progress=None))
