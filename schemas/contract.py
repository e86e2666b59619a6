"""The input contract: the valid domain of every field of every record upstream systems produce.

Avro already enforces types and enum symbols; this module bounds the values inside those types, so that no
single record can reach code that cannot represent it (a year-9999 timestamp, a NaN latitude, a megabyte
id) or move shared state (a clock, a key space) further than its neighbours can tolerate. It is pure (no
I/O, no clock) and is applied identically by every consumer of the inputs: the worker's pipeline and site
stage, replay (they share ``streams.core``), the Postgres sink and the gateway's feed consumer.

Rules (see README "Input contract" for the per-topic table):

* **Times** (epoch ms): within ``[MIN_TIME_MS, MAX_TIME_MS)`` (2000-01-01 to 2100-01-01 UTC, representable
  by Python ``datetime`` and Postgres ``timestamptz``) -> else ``OUT_OF_RANGE``. The event times of an input
  (``occurred_at``, ``received_at``) may lead the record's *broker* time (its Kafka timestamp, which the
  broker itself bounds with ``message.timestamp.after.max.ms``) by at most ``MAX_FUTURE_SKEW_MS`` -> else
  ``FUTURE_EVENT``. There is no lower bound relative to the broker time (back-fills are legitimate).
* **Ids** (``*_id``, ``device_id``, ``actor``, ``ticket_no``) and **codes** (``alert_type``, ``source``...):
  1 to ``MAX_ID_LEN`` (codes ``MAX_CODE_LEN``) characters of ``A-Z a-z 0-9 . _ - @ + ~ =`` -> else ``BAD_ID``
  (``TOO_LONG`` when longer). ``:`` and ``|`` are excluded: they separate the parts of partition keys
  (``tenant:person``, ``tenant:site:<id>``) and of state keys, so an id containing them could alias another
  key; whitespace and control characters are excluded so that an id prints and compares as what it is.
* **Free text** (``message``, ``title``...): at most its field's length, no control characters other
  than tab, newline and carriage return, no lone surrogates -> ``TOO_LONG`` / ``BAD_TEXT``.
* **Numbers**: finite and inside their physical range (lat [-90, 90], lon [-180, 180], accuracy_m
  [0, 100 km], scores [0, 1], tenant_id [1, 2^53-1]) -> else ``OUT_OF_RANGE``.
* **Arrays**: at most a bounded number of items (``TOO_LONG``), each item checked as its kind.

:func:`check` returns the first violation in field order (the schema's order), so the reason and field of a
dead letter are stable for a given record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BAD_ID",
    "BAD_TEXT",
    "BROKER_MAX_FUTURE_MS",
    "CONTRACT_REASONS",
    "FUTURE_EVENT",
    "INPUT_STEMS",
    "MAX_CODE_LEN",
    "MAX_FUTURE_SKEW_MS",
    "MAX_ID_LEN",
    "MAX_TIME_MS",
    "MIN_TIME_MS",
    "OUT_OF_RANGE",
    "REFERENCE_STEMS",
    "TOO_LONG",
    "Violation",
    "check",
    "check_broker_time",
    "fields",
    "time_in_range",
]

OUT_OF_RANGE = "OUT_OF_RANGE"  # a number or time outside its domain (incl. NaN, +-inf), or an absolute time
TOO_LONG = "TOO_LONG"  # a string or array longer than its field allows
BAD_ID = "BAD_ID"  # an id or code that is empty or has a character outside the id alphabet
BAD_TEXT = "BAD_TEXT"  # free text with a control character or a lone surrogate
FUTURE_EVENT = "FUTURE_EVENT"  # an event time more than MAX_FUTURE_SKEW_MS after the record's broker time
CONTRACT_REASONS: frozenset[str] = frozenset({OUT_OF_RANGE, TOO_LONG, BAD_ID, BAD_TEXT, FUTURE_EVENT})

MIN_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z, inclusive
MAX_TIME_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z, exclusive
MAX_FUTURE_SKEW_MS = 15 * 60_000  # an input's event times may lead its Kafka record timestamp by this much
# message.timestamp.after.max.ms of the input topics: the broker refuses a record whose CreateTime leads the
# broker's clock by more. So no accepted event time leads the broker's clock by more than the sum of the two.
BROKER_MAX_FUTURE_MS = 3_600_000

MAX_ID_LEN = 128
MAX_CODE_LEN = 64
MAX_TENANT_ID = 2**53 - 1  # exact in JSON numbers (the dashboard's JavaScript)
MAX_ACCURACY_M = 100_000.0
MAX_GEOFENCE_M = 100_000.0
MAX_URL_LEN = 2048
MAX_URLS = 20
MAX_DEVICES = 32
MAX_TOURS = 64
MAX_CHECKPOINTS = 256
MAX_INTERVAL_MIN = 7 * 24 * 60

INPUT_STEMS = frozenset({"attendance_event", "activity_signal", "noc_alert", "audit_finding", "ticket"})
REFERENCE_STEMS = frozenset({"site", "person", "shift"})

_ID = re.compile(r"[A-Za-z0-9._@+~=-]+")
_TEXT_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_URL_BAD = re.compile(r"[\x00-\x20\x7f\ud800-\udfff]")  # a URL has no whitespace either


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a record is outside the contract: a reason above, the offending field (dotted path for nested
    ones, e.g. ``tours[2].checkpoint_ids[0]``) and a human-readable detail."""

    reason: str
    field: str
    detail: str


