"""The documented WebSocket message of one feed event (the runbook's contract, the default mode of the feed).

``{"type": "<event type>", "timestamp": "<ISO 8601>", "tenant_id": <n>, ...the event's own fields..., "event_id",
"cursor", "site_id", "person_id", "produced_at"}``: the payload's fields at the top level (the envelope's keys win
over a payload field of the same name), the event time as ISO 8601 UTC with milliseconds. ``anomaly_detected``
also carries the names the runbook's snippet reads: ``anomaly_type`` (the anomaly's metric), ``fraud_score`` (its
score) and ``person_name`` (from ``ref.people``; null when unknown).

Built once per event per process, lazily (only when a client in this mode is sent the event), and cached on the
event as its WebSocket frame (:func:`gateway.hub.per_event_frame`), so a tick writes the same bytes to every client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["event_message"]

_ENVELOPE = ("type", "timestamp", "tenant_id", "event_id", "cursor", "site_id", "person_id", "produced_at")


def _iso(ms: Any) -> Any:
    if not isinstance(ms, int):
        return ms
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return ms  # a timestamp no calendar holds: passed on as the number it is


def event_message(data: bytes, event_type: str, person_name: str | None = None) -> bytes:
    """The documented message (JSON bytes) of a feed event, from its batched-mode JSON ``data``; ``person_name``
    is the person's name where the gateway knows it (``gateway.people``)."""
    env: dict[str, Any] = orjson.loads(data)
    payload = env.get("payload")
    out: dict[str, Any] = dict(payload) if isinstance(payload, dict) else {"payload": payload}
    for key in _ENVELOPE:
        if key in env and (env[key] is not None or key not in out):
            out[key] = env[key]
    out["timestamp"] = _iso(env.get("timestamp"))
    if event_type == "anomaly_detected" and isinstance(payload, dict):
        out.setdefault("anomaly_type", payload.get("metric"))
        out.setdefault("fraud_score", payload.get("score"))
        out.setdefault("person_name", person_name)
    return orjson.dumps(out)
