"""``noc infra up|down|status``: the local Kafka broker (or a replicated cluster) and Postgres."""

from __future__ import annotations

import argparse
import sys

from infra.config import settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infra", help="start, stop or show the local Kafka broker and Postgres")
    isub = p.add_subparsers(dest="infra_command", required=True)
    up = isub.add_parser("up", help="start Kafka (KRaft, from Maven jars) and Postgres; harmless when running")
    down = isub.add_parser("down", help="stop them cleanly")
    for sp in (up, down):
        sp.add_argument("--brokers", type=int, default=1,
                        help="1: the development broker (127.0.0.1:9092, .cache/kafka); 3 or more: a replicated "
                             "cluster beside it (ports from NOC_CLUSTER_PORT, default 19092; .cache/kafka-cluster)")
    up.set_defaults(func=_up)
    down.set_defaults(func=_down)
    isub.add_parser("status", help="show what runs where (nodes, controller, under-replicated partitions)"
                    ).set_defaults(func=_status)


def _up(args: argparse.Namespace) -> int:
    from infra.kafka_local import kafka_up
    from infra.postgres_local import postgres_up
    from infra.procs import InfraError

    s = settings()
    try:
        if args.brokers > 1:
            from infra.kafka_cluster import cluster_config, cluster_up

            cluster_up(cluster_config(s, args.brokers), jars_from=s)
            print(f"use it with NOC_BOOTSTRAP={cluster_config(s, args.brokers).bootstrap}")
        else:
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
    if args.brokers > 1:
        from infra.kafka_cluster import cluster_config, cluster_down

        nodes = cluster_down(cluster_config(s, args.brokers))
        print(f"kafka cluster nodes stopped: {nodes}" if nodes else "kafka cluster was not running")
        return 0
    print("kafka stopped" if kafka_down(s) else "kafka was not running")
    print("postgres stopped" if postgres_down(s) else "postgres was not running (or is not ours)")
    return 0


def _status(args: argparse.Namespace) -> int:
    from infra.kafka_cluster import cluster_config, cluster_status
    from infra.kafka_local import kafka_status
    from infra.postgres_local import postgres_status

    s = settings()
    print(kafka_status(s))
    cluster = cluster_config(s)
    if cluster.root.exists():
        nodes = sorted(int(d.name.split("-", 1)[1]) for d in cluster.root.glob("node-*") if d.name[5:].isdigit())
        print(cluster_status(cluster_config(s, max(nodes, default=3))))
    print(postgres_status(s))
    return 0
