"""The one feature function for fraud scoring, shared by training and inline scoring.

Everything here is plain Python over plain dict records (Avro-decoded): no Kafka, no Postgres, no
asyncio, no wall clock. State is kept per person (:class:`PersonState`) and per device
(:class:`DeviceState`) and pruned by *event* time, so the same ordered events always give the same
vectors, whether replayed for training (:class:`HistoryFeaturizer`) or scored live by a Faust agent
(which stores the states in tables through ``to_dict``/``from_dict``).

Live call order for one attendance event: ``v = build_features(att, ps, ds, site, person, shift)``, then
``observe_attendance(ps, ds, att, v)``; activity signals go through ``observe_activity(ps, rec)``.

What the features measure, beyond the punch itself: presence (fixes on the approach and whether they close
in on the punch; after a check-in, how many fixes and what share of them lie far from the checked-in
position), travel (speed discounted by both fixes' accuracy, against the person's fastest plausible trip),
the geofence (distance outside against the person's usual GPS error and usual distance at punches),
lateness against the person's own habit, tours as rounds done against rounds due with the longest gap
between scans (and between any signals), the face score, the roster (is the punch inside its shift).
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
# Speeds over a very short gap are noise: never divide by less than a minute.
MIN_SPEED_GAP_MS = MINUTE_MS
# A "jump": the next fix lands this far beyond both accuracy radii within this time (a teleport).
JUMP_M = 1000.0
JUMP_WITHIN_MS = 30 * MINUTE_MS
# A fix after the check-in this far beyond both accuracy radii from the checked-in position is "away" (a site's
# checkpoints lie within its geofence, at most ~500 m across).
AWAY_M = 600.0
# Location-bearing activity kinds (location updates, checkpoint scans).
_POSITIONED = (1, 3)
USUAL_KMH_FLOOR = 30.0  # a person with no fast trips on record is judged against a city driving speed
ROSTER_SLACK_MS = 3 * HOUR_MS  # a punch this early or late still belongs to its shift
MOVED_M = 200.0  # fix-to-fix moves shorter than this (beyond both accuracy radii) are not timed as travel
ACC_EWMA_ALPHA = 0.05  # the person's usual GPS accuracy, over roughly the last 20 fixes
HABIT_ALPHA = 0.1  # the person's habits at punches (lateness, distance outside the fence), ~the last 10
MAX_TOURS = 16  # tours counted per presence
APPROACH_WINDOW_MS = HOUR_MS  # fixes this close before a punch are its approach
PLAUSIBLE_KMH = 200.0  # fix-to-fix speeds above this are not learned as the person's commute
MIN_USUAL_ACC_M = 5.0

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
    "minutes_from_shift_start",  # check-in, signed: positive = after the scheduled start
    "minutes_from_shift_end",  # check-out, signed: positive = after the scheduled end
    "face_match_score",  # NaN when no face check ran
    "phone_events_2h",
    "location_updates_2h",
    "tasks_2h",
    "checkpoint_scans_2h",
    "mock_fixes_2h",  # activity fixes flagged as mocked in the last 2 h
    "minutes_since_check_in",  # check-out: length of the presence it closes
    "activity_since_check_in",  # check-out: signals of any kind since the check-in
    "tour_rounds_done",  # check-out: tour rounds completed since the check-in (scans / checkpoints, per tour)
    "tour_rounds_due",  # check-out: tour rounds due since the check-in (site tours and their intervals)
    "tour_completion_ratio",  # rounds done / rounds due, at most 1
    "minutes_from_usual_check_in",  # check-in: signed, site-local wall time vs the person's habit
    "local_hour",  # site-local hour of day, fractional
    "check_ins_24h",  # the person's check-ins in the previous 24 h
    "punch_sequence_error",  # check-in while one is open, or check-out with none open
    "location_jumps_2h",  # fixes > 1 km (beyond both accuracy radii) from the previous fix minutes before
    "gps_accuracy_ratio_to_usual",  # punch accuracy / the person's usual accuracy (spoofers are too precise)
    "longest_scan_gap_min",  # check-out: longest time without a checkpoint scan since the check-in
    "longest_signal_gap_min",  # check-out: longest time without any phone signal since the check-in
    "fixes_since_check_in",  # check-out: location fixes since the check-in
    "share_fixes_away_since_check_in",  # check-out: share of them far from the checked-in position
    "fixes_before_punch_1h",  # location fixes in the hour before the punch (the approach)
    "approach_kmh",  # speed at which the last two fixes before the punch closed in on it (0: not moving)
    "speed_over_own_fastest",  # speed since the last fix / the fastest plausible speed seen of this person
    "geofence_distance_over_usual_acc",  # metres outside the fence / the person's usual GPS error
    "geofence_distance_vs_habit_m",  # metres outside the fence minus the person's usual, at punches
    "minutes_late_vs_habit",  # check-in: lateness vs the shift start minus the person's usual lateness
    "rostered_here_now",  # a shift of this person at this site covers the punch (1), none (0), unknown (NaN)
    "scan_gap_phone_on_min",  # check-out: longest scan gap beyond the longest phone silence (on, not scanning)
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
    devices: dict[str, int] = field(default_factory=dict)  # device id -> last punch time
    acc_ewma: float | None = None  # usual GPS accuracy of the person's fixes, metres
    prev_fix: list[float] | None = None  # the fix before last_fix: [t_ms, lat, lon, accuracy_m]
    fast_kmh: float | None = None  # fastest plausible fix-to-fix speed seen of this person
    out_ewma: float | None = None  # usual metres outside the geofence at punches
    late_ewma: float | None = None  # usual minutes after the shift start at check-ins
    open_pos: list[float] | None = None  # position of the open check-in: [lat, lon, accuracy_m]
    since_in_tours: dict[str, int] = field(default_factory=dict)  # tour id -> scans since the check-in
    since_in_fixes: int = 0
    since_in_away: int = 0  # fixes since the check-in far from the checked-in position
    last_scan: int | None = None  # since the check-in (starts at the check-in)
    max_scan_gap: int = 0
    last_signal: int | None = None
    max_signal_gap: int = 0

    def to_dict(self) -> dict[str, Any]:
        # Field by field, not a generic deep copy: a worker does this for every signal (~10x cheaper).
        return {"last_fix": _row(self.last_fix), "last_punch": _row(self.last_punch),
                "activity": list(self.activity), "check_ins": list(self.check_ins),
                "open_check_in": self.open_check_in, "open_site": self.open_site,
                "since_in_activity": self.since_in_activity,
                "devices": dict(self.devices), "acc_ewma": self.acc_ewma, "prev_fix": _row(self.prev_fix),
                "fast_kmh": self.fast_kmh, "out_ewma": self.out_ewma, "late_ewma": self.late_ewma,
                "open_pos": _row(self.open_pos), "since_in_tours": dict(self.since_in_tours),
                "since_in_fixes": self.since_in_fixes, "since_in_away": self.since_in_away,
                "last_scan": self.last_scan, "max_scan_gap": self.max_scan_gap, "last_signal": self.last_signal,
                "max_signal_gap": self.max_signal_gap}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PersonState:
        if not d:
            return cls()
        return cls(
            last_fix=_row(d.get("last_fix")), last_punch=_row(d.get("last_punch")),
            activity=array("q", [a if isinstance(a, int) else pack_activity(*a) for a in d.get("activity") or []]),
            check_ins=list(d.get("check_ins") or []), open_check_in=d.get("open_check_in"),
            open_site=d.get("open_site"), since_in_activity=int(d.get("since_in_activity") or 0),
            devices=dict(d.get("devices") or {}),
            acc_ewma=d.get("acc_ewma"), prev_fix=_row(d.get("prev_fix")), fast_kmh=d.get("fast_kmh"),
            out_ewma=d.get("out_ewma"), late_ewma=d.get("late_ewma"), open_pos=_row(d.get("open_pos")),
            since_in_tours=dict(d.get("since_in_tours") or {}), since_in_fixes=int(d.get("since_in_fixes") or 0),
            since_in_away=int(d.get("since_in_away") or 0), last_scan=d.get("last_scan"),
            max_scan_gap=int(d.get("max_scan_gap") or 0), last_signal=d.get("last_signal"),
            max_signal_gap=int(d.get("max_signal_gap") or 0))


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
    open_in = ps.open_check_in is not None and t >= ps.open_check_in
    if lat is not None and lon is not None:
        reported = rec.get("accuracy_m")
        acc = _acc(reported)
        lat, lon = float(lat), float(lon)
        prev = ps.last_fix
        if prev is not None and 0 <= t - prev[0] <= APPROACH_WINDOW_MS:
            prev_acc = _acc(prev[3])
            if not surely_within_m(prev[1], prev[2], lat, lon, MOVED_M + prev_acc + acc):
                gap_m = haversine_m(prev[1], prev[2], lat, lon) - prev_acc - acc
                if gap_m > JUMP_M and t - prev[0] <= JUMP_WITHIN_MS:
                    jump = 1
                if t - prev[0] >= MIN_SPEED_GAP_MS and gap_m > MOVED_M:
                    kmh = (gap_m / 1000) / ((t - prev[0]) / HOUR_MS)
                    if kmh <= PLAUSIBLE_KMH and (ps.fast_kmh is None or kmh > ps.fast_kmh):
                        ps.fast_kmh = kmh
        if prev is None or prev[0] <= t:
            ps.prev_fix = prev
            ps.last_fix = [t, lat, lon, acc]
        if reported is not None:
            _observe_accuracy(ps, acc)
        if open_in and ps.open_pos is not None:
            ps.since_in_fixes += 1
            op = ps.open_pos
            if not surely_within_m(op[0], op[1], lat, lon, AWAY_M + op[2] + acc) \
                    and haversine_m(op[0], op[1], lat, lon) - op[2] - acc > AWAY_M:
                ps.since_in_away += 1
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
    if open_in:
        ps.since_in_activity += 1
        if ps.last_signal is not None and t > ps.last_signal:
            ps.max_signal_gap = max(ps.max_signal_gap, t - ps.last_signal)
            ps.last_signal = t
        tour = rec.get("tour_id")
        if kind == _KIND_CODE["TOUR_CHECKPOINT_SCANNED"] and tour:
            if tour in ps.since_in_tours or len(ps.since_in_tours) < MAX_TOURS:
                ps.since_in_tours[tour] = ps.since_in_tours.get(tour, 0) + 1
            if ps.last_scan is not None and t > ps.last_scan:
                ps.max_scan_gap = max(ps.max_scan_gap, t - ps.last_scan)
                ps.last_scan = t


def _observe_accuracy(ps: PersonState, acc: float) -> None:
    ps.acc_ewma = acc if ps.acc_ewma is None else ps.acc_ewma + ACC_EWMA_ALPHA * (acc - ps.acc_ewma)


def observe_attendance(ps: PersonState, ds: DeviceState, att: Record, vector: list[float] | None = None) -> None:
    """Fold one punch into the person's and the device's state (call after :func:`build_features`).

    ``vector`` (the punch's features, when the caller has them) also updates the person's habits: usual
    lateness and usual distance outside the fence.
    """
    t = int(att["occurred_at"])
    if vector is not None:
        out = vector[1]
        if not math.isnan(out):
            ps.out_ewma = out if ps.out_ewma is None else ps.out_ewma + HABIT_ALPHA * (out - ps.out_ewma)
        late = vector[18]
        if vector[0] == 1.0 and not math.isnan(late):
            late = max(-120.0, min(late, 240.0))
            ps.late_ewma = late if ps.late_ewma is None else ps.late_ewma + HABIT_ALPHA * (late - ps.late_ewma)
    fix = [t, float(att["lat"]), float(att["lon"]), _acc(att.get("accuracy_m"))]
    _observe_accuracy(ps, fix[3])
    if ps.last_fix is None or ps.last_fix[0] <= t:
        ps.prev_fix = ps.last_fix
        ps.last_fix = list(fix)
    if ps.last_punch is None or ps.last_punch[0] <= t:
        ps.last_punch = list(fix)
    if att["event_type"] == "CHECK_IN":
        ps.check_ins = [*[x for x in ps.check_ins if x > t - CHECK_IN_WINDOW_MS][-(MAX_CHECK_INS - 1):], t]
        ps.open_check_in = t
        ps.open_site = att["site_id"]
        ps.open_pos = fix[1:]
        ps.since_in_activity = ps.since_in_fixes = ps.since_in_away = 0
        ps.since_in_tours = {}
        ps.last_scan = ps.last_signal = t
        ps.max_scan_gap = ps.max_signal_gap = 0
    else:
        ps.open_check_in = None
        ps.open_site = None
        ps.open_pos = None
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


MAX_ROSTER = 6  # shifts remembered per person (the latest by start): today's, yesterday's, the next few


class Roster:
    """Who is rostered when: each person's latest shifts, to find the shift covering a punch that names none.

    Holds shift ids only (the shift records stay in the caller's reference table), at most
    :data:`MAX_ROSTER` per person.
    """

    def __init__(self) -> None:
        self.by_person: dict[tuple[int, str], list[tuple[int, str]]] = {}

    def add(self, shift: Record) -> None:
        key = (int(shift["tenant_id"]), shift["person_id"])
        entry = (int(shift["starts_at"]), shift["shift_id"])
        mine = [e for e in self.by_person.get(key, ()) if e[1] != entry[1]]
        mine.append(entry)
        mine.sort()
        self.by_person[key] = mine[-MAX_ROSTER:]

    def covering(self, shifts: dict[tuple[int, str], Record], tenant: int, person_id: str, t: int) -> Record | None:
        """The person's shift whose span (with :data:`ROSTER_SLACK_MS` either side) covers ``t``, if any."""
        for _, shift_id in reversed(self.by_person.get((tenant, person_id), ())):
            sh = shifts.get((tenant, shift_id))
            if sh is not None and sh.get("person_id") == person_id and sh.get("status") != "CANCELLED" \
                    and int(sh["starts_at"]) - ROSTER_SLACK_MS <= t <= int(sh["ends_at"]) + ROSTER_SLACK_MS:
                return sh
        return None


def build_features(att: Record, ps: PersonState, ds: DeviceState, site: Record | None, person: Record | None,
                   shift: Record | None) -> list[float]:
    """Feature vector of one attendance event, in :data:`FEATURE_NAMES` order; NaN where unknown.

    ``site``/``person``/``shift`` are the reference records (latest versions) or None; for a punch naming no
    shift, ``shift`` is the person's rostered shift covering the punch (:meth:`Roster.covering`) or None when
    there is none. Reads the states, never changes them.
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
    if not shift_id and shift is None:
        v[47] = 0.0  # names no shift and none of the person's is on the roster now
    if shift is not None:
        v[15] = 1.0 if shift.get("person_id") != me else 0.0
        v[16] = 1.0 if shift.get("site_id") != att["site_id"] else 0.0
        v[17] = 1.0 if shift.get("status") == "CANCELLED" else 0.0
        # a check-in is judged against the start, a check-out against the end (the other is the shift's length)
        if check_in:
            v[18] = (t - int(shift["starts_at"])) / MINUTE_MS
        else:
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
        if site is not None:
            done = due = 0.0
            for tour in site.get("tours") or []:
                n_cp = len(tour.get("checkpoint_ids") or [])
                if tour.get("interval_minutes", 0) > 0 and n_cp:
                    rounds = float(elapsed // (MINUTE_MS * tour["interval_minutes"]))
                    due += rounds
                    done += min(ps.since_in_tours.get(tour.get("tour_id", ""), 0) / n_cp, rounds)
            v[28], v[29] = done, due
            v[30] = min(done / due, 1.0) if due else NaN
        v[37] = (max(ps.max_scan_gap, t - ps.last_scan) if ps.last_scan is not None else elapsed) / MINUTE_MS
        v[38] = (max(ps.max_signal_gap, t - ps.last_signal) if ps.last_signal is not None else elapsed) / MINUTE_MS
        v[48] = max(0.0, v[37] - v[38])
        v[39] = float(ps.since_in_fixes)
        if ps.since_in_fixes:
            v[40] = ps.since_in_away / ps.since_in_fixes

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
    # the approach: fixes in the hour before the punch, and whether the last two closed in on it
    fixes = 0
    for a in ps.activity:
        if t - APPROACH_WINDOW_MS < a >> 5 <= t and (a >> 2 & 7) in _POSITIONED:
            fixes += 1
    v[41] = float(fixes)
    last, prev = ps.last_fix, ps.prev_fix
    if last is not None and prev is not None and prev[0] < last[0] <= t and t - prev[0] <= APPROACH_WINDOW_MS:
        closing = haversine_m(prev[1], prev[2], lat, lon) - haversine_m(last[1], last[2], lat, lon)
        v[42] = max(0.0, closing - _acc(prev[3]) - _acc(last[3])) / 1000 / (max(last[0] - prev[0], MIN_SPEED_GAP_MS)
                                                                            / HOUR_MS)
    if not math.isnan(v[7]):
        v[43] = v[7] / max(ps.fast_kmh or 0.0, USUAL_KMH_FLOOR)
    usual_acc = max(ps.acc_ewma or 0.0, MIN_USUAL_ACC_M)
    if not math.isnan(v[1]):
        v[44] = v[1] / usual_acc
        v[45] = v[1] - (ps.out_ewma or 0.0)
    if check_in and not math.isnan(v[18]):
        v[46] = v[18] - (ps.late_ewma if ps.late_ewma is not None else 0.0)
    if shift is not None:
        v[47] = 1.0 if (shift.get("person_id") == me and shift.get("site_id") == att["site_id"]
                        and shift.get("status") != "CANCELLED"
                        and int(shift["starts_at"]) - ROSTER_SLACK_MS <= t <= int(shift["ends_at"]) + ROSTER_SLACK_MS) \
            else 0.0
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
        self.roster = Roster()

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
            shift = self.shifts.get((tenant, shift_id)) if shift_id else \
                self.roster.covering(self.shifts, tenant, rec["person_id"], int(rec["occurred_at"]))
            vec = build_features(rec, ps, ds, self.sites.get((tenant, rec["site_id"])),
                                 self.people.get((tenant, rec["person_id"])), shift)
            observe_attendance(ps, ds, rec, vec)
            return vec
        if stem == "activity_signal":
            observe_activity(self.person_state(tenant, rec["person_id"]), rec)
        elif stem == "site":
            self.sites[(tenant, rec["site_id"])] = rec
        elif stem == "person":
            self.people[(tenant, rec["person_id"])] = reference_view(stem, rec)
        elif stem == "shift":
            view = self.shifts[(tenant, rec["shift_id"])] = reference_view(stem, rec)
            self.roster.add(view)
        return None

    def run(self, items: Iterable[Any]) -> Iterator[tuple[Record, list[float]]]:
        for item in items:
            stem, rec = _stem_record(item)
            vec = self.feed(stem, rec)
            if vec is not None:
                yield rec, vec
