"""``noc demo``: the README's main command — bring everything up and watch events flow.

Starts the local services, applies the topics and the database migrations, mints a dashboard token, then
runs each pipeline process as a child (logs under ``.cache/logs``): the stream worker, the Postgres sink,
the gateway with the dashboard, and the simulator feeding them. It prints the dashboard URL and token, a
live count per topic and each incident as it opens, until Ctrl-C, when it stops the children it started.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from infra.config import settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="bring up Kafka + Postgres and the whole pipeline, fed by the simulator")
    p.add_argument("--rate", type=int, default=2000, help="simulated events per second (default 2000)")
    p.add_argument("--span", default="30d", help="simulated time to cover (default 30d)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--port", type=int, default=8080, help="gateway and dashboard port (default 8080)")
    p.add_argument("--tenant", type=int, default=1, help="tenant of the printed dashboard token (default 1)")
    p.set_defaults(func=run)


def resume_start(bootstrap: str, namespace: str, timeout_s: float = 10.0) -> str | None:
    """Where a repeated demo's simulated time starts: the day after the latest activity already in the namespace
    (None: the topic is empty, the simulator's default start). Re-simulating the same days would only produce
    LATE dead letters: the worker's event-time clock is already past them."""
    from datetime import UTC, datetime, timedelta

    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from schemas.serde import DecodeError, decode
    from schemas.topics import BY_SHORT, topic

    name = topic("activity", namespace)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"noc-demo-start-{time.time_ns()}",
                  "enable.auto.commit": False, "socket.timeout.ms": 10_000})
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
    if not latest:
        return None
    day = datetime.fromtimestamp(latest / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day + timedelta(days=1)).strftime("%Y-%m-%dT%H:%MZ")


# The console's own consumers log nothing below critical: during a broker restart librdkafka would print a
# connection failure every few milliseconds over the live counts (the console says "Kafka unavailable" instead).
QUIET = 2
# Metrics ports of the demo's worker (its site stage takes the next one) and sink; the gateway's is --port.
WORKER_METRICS, SINK_METRICS = 9101, 9103
METRICS_PORTS = (WORKER_METRICS, WORKER_METRICS + 1, SINK_METRICS)


def children(args: argparse.Namespace, start: str | None = None,
             train: bool = False) -> list[tuple[str, list[str]]]:
    """The pipeline's processes, in start order; each is an ordinary ``noc`` subcommand. ``train``: also train a
    first fraud model and activate it (the worker scores with ``rules-v1`` until then and hot-reloads it)."""
    noc = shutil.which("noc") or sys.argv[0]
    sim = [noc, "simulate", "--seed", str(args.seed), "--rate", str(args.rate), "--span", args.span]
    procs = [
        ("worker", [noc, "worker", "--metrics-port", str(WORKER_METRICS)]),
        ("sink", [noc, "sink", "--metrics-port", str(SINK_METRICS), "--no-migrate"]),
        ("gateway", [noc, "gateway", "--port", str(args.port)]),
        ("simulator", sim + (["--start", start] if start else [])),
    ]
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


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from gateway.tokens import create_token
    from infra.kafka_local import kafka_up
    from infra.postgres_local import postgres_up
    from infra.procs import port_open
    from infra.topics_admin import apply_topics
    from models.registry import Registry
    from sinks.migrate import migrate

    s = settings()
    busy = [port for port in (args.port, *METRICS_PORTS) if port_open(port)]
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
    start = resume_start(s.bootstrap, s.namespace)
    if start:
        print(f"the namespace already holds simulated activity: simulating from {start} on")
    registry = Registry(s.pg_dsn)
    train = registry.active(None) is None
    if train:
        print("no fraud model is active: training one in the background (until then the worker scores with rules-v1)")
    running: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    for name, cmd in children(args, start, train):
        log = logs / f"{name}.log"
        running.append((name, subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT), log))
        print(f"started {name} (pid {running[-1][1].pid}, log {log})")
    url = f"http://127.0.0.1:{args.port}/"
    if _wait_http(url, 30):
        print(f"\n  dashboard: {url}\n  token (tenant {args.tenant}, noc:manage): {token}\n")
    else:
        print(f"!! the gateway did not answer at {url}; see {logs / 'gateway.log'}", file=sys.stderr)
    tail = IncidentTail(s.bootstrap, s.namespace)
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
