"""Benchmark: the worker (`noc worker`) end to end, beside the ceiling measured in the same run.

1. Produce a simulated world (default 10,000 people) at full speed into a fresh namespace.
2. Ceiling: a plain confluent-kafka consumer + Avro decode (schemas.serde) over the same input topics.
3. Worker: ``noc worker`` as a subprocess over that backlog (it starts its site stage as a child process); events/s
   from its first processed record until its last output record (pipeline and site stage: windows, anomalies,
   incidents, scores, baselines, feed, dead letters) was produced: the newest Kafka timestamp (CreateTime, the
   wall clock at produce) in the output topics, read once the pipeline group has committed every input and the
   site stage what it was forwarded (the seconds to those commits are printed too).
   Peak RSS (VmHWM) of the worker (pipeline) process with the state of all those people, and of its site stage
   process; the peak of their sum (sampled every 0.25 s) and how it moved over the run.
4. Latency: a second namespace produced at a fixed rate with wall-clock Kafka timestamps; event->incident
   latency = Kafka timestamp of an incident revision minus that of the alert/finding that triggered it.
   Includes the by-design hold-back: a record waits until its partition's activity is ``grace`` (2 min of
   event time) past it; at a fixed rate the simulator compresses event time, so this is a few seconds here
   but is the grace itself at real-time rates.

    python tests/bench/bench_worker.py [--people 10000] [--span-min 120] [--rate 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from infra.config import settings
from infra.topics_admin import apply_topics, delete_namespace
from schemas import serde
from schemas.topics import BY_SHORT, topic
from simulator.config import MINUTE_MS, SimConfig
from simulator.produce import simulate
from streams.core.pipeline import INPUT_STEMS
from streams.site_stage import site_stage_caught_up
from streams.testkit import WorkerProcess, decoded, free_port, group_caught_up, read_topic, wait_for

INPUTS = (*INPUT_STEMS, "tickets")


def _holding(c: Consumer, shorts: Iterable[str], ns: str) -> list[tuple[str, int, int]]:
    """(topic, partition, end offset) of each partition of the ``shorts`` topics that holds records."""
    out = []
    for short in shorts:
        name = topic(short, ns)
        for p in range(BY_SHORT[short].partitions):
            low, high = c.get_watermark_offsets(TopicPartition(name, p), timeout=30)
            if high > low:
                out.append((name, p, high))
    return out


def ceiling(bootstrap: str, ns: str) -> tuple[int, float]:
    """Plain consume + decode of every input record; (records, seconds)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{ns}.ceiling", "enable.auto.commit": False,
                  "fetch.max.bytes": 52_428_800})
    ends: dict[tuple[str, int], int] = {}
    tps = []
    for name, p, high in _holding(c, INPUTS, ns):
        ends[(name, p)] = high
        tps.append(TopicPartition(name, p, OFFSET_BEGINNING))
    store = serde.store()
    n = 0
    c.assign(tps)
    t0 = time.perf_counter()
    while ends:
        for m in c.consume(10_000, timeout=1.0):
            if m.error() is not None:
                continue
            try:
                store.decode(m.value())
            except serde.DecodeError:
                pass
            n += 1
            key = (str(m.topic()), m.partition() or 0)
            off = m.offset()
            if key in ends and off is not None and off + 1 >= ends[key]:
                del ends[key]
    dt = time.perf_counter() - t0
    c.close()
    return n, dt


