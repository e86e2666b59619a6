"""Replay throughput with 1 and more person-stage processes, beside the consume+decode ceiling, in one run.

    python tests/bench/bench_replay.py [--people 10000] [--span-min 1560] [--procs 1,2] [--worker]

1. Simulates bench_worker's world (``world_config``: 10,000 people; 26 h of it is ~1M input records) into a
   fresh namespace (the "live" one) on the running broker.
2. Ceiling: bench_worker's plain confluent-kafka consume + Avro decode of every input record, same run.
3. Replay: ``run_replay`` over the whole range into one sandbox per ``--procs`` value (the person stage in that
   many processes, the site stage and the producer in the parent); records/s (input records over the wall time
   of ``run_replay``: reference loading, process start-up and the final producer flush included), CPU seconds
   of the replay's processes per record, and a check that every output topic holds the same bytes as the
   first replay's (SHA-256 per topic over partition, offset, timestamp, key and value).
4. ``--worker``: ``noc worker`` as a subprocess on the same namespace; its rate is input records over the time
   from start to the last change of its output end offsets, and ``noc replay diff`` of the replay against it.

The machine's load average is printed with the figures: on a shared machine they are indicative.
Everything it creates (namespaces, the worker's data dir) is removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench_worker import ceiling, world_config

from infra.config import settings
from infra.topics_admin import apply_topics, delete_namespace
from schemas.topics import topic
from simulator.produce import simulate
from streams.replay import ReplayReport, ReplayRequest, read_snapshot, run_replay
from streams.replay_diff import diff
from streams.replay_io import consumer, end_offsets, offset_range, read_spans

OUTPUTS = ("signal-windows", "baselines", "anomalies", "incidents", "fraud-scores", "ticket-commands",
           "finding-escalations", "events", "dead-letters")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (5-min {five:.1f}) on {os.cpu_count()} cores"


def digests(bootstrap: str, ns: str) -> dict[str, str]:
    """Per output topic: records and SHA-256 over (partition, offset, timestamp, key, value), in order."""
    c = consumer(bootstrap)
    try:
        spans = {short: offset_range(c, short, topic(short, ns), None, None) for short in OUTPUTS}
    finally:
        c.close()
    out = {}
    for short, sp in spans.items():
        h, n = hashlib.sha256(), 0
        for i in read_spans(bootstrap, sp):
            h.update(f"{i.partition}:{i.offset}:{i.timestamp}:{len(i.key or b'')}:".encode())
            h.update(i.key or b"")
            h.update(i.value or b"")
            n += 1
        out[short] = f"{n}:{h.hexdigest()[:16]}"
    return out


def code_digest() -> str:
    """SHA-256 of the Python sources a replay runs (streams, models, schemas): the person-stage processes import
    them from disk when they start, so a checkout edited during the bench mixes versions between runs."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[2]
    for path in sorted(p for d in ("streams", "models", "schemas") for p in (root / d).rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the replay's person-stage processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def replay(bootstrap: str, live: str, sandbox: str, start: int, end: int, procs: int) -> tuple[ReplayReport, float]:
    cpu0 = _cpu()
    rep = run_replay(ReplayRequest(bootstrap, live, sandbox, start, end, progress=None, compare_live=False,
                                   procs=procs, manifest_dir=Path(tempfile.mkdtemp(prefix="bench-replay-"))))
    return rep, _cpu() - cpu0


def run_worker(bootstrap: str, ns: str, settle_s: float, timeout_s: float) -> tuple[float, float, dict[str, int]]:
    """(seconds to the last output change, seconds to the first output, output records per topic)."""
    from streams.app import worker_command, worker_env

    home = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    names = [topic(s, ns) for s in OUTPUTS]
    log = (home / "worker.log").open("w")
    t0 = time.monotonic()
    proc = subprocess.Popen(worker_command(ns, bootstrap), env=worker_env(home), stdout=log, stderr=subprocess.STDOUT)
    first = last_change = None
    last_total = -1
    per_topic: dict[str, int] = {}
    try:
        while time.monotonic() - t0 < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}; see {home / 'worker.log'}")
            ends = end_offsets(bootstrap, names)
            total = sum(ends.values())
            now = time.monotonic()
            if total != last_total:
                per_topic = {short: sum(v for (n, _), v in ends.items() if n == topic(short, ns)) for short in OUTPUTS}
                last_total, last_change = total, now
                if first is None and total > 0:
                    first = now
            elif total > 0 and last_change is not None and now - last_change >= settle_s:
                break
            time.sleep(0.25)  # polling interval of the settle detector, not a synchronisation
        else:
            raise RuntimeError(f"worker outputs did not settle within {timeout_s:.0f}s")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(home, ignore_errors=True)
    assert last_change is not None and first is not None
    return last_change - t0, first - t0, per_topic


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=10_000)
    ap.add_argument("--span-min", type=int, default=1560, help="simulated minutes (1560: ~1M inputs at 10,000)")
    ap.add_argument("--procs", default="1,2", help="comma-separated person-stage process counts to measure")
    ap.add_argument("--worker", action="store_true", help="also run noc worker on the same input and diff")
    ap.add_argument("--settle", type=float, default=8.0, help="--worker: seconds without output change = done")
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args()
    procs = [int(p) for p in args.procs.split(",") if p.strip()]

    bootstrap = settings().bootstrap
    cfg = world_config(args.people, args.span_min)
    live = "b" + uuid.uuid4().hex[:10]
    sandboxes = [f"{live}p{n}" for n in procs]
    apply_topics(bootstrap, live)
    try:
        t = time.perf_counter()
        sim = simulate(cfg, bootstrap, live, progress=None)
        assert sim.ok, sim.errors
        people = cfg.tenants * cfg.sites_per_tenant * cfg.guards_per_site
        print(f"world     {people:,} people, {args.span_min} min: {sim.total:,} records simulated into {live} in "
              f"{time.perf_counter() - t:.1f}s; {load()}")
        n, secs = ceiling(bootstrap, live)
        ceil = n / secs
        print(f"ceiling   consume + decode     : {n:>9,} records in {secs:7.2f}s = {ceil:>8,.0f} rec/s "
              f"({secs / n * 1e6:.1f} µs/record); {load()}")
        first: dict[str, str] | None = None
        rates: dict[int, float] = {}
        rep: ReplayReport | None = None
        code: set[str] = set()
        for k, sandbox in zip(procs, sandboxes, strict=True):
            code.add(code_digest())
            rep, cpu = replay(bootstrap, live, sandbox, cfg.start, cfg.end, k)
            code.add(code_digest())
            rates[k] = rep.rate
            print(f"replay    --procs {k} ({rep.procs} proc): {rep.total_in:>9,} records in {rep.elapsed_s:7.2f}s = "
                  f"{rep.rate:>8,.0f} rec/s ({rep.rate / ceil:.0%} of the ceiling); CPU {cpu:.1f}s = "
                  f"{cpu / max(1, rep.total_in) * 1e6:.0f} µs/record; {sum(rep.outputs.values()):,} outputs; {load()}")
            got = digests(bootstrap, sandbox)
            if first is None:
                first = got
                print("outputs   " + ", ".join(f"{t} {v.split(':')[0]}" for t, v in got.items()))
            else:
                same = got == first
                print(f"outputs   --procs {k} vs --procs {procs[0]}: "
                      + ("byte-identical in every output topic" if same else
                         "DIFFERENT in " + ", ".join(t for t in OUTPUTS if got[t] != first[t]))
                      + ("" if len(code) == 1 else " (the replayed code changed during the bench: not comparable)"))
        if len(rates) > 1:
            base = rates[procs[0]]
            print("speed-up  " + ", ".join(f"--procs {k}: {r / base:.2f}x" for k, r in rates.items()))
        if not args.worker or rep is None:
            return 0
        done_s, first_s, per_topic = run_worker(bootstrap, live, args.settle, args.timeout)
        print(f"worker    noc worker           : {rep.total_in:>9,} records in {done_s:7.2f}s = "
              f"{rep.total_in / done_s:>8,.0f} rec/s incl. start-up ({first_s:.1f}s to first output); {load()}")
        d = diff(read_snapshot(bootstrap, live, cfg.start, cfg.end),
                 read_snapshot(bootstrap, sandboxes[-1], cfg.start, cfg.end), "worker", "replay")
        print("diff      replay vs worker     : " + ("identical" if d.identical else "; ".join(
            f"{k.kind} +{len(k.added)} -{len(k.removed)} ~{len(k.changed)} of {k.base_count}" for k in d.kinds)))
        counts = [f"{t} {per_topic.get(t, 0):,} vs {rep.outputs.get(t, 0):,}" for t in OUTPUTS
                  if per_topic.get(t, 0) != rep.outputs.get(t, 0)]
        print("records   worker vs replay     : " + ("same per topic" if not counts else "; ".join(counts)))
    finally:
        for ns in (live, *sandboxes):
            delete_namespace(bootstrap, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