def time_in_range(ms: int) -> bool:
    """True when the epoch-ms value is inside the absolute time range every component can represent."""
    return MIN_TIME_MS <= ms < MAX_TIME_MS


# -- per-kind checks: each takes (field path, value) and returns a Violation or None ---------------------

_Check = Callable[[str, Any], "Violation | None"]
# What the fast path (:func:`_compile`) needs to know of a check: ("id", max length), ("num", lo, hi,
# integral), ("time",), ("enum", symbols) or ("bool",). Checks not listed here are called as they are.
_KIND: dict[_Check, tuple[Any, ...]] = {}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _id(max_len: int = MAX_ID_LEN) -> _Check:
    match = _ID.fullmatch

    def check_id(name: str, v: Any) -> Violation | None:
        if not isinstance(v, str):
            return Violation(BAD_ID, name, f"{name} is not a string: {_short(v)}")
        if len(v) > max_len:
            return Violation(TOO_LONG, name, f"{name} has {len(v)} characters (at most {max_len})")
        if match(v) is None:
            return Violation(BAD_ID, name, f"{name} {_short(v)} is empty or has a character outside "
                                           f"A-Z a-z 0-9 . _ - @ + ~ =")
        return None
    _KIND[check_id] = ("id", max_len)
    return check_id


def _text(max_len: int, bad: re.Pattern[str] = _TEXT_BAD) -> _Check:
    search = bad.search

    def check_text(name: str, v: Any) -> Violation | None:
        if not isinstance(v, str):
            return Violation(BAD_TEXT, name, f"{name} is not a string: {_short(v)}")
        if len(v) > max_len:
            return Violation(TOO_LONG, name, f"{name} has {len(v)} characters (at most {max_len})")
        m = search(v)
        if m is not None:
            return Violation(BAD_TEXT, name, f"{name} has the character U+{ord(m.group()):04X} at {m.start()}")
        return None
    return check_text


def _number(lo: float, hi: float, integral: bool = False) -> _Check:
    def check_number(name: str, v: Any) -> Violation | None:
        # bool is an int; a NaN fails every comparison, so the chained test rejects it with the infinities
        if isinstance(v, bool) or not isinstance(v, int | float) or (integral and not isinstance(v, int)) \
                or not lo <= v <= hi:
            return Violation(OUT_OF_RANGE, name, f"{name} {_short(v)} is outside [{lo}, {hi}]")
        return None
    _KIND[check_number] = ("num", lo, hi, integral)
    return check_number


def _time(name: str, v: Any) -> Violation | None:
    if isinstance(v, bool) or not isinstance(v, int) or not MIN_TIME_MS <= v < MAX_TIME_MS:
        return Violation(OUT_OF_RANGE, name, f"{name} {_short(v)} is outside [{MIN_TIME_MS}, {MAX_TIME_MS}) "
                                             f"(2000-01-01 to 2100-01-01 UTC)")
    return None


_KIND[_time] = ("time",)


