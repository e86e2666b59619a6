"""Changing a ticket from outside the stream (the gateway): validate, write history, publish the feed event.

    result = change_ticket(dsn, tenant_id=1, ticket_id="tkt-...", status="RESOLVED", actor="u-17",
                           resolution="FALSE_POSITIVE", publish=kafka_publisher(bootstrap, namespace))
    if not result.ok: return 409, result.reason

The feed event is published after the commit; its id is stable (from the change id), so publishing again
after a failure is harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from sinks.migrate import CONNECT_TIMEOUT_S
from sinks.tickets_store import Change, apply_change, get_ticket, history, ticket_json
from streams.core.ids import stable_id, tenant_key

Publish = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class ChangeResult:
    ok: bool
    ticket: dict[str, Any] | None  # the ticket after the change (or as it stands, when refused)
    reason: str | None = None  # why it was refused
    event: dict[str, Any] | None = None  # the ticket_updated noc_event published


def kafka_publisher(bootstrap: str, namespace: str = "noc", timeout_s: float = 10.0, connect: bool = False) -> Publish:
    """A publish function producing noc_events to ``<namespace>.events`` (waits for delivery). ``connect``: connect
    and fetch the topic's metadata now (raises KafkaException when that fails), so the first publish does not wait
    for them."""
    from confluent_kafka import KafkaException, Producer

    from schemas.serde import encode
    from schemas.topics import topic

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "message.timeout.ms": int(timeout_s * 1000)})
    if connect:
        producer.list_topics(topic("events", namespace), timeout=timeout_s)

    def publish(event: dict[str, Any]) -> None:
        errors: list[str] = []
        producer.produce(topic("events", namespace), key=tenant_key(event["tenant_id"]),
                         value=encode("noc_event", event), timestamp=event["timestamp"],
                         on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
        if producer.flush(timeout_s) != 0 or errors:
            raise KafkaException(f"ticket_updated not delivered: {errors or 'timeout'}")

    return publish


def change_ticket(dsn: str, tenant_id: int, ticket_id: str, status: str, *, actor: str,
                  resolution: str | None = None, note: str | None = None, priority: str | None = None,
                  publish: Publish | None = None, at_ms: int | None = None) -> ChangeResult:
    """Move a ticket to ``status``; refused (ok False, with the reason) when the state machine forbids it."""
    at = at_ms if at_ms is not None else int(time.time() * 1000)
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute("SET statement_timeout = 10000")
        with conn.transaction():
            current = get_ticket(conn, tenant_id, ticket_id)
            if current is None:
                return ChangeResult(False, None, f"no ticket {ticket_id} for tenant {tenant_id}")
            change_id = stable_id("api", ticket_id, current["version"] + 1, status)
            applied = apply_change(conn, Change(change_id, ticket_id, tenant_id, status, at, "API", actor,
                                                resolution, note, priority))
    if not applied.ok:
        return ChangeResult(False, ticket_json(applied.ticket) if applied.ticket else None, applied.reason)
    assert applied.ticket is not None and applied.feed is not None
    if publish is not None:
        publish(applied.feed)
    return ChangeResult(True, ticket_json(applied.ticket), event=applied.feed)


def ticket_with_history(dsn: str, tenant_id: int, ticket_id: str) -> dict[str, Any] | None:
    """The ticket and its history (oldest first), or None when the tenant has no such ticket."""
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute("SET statement_timeout = 10000")
        t = get_ticket(conn, tenant_id, ticket_id)
        if t is None:
            return None
        return {**ticket_json(t), "history": [ticket_json(h) for h in history(conn, tenant_id, ticket_id)]}
