"""``noc demo``: the README's main command — bring everything up and watch events flow.

Starts the local services, applies the topics, then runs each pipeline process as a child (logs under
``.cache/logs``) and prints a live count per topic until Ctrl-C, when it stops the children it started.
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
    p.set_defaults(func=run)


def children(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """The pipeline's processes, in start order; each is an ordinary ``noc`` subcommand."""
    noc = shutil.which("noc") or sys.argv[0]
    procs: list[tuple[str, list[str]]] = []
    procs.append(("simulator", [noc, "simulate", "--seed", str(args.seed), "--rate", str(args.rate),
                                "--span", args.span]))
    return procs


def _counts(bootstrap: str, namespace: str) -> dict[str, int]:
    from confluent_kafka import Consumer, TopicPartition

    from schemas.topics import CATALOGUE

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "noc-demo-counter", "enable.auto.commit": False})
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
    from infra.kafka_local import kafka_up
    from infra.postgres_local import postgres_up
    from infra.topics_admin import apply_topics

    s = settings()
    kafka_up(s)
    postgres_up(s)
    created = apply_topics(s.bootstrap, s.namespace)
    print(f"topics applied ({len(created)} created)")
    logs = s.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    running: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    for name, cmd in children(args):
        log = logs / f"{name}.log"
        running.append((name, subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT), log))
        print(f"started {name} (pid {running[-1][1].pid}, log {log})")
    deadline = time.monotonic() + args.duration if args.duration else None
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        last: dict[str, int] = {}
        last_t = time.monotonic()
        while not stop and (deadline is None or time.monotonic() < deadline):
            time.sleep(2)  # display refresh period, not synchronisation
            now = time.monotonic()
            counts = _counts(s.bootstrap, s.namespace)
            print(f"\n{time.strftime('%H:%M:%S')}  {'topic':34} {'records':>10} {'per s':>8}")
            for topic, n in counts.items():
                rate = (n - last.get(topic, n)) / (now - last_t)
                print(f"          {topic:34} {n:>10,} {rate:>8,.0f}")
            for name, proc, log in running:
                if proc.poll() is not None and proc.returncode != 0:
                    print(f"!! {name} exited with {proc.returncode}; see {log}", file=sys.stderr)
            last, last_t = counts, now
    except KeyboardInterrupt:
        pass
    finally:
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
