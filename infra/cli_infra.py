"""``noc infra up|down|status``: the local Kafka broker and Postgres."""

from __future__ import annotations

import argparse
import sys

from infra.config import settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infra", help="start, stop or show the local Kafka broker and Postgres")
    isub = p.add_subparsers(dest="infra_command", required=True)
    isub.add_parser("up", help="start Kafka (KRaft, from Maven jars) and Postgres; harmless when running").set_defaults(
        func=_up)
    isub.add_parser("down", help="stop them cleanly").set_defaults(func=_down)
    isub.add_parser("status", help="show what runs where").set_defaults(func=_status)


def _up(args: argparse.Namespace) -> int:
    from infra.kafka_local import kafka_up
    from infra.postgres_local import postgres_up
    from infra.procs import InfraError

    s = settings()
    try:
        kafka_up(s)
        postgres_up(s)
    except InfraError as exc:
        print(f"noc infra up: {exc}", file=sys.stderr)
        return 1
    return 0


def _down(args: argparse.Namespace) -> int:
    from infra.kafka_local import kafka_down
    from infra.postgres_local import postgres_down

    s = settings()
    print("kafka stopped" if kafka_down(s) else "kafka was not running")
    print("postgres stopped" if postgres_down(s) else "postgres was not running (or is not ours)")
    return 0


def _status(args: argparse.Namespace) -> int:
    from infra.kafka_local import kafka_status
    from infra.postgres_local import postgres_status

    s = settings()
    print(kafka_status(s))
    print(postgres_status(s))
    return 0
