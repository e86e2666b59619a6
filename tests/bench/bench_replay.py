"""Replay throughput beside the live worker's, on the same input, in one run.

    python tests/bench/bench_replay.py [--hours 24] [--tenants 2] [--sites 10] [--guards 8] [--no-worker]

1. Simulates the world into a fresh namespace (the "live" one) on the running broker.
2. Baseline: a plain consume + merge + Avro decode of the same input range (the ceiling any replay has
   before doing work), measured in this run.
3. Replay: ``run_replay`` over the range into a sandbox (the same sans-I/O pipeline the worker drives).
4. Worker: ``noc worker`` as a subprocess on the fresh namespace; its rate is input records over the time
   from start to the last change of its output end offsets (outputs "settle" when nothing changes for
   ``--settle`` seconds). Start-up (reference loading, Faust) is included and reported separately.
5. Comparability: ``noc replay diff`` of the replay against the worker's outputs (counts per kind).

Everything it creates (namespaces, the worker's data dir) is removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from infra.config import settings
from infra.topics_admin import apply_topics, delete_namespace
from schemas.serde import DecodeError, SchemaStore
from schemas.topics import topic
from simulator.config import HOUR_MS, SimConfig
from simulator.produce import simulate
from streams.replay import INPUT_TOPICS, ReplayRequest, read_snapshot, run_replay
from streams.replay_diff import diff
from streams.replay_io import PartitionReader, consumer, end_offsets, offset_range
from streams.replay_merge import merge

OUTPUTS = ("signal-windows", "baselines", "anomalies", "incidents", "fraud-scores", "ticket-commands",
           "finding-escalations", "events", "dead-letters")


def consume_decode(bootstrap: str, ns: str, lo: int, hi: int) -> tuple[int, float]:
    store = SchemaStore()
    c = consumer(bootstrap)
    try:
        spans = [s for short in INPUT_TOPICS for s in offset_range(c, short, topic(short, ns), lo, hi)]
    finally:
        c.close()
    t0 = time.perf_counter()
    n = 0
    with PartitionReader(bootstrap, spans) as r:
        for item in merge(r.iterators()):
            try:
                store.decode(item.value)
            except DecodeError:
                pass  # malformed on purpose: still read
            n += 1
    return n, time.perf_counter() - t0


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
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--tenants", type=int, default=2)
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--guards", type=int, default=8)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--no-worker", action="store_true", help="skip the live worker (replay and ceiling only)")
    ap.add_argument("--settle", type=float, default=8.0, help="seconds without output change = done")
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()

    bootstrap = settings().bootstrap
    cfg = SimConfig(seed=args.seed, tenants=args.tenants, sites_per_tenant=args.sites, guards_per_site=args.guards,
                    span=int(args.hours * HOUR_MS), scenario_rate=0.1)
    live = "b" + uuid.uuid4().hex[:10]
    sandbox = live + "r"
    apply_topics(bootstrap, live)
    try:
        sim = simulate(cfg, bootstrap, live, progress=None)
        print(f"simulated {sim.total:,} records ({args.hours:g} h, {args.tenants}x{args.sites}x{args.guards}) "
              f"into {live} in {sim.elapsed_s:.1f}s")

        n, secs = consume_decode(bootstrap, live, cfg.start, cfg.end)
        print(f"baseline  consume+merge+decode : {n:>8,} records in {secs:6.2f}s = {n / secs:>9,.0f} rec/s")

        rep = run_replay(ReplayRequest(bootstrap, live, sandbox, cfg.start, cfg.end, progress=None,
                                       manifest_dir=Path(tempfile.mkdtemp(prefix="bench-replay-"))))
        print(f"replay    full pipeline        : {rep.total_in:>8,} records in {rep.elapsed_s:6.2f}s = "
              f"{rep.rate:>9,.0f} rec/s  ({rep.rate / (n / secs):.2f}x the ceiling; "
              f"{sum(rep.outputs.values()):,} outputs)")
        if args.no_worker:
            print("worker    skipped (--no-worker)")
            return 0
        done_s, first_s, per_topic = run_worker(bootstrap, live, args.settle, args.timeout)
        outs = sum(per_topic.values())
        busy = max(1e-9, done_s - first_s)
        print(f"worker    noc worker (Faust)   : {rep.total_in:>8,} records in {done_s:6.2f}s = "
              f"{rep.total_in / done_s:>9,.0f} rec/s incl. start-up ({first_s:.1f}s to first output; "
              f"{rep.total_in / busy:,.0f} rec/s after it); {outs:,} outputs")
        print(f"ratio     replay / worker      : {rep.rate / (rep.total_in / done_s):.2f}x")
        d = diff(read_snapshot(bootstrap, live, cfg.start, cfg.end),
                 read_snapshot(bootstrap, sandbox, cfg.start, cfg.end), "worker", "replay")
        print("diff      replay vs worker     : " + ("identical" if d.identical else "; ".join(
            f"{k.kind} +{len(k.added)} -{len(k.removed)} ~{len(k.changed)} of {k.base_count}" for k in d.kinds)))
        counts = [f"{t} {per_topic.get(t, 0):,} vs {rep.outputs.get(t, 0):,}" for t in OUTPUTS
                  if per_topic.get(t, 0) != rep.outputs.get(t, 0)]
        print("records   worker vs replay     : " + ("same per topic" if not counts else "; ".join(counts)))
    finally:
        delete_namespace(bootstrap, live)
        delete_namespace(bootstrap, sandbox)
    return 0


if __name__ == "__main__":
    sys.exit(main())
