"""``noc demo``: the README's main command — bring everything up and watch events flow.

Starts the local services, applies the topics and the database migrations, mints a dashboard token, then
runs each pipeline process as a child (logs under ``.cache/logs``): the stream worker, the Postgres sink,
the gateway with the dashboard, and the simulator feeding them. It prints the dashboard URL and token, a
live count per topic and each incident as it opens, until Ctrl-C, when it stops the children it started.

The simulated world lives in the present: the simulator back-fills the last ``--backfill`` (7 days) as fast as
``--rate`` allows, up to now, then carries on in real time, so views that end at now show today's data. Run
again, it carries on after the newest simulated activity already in the namespace (back-filling the gap up to
now, at most ``--backfill`` of it). ``--fast`` runs the fast-forward world instead (benchmarks, tests): a fixed
start and ~5,000x real time, ending at now at the latest — nothing produced is stamped in the future.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.config import settings

MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS
LIVE_SPAN = "366d"  # how far a live world reaches: past any demo session
CAUGHT_UP_MS = 2 * MINUTE_MS  # the console calls the back-fill done once the newest activity is this close to now


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="bring up Kafka + Postgres and the whole pipeline, fed by the simulator")
    p.add_argument("--backfill", default="7d",
                   help="recent history to simulate before carrying on in real time (default 7d)")
    p.add_argument("--rate", type=int, default=None,
                   help="simulated events per second: the back-fill's pace (default 20000), or with --fast the "
                        "whole run's (default 2000)")
    p.add_argument("--fast", action="store_true",
                   help="the fast-forward world instead: from a fixed start (or after the activity already there), "
                        "--span of simulated time at --rate, ending at now at the latest")
    p.add_argument("--span", default="30d", help="with --fast: simulated time to cover (default 30d)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--port", type=int, default=8080, help="gateway and dashboard port (default 8080)")
    p.add_argument("--metrics-port", type=int, default=9101,
                   help="the worker's metrics port; its site stage takes the next one, the sink the one after "
                        "(default 9101)")
    p.add_argument("--tenant", type=int, default=1, help="tenant of the printed dashboard token (default 1)")
    p.set_defaults(func=run)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def latest_activity(bootstrap: str, namespace: str, timeout_s: float = 10.0) -> int | None:
    """Event time (epoch ms) of the newest activity record in the namespace (the last record of each partition of
    the activity topic); None when the topic is empty."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from schemas.serde import DecodeError, decode
    from schemas.topics import BY_SHORT, topic

    name = topic("activity", namespace)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"noc-demo-start-{time.time_ns()}",
                  "enable.auto.commit": False, "socket.timeout.ms": 10_000, "log_level": QUIET})
    try:
        tps = []
        deadline = time.monotonic() + timeout_s
        for p in range(BY_SHORT["activity"].partitions):
            while True:
                try:
                    low, high = c.get_watermark_offsets(TopicPartition(name, p), timeout=timeout_s)
                    break
                except KafkaException:  # a topic just created has no leader for a moment
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)  # retry period while the leader is elected, not synchronisation
            if high > low:
                tps.append(TopicPartition(name, p, high - 1))
        if not tps:
            return None
        c.assign(tps)
        latest, left, deadline = 0, len(tps), time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            for msg in c.consume(left, timeout=1.0):
                if msg.error() is not None:
                    continue
                left -= 1
                try:
                    latest = max(latest, int(decode(msg.value())["occurred_at"]))
                except (DecodeError, KeyError, TypeError, ValueError):
                    continue  # a malformed record at the end: the others decide
    finally:
        c.close()
    return latest or None


def resume_start(bootstrap: str, namespace: str, timeout_s: float = 10.0) -> str | None:
    """Where a repeated fast-forward demo's simulated time starts: the day after the latest activity already in
    the namespace (None: the topic is empty, the simulator's default start). Re-simulating the same days would
    only produce LATE dead letters: the worker's event-time clock is already past them."""
    from datetime import timedelta

    latest = latest_activity(bootstrap, namespace, timeout_s)
    if latest is None:
        return None
    day = datetime.fromtimestamp(latest / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day + timedelta(days=1)).strftime("%Y-%m-%dT%H:%MZ")


