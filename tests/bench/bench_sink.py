"""Sink throughput into Postgres for the busiest topic (activity), beside a naive writer in the same run.

    python tests/bench/bench_sink.py [--events 200000] [--naive 3000] [--batch 5000]

Produces ``--events`` activity signals to a fresh topic namespace, then times one sink worker (consumer
group, decode, COPY + upsert, offset commits) from start until it has caught up. The naive writer decodes
and INSERTs + COMMITs one record at a time (a smaller sample, same table, same indexes). Needs the local
Kafka and Postgres (``noc infra up``); uses its own namespace and schema and removes them afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import time
import uuid
from pathlib import Path

import psycopg
from confluent_kafka import Producer

from infra.config import settings
from infra.topics_admin import apply_topics, delete_namespace
from schemas.serde import decode, encode
from schemas.topics import person_key, site_key, topic
from sinks.batching import BatchPolicy
from sinks.map_inputs import ACTIVITY, activity_row
from sinks.migrate import migrate
from sinks.worker import RunStats, SinkConfig, SinkWorker

T0 = 1_793_491_200_000
KINDS = ("PHONE_EVENT", "LOCATION_UPDATE", "TASK_COMPLETED", "TOUR_CHECKPOINT_SCANNED")


def activity(i: int, rng: random.Random) -> dict[str, object]:
    kind = KINDS[i % 4]
    loc = kind in ("LOCATION_UPDATE", "TOUR_CHECKPOINT_SCANNED")
    at = T0 + i * 37  # ~2 days of events for 5M; partitions by day
    return {"event_id": f"act-{i:09d}", "tenant_id": 1 + i % 3, "site_id": f"s{i % 40}", "person_id": f"p{i % 400}",
            "occurred_at": at, "received_at": at + 120, "kind": kind, "device_id": f"d{i % 400}",
            "shift_id": f"sh{i // 5000}", "lat": 52.0 + rng.random() if loc else None,
            "lon": 4.0 + rng.random() if loc else None, "accuracy_m": 5 + 20 * rng.random() if loc else None,
            "is_mock_location": False, "phone_event_type": "SCREEN_ON" if kind == "PHONE_EVENT" else None,
            "task_id": f"task{i}" if kind == "TASK_COMPLETED" else None,
            "tour_id": "t1" if kind == "TOUR_CHECKPOINT_SCANNED" else None,
            "checkpoint_id": f"c{i % 12}" if kind == "TOUR_CHECKPOINT_SCANNED" else None}


def publish_sites(bootstrap: str, ns: str) -> None:
    """The tenants and sites of activity() on ref.sites: the sink dead-letters inputs of unknown ones."""
    p = Producer({"bootstrap.servers": bootstrap})
    for tenant, site in ((t, f"s{i}") for i in range(40) for t in (1, 2, 3)):
        p.produce(topic("ref.sites", ns), key=site_key(tenant, site), value=encode("site", {
            "tenant_id": tenant, "site_id": site, "name": site, "timezone": "UTC", "lat": 52.0, "lon": 4.0,
            "geofence_radius_m": 100.0, "tours": [], "active": True, "updated_at": T0}))
    assert p.flush(30) == 0


def produce(bootstrap: str, name: str, n: int) -> list[bytes]:
    rng = random.Random(7)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000,
                  "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})
    sample: list[bytes] = []
    for i in range(n):
        rec = activity(i, rng)
        value = encode("activity_signal", rec)
        if i < 20_000:
            sample.append(value)
        while True:
            try:
                p.produce(name, key=person_key(int(rec["tenant_id"]), str(rec["person_id"])), value=value,  # type: ignore[call-overload]
                          timestamp=int(rec["occurred_at"]))  # type: ignore[call-overload]
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(120) != 0:
        raise RuntimeError("produce did not finish")
    return sample


def naive(dsn: str, values: list[bytes]) -> tuple[float, float, float]:
    """(rows/s, client CPU s per row, backend CPU s per row) of one INSERT + COMMIT per record."""
    cols = ", ".join(ACTIVITY.columns)
    sql = (f"INSERT INTO activity ({cols}) VALUES ({', '.join(['%s'] * len(ACTIVITY.columns))}) "
           "ON CONFLICT (event_id, tenant_id, occurred_at) DO NOTHING")
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        pid = conn.info.backend_pid
        pg0, cpu0 = backend_cpu_s(pid), own_cpu_s()
        t = time.perf_counter()
        for v in values:
            rec = decode(v, expected="activity_signal")
            row = list(activity_row(rec))
            row[0] = "naive-" + row[0]  # own rows, so the sink's rows are not touched
            conn.execute(sql, row)
            conn.commit()
        n = len(values)
        return n / (time.perf_counter() - t), (own_cpu_s() - cpu0) / n, (backend_cpu_s(pid) - pg0) / n


def backend_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a Postgres backend used so far (the server runs on this machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_sink(dsn: str, bootstrap: str, ns: str, group: str, batch: int) -> tuple[RunStats, int, float, float]:
    """Run one worker to the end of the topic: (stats, rows stored, sink CPU s, Postgres backend CPU s)."""
    worker = SinkWorker(SinkConfig(dsn=dsn, bootstrap=bootstrap, namespace=ns, topics=("activity",), group=group,
                                   policy=BatchPolicy(batch, 500), until_caught_up=True, run_migrations=False,
                                   publish=False))
    backend = worker.writer.connection().info.backend_pid
    pg0, cpu0 = backend_cpu_s(backend), own_cpu_s()
    close = worker.writer.close
    pg_cpu: list[float] = []

    def measure_then_close() -> None:
        if not pg_cpu:
            pg_cpu.append(backend_cpu_s(backend) - pg0)
        close()

    worker.writer.close = measure_then_close  # type: ignore[method-assign]
    stats = worker.run()
    cpu = own_cpu_s() - cpu0
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        stored = conn.execute(b"SELECT count(*) FROM activity").fetchone()
    return stats, int(stored[0]) if stored else -1, cpu, pg_cpu[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--naive", type=int, default=3_000)
    ap.add_argument("--batch", type=int, default=5_000)
    args = ap.parse_args()
    s = settings()
    ns = "bench" + uuid.uuid4().hex[:8]
    schema = "bench_" + uuid.uuid4().hex[:8]
    apply_topics(s.bootstrap, ns)
    with psycopg.connect(s.pg_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    dsn = f"{s.pg_dsn}{'&' if '?' in s.pg_dsn else '?'}options=-csearch_path%3D{schema}"
    try:
        migrate(dsn)
        t = time.perf_counter()
        publish_sites(s.bootstrap, ns)
        sample = produce(s.bootstrap, topic("activity", ns), args.events)
        print(f"produced {args.events:,} activity signals in {time.perf_counter() - t:.1f}s")

        stats, stored, cpu, pg_cpu = run_sink(dsn, s.bootstrap, ns, f"bench-{ns}", args.batch)
        assert stored == args.events, f"stored {stored}, expected {args.events}"
        sink_rate = args.events / stats.seconds
        naive_rate, naive_cpu, naive_pg = naive(dsn, sample[: args.naive])
        n = args.events
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work shares them)")
        print(f"sink worker (1 process, batch {args.batch}): {n:,} rows in {stats.seconds:.1f}s = "
              f"{sink_rate:,.0f} rows/s ({stats.batches} batches; includes group join and the caught-up check)")
        print(f"  split: decode+map {stats.decode_s:.1f}s (main thread), postgres {stats.write_s:.1f}s (writer "
              f"thread), main thread waited {stats.wait_s:.1f}s for the writer")
        print(f"  CPU per row: sink process {cpu / n * 1e6:.1f} us, its Postgres backend {pg_cpu / n * 1e6:.1f} us "
              f"-> {n / max(cpu, pg_cpu):,.0f} rows/s per worker when each side has a core to itself")
        print(f"naive writer (INSERT + COMMIT per record): {args.naive:,} rows = {naive_rate:,.0f} rows/s; "
              f"CPU per row: client {naive_cpu * 1e6:.1f} us, backend {naive_pg * 1e6:.1f} us")
        print(f"ratio (wall clock, same run): {sink_rate / naive_rate:.1f}x")
    finally:
        delete_namespace(s.bootstrap, ns)
        with psycopg.connect(s.pg_dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


if __name__ == "__main__":
    main()
