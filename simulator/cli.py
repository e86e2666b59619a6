"""``noc simulate``: produce a seeded synthetic world to Kafka."""

from __future__ import annotations

import argparse
import signal
import sys

from infra.config import settings


def _scenario(text: str) -> tuple[str, float]:
    kind, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE, got {text!r}")
    try:
        return kind.strip().upper(), float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a rate: {value!r}") from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="produce a seeded synthetic NOC world (with labelled fraud) to Kafka",
                       description="Generate guards, sites, shifts, activity, alerts, audit findings, tickets "
                                   "and labelled fraud scenarios, deterministically from --seed, and produce "
                                   "them to the <namespace>.* topics faster than real time.")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--span", default="6h", help="simulated time to cover, e.g. 6h, 24h, 30d (default 6h)")
    p.add_argument("--start", default=None, help="simulated start, ISO time (default 2026-11-01T00:00Z)")
    p.add_argument("--rate", type=float, default=0, help="records per second to produce (default 0 = unlimited)")
    p.add_argument("--live", action="store_true",
                   help="produce each record once the clock reaches its time: a --start in the past is back-filled "
                        "(at --rate) up to now, then the world carries on in real time; nothing is stamped in "
                        "the future; the shifts under way at --start are simulated from there on")
    p.add_argument("--tenants", type=int, default=2)
    p.add_argument("--sites", type=int, default=10, help="sites per tenant (default 10)")
    p.add_argument("--guards", type=int, default=8, help="guards per site (default 8)")
    p.add_argument("--scenario-rate", type=float, default=0.05,
                   help="share of shifts with a fraud scenario, split evenly over the 7 kinds (default 0.05)")
    p.add_argument("--scenario", type=_scenario, action="append", default=[], metavar="KIND=RATE",
                   help="per-kind rate override, e.g. --scenario GPS_SPOOFING=0.02 (repeatable)")
    p.add_argument("--late-rate", type=float, default=0.002, help="share of events delivered out of order")
    p.add_argument("--bad-rate", type=float, default=0.0,
                   help="share of input events followed by a malformed payload (dead-letter demos; default 0)")
    p.add_argument("--shift-labels", choices=("observable", "check_in", "check_in_and_out"), default="observable",
                   help="where GHOST_SHIFT/MISSED_TOUR/LATE_ARRIVAL labels go (default observable: on the punch "
                        "where the fraud can be seen; GHOST_SHIFT/MISSED_TOUR on the check-out)")
    p.add_argument("--max-events", type=int, default=0, help="stop after this many records (default: the span)")
    p.add_argument("--timestamps", choices=("event", "now"), default="event",
                   help="Kafka record timestamps: the event time (default) or the producer's clock")
    p.add_argument("--create-topics", action="store_true", help="create missing catalogued topics first")
    p.add_argument("--flush-timeout", type=float, default=60.0, help="seconds to wait for the last deliveries")
    p.add_argument("--quiet", action="store_true", help="no per-second progress lines")
    p.add_argument("--namespace", default=None, help="topic namespace (default NOC_NAMESPACE or noc)")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default NOC_BOOTSTRAP)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from schemas.topics import topic
    from simulator.config import DEFAULT_START_MS, SimConfig, parse_duration, parse_time
    from simulator.generate import TOPICS
    from simulator.produce import check_topics, simulate, summary

    s = settings()
    namespace = args.namespace or s.namespace
    bootstrap = args.bootstrap or s.bootstrap
    try:
        cfg = SimConfig(seed=args.seed, tenants=args.tenants, sites_per_tenant=args.sites,
                        guards_per_site=args.guards,
                        start=parse_time(args.start) if args.start else DEFAULT_START_MS,
                        span=parse_duration(args.span), scenario_rate=args.scenario_rate,
                        scenario_rates=dict(args.scenario), late_rate=args.late_rate, shift_labels=args.shift_labels,
                        carry_in=args.live)
        cfg.validate()
    except ValueError as exc:
        print(f"noc simulate: {exc}", file=sys.stderr)
        return 2
    if args.create_topics:
        from infra.topics_admin import apply_topics

        apply_topics(bootstrap, namespace)
    missing = check_topics(bootstrap, [topic(short, namespace) for short in TOPICS])
    if missing:
        print(f"noc simulate: missing topics {', '.join(missing)}; run `noc topics apply --namespace {namespace}` "
              "or pass --create-topics", file=sys.stderr)
        return 2

    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        rep = simulate(cfg, bootstrap, namespace, rate=args.rate, bad_rate=args.bad_rate, timestamps=args.timestamps,
                       max_events=args.max_events, flush_timeout_s=args.flush_timeout, live=args.live,
                       progress=None if args.quiet else sys.stderr, stop=lambda: stopping)
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary(rep, cfg, namespace, sys.stdout)
    if not rep.ok:
        print(f"noc simulate: {sum(rep.failed.values())} deliveries failed, {rep.undelivered} undelivered",
              file=sys.stderr)
        return 1
    return 0
