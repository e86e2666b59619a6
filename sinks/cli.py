"""``noc db migrate|status|prune``, ``noc sink`` and ``noc ticket set``."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from typing import Any

from sinks.batching import BatchPolicy


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="database schema: migrations and partition retention")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    m = dbsub.add_parser("migrate", help="apply pending SQL migrations (sinks/migrations)")
    _dsn(m)
    m.set_defaults(func=_migrate)
    s = dbsub.add_parser("status", help="list migrations and whether they are applied")
    _dsn(s)
    s.set_defaults(func=_status)
    p = dbsub.add_parser("prune", help="drop daily partitions older than their retention")
    _dsn(p)
    p.add_argument("--now", help="ISO-8601 instant to measure retention from (default: now)")
    p.add_argument("--keep", action="append", default=[], metavar="TABLE=DAYS", help="override a table's retention")
    p.set_defaults(func=_prune)

    k = sub.add_parser("sink", help="consume the pipeline's topics into Postgres")
    _dsn(k)
    k.add_argument("--bootstrap", help="Kafka bootstrap servers (default: settings)")
    k.add_argument("--namespace", help="topic namespace (default: settings, 'noc')")
    k.add_argument("--topics", help="comma-separated short topic names (default: every sunk topic)")
    k.add_argument("--group", default="noc-sink", help="consumer group (workers of a group share partitions)")
    k.add_argument("--instance-id", help="static group membership id (a restarted worker resumes at once)")
    k.add_argument("--batch-size", type=int, default=5000, help="records per batch (bounds memory)")
    k.add_argument("--batch-ms", type=int, default=500, help="max wait before a partial batch is written")
    k.add_argument("--until-caught-up", action="store_true", help="stop when every assigned partition is done")
    k.add_argument("--max-idle", type=float, help="stop after this many seconds without a record")
    k.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    k.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")
    k.add_argument("--no-publish", action="store_true", help="do not produce feed events / dead letters")
    k.add_argument("--prune-every", type=float, metavar="SECONDS",
                   help="drop daily partitions past their retention this often (default: never; see noc db prune)")
    k.add_argument("--keep", action="append", default=[], metavar="TABLE=DAYS", help="override a table's retention")
    k.set_defaults(func=_sink)

    t = sub.add_parser("ticket", help="change a ticket's status (as the gateway does)")
    tsub = t.add_subparsers(dest="ticket_command", required=True)
    ts = tsub.add_parser("set", help="move a ticket to a status")
    _dsn(ts)
    ts.add_argument("ticket_id")
    ts.add_argument("status")
    ts.add_argument("--tenant", type=int, required=True)
    ts.add_argument("--actor", default="cli")
    ts.add_argument("--resolution")
    ts.add_argument("--note")
    ts.add_argument("--bootstrap")
    ts.add_argument("--namespace")
    ts.set_defaults(func=_ticket_set)


def _dsn(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="Postgres DSN (default: NOC_PG_DSN / the local cluster)")


def _settings_dsn(args: argparse.Namespace) -> str:
    from infra.config import settings

    return str(args.dsn or settings().pg_dsn)


def _migrate(args: argparse.Namespace) -> int:
    from sinks.migrate import migrate

    migrate(_settings_dsn(args), log=True)
    return 0


def _status(args: argparse.Namespace) -> int:
    from sinks.migrate import status

    for version, name, applied in status(_settings_dsn(args)):
        print(f"{'applied' if applied else 'PENDING'}  {name}  ({version})")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from sinks.migrate import connect
    from sinks.partitions import prune

    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    keep = _keep(args.keep)
    with connect(_settings_dsn(args), autocommit=True) as conn:
        dropped = prune(conn, now, keep)
    print(f"dropped {len(dropped)} partitions" + (": " + ", ".join(dropped) if dropped else ""))
    return 0


def _keep(items: list[str]) -> dict[str, int]:
    from sinks.partitions import PARTITIONED

    keep = {k: int(v) for k, v in (item.split("=", 1) for item in items)}
    unknown = set(keep) - set(PARTITIONED)
    if unknown:
        raise SystemExit(f"--keep: not partitioned tables: {', '.join(sorted(unknown))} "
                         f"(partitioned: {', '.join(PARTITIONED)})")
    return keep


def _sink(args: argparse.Namespace) -> int:
    from infra.config import settings
    from sinks.routes import SUNK_TOPICS
    from sinks.worker import SinkConfig, run_sink
    from sinks.writer import SinkFatal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    s = settings()
    topics = tuple(t.strip() for t in args.topics.split(",")) if args.topics else SUNK_TOPICS
    unknown = [t for t in topics if t not in SUNK_TOPICS]
    if unknown:
        raise SystemExit(f"not sunk topics: {', '.join(unknown)} (known: {', '.join(SUNK_TOPICS)})")
    cfg = SinkConfig(dsn=_settings_dsn(args), bootstrap=args.bootstrap or s.bootstrap,
                     namespace=args.namespace or s.namespace, topics=topics, group=args.group,
                     policy=BatchPolicy(args.batch_size, args.batch_ms), until_caught_up=args.until_caught_up,
                     max_idle_s=args.max_idle, metrics_port=args.metrics_port, run_migrations=not args.no_migrate,
                     instance_id=args.instance_id, publish=not args.no_publish, prune_every_s=args.prune_every,
                     retention_days=_keep(args.keep))
    try:
        stats = run_sink(cfg)
    except SinkFatal as exc:
        logging.getLogger("noc.sink").error("stopping: %s", exc)
        return 3
    print(json.dumps({"records": stats.records, "batches": stats.batches, "rows": stats.rows, "dead": stats.dead,
                      "feed": stats.feed, "db_retries": stats.db_retries, "seconds": round(stats.seconds, 2)}),
          flush=True)
    return 0


def _ticket_set(args: argparse.Namespace) -> int:
    from infra.config import settings
    from sinks.tickets_api import change_ticket, kafka_publisher

    s = settings()
    res = change_ticket(_settings_dsn(args), args.tenant, args.ticket_id, args.status, actor=args.actor,
                        resolution=args.resolution, note=args.note,
                        publish=kafka_publisher(args.bootstrap or s.bootstrap, args.namespace or s.namespace))
    if not res.ok:
        print(f"refused: {res.reason}")
        return 1
    assert res.ticket is not None
    print(f"{res.ticket['ticket_no']} is now {res.ticket['status']} (version {res.ticket['version']})")
    return 0