def _array(max_items: int, item: _Check) -> _Check:
    def check_array(name: str, v: Any) -> Violation | None:
        if not isinstance(v, list | tuple):
            return Violation(OUT_OF_RANGE, name, f"{name} is not an array: {_short(v)}")
        if len(v) > max_items:
            return Violation(TOO_LONG, name, f"{name} has {len(v)} items (at most {max_items})")
        for i, x in enumerate(v):
            bad = item(f"{name}[{i}]", x)
            if bad is not None:
                return bad
        return None
    return check_array


def _record(spec: tuple[tuple[str, _Check, bool], ...]) -> _Check:
    def check_record(name: str, v: Any) -> Violation | None:
        if not isinstance(v, Mapping):
            return Violation(OUT_OF_RANGE, name, f"{name} is not a record: {_short(v)}")
        return _check_fields(spec, v, f"{name}.")
    return check_record


def _check_fields(spec: tuple[tuple[str, _Check, bool], ...], record: Mapping[str, Any],
                  prefix: str = "") -> Violation | None:
    get = record.get
    for name, fn, nullable in spec:
        v = get(name)
        if v is None:
            if nullable:
                continue
            return Violation(OUT_OF_RANGE, prefix + name, f"{prefix}{name} is missing")
        bad = fn(prefix + name if prefix else name, v)
        if bad is not None:
            return bad
    return None


def _bool(name: str, v: Any) -> Violation | None:
    if not isinstance(v, bool):
        return Violation(OUT_OF_RANGE, name, f"{name} is not a boolean: {_short(v)}")
    return None


_KIND[_bool] = ("bool",)


def _enum(*symbols: str) -> _Check:
    allowed = frozenset(symbols)

    def check_enum(name: str, v: Any) -> Violation | None:
        if not isinstance(v, str) or v not in allowed:
            return Violation(OUT_OF_RANGE, name, f"{name} {_short(v)} is not one of {sorted(allowed)}")
        return None
    _KIND[check_enum] = ("enum", allowed)
    return check_enum


# An IANA zone name: up to three parts of the id alphabet, each starting with a letter, joined by "/"
# (Africa/Nairobi, Etc/GMT+3; not "../x"; every name in Python's tz database matches). Whether the zone exists
# is the consumer's concern (tz databases differ); the pipeline and the site stage fall back to UTC.
_TZ = re.compile(r"[A-Za-z][A-Za-z0-9._+-]*(?:/[A-Za-z][A-Za-z0-9._+-]*){0,2}")


def _timezone(name: str, v: Any) -> Violation | None:
    if not isinstance(v, str) or len(v) > 64 or _TZ.fullmatch(v) is None:
        return Violation(BAD_ID, name, f"{name} {_short(v)} is not an IANA zone name")
    return None


ID, CODE = _id(), _id(MAX_CODE_LEN)
TENANT = _number(1, MAX_TENANT_ID, integral=True)
LAT, LON = _number(-90.0, 90.0), _number(-180.0, 180.0)
ACCURACY = _number(0.0, MAX_ACCURACY_M)
UNIT = _number(0.0, 1.0)
URL = _text(MAX_URL_LEN, _URL_BAD)
SEVERITY = _enum("LOW", "MEDIUM", "HIGH", "CRITICAL")

