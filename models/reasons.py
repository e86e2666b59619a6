"""Plain-language reasons for a fraud score: the evidence a feature measures, in words.

``describe(feature, vector)`` reads the feature's value and, where one number alone does not say what was
seen, its companions in the same vector (rounds done *of* rounds due, the speed *and* the distance).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from models.features import FEATURE_NAMES, INDEX

Vec = Sequence[float]


def _v(vec: Vec, name: str) -> float:
    return float(vec[INDEX[name]])


def _known(x: float) -> bool:
    return not math.isnan(x)


def _yes(text_yes: str, text_no: str) -> Callable[[float, Vec], str]:
    return lambda v, _: text_yes if v >= 0.5 else text_no


def _signed_minutes(what: str) -> Callable[[float, Vec], str]:
    def fmt(v: float, _: Vec) -> str:
        m = round(v)
        if m == 0:
            return f"on time for {what}"
        return f"{abs(m)} min {'after' if m > 0 else 'before'} {what}"
    return fmt


def _minutes(m: float) -> str:
    return f"{m / 60:.1f} h" if m >= 90 else f"{m:.0f} min"


def _outside(v: float, vec: Vec) -> str:
    if v <= 0:
        return "inside the site geofence"
    acc = _v(vec, "gps_accuracy_m")
    return f"{v:,.0f} m outside the geofence with a {acc:,.0f} m GPS fix" if _known(acc) else \
        f"{v:,.0f} m outside the geofence"


def _rounds(_: float, vec: Vec) -> str:
    done, due = _v(vec, "tour_rounds_done"), _v(vec, "tour_rounds_due")
    if not (_known(done) and _known(due)):
        return "tour rounds unknown"
    return f"{math.floor(done + 1e-9):.0f} of {due:.0f} tour rounds done"


def _approach(v: float, vec: Vec) -> str:
    if v == 0:
        return "no fixes on the approach to the site in the hour before"
    km = _v(vec, "km_from_last_fix")
    mins = _v(vec, "minutes_since_last_fix")
    where = f"; the last {km:,.1f} km away {mins:,.0f} min before" if _known(km) and _known(mins) else ""
    return f"{v:.0f} fixes on the approach in the hour before{where}"


def _closing(v: float, vec: Vec) -> str:
    if v < 1:
        km = _v(vec, "km_from_last_fix")
        far = f" {km:,.1f} km away" if _known(km) else ""
        return f"the phone's fixes were not moving towards the site (last{far}): the punch appears from nowhere"
    return f"the phone closed in on the site at {v:,.0f} km/h"


def _speed(v: float, vec: Vec) -> str:
    km, mins = _v(vec, "km_from_last_fix"), _v(vec, "minutes_since_last_fix")
    if _known(km) and _known(mins):
        return f"{km:,.1f} km in {mins:,.0f} min since the previous fix: {v:,.0f} km/h beyond both GPS errors"
    return f"implied travel speed {v:,.0f} km/h"


def _away_share(v: float, vec: Vec) -> str:
    n = _v(vec, "fixes_since_check_in")
    return f"{v:.0%} of {n:.0f} fixes since the check-in far from where it was made"


def _fixes_since(v: float, vec: Vec) -> str:
    mins = _v(vec, "minutes_since_check_in")
    return f"{v:.0f} location fixes in {_minutes(mins)} since the check-in" if _known(mins) else \
        f"{v:.0f} location fixes since the check-in"


def _face(v: float, _: Vec) -> str:
    if v < 0.6:
        return f"face match {v:.2f}: the selfie does not look like this guard"
    if v < 0.8:
        return f"face match {v:.2f}: a weak likeness"
    return f"face match {v:.2f}"


def _accuracy_ratio(v: float, vec: Vec) -> str:
    acc = _v(vec, "gps_accuracy_m")
    if v < 0.5:
        return f"a {acc:,.0f} m fix, far more precise than this guard's phone usually reports ({v:.2f}x)"
    return f"GPS accuracy {v:.2f}x this guard's usual"


def _vs_fastest(v: float, vec: Vec) -> str:
    return f"{v:.1f}x this guard's fastest trip on record"


_DESCRIBE: dict[str, Callable[[float, Vec], str]] = {
    "is_check_in": _yes("check-in", "check-out"),
    "geofence_distance_m": _outside,
    "geofence_excess_over_accuracy_m": lambda v, _: "within GPS error of the geofence" if v <= 0
    else f"{v:,.0f} m outside the geofence beyond the reported GPS error",
    "gps_accuracy_m": lambda v, _: f"GPS accuracy {v:,.0f} m",
    "is_mock_location": _yes("the phone flagged the location as mocked (fake GPS)", "location not flagged as mocked"),
    "km_from_last_fix": lambda v, vec: f"{v:,.1f} km from the previous fix",
    "minutes_since_last_fix": lambda v, _: f"{v:,.0f} min since the previous fix",
    "speed_kmh_since_last_fix": _speed,
    "speed_kmh_since_last_punch": lambda v, _: f"{v:,.0f} km/h needed since the previous punch",
    "device_other_people_24h": lambda v, _: f"this phone punched for {v:.0f} other guards in 24 h" if v else
    "no one else punched on this phone in 24 h",
    "device_punches_24h": lambda v, _: f"{v:.0f} punches on this phone in 24 h",
    "device_registered": _yes("a phone registered to this guard", "a phone not registered to this guard"),
    "device_new_for_person": _yes("the guard's first punch on this phone", "a phone this guard has used before"),
    "shift_missing": _yes("no shift named on the punch", "shift named"),
    "shift_unknown": _yes("the shift named is not on the roster", "shift on the roster"),
    "shift_other_person": _yes("the shift belongs to another guard", "own shift"),
    "shift_other_site": _yes("the shift is at another site", "shift at this site"),
    "shift_cancelled": _yes("the shift was cancelled", "shift not cancelled"),
    "minutes_from_shift_start": _signed_minutes("the shift start"),
    "minutes_from_shift_end": _signed_minutes("the shift end"),
    "face_match_score": _face,
    "phone_events_2h": lambda v, _: f"{v:.0f} phone events in 2 h",
    "location_updates_2h": lambda v, _: f"{v:.0f} location updates in 2 h",
    "tasks_2h": lambda v, _: f"{v:.0f} tasks completed in 2 h",
    "checkpoint_scans_2h": lambda v, _: f"{v:.0f} checkpoint scans in 2 h",
    "mock_fixes_2h": lambda v, _: f"{v:.0f} mocked location fixes in 2 h",
    "minutes_since_check_in": lambda v, _: f"{_minutes(v)} since the check-in",
    "activity_since_check_in": lambda v, vec: f"{v:.0f} phone signals in {_minutes(_v(vec, 'minutes_since_check_in'))}"
    " since the check-in" if v else "no phone signal at all since the check-in",
    "tour_rounds_done": _rounds,
    "tour_rounds_due": _rounds,
    "tour_completion_ratio": _rounds,
    "minutes_from_usual_check_in": _signed_minutes("the guard's usual check-in time"),
    "local_hour": lambda v, _: f"local time {int(v):02d}:{round((v % 1) * 60) % 60:02d}",
    "check_ins_24h": lambda v, _: f"{v:.0f} check-ins in the previous 24 h",
    "punch_sequence_error": _yes("punch out of sequence (a second check-in, or a check-out with none open)",
                                 "punch in sequence"),
    "location_jumps_2h": lambda v, _: f"{v:.0f} jumps of over 1 km between fixes in 2 h",
    "gps_accuracy_ratio_to_usual": _accuracy_ratio,
    "longest_scan_gap_min": lambda v, _: f"{_minutes(v)} without a checkpoint scan",
    "longest_signal_gap_min": lambda v, _: f"{_minutes(v)} without any phone signal",
    "fixes_since_check_in": _fixes_since,
    "share_fixes_away_since_check_in": _away_share,
    "fixes_before_punch_1h": _approach,
    "approach_kmh": _closing,
    "speed_over_own_fastest": _vs_fastest,
    "geofence_distance_over_usual_acc": lambda v, vec: f"{_v(vec, 'geofence_distance_m'):,.0f} m outside the "
    f"geofence, {v:.0f}x this guard's usual GPS error" if v > 0 else "inside the site geofence",
    "geofence_distance_vs_habit_m": lambda v, _: f"{v:,.0f} m further outside the geofence than this guard usually "
    "punches" if v > 0 else "no further out than this guard usually punches",
    "minutes_late_vs_habit": lambda v, _: f"{abs(v):.0f} min {'later' if v > 0 else 'earlier'} than this guard "
    "usually arrives for a shift",
    "scan_gap_phone_on_min": lambda v, _: f"{_minutes(v)} longer without a checkpoint scan than the phone was ever "
    "silent: on, but not patrolling",
    "rostered_here_now": _yes("on the roster here now", "not rostered at this site at this time"),
}
assert set(_DESCRIBE) == set(FEATURE_NAMES), "every feature needs a description"


def describe(feature: str, vector: Vec) -> str:
    """The evidence behind ``feature`` in ``vector``, in words."""
    value = float(vector[INDEX[feature]])
    if math.isnan(value):
        return f"{feature.replace('_', ' ')}: unknown"
    return _DESCRIBE[feature](value, vector)


__all__ = ["describe"]
