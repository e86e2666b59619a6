"""Record -> row for the NOC feed (event log) and dead letters."""

from __future__ import annotations

import orjson

from sinks.map_inputs import Record, ts
from sinks.tables import Row, TableSpec
from streams.core.ids import stable_id

SINK_COMPONENT = "sink"

EVENT_LOG = TableSpec(
    "event_log", "event_log",
    ("event_id", "type", "ts", "tenant_id", "site_id", "person_id", "payload"),
    key=("event_id", "tenant_id", "ts"), partition_column="ts")


class BadPayload(ValueError):
    """A feed event whose payload is not a JSON document."""


def event_log_row(r: Record) -> Row:
    payload = r["payload"]
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadPayload(f"payload is not JSON: {exc}") from exc
    return (r["event_id"], r["type"], ts(r["timestamp"]), r["tenant_id"], r["site_id"], r["person_id"], payload)


DEAD_LETTERS = TableSpec(
    "dead_letters", "dead_letters",
    ("dead_letter_id", "source_topic", "partition", "offset", "reason", "detail", "component", "key", "value",
     "record_timestamp"),
    key=("dead_letter_id",))


# The instants both Python's datetime and Postgres' timestamptz hold: 0001-01-01 to 9999-12-31 (UTC).
_MIN_MS, _MAX_MS = -62_135_596_800_000, 253_402_300_799_999


def dead_letter_row(r: Record) -> Row:
    """A record of the dead-letters topic. Its Kafka timestamp is clamped into what the column can hold, so a
    dead letter can always be stored whatever the record it is about claimed."""
    at = min(max(int(r["record_timestamp"]), _MIN_MS), _MAX_MS)
    return (r["dead_letter_id"], r["source_topic"], r["partition"], r["offset"], r["reason"], r["detail"],
            r["component"], r["key"], r["value"], ts(at))


def sink_dead_letter(topic: str, partition: int, offset: int, reason: str, detail: str, key: bytes | None,
                     value: bytes | None, timestamp_ms: int) -> Record:
    """A dead_letter record for a record this sink could not store (id as streams.core.validate derives it).

    The detail is cut to 2,000 characters and made storable as Postgres text (NUL and lone surrogates escaped):
    it often quotes the record that could not be stored."""
    return {"dead_letter_id": stable_id("dlq", topic, partition, offset, SINK_COMPONENT), "source_topic": topic,
            "partition": partition, "offset": offset, "reason": reason, "detail": storable_text(detail[:2000]),
            "component": SINK_COMPONENT, "key": key, "value": value, "record_timestamp": timestamp_ms}


def storable_text(text: str) -> str:
    """``text`` with what Postgres text cannot hold (NUL, lone surrogates) written as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
