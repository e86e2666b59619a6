from __future__ import annotations

import pytest

from sinks.tickets_state import ALLOWED, STATUSES, decide, ticket_no, year_of


def test_creation_must_be_new() -> None:
    assert decide(None, "NEW").ok
    d = decide(None, "OPEN")
    assert not d.ok and "must be created as NEW" in (d.reason or "")


@pytest.mark.parametrize(("frm", "to"), [("NEW", "OPEN"), ("OPEN", "IN_PROGRESS"), ("IN_PROGRESS", "OPEN"),
                                         ("NEW", "IN_PROGRESS"), ("RESOLVED", "OPEN")])
def test_allowed_moves_without_resolution(frm: str, to: str) -> None:
    d = decide(frm, to, current_resolution="DUPLICATE")
    assert d.ok and d.resolution is None  # back to work clears an earlier resolution


def test_resolve_needs_a_resolution() -> None:
    assert decide("IN_PROGRESS", "RESOLVED").reason == "RESOLVED needs a resolution"
    d = decide("IN_PROGRESS", "RESOLVED", "FALSE_POSITIVE")
    assert d.ok and d.resolution == "FALSE_POSITIVE"
    assert decide("NEW", "RESOLVED", "DUPLICATE").ok  # shortcut for duplicates


def test_close_keeps_or_takes_the_resolution() -> None:
    assert decide("RESOLVED", "CLOSED", current_resolution="FRAUD_CONFIRMED").resolution == "FRAUD_CONFIRMED"
    assert decide("RESOLVED", "CLOSED", "DUPLICATE", "FRAUD_CONFIRMED").resolution == "DUPLICATE"


@pytest.mark.parametrize(("frm", "to"), [("NEW", "CLOSED"), ("OPEN", "NEW"), ("IN_PROGRESS", "CLOSED"),
                                         ("CLOSED", "OPEN"), ("RESOLVED", "IN_PROGRESS")])
def test_refused_moves_say_why(frm: str, to: str) -> None:
    d = decide(frm, to, "RESOLVED_OTHER")
    assert not d.ok and f"{frm} -> {to} is not allowed" in (d.reason or "")


def test_same_status_and_unknown_values_are_refused() -> None:
    assert decide("OPEN", "OPEN").reason == "ticket is already OPEN"
    assert "unknown status" in (decide("OPEN", "DONE").reason or "")
    assert "unknown resolution" in (decide("OPEN", "RESOLVED", "MAYBE").reason or "")
    assert "nothing (final)" in (decide("CLOSED", "NEW").reason or "")


def test_every_status_has_rules_and_closed_is_final() -> None:
    assert set(ALLOWED) == set(STATUSES)
    assert not ALLOWED["CLOSED"]
    for targets in ALLOWED.values():
        assert targets <= set(STATUSES)


def test_ticket_numbers() -> None:
    assert ticket_no(2026, 123) == "NOC-2026-000123"
    assert year_of(1_793_491_200_000) == 2026
    assert year_of(1_798_761_599_999) == 2026 and year_of(1_798_761_600_000) == 2027
