"""The one feature function for fraud scoring, shared by training and inline scoring.

Everything here is plain Python over plain dict records (Avro-decoded): no Kafka, no Postgres, no
asyncio, no wall clock. State is kept per person (:class:`PersonState`) and per device
(:class:`DeviceState`) and pruned by *event* time, so the same ordered events always give the same
vectors, whether replayed for training (:class:`HistoryFeaturizer`) or scored live by a Faust agent
(which stores the states in tables through ``to_dict``/``from_dict``).

Live call order for one attendance event: ``v = build_features(att, ps, ds, site, person, shift)``, then
``observe_attendance(ps, ds, att)``; activity signals go through ``observe_activity(ps, rec)``.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.core.geo import haversine_m, surely_within_m  # the same great-circle distance as the telemetry windows

Record = dict[str, Any]
NaN = float("nan")

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
ACTIVITY_WINDOW_MS = 2 * HOUR_MS
DEVICE_WINDOW_MS = DAY_MS
CHECK_IN_WINDOW_MS = DAY_MS
PERSON_DEVICE_TTL_MS = 90 * DAY_MS
# An open check-in older than this is stale (a forgotten check-out), not the current shift.
OPEN_CHECK_IN_MAX_MS = 20 * HOUR_MS
# Hard caps keep table values small even for a flood of events inside the windows.
MAX_ACTIVITY = 512
MAX_DEVICE_PUNCHES = 64
MAX_CHECK_INS = 32
MAX_PERSON_DEVICES = 16
MAX_CHECKPOINTS = 256
# Speeds over a very short gap are noise: never divide by less than a minute.
MIN_SPEED_GAP_MS = MINUTE_MS
# A "jump": the next fix lands this far beyond both accuracy radii within this time (a teleport).
JUMP_M = 1000.0
JUMP_WITHIN_MS = 30 * MINUTE_MS
ACC_EWMA_ALPHA = 0.05  # the person's usual GPS accuracy, over roughly the last 20 fixes

ACTIVITY_KINDS = ("PHONE_EVENT", "LOCATION_UPDATE", "TASK_COMPLETED", "TOUR_CHECKPOINT_SCANNED")
_KIND_CODE = {k: i for i, k in enumerate(ACTIVITY_KINDS)}

FEATURE_NAMES: tuple[str, ...] = (
    "is_check_in",  # 1 check-in, 0 check-out
    "geofence_distance_m",  # metres outside the site geofence, 0 inside
    "geofence_excess_over_accuracy_m",  # outside distance not explained by the GPS accuracy radius
    "gps_accuracy_m",
    "is_mock_location",
    "km_from_last_fix",  # from the person's previous fix (punch or activity with a position)
    "minutes_since_last_fix",
    "speed_kmh_since_last_fix",  # accuracy-discounted distance / time
    "speed_kmh_since_last_punch",  # the same against the previous punch only
    "device_other_people_24h",  # other people who punched on this device in the last 24 h
    "device_punches_24h",
    "device_registered",  # 1 if the device is one of the person's registered devices, NaN if unknown
    "device_new_for_person",  # first punch of this person on this device (within 90 days)
    "shift_missing",  # punch without a shift id
    "shift_unknown",  # shift id given but no such shift
    "shift_other_person",  # the shift belongs to someone else
    "shift_other_site",  # the shift is at another site
    "shift_cancelled",
    "minutes_from_shift_start",  # signed: positive = after the scheduled start
    "minutes_from_shift_end",  # signed: positive = after the scheduled end
    "face_match_score",  # NaN when no face check ran
    "phone_events_2h",
    "location_updates_2h",
    "tasks_2h",
    "checkpoint_scans_2h",
    "mock_fixes_2h",  # activity fixes flagged as mocked in the last 2 h
    "minutes_since_check_in",  # check-out: length of the presence it closes
    "activity_since_check_in",  # check-out: signals of any kind since the check-in
    "tour_checkpoints_scanned",  # check-out: distinct checkpoints scanned since the check-in
    "tour_checkpoints_expected",  # check-out: checkpoints due since the check-in (site tours)
    "tour_completion_ratio",  # scanned / expected
    "minutes_from_usual_check_in",  # check-in: signed, site-local wall time vs the person's habit
    "local_hour",  # site-local hour of day, fractional
    "check_ins_24h",  # the person's check-ins in the previous 24 h
    "punch_sequence_error",  # check-in while one is open, or check-out with none open
    "location_jumps_2h",  # fixes > 1 km (beyond both accuracy radii) from the previous fix minutes before
    "gps_accuracy_ratio_to_usual",  # punch accuracy / the person's usual accuracy (spoofers are too precise)
)
FEATURE_HASH: str = hashlib.sha256("\n".join(FEATURE_NAMES).encode()).hexdigest()
N_FEATURES = len(FEATURE_NAMES)
INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


@dataclass(slots=True)
class PersonState:
    """What one person's recent history contributes to the features (bounded; pruned by event time)."""

    last_fix: list[float] | None = None  # [t_ms, lat, lon, accuracy_m]
    last_punch: list[float] | None = None  # [t_ms, lat, lon, accuracy_m]
    # Time-ordered, packed (pack_activity), 8 bytes per signal: as Python ints in a list it was 6 MB more of the
    # worker with 10,000 people.
    activity: array[int] = field(default_factory=lambda: array("q"))
    check_ins: list[int] = field(default_factory=list)  # check-in times, last 24 h
    open_check_in: int | None = None  # time of the check-in not yet checked out
    open_site: str | None = None
    since_in_activity: int = 0
    since_in_checkpoints: list[str] = field(default_factory=list)  # distinct, capped
    devices: dict[str, int] = field(default_factory=dict)  # device id -> last punch time
    acc_ewma: float | None = None  # usual GPS accuracy of the person's fixes, metres

    def to_dict(self) -> dict[str, Any]:
        # Field by field, not a generic deep copy: a worker does this for every signal (~10x cheaper).
        return {"last_fix": _row(self.last_fix), "last_punch": _row(self.last_punch),
                "activity": list(self.activity), "check_ins": list(self.check_ins),
                "open_check_in": self.open_check_in, "open_site": self.open_site,
                "since_in_activity": self.since_in_activity, "since_in_checkpoints": list(self.since_in_checkpoints),
                "devices": dict(self.devices), "acc_ewma": self.acc_ewma}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PersonState:
        if not d:
            return cls()
        return cls(
            last_fix=_row(d.get("last_fix")), last_punch=_row(d.get("last_punch")),
            activity=array("q", [a if isinstance(a, int) else pack_activity(*a) for a in d.get("activity") or []]),
            check_ins=list(d.get("check_ins") or []), open_check_in=d.get("open_check_in"),
            open_site=d.get("open_site"), since_in_activity=int(d.get("since_in_activity") or 0),
            since_in_checkpoints=list(d.get("since_in_checkpoints") or []), devices=dict(d.get("devices") or {}),
            acc_ewma=d.get("acc_ewma"))


