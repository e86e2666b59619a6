"""``noc replay --sink``: load a sandbox's outputs into their own Postgres schema, never the live tables.

The schema is ``replay_<sandbox>`` (created if missing); the sinks' migrations run inside it and the sink
worker reads only the sandbox's topics, in its own consumer group, until caught up. It publishes nothing
back to Kafka (``publish=False``), so the replay's only writes stay the sandbox topics and this schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streams.replay_io import ReplayError, check_sandbox

SCHEMA_PREFIX = "replay_"
IDLE_STOP_S = 15.0  # backstop: stop when nothing arrived for this long even if "caught up" is not reported


def schema_for(sandbox: str) -> str:
    name = SCHEMA_PREFIX + re.sub(r"[^a-z0-9_]", "_", sandbox.lower())
    if len(name) > 63:  # Postgres identifiers
        raise ReplayError(f"sandbox name too long for a schema name: {sandbox!r}")
    return name


def dsn_with_schema(dsn: str, schema: str) -> str:
    """``dsn`` with ``options=-csearch_path=<schema>`` (replacing any search_path it set)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ReplayError(f"bad schema name {schema!r}")
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass
class SinkReport:
    schema: str
    dsn: str
    records: int
    rows: int
    seconds: float


def sink_sandbox(dsn: str, bootstrap: str, sandbox: str, source: str, topics: Iterable[str]) -> SinkReport:
    """Sink the sandbox's ``topics`` (those the sinks know) into schema ``replay_<sandbox>``."""
    import psycopg

    from sinks.routes import SUNK_TOPICS
    from sinks.worker import SinkConfig, SinkWorker

    check_sandbox(sandbox, source)
    schema = schema_for(sandbox)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    sunk = tuple(t for t in topics if t in SUNK_TOPICS)
    if not sunk:
        raise ReplayError("nothing to sink: the replay produced no topic the sinks know")
    target = dsn_with_schema(dsn, schema)
    cfg = SinkConfig(dsn=target, bootstrap=bootstrap, namespace=sandbox, topics=sunk, group=f"{sandbox}.noc-sink",
                     until_caught_up=True, max_idle_s=IDLE_STOP_S, publish=False)
    stats = SinkWorker(cfg).run()
    return SinkReport(schema, target, stats.records, stats.rows, stats.seconds)


def drop_schema(dsn: str, sandbox: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema_for(sandbox)} CASCADE")
