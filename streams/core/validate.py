"""Input validation and dead letters: classify a decoded input record as OK or a dead-letter reason, and
build ``dead_letter`` records (for validation failures, decode failures and late events alike).

Reference data: the edge feeds every ``ref.sites`` record (and tombstone) into :class:`ReferenceData` and
sets ``loaded`` once it has read that compacted topic to its end offset. Before that, tenants and sites
cannot be judged; by default records are *accepted* then (``before_load="accept"``) rather than
dead-lettered, because a worker restart would otherwise dead-letter good data for as long as the
reference topic takes to load. Edges that can, should read ``ref.sites`` to its end before starting the
input agents; ``before_load="reject"`` dead-letters instead (reason UNKNOWN_SITE, detail says why).

The input contract (:mod:`schemas.contract`) is applied here for the edges: :func:`validate_input` checks the
record's fields against it, then reference data, then its event times against the record's *broker* time (its
Kafka timestamp, which the broker bounds with ``message.timestamp.after.max.ms``): an event more than
``MAX_FUTURE_SKEW_MS`` ahead of it is FUTURE_EVENT, whatever its ``received_at`` claims. A violation is dead-
lettered with the contract's reason (OUT_OF_RANGE, TOO_LONG, BAD_ID, BAD_TEXT, FUTURE_EVENT) and the field
named in the detail.

There is no clock here: FUTURE_EVENT compares the record's event time with reference times the caller passes
in, the broker time above and the input's ``received_at`` (when the upstream system received it, by its own
clock: an event that claims to have happened more than a day after it was received comes from a wrong device
clock). Both are stored with the record, so the verdict is the same live and in a replay, whenever either runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from schemas import contract
from schemas.contract import CONTRACT_REASONS
from schemas.serde import DecodeError
from streams.core.ids import event_time, stable_id
from streams.core.types import Out, Record

HOUR_MS = 3_600_000
DEAD_LETTER_TOPIC = "dead-letters"
UNKNOWN_TENANT = "UNKNOWN_TENANT"
UNKNOWN_SITE = "UNKNOWN_SITE"
FUTURE_EVENT = "FUTURE_EVENT"
LATE = "LATE"
DECODE_REASONS = frozenset({"MALFORMED", "UNKNOWN_SCHEMA", "WRONG_SCHEMA", "MISSING_FIELD"})
# Every reason a consumed record can be dead-lettered with.
REASONS = DECODE_REASONS | CONTRACT_REASONS | {UNKNOWN_TENANT, UNKNOWN_SITE, FUTURE_EVENT, LATE}
# Reference data itself, and records stamped by nocstream, are not checked against reference data.
UNCHECKED_STEMS = frozenset({"site", "person", "shift", "baseline", "model_event", "dead_letter"})


@dataclass(slots=True)
class ReferenceData:
    """Known sites per tenant, from the compacted ``ref.sites`` topic. A tenant is known when it has a site
    (or was added with :meth:`add_tenant`)."""

    sites: dict[int, set[str]] = field(default_factory=dict)
    loaded: bool = False

    def add_site(self, site: Record) -> None:
        self.sites.setdefault(int(site["tenant_id"]), set()).add(str(site["site_id"]))

    def add_tenant(self, tenant_id: int) -> None:
        self.sites.setdefault(int(tenant_id), set())

    def remove_site(self, tenant_id: int, site_id: str) -> None:
        known = self.sites.get(int(tenant_id))
        if known is not None:
            known.discard(site_id)

    def apply(self, key: bytes, site: Record | None) -> None:
        """Apply one ``ref.sites`` record: ``site_key`` (``b"<tenant>:<site>"``) and value, None for a tombstone."""
        if site is not None:
            self.add_site(site)
            return
        tenant, _, site_id = key.decode().partition(":")
        self.remove_site(int(tenant), site_id)

    def knows_tenant(self, tenant_id: int) -> bool:
        return int(tenant_id) in self.sites

    def knows_site(self, tenant_id: int, site_id: str) -> bool:
        return site_id in self.sites.get(int(tenant_id), ())

    def to_dict(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "sites": {str(t): sorted(s) for t, s in sorted(self.sites.items())}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceData:
        return cls({int(t): set(s) for t, s in d["sites"].items()}, bool(d["loaded"]))


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    max_future_skew_ms: int = 24 * HOUR_MS
    before_load: Literal["accept", "reject"] = "accept"


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str | None  # None: OK
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


OK = Verdict(None)


def validate(stem: str, record: Record, ref: ReferenceData, reference_time_ms: int,
             config: ValidationConfig | None = None) -> Verdict:
    """OK, or why the record must be dead-lettered: UNKNOWN_TENANT, UNKNOWN_SITE, FUTURE_EVENT (in that order).
    Inputs go through :func:`validate_input`, which also checks the contract's field domains and broker time."""
    cfg = config or ValidationConfig()
    if stem not in UNCHECKED_STEMS:
        tenant_id, site_id = int(record["tenant_id"]), record.get("site_id")
        if not ref.loaded:
            if cfg.before_load == "reject":
                return Verdict(UNKNOWN_SITE, f"reference data not loaded yet; cannot check site {site_id!r} "
                                             f"of tenant {tenant_id}")
        elif not ref.knows_tenant(tenant_id):
            return Verdict(UNKNOWN_TENANT, f"tenant {tenant_id} is not in ref.sites")
        elif site_id is not None and not ref.knows_site(tenant_id, str(site_id)):
            return Verdict(UNKNOWN_SITE, f"site {site_id!r} is not a site of tenant {tenant_id}")
    try:
        at = event_time(stem, record)
    except KeyError:
        return OK  # records without an event time (none of the inputs today) cannot be in the future
    if at > reference_time_ms + cfg.max_future_skew_ms:
        return Verdict(FUTURE_EVENT, f"event time {at} is {at - reference_time_ms} ms after the reference time "
                                     f"{reference_time_ms} (received_at for inputs; allowed skew "
                                     f"{cfg.max_future_skew_ms} ms)")
    return OK


