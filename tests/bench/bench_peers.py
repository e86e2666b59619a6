"""nocstream beside a peer stream processor on the same input, in one run (issue 22's peer benchmark).

    python tests/bench/bench_peers.py [--people 10000] [--span-min 360] [--rounds 3] [--no-quix]

1. Builds bench_worker's world once (``world_config``) into a fresh namespace.
2. Per round, one measurement at a time:
   * ceiling: bench_worker's confluent-kafka consume + Avro decode of every input record;
   * Quix Streams (in its own virtualenv, ``.cache/peers-venv/``, created on first use with pip: it pins its own
     confluent-kafka) doing only the per-person tumbling window over activity — 5 min, grace 2 min, event time
     ``occurred_at``, ``.count().final()`` — once with ``closing_strategy="partition"`` and once with ``"key"``,
     each a fresh consumer group from the earliest offset;
   * ``noc worker`` doing its whole job (pipeline + site-stage processes) on a byte-for-byte copy of the world's
     topics in a namespace of its own (a fresh group and empty state each round).
   events/s: records over the time from the first record processed to the last one (Quix) or to the last
   output record produced (worker, as bench_worker measures it); CPU µs per record: process CPU time (user +
   system; the worker's two processes together, start-up included) over records. Quix reads activity only, so
   its records are the activity records; the ceiling and the worker read every input topic.
3. Prints min / median / max over the rounds and the ratios, with the load average (the machine is shared:
   the figures are indicative), and checks that Quix's windows (both strategies) hold the same counts as
   nocstream's PERSON windows (``event_count``) for the same person and window start; where they differ, that
   the inputs explain it (records nocstream dead-lettered or counted once by event id, records the peer
   dropped as late, windows the peer's per-key closing never closed), else exit 1.

This file is also the Quix runner (``--as-quix``, run with the virtualenv's python): its top level imports
nothing but the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".cache" / "peers-venv"
QUIX = "quixstreams==3.28.1"
WINDOW_MS, GRACE_MS = 5 * 60_000, 2 * 60_000


# -- the Quix Streams side (runs in the peers virtualenv) --------------------------------------------------


def quix_main(argv: list[str]) -> int:
    """Per-person tumbling window counts over ``--topic`` with Quix Streams; prints a JSON result line."""
    import io
    import resource
    from datetime import timedelta

    import fastavro
    from quixstreams import Application
    from quixstreams.models.serializers import Deserializer

    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--schema", required=True, type=Path)
    ap.add_argument("--expect", required=True, type=int, help="records in the topic: stop after this many")
    ap.add_argument("--strategy", choices=("partition", "key"), required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    schema = fastavro.parse_schema(json.loads(args.schema.read_text()))

    class SingleObjectAvro(Deserializer):
        """Avro single-object encoding (C3 01, 8-byte fingerprint, body) with the current schema."""

        def __call__(self, value: bytes, ctx: Any) -> Any:
            if len(value) < 10 or value[:2] != b"\xc3\x01":
                return {"bad": True}
            try:
                return fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)
            except Exception:  # noqa: BLE001 - a malformed record: counted as read, not windowed
                return {"bad": True}

    app = Application(broker_address=args.bootstrap, consumer_group=f"peer-{uuid.uuid4().hex[:8]}",
                      auto_offset_reset="earliest", use_changelog_topics=False, state_dir=args.state_dir,
                      loglevel="WARNING")
    topic = app.topic(args.topic, value_deserializer=SingleObjectAvro(), key_deserializer="str",
                      timestamp_extractor=lambda value, headers, ts, tstype: int(value.get("occurred_at", ts)))
    seen = {"n": 0, "t0": 0.0, "cpu0": 0.0, "t1": 0.0}
    windows: list[tuple[str, int, int, int]] = []

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def count(value: Any) -> bool:
        if seen["n"] == 0:
            seen["t0"], seen["cpu0"] = time.perf_counter(), cpu()
        seen["n"] += 1
        if seen["n"] >= args.expect:
            seen["t1"] = time.perf_counter()
            app.stop()
        return "bad" not in value

    sdf = app.dataframe(topic).filter(count)
    sdf = sdf.tumbling_window(timedelta(milliseconds=WINDOW_MS), grace_ms=timedelta(milliseconds=GRACE_MS))
    sdf = sdf.count().final(closing_strategy=args.strategy)
    sdf.update(lambda value, key, ts, headers: windows.append((key, value["start"], value["end"], value["value"])),
               metadata=True)
    app.run()
    dt = (seen["t1"] or time.perf_counter()) - seen["t0"]
    used = cpu() - seen["cpu0"]
    args.out.write_text(json.dumps(windows))
    print(json.dumps({"records": seen["n"], "seconds": dt, "cpu_s": used, "windows": len(windows)}), flush=True)
    return 0


# -- the nocstream side ------------------------------------------------------------------------------------


def ensure_venv(progress: Callable[[str], None]) -> Path:
    """The peers virtualenv's python, created with Quix Streams and fastavro on first use."""
    py = VENV / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import quixstreams, fastavro"], capture_output=True,
                                        timeout=120).returncode == 0
    if not ok:
        progress(f"creating {VENV} with {QUIX} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        subprocess.run([str(py), "-m", "pip", "install", "-q", QUIX, "fastavro"], check=True, timeout=1200)
    return py


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (5-min {five:.1f})"


def copy_namespace(bootstrap: str, src: str, dst: str, shorts: Iterable[str]) -> int:
    """Every record of ``shorts`` from namespace ``src`` to ``dst``, byte for byte: same partition, key, value
    and timestamp, in offset order. Returns the records copied."""
    from confluent_kafka import Producer

    from streams.replay_io import consumer, offset_range, read_spans

    c = consumer(bootstrap)
    try:
        spans = [s for short in shorts for s in offset_range(c, short, f"{src}.{short}", None, None)]
    finally:
        c.close()
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 20,
                  "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000, "message.timeout.ms": 120_000})
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None and len(errors) < 5:
            errors.append(str(err))

    n = 0
    for item in read_spans(bootstrap, spans):
        while True:
            try:
                p.produce(f"{dst}.{item.topic}", item.value, item.key, partition=item.partition,
                          timestamp=item.timestamp, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % 10_000 == 0:
            p.poll(0)
    left = p.flush(120)
    if left or errors:
        raise RuntimeError(f"copy {src} -> {dst}: {left} undelivered; {errors}")
    return n


def noc_round(bootstrap: str, src: str, inputs: int, work: Path) -> tuple[float, float, str]:
    """(events/s, CPU µs per record, namespace) of ``noc worker`` over a fresh copy of ``src``."""
    from bench_worker import OUTPUTS, _children, _cpu_s, output_edge_ms

    from infra.topics_admin import apply_topics
    from schemas.topics import CATALOGUE
    from streams.site_stage import site_stage_caught_up
    from streams.testkit import WorkerProcess, free_port, group_caught_up, wait_for

    ns = "bp" + uuid.uuid4().hex[:8]
    apply_topics(bootstrap, ns)
    copy_namespace(bootstrap, src, ns, [t.short for t in CATALOGUE if t.kind in ("input", "reference")
                                        or t.short == "model-events"])
    w = WorkerProcess(ns, bootstrap, work / ns, free_port(), work / f"{ns}.log").start()
    try:
        wait_for(lambda: w.processed() > 0, 120, "the worker to start processing", every_s=0.05)
        t0_wall = time.time()
        wait_for(lambda: group_caught_up(bootstrap, ns), 1800, "the worker to catch up", every_s=0.2)
        wait_for(lambda: site_stage_caught_up(bootstrap, ns), 600, "the site stage to catch up", every_s=0.2)
        dt = output_edge_ms(bootstrap, ns, OUTPUTS) / 1000 - t0_wall
        assert w.proc is not None
        cpu = _cpu_s(w.proc.pid) + sum(_cpu_s(c) for c in _children(w.proc.pid))
    finally:
        w.stop()
    return inputs / dt, cpu / inputs * 1e6, ns


def quix_round(py: Path, bootstrap: str, ns: str, activity: int, strategy: str, work: Path
               ) -> tuple[float, float, dict[tuple[str, int], int]]:
    """(events/s, CPU µs per record, {(key, window start): count}) of the Quix runner."""
    out = work / f"quix-{strategy}-{uuid.uuid4().hex[:6]}.json"
    cmd = [str(py), str(Path(__file__).resolve()), "--as-quix", "--bootstrap", bootstrap, "--topic",
           f"{ns}.activity", "--schema", str(ROOT / "schemas" / "activity_signal.avsc"), "--expect", str(activity),
           "--strategy", strategy, "--state-dir", str(work / f"state-{out.stem}"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"quix runner failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res["records"] != activity:
        raise RuntimeError(f"quix runner read {res['records']} of {activity} records")
    got = {(k, int(s)): int(c) for k, s, _, c in json.loads(out.read_text())}
    return res["records"] / res["seconds"], res["cpu_s"] / res["records"] * 1e6, got


def noc_windows(bootstrap: str, ns: str) -> dict[tuple[str, int], int]:
    """nocstream's PERSON windows that counted something: {("tenant:person", window start): event_count}."""
    from streams.testkit import decoded, read_topic

    return {(f"{w['tenant_id']}:{w['person_id']}", int(w["window_start"])): int(w["event_count"])
            for w in decoded(read_topic(bootstrap, ns, "signal-windows"), "signal_window")
            if w["scope"] == "PERSON" and w["event_count"] > 0}


def activity_by_window(bootstrap: str, ns: str) -> dict[tuple[str, int], list[tuple[str, int, int]]]:
    """The world's decodable activity records per (Kafka key, window start): (event_id, partition, offset)."""
    from schemas.serde import DecodeError, SchemaStore
    from streams.testkit import read_topic

    store = SchemaStore()
    out: dict[tuple[str, int], list[tuple[str, int, int]]] = {}
    for r in read_topic(bootstrap, ns, "activity"):
        try:
            _, rec = store.decode(r.value, expected="activity_signal")
        except DecodeError:
            continue
        start = int(rec["occurred_at"]) // WINDOW_MS * WINDOW_MS
        out.setdefault(((r.key or b"").decode(), start), []).append((str(rec["event_id"]), r.partition, r.offset))
    return out


def dead_lettered(bootstrap: str, ns: str) -> dict[tuple[int, int], str]:
    """The worker's dead letters of activity records: (partition, offset) -> reason."""
    from streams.testkit import decoded, read_topic

    return {(int(d["partition"]), int(d["offset"])): str(d["reason"])
            for d in decoded(read_topic(bootstrap, ns, "dead-letters"), "dead_letter")
            if str(d["source_topic"]).endswith(".activity")}


def compare(name: str, peer: dict[tuple[str, int], int], noc: dict[tuple[str, int], int],
            raw: dict[tuple[str, int], list[tuple[str, int, int]]], dead: dict[tuple[int, int], str]) -> bool:
    """Equal counts for the same (person, window), or a difference the inputs explain: nocstream counts an event
    id once (a redelivered record is a DUPLICATE) and not at all when it dead-letters the record (LATE, unknown
    site, ...), while the peer counts every record it did not drop as late by its own watermark."""
    both = peer.keys() & noc.keys()
    differ = sorted(k for k in both if peer[k] != noc[k])
    only_peer, only_noc = sorted(peer.keys() - noc.keys()), sorted(noc.keys() - peer.keys())
    same = not differ and not only_peer and not only_noc
    print(f"check     {name}: {len(peer):,} windows vs nocstream's {len(noc):,} PERSON windows with events: "
          + ("identical counts for every person and window" if same else
             f"{len(both) - len(differ):,} equal, {len(differ):,} differ, {len(only_peer):,} only in the peer, "
             f"{len(only_noc):,} only in nocstream"))
    unexplained = []
    why: dict[str, int] = {}
    for k in differ + only_peer + only_noc:
        recs = raw.get(k, [])
        ids = {e for e, _, _ in recs}
        reasons = [dead[(p, o)] for _, p, o in recs if (p, o) in dead]
        noc_should = len({e for e, p, o in recs if (p, o) not in dead})
        if k in noc and noc[k] != noc_should:
            unexplained.append((k, "nocstream", noc[k], noc_should))
        elif k in peer and peer[k] > len(recs):
            unexplained.append((k, "peer", peer[k], len(recs)))
        else:
            for r in reasons:
                why[f"dead-lettered {r}"] = why.get(f"dead-lettered {r}", 0) + 1
            if len(recs) > len(ids):
                why["redelivered ids"] = why.get("redelivered ids", 0) + len(recs) - len(ids)
            if k in peer and peer[k] < len(recs):
                why["dropped as late by the peer"] = why.get("dropped as late by the peer", 0) + len(recs) - peer[k]
            if k not in peer and k in noc:
                why["window not closed by the peer (its key got no later record)"] = why.get(
                    "window not closed by the peer (its key got no later record)", 0) + 1
    if not same:
        print("          explained by the inputs: " + (", ".join(f"{v:,} {k}" for k, v in sorted(why.items())) or "-")
              + (f"; UNEXPLAINED {len(unexplained)}, e.g. {unexplained[:3]}" if unexplained else ""))
    return not unexplained


def spread(xs: list[float]) -> str:
    return f"{min(xs):>8,.0f} / {statistics.median(xs):>8,.0f} / {max(xs):>8,.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=10_000)
    ap.add_argument("--span-min", type=int, default=360)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-quix", action="store_true", help="skip Quix Streams (no virtualenv needed)")
    ap.add_argument("--keep", action="store_true", help="keep the namespaces")
    args = ap.parse_args()

    from bench_worker import INPUTS, ceiling, world_config

    from infra.config import settings
    from infra.topics_admin import apply_topics, delete_namespace
    from simulator.produce import simulate

    bootstrap = settings().bootstrap
    py = None if args.no_quix else ensure_venv(lambda m: print(m, flush=True))
    cfg = world_config(args.people, args.span_min)
    ns = "bp" + uuid.uuid4().hex[:8]
    made = [ns]
    apply_topics(bootstrap, ns)
    try:
        t = time.perf_counter()
        rep = simulate(cfg, bootstrap, ns, progress=None)
        assert rep.ok, rep.errors
        inputs = sum(n for topic, n in rep.produced.items() if topic in INPUTS)
        activity = rep.produced["activity"]
        people = cfg.tenants * cfg.sites_per_tenant * cfg.guards_per_site
        if activity == 0:
            raise SystemExit(f"the world has no activity records ({args.span_min} min from the simulation start is "
                             "before the first shift): give a longer --span-min")
        print(f"world     {people:,} people, {args.span_min} min: {inputs:,} inputs ({activity:,} activity) in "
              f"{time.perf_counter() - t:.1f}s; {load()} on {os.cpu_count()} cores", flush=True)
        rows: dict[str, tuple[list[float], list[float]]] = {}
        peer_windows: dict[str, dict[tuple[str, int], int]] = {}
        noc_ns = ""

        def note(name: str, rate: float, us: float) -> None:
            rows.setdefault(name, ([], []))[0].append(rate)
            rows[name][1].append(us)
            print(f"  {name:<34} {rate:>9,.0f} ev/s  {us:>6.1f} µs CPU/record  ({load()})", flush=True)

        with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
            work = Path(tmp)
            for r in range(args.rounds):
                print(f"round {r + 1}/{args.rounds}", flush=True)
                cpu0 = time.process_time()
                n, secs = ceiling(bootstrap, ns)
                note("ceiling (consume + decode)", n / secs, (time.process_time() - cpu0) / n * 1e6)
                if py is not None:
                    for strategy in ("partition", "key"):
                        rate, us, got = quix_round(py, bootstrap, ns, activity, strategy, work)
                        note(f"quix window, closing={strategy}", rate, us)
                        peer_windows.setdefault(strategy, got)
                rate, us, wns = noc_round(bootstrap, ns, inputs, work)
                made.append(wns)
                noc_ns = noc_ns or wns
                note("noc worker (whole job)", rate, us)
        print(f"\nover {args.rounds} round(s), min / median / max ({load()}):")
        for name, (rates, uss) in rows.items():
            print(f"  {name:<34} {spread(rates)} ev/s   {min(uss):.1f} / {statistics.median(uss):.1f} / "
                  f"{max(uss):.1f} µs CPU/record")
        med = {name: statistics.median(rates) for name, (rates, _) in rows.items()}
        cpu = {name: statistics.median(uss) for name, (_, uss) in rows.items()}
        noc = "noc worker (whole job)"
        for name in med:
            if name != noc:
                print(f"  ratio noc worker / {name}: {med[noc] / med[name]:.2f}x the events/s, "
                      f"{cpu[noc] / cpu[name]:.2f}x the CPU per record")
        ok = True
        if peer_windows:
            mine, raw, dead = noc_windows(bootstrap, noc_ns), activity_by_window(bootstrap, ns), dead_lettered(
                bootstrap, noc_ns)
            for strategy, got in peer_windows.items():
                ok = compare(f"quix closing={strategy}", got, mine, raw, dead) and ok
        return 0 if ok else 1
    finally:
        if not args.keep:
            for name in made:
                delete_namespace(bootstrap, name)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--as-quix":
        sys.exit(quix_main(sys.argv[2:]))
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