# (field, check, nullable) in schema order; enum fields Avro already enforces are listed for the sink and the
# gateway, which may check dicts that did not come through the Avro decoder.
_Spec = tuple[tuple[str, _Check, bool], ...]
_COMMON: _Spec = (("event_id", ID, False), ("tenant_id", TENANT, False))
_TIMES: _Spec = (("occurred_at", _time, False), ("received_at", _time, False))
SPECS: dict[str, _Spec] = {
    "attendance_event": (*_COMMON, ("site_id", ID, False), ("person_id", ID, False), *_TIMES,
        ("event_type", _enum("CHECK_IN", "CHECK_OUT"), False), ("shift_id", ID, True), ("lat", LAT, False),
        ("lon", LON, False), ("accuracy_m", ACCURACY, False), ("device_id", ID, False),
        ("is_mock_location", _bool, False), ("face_match_score", UNIT, True)),
    "activity_signal": (*_COMMON, ("site_id", ID, False), ("person_id", ID, False), *_TIMES,
        ("kind", _enum("PHONE_EVENT", "LOCATION_UPDATE", "TASK_COMPLETED", "TOUR_CHECKPOINT_SCANNED"), False),
        ("device_id", ID, True), ("shift_id", ID, True), ("lat", LAT, True), ("lon", LON, True),
        ("accuracy_m", ACCURACY, True), ("is_mock_location", _bool, False), ("phone_event_type", CODE, True),
        ("task_id", ID, True), ("tour_id", ID, True), ("checkpoint_id", ID, True)),
    "noc_alert": (*_COMMON, ("site_id", ID, False), ("person_id", ID, True), *_TIMES,
        ("alert_type", CODE, False), ("severity", SEVERITY, False), ("message", _text(2000), False),
        ("source", CODE, False)),
    "audit_finding": (*_COMMON, ("site_id", ID, False), ("person_id", ID, True), *_TIMES,
        ("finding_type", CODE, False), ("severity", SEVERITY, False), ("evidence_summary", _text(4000), False),
        ("auditor_id", ID, True), ("evidence_urls", _array(MAX_URLS, URL), False)),
    "ticket": (*_COMMON, ("site_id", ID, True), ("person_id", ID, True), *_TIMES,
        ("ticket_id", ID, False), ("ticket_no", ID, True),
        ("category", _enum("SECURITY_AUDIT", "SECURITY_FRAUD", "SECURITY_INCIDENT", "OPERATIONS", "OTHER"), False),
        ("source", _enum("SYSTEM_GENERATED", "USER"), False),
        ("status", _enum("NEW", "OPEN", "IN_PROGRESS", "RESOLVED", "CLOSED"), False),
        ("priority", _enum("LOW", "MEDIUM", "HIGH", "URGENT"), False),
        ("resolution", _enum("FRAUD_CONFIRMED", "FALSE_POSITIVE", "RESOLVED_OTHER", "DUPLICATE"), True),
        ("title", _text(300), False), ("description", _text(8000), False), ("related_event_id", ID, True),
        ("actor", ID, True)),
    "site": (("tenant_id", TENANT, False), ("site_id", ID, False), ("name", _text(200), False),
             ("timezone", _timezone, False),
             ("lat", LAT, False), ("lon", LON, False), ("geofence_radius_m", _number(0.0, MAX_GEOFENCE_M), False),
             ("tours", _array(MAX_TOURS, _record((
                 ("tour_id", ID, False), ("checkpoint_ids", _array(MAX_CHECKPOINTS, ID), False),
                 ("interval_minutes", _number(1, MAX_INTERVAL_MIN, integral=True), False)))), False),
             ("active", _bool, False), ("updated_at", _time, False)),
    "person": (("tenant_id", TENANT, False), ("person_id", ID, False), ("name", _text(200), False),
               ("role", CODE, False), ("home_site_id", ID, True), ("device_ids", _array(MAX_DEVICES, ID), False),
               ("usual_check_in_minute", _number(-1, 1439, integral=True), False), ("active", _bool, False),
               ("updated_at", _time, False)),
    "shift": (("tenant_id", TENANT, False), ("shift_id", ID, False), ("person_id", ID, False),
              ("site_id", ID, False), ("starts_at", _time, False), ("ends_at", _time, False),
              ("status", _enum("SCHEDULED", "CANCELLED"), False), ("updated_at", _time, False)),
}
# Fields judged against the broker time, per stem.
_BROKER_TIMES: dict[str, tuple[str, ...]] = {stem: ("occurred_at", "received_at") for stem in INPUT_STEMS}


# -- the fast path ----------------------------------------------------------------------------------------
# check() runs once per consumed record (~18k/s in one worker), so each stem gets a function compiled from its
# spec: straight-line tests per field, no call per field, ids seen before looked up in a memo instead of
# matched again. It answers only "inside the contract"; anything else goes to the per-field checks above,
# which name the violation (a unit test holds the two to the same verdict).

# Ids already found valid (site, person, device, shift ids repeat on every record of a person): a memo of a
# pure function, so it changes no verdict; bounded (cleared when full) and holding only ids of at most
# MAX_CODE_LEN characters, which are valid in every id and code field.
_GOOD_IDS: set[str] = set()
_GOOD_IDS_MAX = 65_536
_UNIQUE_IDS = frozenset({"event_id", "ticket_id"})  # unique per record: memoising them would only churn


