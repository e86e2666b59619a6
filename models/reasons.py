"""Plain-language descriptions of feature values, for the reasons attached to a fraud score."""

from __future__ import annotations

import math
from collections.abc import Callable

from models.features import FEATURE_NAMES


def _yes(text_yes: str, text_no: str) -> Callable[[float], str]:
    return lambda v: text_yes if v >= 0.5 else text_no


def _signed_minutes(what: str) -> Callable[[float], str]:
    def fmt(v: float) -> str:
        m = round(v)
        if m == 0:
            return f"On time for {what}"
        return f"{abs(m)} min {'after' if m > 0 else 'before'} {what}"
    return fmt


_DESCRIBE: dict[str, Callable[[float], str]] = {
    "is_check_in": _yes("Check-in", "Check-out"),
    "geofence_distance_m": lambda v: "Inside the site geofence" if v <= 0 else f"{v:,.0f} m outside the site geofence",
    "geofence_excess_over_accuracy_m": lambda v: "Within GPS accuracy of the geofence" if v <= 0
    else f"{v:,.0f} m outside the geofence beyond the GPS accuracy",
    "gps_accuracy_m": lambda v: f"GPS accuracy {v:,.0f} m",
    "is_mock_location": _yes("The phone reported a mock (fake) location", "Location not flagged as mocked"),
    "km_from_last_fix": lambda v: f"{v:,.1f} km from the previous position",
    "minutes_since_last_fix": lambda v: f"{v:,.0f} min since the previous position",
    "speed_kmh_since_last_fix": lambda v: f"Implied travel speed {v:,.0f} km/h since the previous position",
    "speed_kmh_since_last_punch": lambda v: f"Implied travel speed {v:,.0f} km/h since the previous punch",
    "device_other_people_24h": lambda v: f"Device used by {v:.0f} other people in 24 h" if v else
    "Device used by no one else in 24 h",
    "device_punches_24h": lambda v: f"{v:.0f} punches on this device in 24 h",
    "device_registered": _yes("Registered device", "Device not registered to this guard"),
    "device_new_for_person": _yes("First punch from this device", "Known device"),
    "shift_missing": _yes("No scheduled shift given", "Shift given"),
    "shift_unknown": _yes("Shift not in the schedule", "Shift is in the schedule"),
    "shift_other_person": _yes("Shift belongs to another guard", "Own shift"),
    "shift_other_site": _yes("Shift is at another site", "Shift at this site"),
    "shift_cancelled": _yes("Shift was cancelled", "Shift not cancelled"),
    "minutes_from_shift_start": _signed_minutes("the shift start"),
    "minutes_from_shift_end": _signed_minutes("the shift end"),
    "face_match_score": lambda v: f"Face match {v:.2f}",
    "phone_events_2h": lambda v: f"{v:.0f} phone events in 2 h",
    "location_updates_2h": lambda v: f"{v:.0f} location updates in 2 h",
    "tasks_2h": lambda v: f"{v:.0f} tasks completed in 2 h",
    "checkpoint_scans_2h": lambda v: f"{v:.0f} tour checkpoints scanned in 2 h",
    "mock_fixes_2h": lambda v: f"{v:.0f} mocked location fixes in 2 h",
    "minutes_since_check_in": lambda v: f"{v:,.0f} min on site since check-in",
    "activity_since_check_in": lambda v: f"{v:.0f} phone signals since check-in",
    "tour_checkpoints_scanned": lambda v: f"{v:.0f} tour checkpoints scanned this shift",
    "tour_checkpoints_expected": lambda v: f"{v:.0f} tour checkpoints due this shift",
    "tour_completion_ratio": lambda v: f"Tours {v:.0%} complete",
    "minutes_from_usual_check_in": _signed_minutes("the guard's usual check-in time"),
    "local_hour": lambda v: f"Local time {int(v):02d}:{round((v % 1) * 60) % 60:02d}",
    "check_ins_24h": lambda v: f"{v:.0f} check-ins in the previous 24 h",
    "punch_sequence_error": _yes("Punch out of sequence (double check-in or check-out without check-in)",
                                 "Punch in sequence"),
    "location_jumps_2h": lambda v: f"{v:.0f} sudden location jumps (over 1 km) in 2 h",
    "gps_accuracy_ratio_to_usual": lambda v: f"GPS accuracy {v:.2f}x the guard's usual",
}
assert set(_DESCRIBE) == set(FEATURE_NAMES), "every feature needs a description"


def describe(feature: str, value: float) -> str:
    if math.isnan(value):
        return f"{feature.replace('_', ' ')}: unknown"
    fmt = _DESCRIBE.get(feature)
    return fmt(value) if fmt else f"{feature} = {value:g}"
