"""The ticket state machine and ticket numbers: pure functions, no database.

    NEW ──> OPEN ──> IN_PROGRESS ──> RESOLVED ──> CLOSED (final)
     │       ^  └──────────────────────^ │ ^
     │       └──────── reopen ───────────┘ │
     └─ shortcuts: NEW -> IN_PROGRESS, NEW -> RESOLVED (e.g. a duplicate); IN_PROGRESS -> OPEN (back to the queue)

RESOLVED needs a resolution; reopening (RESOLVED -> OPEN) clears it; CLOSED keeps the resolution it had
(or takes one given with the change). A change to the current status is refused (nothing to do).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

STATUSES = ("NEW", "OPEN", "IN_PROGRESS", "RESOLVED", "CLOSED")
RESOLUTIONS = ("FRAUD_CONFIRMED", "FALSE_POSITIVE", "RESOLVED_OTHER", "DUPLICATE")
PRIORITIES = ("LOW", "MEDIUM", "HIGH", "URGENT")

ALLOWED: dict[str, frozenset[str]] = {
    "NEW": frozenset({"OPEN", "IN_PROGRESS", "RESOLVED"}),
    "OPEN": frozenset({"IN_PROGRESS", "RESOLVED"}),
    "IN_PROGRESS": frozenset({"OPEN", "RESOLVED"}),
    "RESOLVED": frozenset({"CLOSED", "OPEN"}),
    "CLOSED": frozenset(),
}


@dataclass(frozen=True, slots=True)
class Decision:
    ok: bool
    reason: str | None = None  # why it was refused
    resolution: str | None = None  # the ticket's resolution after the change

    @staticmethod
    def refuse(reason: str) -> Decision:
        return Decision(False, reason)


def decide(current: str | None, target: str, resolution: str | None = None,
           current_resolution: str | None = None) -> Decision:
    """May a ticket in ``current`` (None: does not exist yet) move to ``target``? With the resulting resolution."""
    if target not in STATUSES:
        return Decision.refuse(f"unknown status {target!r}")
    if resolution is not None and resolution not in RESOLUTIONS:
        return Decision.refuse(f"unknown resolution {resolution!r}")
    if current is None:
        if target != "NEW":
            return Decision.refuse(f"ticket does not exist; it must be created as NEW, not {target}")
        return Decision(True, resolution=None)
    if current == target:
        return Decision.refuse(f"ticket is already {current}")
    if target not in ALLOWED[current]:
        allowed = ", ".join(sorted(ALLOWED[current])) or "nothing (final)"
        return Decision.refuse(f"{current} -> {target} is not allowed; from {current}: {allowed}")
    if target == "RESOLVED":
        if resolution is None:
            return Decision.refuse("RESOLVED needs a resolution")
        return Decision(True, resolution=resolution)
    if target == "CLOSED":
        return Decision(True, resolution=resolution or current_resolution)
    return Decision(True, resolution=None)  # back to work: any earlier resolution no longer holds


def ticket_no(year: int, number: int) -> str:
    """Human ticket number, per tenant and year: ``NOC-2026-000123``."""
    return f"NOC-{year:04d}-{number:06d}"


def year_of(ms: int) -> int:
    return datetime.fromtimestamp(ms / 1000, UTC).year