def validate_input(stem: str, record: Record, ref: ReferenceData, broker_time_ms: int,
                   config: ValidationConfig | None = None) -> Verdict:
    """OK, or why a decoded input must be dead-lettered, in this order: the contract's field domains
    (OUT_OF_RANGE, TOO_LONG, BAD_ID, BAD_TEXT), UNKNOWN_TENANT, UNKNOWN_SITE, FUTURE_EVENT against the record's
    broker time ``broker_time_ms`` (its Kafka timestamp), FUTURE_EVENT against its ``received_at``."""
    bad = contract.check(stem, record, broker_time_ms)  # one pass: the field domains and the broker time
    if bad is not None and bad.reason != contract.FUTURE_EVENT:
        return Verdict(bad.reason, bad.detail)
    verdict = validate(stem, record, ref, int(record["received_at"]), config)  # reference data, received_at
    if bad is not None and verdict.reason not in (UNKNOWN_TENANT, UNKNOWN_SITE):
        return Verdict(bad.reason, bad.detail)  # FUTURE_EVENT against the broker time comes before received_at
    return verdict


def contract_verdict(stem: str, record: Record, broker_time_ms: int | None) -> Verdict:
    """The contract alone (:func:`schemas.contract.check`) as a verdict: for records without reference data to
    check (tickets; the reference records themselves, with ``broker_time_ms`` None)."""
    bad = contract.check(stem, record, broker_time_ms)
    return OK if bad is None else Verdict(bad.reason, bad.detail)


def dead_letter_id(source_topic: str, partition: int, offset: int, component: str) -> str:
    """Stable per source position and component: the same record dead-lettered again gets the same id, and
    two workers that both reject a record (each reads the topic) do not collide."""
    return stable_id("dlq", source_topic, partition, offset, component)


def dead_letter(*, source_topic: str, partition: int, offset: int, reason: str, detail: str, component: str,
                key: bytes | None, value: bytes | None, record_timestamp: int) -> Out:
    """The ``dead-letters`` Out (keyed by source topic) carrying the original key and value bytes."""
    rec = {
        "dead_letter_id": dead_letter_id(source_topic, partition, offset, component),
        "source_topic": source_topic, "partition": int(partition), "offset": int(offset), "reason": reason,
        "detail": detail, "component": component, "key": key, "value": value,
        "record_timestamp": int(record_timestamp),
    }
    return Out(DEAD_LETTER_TOPIC, source_topic.encode(), "dead_letter", rec)


def dead_letter_for_decode_error(err: DecodeError, *, source_topic: str, partition: int, offset: int,
                                 component: str, key: bytes | None, value: bytes | None,
                                 record_timestamp: int) -> Out:
    """A decode failure (MALFORMED, UNKNOWN_SCHEMA, WRONG_SCHEMA, MISSING_FIELD) as a dead letter."""
    return dead_letter(source_topic=source_topic, partition=partition, offset=offset, reason=err.reason,
                       detail=err.detail, component=component, key=key, value=value,
                       record_timestamp=record_timestamp)


def dead_letter_for_verdict(verdict: Verdict, *, source_topic: str, partition: int, offset: int, component: str,
                            key: bytes | None, value: bytes | None, record_timestamp: int) -> Out:
    """A failed :func:`validate` verdict as a dead letter."""
    if verdict.reason is None:
        raise ValueError("an OK verdict is not a dead letter")
    return dead_letter(source_topic=source_topic, partition=partition, offset=offset, reason=verdict.reason,
                       detail=verdict.detail, component=component, key=key, value=value,
                       record_timestamp=record_timestamp)
