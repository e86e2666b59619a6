"""Feedback loop: a resolved fraud ticket labels the prediction behind it (pure; the edges publish it)."""

from __future__ import annotations

from typing import Any

from models.features import Record

FEEDBACK = {"FRAUD_CONFIRMED": True, "FALSE_POSITIVE": False}
# A confirmed fraud is filed under the scenario its strongest reason points to.
_SCENARIO_BY_FEATURE = {
    "is_mock_location": "GPS_SPOOFING", "mock_fixes_2h": "GPS_SPOOFING",
    "speed_kmh_since_last_fix": "IMPOSSIBLE_TRAVEL", "speed_kmh_since_last_punch": "IMPOSSIBLE_TRAVEL",
    "km_from_last_fix": "IMPOSSIBLE_TRAVEL",
    "geofence_distance_m": "OFF_GEOFENCE", "geofence_excess_over_accuracy_m": "OFF_GEOFENCE",
    "device_other_people_24h": "BUDDY_PUNCHING", "device_registered": "BUDDY_PUNCHING",
    "device_new_for_person": "BUDDY_PUNCHING", "face_match_score": "BUDDY_PUNCHING",
    "shift_unknown": "GHOST_SHIFT", "shift_missing": "GHOST_SHIFT", "shift_other_person": "GHOST_SHIFT",
    "activity_since_check_in": "GHOST_SHIFT",
    "tour_completion_ratio": "MISSED_TOUR", "tour_checkpoints_scanned": "MISSED_TOUR",
    "minutes_from_shift_start": "LATE_ARRIVAL", "minutes_from_usual_check_in": "LATE_ARRIVAL",
}


def is_feedback(ticket: Record) -> bool:
    """A resolved ticket whose resolution says whether the flagged event was fraud."""
    return (ticket.get("status") in ("RESOLVED", "CLOSED") and ticket.get("resolution") in FEEDBACK
            and bool(ticket.get("related_event_id")))


def label_from_ticket(ticket: Record, score: Record) -> dict[str, Any] | None:
    """The label record for the prediction a resolved ticket is about, or None if it is no feedback.

    ``score`` is the fraud_score record named by ``ticket.related_event_id`` (by score_id or event_id); the
    label is about its attendance event. Redelivery gives the same ``label_id``; a later resolution of the
    same event replaces the earlier label downstream (same id).
    """
    if not is_feedback(ticket):
        return None
    if ticket["related_event_id"] not in (score["score_id"], score["event_id"]):
        raise ValueError(f"ticket {ticket['ticket_id']} is about {ticket['related_event_id']}, "
                         f"not score {score['score_id']}")
    fraud = FEEDBACK[ticket["resolution"]]
    scenario = "NONE"
    if fraud:
        top = score["reasons"][0]["feature"] if score.get("reasons") else ""
        scenario = _SCENARIO_BY_FEATURE.get(top, "UNKNOWN")
    return {
        "label_id": f"TICKET_RESOLUTION:{score['event_id']}",
        "tenant_id": int(score["tenant_id"]),
        "site_id": score.get("site_id"),
        "person_id": score.get("person_id"),
        "event_id": score["event_id"],
        "is_fraud": fraud,
        "scenario": scenario,
        "source": "TICKET_RESOLUTION",
        "occurred_at": int(score["occurred_at"]),
    }