def _rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the worker's site stage process)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """RSS of a process and of its children (the site stage), every ``every_s`` in a thread: the peak of their sum
    (each process's VmHWM peaks at its own moment) and a timeline."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, float, float]] = []  # (seconds, worker MB, children MB)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self.t0 = time.perf_counter()
        self.thread.start()
        return self

    def _run(self) -> None:
        children: list[int] = []
        while not self.stopping.wait(self.every_s):
            if len(self.samples) % 8 == 0:  # the site stage starts after the worker; /proc scans are not free
                children = _children(self.pid)
            self.samples.append((time.perf_counter() - self.t0, _rss_mb(self.pid),
                                 sum(_rss_mb(c) for c in children)))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)

    def peak_sum(self) -> float:
        return max((w + c for _, w, c in self.samples), default=float("nan"))

    def timeline(self, points: int = 10) -> str:
        """``t s: worker+children MB`` at about ``points`` evenly spaced moments."""
        if not self.samples:
            return "no samples"
        step = max(1, len(self.samples) // points)
        return ", ".join(f"{t:.0f}s {w:.0f}+{c:.0f}" for t, w, c in self.samples[::step])


# What the worker writes (its site stage included); not labels or model-events, which other programs write.
OUTPUTS = ("signal-windows", "baselines", "anomalies", "incidents", "fraud-scores", "ticket-commands",
           "finding-escalations", "events", "dead-letters")


def output_edge_ms(bootstrap: str, ns: str, shorts: Iterable[str], last: bool = True) -> int:
    """Kafka timestamp (wall clock at produce: CreateTime) of the newest record (``last``) or the oldest one in
    any partition of the ``shorts`` output topics."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{ns}.output-edge", "enable.auto.commit": False,
                  "socket.timeout.ms": 10_000})
    try:
        tps = [TopicPartition(name, p, high - 1 if last else OFFSET_BEGINNING)
               for name, p, high in _holding(c, shorts, ns)]
        c.assign(tps)
        stamps, left = [], {(tp.topic, tp.partition) for tp in tps}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for m in c.consume(len(tps), timeout=1.0):
                if m.error() is None and (m.topic(), m.partition()) in left:
                    stamps.append(m.timestamp()[1])
                    left.discard((m.topic(), m.partition()))
        if left or not stamps:
            raise RuntimeError(f"could not read the {'last' if last else 'first'} record of {sorted(left)[:3]}")
        return max(stamps) if last else min(stamps)
    finally:
        c.close()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (less sensitive than wall time to other load on the machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(bootstrap: str, ns: str, total: int, work: Path, extra: list[str],
               workers: int = 1) -> tuple[float, float, float]:
    """(events/s, seconds from first record to the last output, peak RSS MB of the first worker) of ``workers``
    worker processes sharing the backlog (one consumer group; each has its site-stage process).

    Also prints how many micro-batches the worker took and the time spent inside them (core, state flush,
    produce): the rest of the wall time is the consumer path, the commit waits and waiting for the CPU."""
    ws = [WorkerProcess(ns, bootstrap, work / f"faust{i}", free_port(), work / f"worker{i}.log", extra).start()
          for i in range(workers)]
    w = ws[0]
    assert w.proc is not None
    mem = RssSampler(w.proc.pid).start()
    try:
        wait_for(lambda: any(x.processed() > 0 for x in ws), 120, "the workers to start processing", every_s=0.05)
        t0, t0_wall = time.perf_counter(), time.time()
        wait_for(lambda: group_caught_up(bootstrap, ns), 1800, "the worker to catch up", every_s=0.2)
        pipeline_dt = time.perf_counter() - t0
        # ... and its site stage (SITE windows, baselines): the end of the run
        wait_for(lambda: site_stage_caught_up(bootstrap, ns), 600, "the site stage to catch up", every_s=0.2)
        dt = time.perf_counter() - t0
        out_dt = output_edge_ms(bootstrap, ns, OUTPUTS) / 1000 - t0_wall
        # The site stage emits a SITE window once every person partition's clock has passed it: how soon the
        # first one came out shows whether the worker read its partitions evenly over the backlog.
        site_dt = output_edge_ms(bootstrap, ns, ["baselines"], last=False) / 1000 - t0_wall
        print(f"         last output record produced after {out_dt:.2f} s; every input offset committed after "
              f"{dt:.2f} s ({total / dt:,.0f} events/s counted to the commits, which follow the outputs by up to the "
              f"commit cadence: 2 s, or 1 s idle)")
        rss = _rss_peak_mb(w.proc.pid)
        for i, x in enumerate(ws):
            assert x.proc is not None
            cpu = _cpu_s(x.proc.pid)
            name = "worker" if workers == 1 else f"worker {i}"
            for child in _children(x.proc.pid):
                print(f"         {name}'s site stage process: peak RSS {_rss_peak_mb(child):.0f} MB, CPU "
                      f"{_cpu_s(child):.1f} s; first SITE window (baseline) after {site_dt:.2f} s; the pipeline's "
                      f"inputs were all committed after {pipeline_dt:.2f} s, the site stage's after {dt:.2f} s")
            m = x.metrics()
            batches, inside = m.get("noc_worker_batch_seconds_count", 0.0), m.get("noc_worker_batch_seconds_sum", 0.0)
            done = x.processed()  # input records this worker processed (its share of the partitions)
            share = total if workers == 1 else max(done, 1.0)
            print(f"         {name}: peak RSS {_rss_peak_mb(x.proc.pid):.0f} MB; {batches:.0f} batches, {inside:.1f} s "
                  f"inside them ({inside / dt:.0%} of the wall time, {inside / share * 1e6:.0f} µs/record); CPU "
                  f"{cpu:.1f} s since its start ({cpu / share * 1e6:.0f} µs/record)"
                  + ("" if workers == 1 else f"; {done:,.0f} input records"))
        mem.stop()
        if workers == 1:
            print(f"         worker + site stage processes together: peak RSS {mem.peak_sum():.0f} MB (sampled every "
                  f"{mem.every_s} s); RSS over the run (worker+site MB): {mem.timeline()}")
    finally:
        mem.stop()
        for x in ws:
            x.stop()
    return total / out_dt, out_dt, rss


def latency(bootstrap: str, rate: float, people_cfg: SimConfig, work: Path,
            extra: list[str]) -> tuple[int, float, float]:
    """(incidents measured, p50 ms, p99 ms) at a fixed produce rate, worker running live."""
    ns = "bl" + uuid.uuid4().hex[:8]
    apply_topics(bootstrap, ns)
    w = WorkerProcess(ns, bootstrap, work / "faust-lat", free_port(), work / "worker-lat.log", extra).start()
    try:
        # partitions assigned and recovered, so the first records do not measure the start-up
        wait_for(lambda: "Worker ready" in w.log_tail(400), 60, "the latency worker to own its partitions")
        rep = simulate(people_cfg, bootstrap, ns, rate=rate, timestamps="now", progress=None)
        assert rep.ok, rep.errors
        wait_for(lambda: group_caught_up(bootstrap, ns), 600, "the latency worker to catch up")
    finally:
        w.stop()
    sent: dict[str, int] = {}
    for short in ("alerts", "audit-findings"):
        for r in read_topic(bootstrap, ns, short):
            sent[serde.decode(r.value)["event_id"]] = r.timestamp
    lat: list[float] = []
    for r, inc in zip(read_topic(bootstrap, ns, "incidents"), decoded(read_topic(bootstrap, ns, "incidents")),
                      strict=True):
        last = inc["related_event_ids"][-1]
        if last in sent:
            lat.append(r.timestamp - sent[last])
    delete_namespace(bootstrap, ns)
    lat.sort()
    if not lat:
        return 0, float("nan"), float("nan")
    return len(lat), statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def world_config(people: int = 10_000, span_min: int = 360) -> SimConfig:
    """The bench world: two tenants of 20-guard sites, ``people`` guards in all (rounded down to whole sites)."""
    guards = 20
    sites = max(1, people // guards // 2)
    return SimConfig(seed=7, tenants=2, sites_per_tenant=sites, guards_per_site=guards, span=span_min * MINUTE_MS)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=10_000)
    ap.add_argument("--span-min", type=int, default=360)
    ap.add_argument("--rate", type=float, default=2000.0, help="events/s for the latency run")
    ap.add_argument("--keep", action="store_true", help="keep the namespace")
    ap.add_argument("--state-cache", type=int, default=None, help="worker --state-cache (default: the worker's)")
    ap.add_argument("--batch-size", type=int, default=None, help="worker --batch-size (default: the worker's)")
    ap.add_argument("--batch-within", type=float, default=None, help="worker --batch-within (default: the worker's)")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--workers", type=int, default=1, help="worker processes sharing the backlog (scale-out)")
    args = ap.parse_args()
    bootstrap = settings().bootstrap
    cfg = world_config(args.people, args.span_min)
    sites, guards = cfg.sites_per_tenant, cfg.guards_per_site
    ns = "bw" + uuid.uuid4().hex[:8]
    apply_topics(bootstrap, ns)
    try:
        t0 = time.perf_counter()
        rep = simulate(cfg, bootstrap, ns, progress=None)
        assert rep.ok, rep.errors
        total = sum(n for t, n in rep.produced.items() if t in INPUTS)
        print(f"world: {cfg.tenants * sites * guards} people, {args.span_min} min; produced {rep.total} records "
              f"({total} inputs) in {time.perf_counter() - t0:.1f} s ({rep.rate:,.0f}/s)")
        n, dt = ceiling(bootstrap, ns)
        ceil = n / dt
        print(f"ceiling  confluent-kafka consume + Avro decode: {n} records in {dt:.2f} s = {ceil:,.0f} events/s")
        with tempfile.TemporaryDirectory() as tmp:
            extra = [] if args.state_cache is None else ["--state-cache", str(args.state_cache)]
            extra += [] if args.batch_size is None else ["--batch-size", str(args.batch_size)]
            extra += [] if args.batch_within is None else ["--batch-within", str(args.batch_within)]
            rate, wdt, rss = throughput(bootstrap, ns, total, Path(tmp), extra, args.workers)
            who = "noc worker (2 processes)" if args.workers == 1 else f"{args.workers} x noc worker (2 processes each)"
            print(f"worker   {who}, end to end:    {total} records in {wdt:.2f} s = {rate:,.0f} "
                  f"events/s ({rate / ceil:.0%} of ceiling); peak RSS {rss:.0f} MB {' '.join(extra)}")
            if args.no_latency:
                return
            lat_cfg = SimConfig(seed=8, tenants=1, sites_per_tenant=30, guards_per_site=4, span=24 * 60 * MINUTE_MS)
            k, p50, p99 = latency(bootstrap, args.rate, lat_cfg, Path(tmp), extra)
            print(f"latency  at {args.rate:,.0f} events/s: event->incident p50 {p50:,.0f} ms, p99 {p99:,.0f} ms "
                  f"({k} incident revisions triggered by an alert or finding)")
    finally:
        if not args.keep:
            delete_namespace(bootstrap, ns)


if __name__ == "__main__":
    main()