def pack_activity(t: int, kind: int, mocked: int, jump: int = 0) -> int:
    """One activity entry as one int, ordered by time: ``t << 5 | kind << 2 | mocked << 1 | jump``. A list
    [t, kind, mocked, jump] per signal was ~16 MB of the worker with 10,000 people (374k small lists); states
    written before hold such lists (before the jump flag, three fields), which :meth:`PersonState.from_dict`
    packs. Event times up to year 2^58 ms fit the signed 64 bits."""
    return int(t) << 5 | int(kind) << 2 | int(mocked) << 1 | int(jump)


def _row(v: list[float] | None) -> list[float] | None:
    return None if v is None else list(v)


@dataclass(slots=True)
class DeviceState:
    """Recent punches on one device: [t_ms, person_id], last 24 h (bounded)."""

    punches: list[list[Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"punches": [list(p) for p in self.punches]}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DeviceState:
        return cls(punches=[list(p) for p in (d or {}).get("punches") or []])


# -- geometry and time helpers -------------------------------------------------------------------

@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_minute_of_day(t_ms: int, tz: str) -> float:
    """Minutes after local midnight at the site (DST-aware), from event time."""
    dt = datetime.fromtimestamp(t_ms / 1000, tz=UTC).astimezone(_zone(tz))
    return dt.hour * 60 + dt.minute + dt.second / 60


def _speed_kmh(fix: list[float] | None, t: int, lat: float, lon: float, acc: float) -> tuple[float, float, float]:
    """(km, minutes, km/h) from a previous fix; the distance is discounted by both accuracy radii."""
    if fix is None or fix[0] > t:
        return NaN, NaN, NaN
    d = haversine_m(fix[1], fix[2], lat, lon)
    gap = t - fix[0]
    eff = max(0.0, d - _acc(fix[3]) - acc)
    return d / 1000, gap / MINUTE_MS, (eff / 1000) / (max(gap, MIN_SPEED_GAP_MS) / HOUR_MS)


def _acc(a: float | None) -> float:
    return 0.0 if a is None or math.isnan(a) else max(0.0, float(a))


# -- state updates -------------------------------------------------------------------------------


def _prune_activity(ps: PersonState, now: int) -> None:
    cut = (now - ACTIVITY_WINDOW_MS + 1) << 5  # entries before it have t <= now - window
    act = ps.activity
    i = 0
    while i < len(act) and act[i] < cut:
        i += 1
    if i:
        del act[:i]
    if len(act) > MAX_ACTIVITY:
        del act[: len(act) - MAX_ACTIVITY]


def observe_activity(ps: PersonState, rec: Record) -> None:
    """Fold one activity signal into the person's state."""
    t = int(rec["occurred_at"])
    kind = _KIND_CODE.get(rec.get("kind", ""), 0)
    mocked = 1 if rec.get("is_mock_location") else 0
    lat, lon = rec.get("lat"), rec.get("lon")
    jump = 0
    if lat is not None and lon is not None:
        reported = rec.get("accuracy_m")
        acc = _acc(reported)
        prev = ps.last_fix
        if prev is not None and 0 <= t - prev[0] <= JUMP_WITHIN_MS:
            lat, lon = float(lat), float(lon)
            prev_acc = _acc(prev[3])
            if not surely_within_m(prev[1], prev[2], lat, lon, JUMP_M + prev_acc + acc) \
                    and haversine_m(prev[1], prev[2], lat, lon) - prev_acc - acc > JUMP_M:
                jump = 1
        if prev is None or prev[0] <= t:
            ps.last_fix = [t, float(lat), float(lon), acc]
        if reported is not None:
            _observe_accuracy(ps, acc)
    act = ps.activity
    entry = pack_activity(t, kind, mocked, jump)
    if not act or act[-1] >> 5 <= t:
        act.append(entry)
    else:  # slightly late signal: keep the list time-ordered
        j = len(act)
        while j > 0 and act[j - 1] >> 5 > t:
            j -= 1
        act.insert(j, entry)
    _prune_activity(ps, max(t, act[-1] >> 5))
    if ps.open_check_in is not None and t >= ps.open_check_in:
        ps.since_in_activity += 1
        cp = rec.get("checkpoint_id")
        if kind == _KIND_CODE["TOUR_CHECKPOINT_SCANNED"] and cp and cp not in ps.since_in_checkpoints \
                and len(ps.since_in_checkpoints) < MAX_CHECKPOINTS:
            ps.since_in_checkpoints.append(cp)


def _observe_accuracy(ps: PersonState, acc: float) -> None:
    ps.acc_ewma = acc if ps.acc_ewma is None else ps.acc_ewma + ACC_EWMA_ALPHA * (acc - ps.acc_ewma)


def observe_attendance(ps: PersonState, ds: DeviceState, att: Record) -> None:
    """Fold one punch into the person's and the device's state (call after :func:`build_features`)."""
    t = int(att["occurred_at"])
    fix = [t, float(att["lat"]), float(att["lon"]), _acc(att.get("accuracy_m"))]
    _observe_accuracy(ps, fix[3])
    if ps.last_fix is None or ps.last_fix[0] <= t:
        ps.last_fix = list(fix)
    if ps.last_punch is None or ps.last_punch[0] <= t:
        ps.last_punch = list(fix)
    if att["event_type"] == "CHECK_IN":
        ps.check_ins = [*[x for x in ps.check_ins if x > t - CHECK_IN_WINDOW_MS][-(MAX_CHECK_INS - 1):], t]
        ps.open_check_in = t
        ps.open_site = att["site_id"]
        ps.since_in_activity = 0
        ps.since_in_checkpoints = []
    else:
        ps.open_check_in = None
        ps.open_site = None
    dev = att["device_id"]
    ps.devices[dev] = max(t, ps.devices.get(dev, t))
    ps.devices = {k: v for k, v in ps.devices.items() if v > t - PERSON_DEVICE_TTL_MS}
    if len(ps.devices) > MAX_PERSON_DEVICES:
        keep = sorted(ps.devices.items(), key=lambda kv: (kv[1], kv[0]))[-MAX_PERSON_DEVICES:]
        ps.devices = dict(keep)
    _prune_activity(ps, t)
    punches = [p for p in ds.punches if p[0] > t - DEVICE_WINDOW_MS]
    punches.append([t, att["person_id"]])
    punches.sort(key=lambda p: p[0])
    ds.punches = punches[-MAX_DEVICE_PUNCHES:]


# -- the feature vector ----------------------------------------------------------------------------

# The fields of ref.people and ref.shifts records that build_features reads. Live and in training the reference
# records are kept as these views only (reference_view): 10,000 people and their shifts in full were ~12 MB of
# the worker, names and audit fields included.
REFERENCE_FIELDS: dict[str, tuple[str, ...]] = {
    "person": ("tenant_id", "person_id", "device_ids", "usual_check_in_minute"),
    "shift": ("tenant_id", "shift_id", "person_id", "site_id", "status", "starts_at", "ends_at"),
}


def reference_view(stem: str, rec: Record) -> Record:
    """What the features read of a person or shift record (other stems: the record itself)."""
    fields = REFERENCE_FIELDS.get(stem)
    return rec if fields is None else {k: rec[k] for k in fields if k in rec}


def build_features(att: Record, ps: PersonState, ds: DeviceState, site: Record | None, person: Record | None,
                   shift: Record | None) -> list[float]:
    """Feature vector of one attendance event, in :data:`FEATURE_NAMES` order; NaN where unknown.

    ``site``/``person``/``shift`` are the reference records (latest versions) or None. Reads the states,
    never changes them.
    """
    v = [NaN] * N_FEATURES
    t = int(att["occurred_at"])
    lat, lon = float(att["lat"]), float(att["lon"])
    acc = _acc(att.get("accuracy_m"))
    check_in = att["event_type"] == "CHECK_IN"
    v[0] = 1.0 if check_in else 0.0

    if site is not None:
        outside = max(0.0, haversine_m(lat, lon, float(site["lat"]), float(site["lon"]))
                      - float(site["geofence_radius_m"]))
        v[1] = outside
        v[2] = max(0.0, outside - acc)
    v[3] = acc
    v[4] = 1.0 if att.get("is_mock_location") else 0.0

    v[5], v[6], v[7] = _speed_kmh(ps.last_fix, t, lat, lon, acc)
    v[8] = _speed_kmh(ps.last_punch, t, lat, lon, acc)[2]

    me = att["person_id"]
    recent = [p for p in ds.punches if t - DEVICE_WINDOW_MS < p[0] <= t]
    v[9] = float(len({p[1] for p in recent if p[1] != me}))
    v[10] = float(len(recent))
    dev = att["device_id"]
    registered = (person or {}).get("device_ids") or []
    v[11] = (1.0 if dev in registered else 0.0) if registered else NaN
    seen = ps.devices.get(dev)
    v[12] = 0.0 if seen is not None and t - PERSON_DEVICE_TTL_MS < seen <= t else 1.0

    shift_id = att.get("shift_id")
    v[13] = 0.0 if shift_id else 1.0
    v[14] = 1.0 if shift_id and shift is None else 0.0
    if shift is not None:
        v[15] = 1.0 if shift.get("person_id") != me else 0.0
        v[16] = 1.0 if shift.get("site_id") != att["site_id"] else 0.0
        v[17] = 1.0 if shift.get("status") == "CANCELLED" else 0.0
        v[18] = (t - int(shift["starts_at"])) / MINUTE_MS
        v[19] = (t - int(shift["ends_at"])) / MINUTE_MS

    face = att.get("face_match_score")
    v[20] = NaN if face is None else float(face)

    counts = [0, 0, 0, 0]
    mocked = jumps = 0
    for a in ps.activity:
        if t - ACTIVITY_WINDOW_MS < a >> 5 <= t:
            counts[a >> 2 & 7] += 1
            mocked += a >> 1 & 1
            jumps += a & 1
    v[21], v[22], v[23], v[24] = (float(c) for c in counts)
    v[25] = float(mocked)

    open_in = ps.open_check_in
    if open_in is not None and not (open_in <= t < open_in + OPEN_CHECK_IN_MAX_MS):
        open_in = None
    if not check_in and open_in is not None:
        elapsed = t - open_in
        v[26] = elapsed / MINUTE_MS
        v[27] = float(ps.since_in_activity)
        scanned = len(ps.since_in_checkpoints)
        v[28] = float(scanned)
        if site is not None:
            expected = sum(len(tour.get("checkpoint_ids") or []) * (elapsed // (MINUTE_MS * tour["interval_minutes"]))
                           for tour in site.get("tours") or [] if tour.get("interval_minutes", 0) > 0)
            v[29] = float(expected)
            v[30] = min(scanned / expected, 1.0) if expected else NaN

    tz = (site or {}).get("timezone") or "UTC"
    minute = local_minute_of_day(t, tz)
    usual = (person or {}).get("usual_check_in_minute", -1)
    if check_in and usual is not None and usual >= 0:
        v[31] = (minute - usual + 720) % 1440 - 720  # circular: 23:50 vs 00:10 is -20, not 1420
    v[32] = minute / 60
    v[33] = float(sum(1 for x in ps.check_ins if t - CHECK_IN_WINDOW_MS < x < t))
    v[34] = 1.0 if (check_in and open_in is not None) or (not check_in and open_in is None) else 0.0
    v[35] = float(jumps)
    if ps.acc_ewma is not None and ps.acc_ewma > 0:
        v[36] = acc / ps.acc_ewma
    return v


# -- replaying history -----------------------------------------------------------------------------


def _stem_record(item: Any) -> tuple[str, Record]:
    """Accept ``(stem, record)`` pairs or simulator records (objects with ``stem`` and ``record``)."""
    if isinstance(item, tuple):
        return item[0], item[1]
    return item.stem, item.record


class HistoryFeaturizer:
    """Consumes a time-ordered stream of records and yields ``(attendance record, vector)``.

    Reference records (site, person, shift) replace the previous version of the same entity; activity
    feeds :func:`observe_activity`; each attendance event goes through :func:`build_features` then
    :func:`observe_attendance` — exactly the live call sequence. Other stems are ignored.
    """

    def __init__(self) -> None:
        self.sites: dict[tuple[int, str], Record] = {}
        self.people: dict[tuple[int, str], Record] = {}
        self.shifts: dict[tuple[int, str], Record] = {}
        self.persons: dict[tuple[int, str], PersonState] = {}
        self.devices: dict[tuple[int, str], DeviceState] = {}

    def person_state(self, tenant: int, person_id: str) -> PersonState:
        key = (tenant, person_id)
        ps = self.persons.get(key)
        if ps is None:
            ps = self.persons[key] = PersonState()
        return ps

    def device_state(self, tenant: int, device_id: str) -> DeviceState:
        key = (tenant, device_id)
        ds = self.devices.get(key)
        if ds is None:
            ds = self.devices[key] = DeviceState()
        return ds

    def feed(self, stem: str, rec: Record) -> list[float] | None:
        """Apply one record; return the vector when it is an attendance event."""
        tenant = int(rec["tenant_id"])
        if stem == "attendance_event":
            ps = self.person_state(tenant, rec["person_id"])
            ds = self.device_state(tenant, rec["device_id"])
            shift_id = rec.get("shift_id")
            vec = build_features(rec, ps, ds, self.sites.get((tenant, rec["site_id"])),
                                 self.people.get((tenant, rec["person_id"])),
                                 self.shifts.get((tenant, shift_id)) if shift_id else None)
            observe_attendance(ps, ds, rec)
            return vec
        if stem == "activity_signal":
            observe_activity(self.person_state(tenant, rec["person_id"]), rec)
        elif stem == "site":
            self.sites[(tenant, rec["site_id"])] = rec
        elif stem == "person":
            self.people[(tenant, rec["person_id"])] = reference_view(stem, rec)
        elif stem == "shift":
            self.shifts[(tenant, rec["shift_id"])] = reference_view(stem, rec)
        return None

    def run(self, items: Iterable[Any]) -> Iterator[tuple[Record, list[float]]]:
        for item in items:
            stem, rec = _stem_record(item)
            vec = self.feed(stem, rec)
            if vec is not None:
                yield rec, vec
