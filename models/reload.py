"""Hot reload for a running worker: apply each model-events record to the worker's :class:`ModelCache`.

Sans-I/O apart from the artifact read inside :meth:`ModelCache.apply`. The worker calls
:func:`on_model_event` for every record of the compacted model-events topic — from offset 0 at start-up
(the topic keeps the latest event per tenant, so a replay ends on the active models) and then live.
It never raises: an undecodable record or an unusable model gives an outcome with ``error`` set (the
worker logs it or dead-letters the bytes) while the previous scorer stays in use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from models.scoring import ModelCache, ModelLoadError

STEM = "model_event"


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    changed: bool  # the tenant's active scorer was swapped (or removed)
    tenant_id: int | None = None
    model_version: str | None = None  # the version the event names
    error: str | None = None  # why nothing changed, when the event could not be applied
    reason: str | None = None  # dead-letter reason for undecodable bytes (serde DecodeError reasons)

    @property
    def ok(self) -> bool:
        return self.error is None


def on_model_event(cache: ModelCache, value: bytes | dict[str, Any] | None) -> ReloadOutcome:
    """Decode (when given bytes) and apply one model_event; report what happened, never raise.

    A tombstone (``None``) changes nothing: models are retired by a DEACTIVATED event, not by deletion.
    """
    if value is None:
        return ReloadOutcome(False)
    if isinstance(value, bytes | bytearray | memoryview):
        from schemas.serde import DecodeError, decode

        try:
            event = decode(bytes(value), expected=STEM)
        except DecodeError as exc:
            return ReloadOutcome(False, error=f"undecodable model event: {exc}", reason=exc.reason)
    else:
        event = value
    tenant = event.get("tenant_id")
    version = event.get("model_version")
    try:
        changed = cache.apply(event)
    except ModelLoadError as exc:
        return ReloadOutcome(False, tenant, version, error=str(exc))
    except (KeyError, TypeError, ValueError) as exc:  # a record that decodes but is not a usable event
        return ReloadOutcome(False, tenant, version, error=f"invalid model event: {exc!r}")
    return ReloadOutcome(changed, tenant, version)


def warm_up(cache: ModelCache, values: Iterable[bytes | dict[str, Any] | None]) -> list[ReloadOutcome]:
    """Apply a replay of the model-events topic (start-up); the outcomes in order."""
    return [on_model_event(cache, v) for v in values]