def live_start(latest_ms: int | None, now_ms: int, backfill_ms: int) -> int:
    """Where a live demo's world starts: ``backfill_ms`` before now (on a minute), or, when the namespace already
    holds activity, the minute after the newest of it — never further back than ``backfill_ms`` (a demo left
    for a month does not back-fill the whole month). Later than now only when earlier runs simulated ahead."""
    start = (now_ms - backfill_ms) // MINUTE_MS * MINUTE_MS
    if latest_ms is not None:
        start = max(start, (latest_ms // MINUTE_MS + 1) * MINUTE_MS)
    return start


def simulator_args(args: argparse.Namespace, bootstrap: str, namespace: str,
                   now_ms: int | None = None) -> tuple[list[str] | None, str]:
    """The ``noc simulate`` options of this demo and a line saying what it simulates; None: nothing is left to
    simulate (a fast-forward world that already reaches now)."""
    from simulator.config import DEFAULT_START_MS, parse_duration, parse_time

    now = _now_ms() if now_ms is None else now_ms
    base = ["--seed", str(args.seed)]
    if getattr(args, "fast", False):
        resumed = resume_start(bootstrap, namespace)
        start = parse_time(resumed) if resumed else DEFAULT_START_MS
        end = min(start + parse_duration(args.span), now)
        if end <= start:
            return None, (f"the namespace already holds simulated activity up to {_iso(start)}, after now: nothing "
                          f"left to fast-forward (use another NOC_NAMESPACE, or run without --fast)")
        rate = args.rate if args.rate is not None else 2000
        return ([*base, "--rate", str(rate), "--start", _iso(start), "--span", f"{end - start}ms"],
                f"fast-forward world: {_iso(start)} to {_iso(end)} at {rate:,} events/s")
    latest = latest_activity(bootstrap, namespace)
    start = live_start(latest, now, parse_duration(args.backfill))
    rate = args.rate if args.rate is not None else 20_000
    line = (f"back-filling from {_iso(start)} to now at up to {rate:,} events/s, then in real time"
            + (" (carrying on after the activity already in the namespace)" if latest is not None else ""))
    if start > now:
        line = (f"!! the namespace holds simulated activity up to {_iso(start)}, after now: the simulator waits for "
                f"the clock to get there (use another NOC_NAMESPACE to start afresh)")
    return [*base, "--live", "--rate", str(rate), "--start", _iso(start), "--span", LIVE_SPAN], line


# The console's own consumers log nothing below critical: during a broker restart librdkafka would print a
# connection failure every few milliseconds over the live counts (the console says "Kafka unavailable" instead).
QUIET = 2
# Metrics ports of the demo's worker (its site stage takes the next one) and sink; the gateway's is --port.
WORKER_METRICS = 9101
SINK_BATCH_MS = 100


def metrics_ports(args: argparse.Namespace) -> tuple[int, int, int]:
    """Worker, site stage, sink."""
    base = int(getattr(args, "metrics_port", WORKER_METRICS))
    return base, base + 1, base + 2


def why_train(active: Any, feature_hash: str) -> str | None:
    """Why the demo must train a first model (None: the active one serves). A model trained on other features
    than this code computes cannot be loaded by the worker, which would score with rules-v1 throughout."""
    if active is None:
        return "no fraud model is active"
    if active.feature_hash != feature_hash:
        return f"the active fraud model {active.version} was trained on other features than this code computes"
    return None


def children(args: argparse.Namespace, sim: list[str] | None = None,
             train: bool = False) -> list[tuple[str, list[str]]]:
    """The pipeline's processes, in start order; each is an ordinary ``noc`` subcommand. ``sim``: the simulator's
    options (:func:`simulator_args`; None: no simulator). ``train``: also train a first fraud model and activate
    it (the worker scores with ``rules-v1`` until then and hot-reloads it)."""
    noc = shutil.which("noc") or sys.argv[0]
    worker_port, _site_port, sink_port = metrics_ports(args)
    procs = [
        ("worker", [noc, "worker", "--metrics-port", str(worker_port)]),
        # a partial batch waits 100 ms, not the default 500: the live world's few events a minute would each wait
        # the whole window (ticket changes reach the feed through the sink); the back-fill fills batches anyway
        ("sink", [noc, "sink", "--metrics-port", str(sink_port), "--no-migrate", "--batch-ms", str(SINK_BATCH_MS)]),
        ("gateway", [noc, "gateway", "--port", str(args.port)]),
    ]
    if sim is not None:
        procs.append(("simulator", [noc, "simulate", *sim]))
    if train:
        # From 30 days of another seed's simulated world (~10 s): the demo's own topics start empty.
        procs.append(("trainer", [noc, "train", "--from-sim", str(args.seed + 1), "--days", "30",
                                  "--auto-activate"]))
    return procs


def _wait_http(url: str, deadline_s: float) -> bool:
    """True once ``url`` answers (any HTTP status); the gateway takes a moment to start."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)  # polling a starting server: retry period, not synchronisation
    return False


class IncidentTail:
    """Reads new incident revisions from the incidents topic, to show incidents appearing live."""

    def __init__(self, bootstrap: str, namespace: str) -> None:
        from confluent_kafka import Consumer

        from schemas.topics import topic

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"noc-demo-tail-{time.time_ns()}",
                                  "log_level": QUIET,
                                  "enable.auto.commit": False, "auto.offset.reset": "latest",
                                  "socket.timeout.ms": 10_000})
        self.consumer.subscribe([topic("incidents", namespace)])

    def lines(self) -> list[str]:
        from schemas.serde import DecodeError, decode

        out = []
        for msg in self.consumer.consume(500, timeout=0.2):
            if msg.error() is not None or msg.value() is None:
                continue
            try:
                inc = decode(msg.value(), expected="correlated_incident")
            except DecodeError as exc:
                out.append(f"   (undecodable incident record: {exc})")
                continue
            verb = "opened" if inc["revision"] == 1 else ("closed" if inc["status"] == "CLOSED" else "updated")
            who = inc["person_id"] or f"site {inc['site_id']}"
            out.append(f"   incident {verb:7} {inc['combined_severity']:8} tenant {inc['tenant_id']} {who}: "
                       f"{inc['title']} ({', '.join(inc['kinds'])})")
        return out

    def close(self) -> None:
        self.consumer.close()


def _counts(bootstrap: str, namespace: str) -> dict[str, int]:
    from confluent_kafka import Consumer, TopicPartition

    from schemas.topics import CATALOGUE

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "noc-demo-counter", "enable.auto.commit": False,
                  "log_level": QUIET})
    try:
        meta = c.list_topics(timeout=10)
        out = {}
        for spec in CATALOGUE:
            name = spec.name(namespace)
            if name not in meta.topics:
                continue
            total = 0
            for p in meta.topics[name].partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                total += hi - lo
            out[name] = total
        return out
    finally:
        c.close()


def _backfill_progress(bootstrap: str, namespace: str, start_ms: int) -> int | None:
    """Print how far the back-fill got; None once it reached now (the world runs in real time from there)."""
    from confluent_kafka import KafkaException

    try:
        latest = latest_activity(bootstrap, namespace, timeout_s=5.0)
    except KafkaException:
        return start_ms  # the broker restarting: the counts above say so
    now = _now_ms()
    if latest is None or latest < start_ms:
        print(f"   back-fill: starting at {_iso(start_ms)}")
        return start_ms
    if now - latest <= CAUGHT_UP_MS:
        print(f"   back-fill done: the simulated world has reached now ({_iso(latest)}) and runs in real time")
        return None
    done = (latest - start_ms) / max(1, now - start_ms)
    print(f"   back-fill: simulated up to {_iso(latest)}, {(now - latest) / 3_600_000:.1f} h behind now "
          f"({done:.0%})")
    return start_ms


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from gateway.tokens import create_token
    from infra.kafka_local import kafka_up
    from infra.postgres_local import postgres_up
    from infra.procs import port_open
    from infra.topics_admin import apply_topics
    from models.features import FEATURE_HASH
    from models.registry import Registry
    from simulator.config import parse_time
    from sinks.migrate import migrate

    s = settings()
    busy = [port for port in (args.port, *metrics_ports(args)) if port_open(port)]
    if busy:
        print(f"noc demo: port(s) {', '.join(map(str, busy))} already in use on 127.0.0.1: is another `noc demo` "
              f"(or a worker, sink or gateway) running? Stop it first, or pick another --port.", file=sys.stderr)
        return 2
    kafka_up(s)
    postgres_up(s)
    created = apply_topics(s.bootstrap, s.namespace)
    print(f"topics applied ({len(created)} created)")
    applied = migrate(s.pg_dsn)
    print(f"database migrated ({len(applied)} migrations applied)")
    _token_id, token = create_token(s.pg_dsn, args.tenant, ["noc:manage"], label="noc demo")
    logs = s.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sim, what = simulator_args(args, s.bootstrap, s.namespace)
    print(what)
    registry = Registry(s.pg_dsn)
    why = why_train(registry.active(None), FEATURE_HASH)
    train = why is not None
    if why is not None:
        print(f"{why}: training one in the background (until then the worker scores with rules-v1)")
    running: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    for name, cmd in children(args, sim, train):
        log = logs / f"{name}.log"
        running.append((name, subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT), log))
        print(f"started {name} (pid {running[-1][1].pid}, log {log})")
    url = f"http://127.0.0.1:{args.port}/"
    if _wait_http(url, 30):
        print(f"\n  dashboard: {url}\n  token (tenant {args.tenant}, noc:manage): {token}\n"
              f"  check it (once the back-fill is done): noc verify --url {url.rstrip('/')} --token {token} --poke\n")
    else:
        print(f"!! the gateway did not answer at {url}; see {logs / 'gateway.log'}", file=sys.stderr)
    tail = IncidentTail(s.bootstrap, s.namespace)
    # the live world's start while its back-fill runs (the console shows how far it got), else None
    backfill_from = parse_time(sim[sim.index("--start") + 1]) if sim is not None and "--live" in sim else None
    deadline = time.monotonic() + args.duration if args.duration else None
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        last: dict[str, int] = {}
        last_t = time.monotonic()
        reported: set[str] = set()  # children whose failure was shown (once each)
        while not stop and (deadline is None or time.monotonic() < deadline):
            time.sleep(2)  # display refresh period, not synchronisation
            now = time.monotonic()
            try:
                counts = _counts(s.bootstrap, s.namespace)
            except KafkaException as exc:  # the broker restarting: the children wait for it, and so do we
                print(f"\n{time.strftime('%H:%M:%S')}  Kafka unavailable ({exc.args[0].str()}); retrying")
                counts = last
            else:
                print(f"\n{time.strftime('%H:%M:%S')}  {'topic':34} {'records':>10} {'per s':>8}")
                for topic, n in counts.items():
                    rate = (n - last.get(topic, n)) / (now - last_t)
                    print(f"          {topic:34} {n:>10,} {rate:>8,.0f}")
            if backfill_from is not None:
                backfill_from = _backfill_progress(s.bootstrap, s.namespace, backfill_from)
            incidents = tail.lines()
            for line in incidents[-10:]:
                print(line)
            if len(incidents) > 10:
                print(f"   ... and {len(incidents) - 10} more incident revisions")
            for name, proc, log in running:
                if proc.poll() is not None and proc.returncode != 0 and name not in reported:
                    reported.add(name)
                    print(f"!! {name} exited with {proc.returncode}; see {log}", file=sys.stderr)
                elif name == "trainer" and train and proc.returncode == 0:
                    train = False
                    row = registry.active(None)
                    print(f"   fraud model {row.version if row else '?'} trained and activated; the worker now "
                          f"scores with it (see {log})")
            last, last_t = counts, now
    except KeyboardInterrupt:
        pass
    finally:
        tail.close()
        for _name, proc, _log in reversed(running):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc, _log in running:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        print("demo stopped; Kafka and Postgres keep running (`noc infra down` stops them)")
    return 0