def _remember(v: str) -> None:
    if len(v) <= MAX_CODE_LEN:
        if len(_GOOD_IDS) >= _GOOD_IDS_MAX:
            _GOOD_IDS.clear()
        _GOOD_IDS.add(v)


def _compile(stem: str, spec: _Spec) -> Callable[[Mapping[str, Any], int | None], bool]:
    env: dict[str, Any] = {"good": _GOOD_IDS, "match": _ID.fullmatch, "remember": _remember}
    lines = [f"def fast_{stem}(r, limit):", "    try:"]
    for i, (name, fn, nullable) in enumerate(spec):
        kind = _KIND.get(fn, ("call",))
        lines.append(f"        v = r[{name!r}]")
        guard = "if v is None: pass\n        elif" if nullable else "if v is None: return False\n        elif"
        if kind[0] == "time":
            test = (f"v.__class__ is not int or not {MIN_TIME_MS} <= v < {MAX_TIME_MS} "
                    f"or (limit is not None and v > limit)")
        elif kind[0] == "id":
            test = f"v.__class__ is not str or len(v) > {kind[1]} or match(v) is None"
            if name not in _UNIQUE_IDS:
                lines.append(f"        {guard} v not in good:")
                lines.append(f"            if {test}: return False")
                lines.append("            remember(v)")
                continue
        elif kind[0] == "num":
            cls = "v.__class__ is not int" if kind[3] else "(v.__class__ is not float and v.__class__ is not int)"
            test = f"{cls} or not {kind[1]!r} <= v <= {kind[2]!r}"
        elif kind[0] == "enum":
            env[f"enum{i}"] = kind[1]
            test = f"v not in enum{i}"
        elif kind[0] == "bool":
            test = "v.__class__ is not bool"
        else:
            env[f"check{i}"] = fn
            test = f"check{i}({name!r}, v) is not None"
        lines.append(f"        {guard} {test}: return False")
    lines += ["    except (KeyError, TypeError):  # a missing field, an unhashable value: the slow path names it",
              "        return False", "    return True"]
    exec("\n".join(lines), env)  # the source is built above from this module's constants only
    fast: Callable[[Mapping[str, Any], int | None], bool] = env[f"fast_{stem}"]
    return fast


_FAST = {stem: _compile(stem, spec) for stem, spec in SPECS.items()}


def fields(stem: str) -> tuple[str, ...]:
    """The fields :func:`check` bounds for ``stem``, in the order it checks them."""
    return tuple(f[0] for f in SPECS[stem])


def check(stem: str, record: Mapping[str, Any], broker_time_ms: int | None) -> Violation | None:
    """None when the decoded record is inside the contract. ``broker_time_ms`` None: skip the broker-relative
    checks (absolute checks still apply). Stems without a contract (nocstream's own outputs) pass."""
    spec = SPECS.get(stem)
    if spec is None:
        return None
    if _FAST[stem](record, None if broker_time_ms is None else broker_time_ms + MAX_FUTURE_SKEW_MS) \
            and stem != "shift":
        return None
    bad = _check_fields(spec, record)
    if bad is not None:
        return bad
    if stem == "shift" and record["ends_at"] < record["starts_at"]:
        return Violation(OUT_OF_RANGE, "ends_at", f"ends_at {record['ends_at']} is before starts_at "
                                                  f"{record['starts_at']}")
    if broker_time_ms is not None:
        return check_broker_time(stem, record, broker_time_ms)
    return None


def check_broker_time(stem: str, record: Mapping[str, Any], broker_time_ms: int) -> Violation | None:
    """Only the broker-relative part of :func:`check` (FUTURE_EVENT), for a record :func:`check` passed with
    ``broker_time_ms`` None: lets a consumer put its own checks (reference data) between the two."""
    limit = broker_time_ms + MAX_FUTURE_SKEW_MS
    for name in _BROKER_TIMES.get(stem, ()):
        at = record[name]
        if at > limit:
            return Violation(FUTURE_EVENT, name, f"{name} {at} is {at - broker_time_ms} ms after the record's "
                                                 f"broker time {broker_time_ms} (allowed skew "
                                                 f"{MAX_FUTURE_SKEW_MS} ms)")
    return None

