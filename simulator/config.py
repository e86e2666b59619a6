"""Simulation settings: one frozen dataclass, plain values, no I/O.

Rates are per *shift* for the fraud scenarios (``scenario_rate`` is split evenly over the seven kinds
unless a kind has its own rate in ``scenario_rates``) and per *event* for out-of-order delivery.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# 2026-11-01T00:00:00Z: a fixed default so that the same seed gives the same records on any day.
DEFAULT_START_MS = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)

SCENARIOS: tuple[str, ...] = (
    "BUDDY_PUNCHING",
    "GPS_SPOOFING",
    "IMPOSSIBLE_TRAVEL",
    "OFF_GEOFENCE",
    "GHOST_SHIFT",
    "MISSED_TOUR",
    "LATE_ARRIVAL",
)
# Scenarios about the shift as a whole: their label goes on the shift's check-in (and optionally its check-out).
SHIFT_SCENARIOS = frozenset({"GHOST_SHIFT", "MISSED_TOUR", "LATE_ARRIVAL"})
# Shift scenarios whose evidence only exists after the check-in (the absent activity, the missed tours):
# in "observable" mode their fraud label goes on the check-out.
AFTER_CHECK_IN_SCENARIOS = frozenset({"GHOST_SHIFT", "MISSED_TOUR"})

ShiftLabels = Literal["observable", "check_in", "check_in_and_out"]
SHIFT_LABEL_MODES: tuple[str, ...] = ("observable", "check_in", "check_in_and_out")


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 42
    tenants: int = 2
    sites_per_tenant: int = 10
    guards_per_site: int = 8
    start: int = DEFAULT_START_MS  # UTC epoch ms
    span: int = 6 * HOUR_MS  # simulated duration, ms
    scenario_rate: float = 0.05  # share of shifts carrying a fraud scenario, all kinds together
    scenario_rates: Mapping[str, float] = field(default_factory=dict)  # per-kind overrides (share of shifts)
    late_rate: float = 0.002  # share of activity/attendance events delivered out of order
    hard_negatives: float = 1.0  # scale of the legit-but-suspicious-looking cases (0 turns them off)
    alerts_per_site_hour: float = 0.25  # background NOC alerts
    audits_per_site_day: float = 0.6  # audit visits (each yields 1-3 findings)
    ops_tickets_per_site_day: float = 0.4  # helpdesk tickets unrelated to attendance
    fraud_ticket_rate: float = 0.35  # share of fraudulent check-ins a supervisor raises a ticket about
    suspicious_ticket_rate: float = 0.25  # share of legit-but-suspicious check-ins that get a ticket
    # Where the shift-level frauds are labelled. "observable" (default): on the punch where the fraud can be
    # seen — GHOST_SHIFT and MISSED_TOUR on the check-out (a ghost always punches out: that punch is what gets
    # paid), a GHOST_SHIFT check-in too when its shift is not on the roster, LATE_ARRIVAL on the check-in; a
    # check-in of such a shift that shows nothing yet is labelled is_fraud=False but keeps the scenario name
    # (a marker). "check_in": all three on the check-in (the earlier default); "check_in_and_out": on both.
    shift_labels: ShiftLabels = "observable"
    # How frauds and look-alikes are drawn (simulator.variation): "standard" (the default, same bytes as
    # ever), "randomised" (wide ranges; the fraud model's training world) or a held-out shifted one.
    variation: str = "standard"
    # Also simulate the shifts under way at ``start`` (their records from ``start`` on): a world started at any
    # moment of the day has guards on duty from its first minute (a live demo resumed after a pause).
    carry_in: bool = False

    @property
    def end(self) -> int:
        return self.start + self.span

    def rates(self) -> dict[str, float]:
        """Per-kind rate (share of shifts); validated."""
        unknown = set(self.scenario_rates) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
        base = self.scenario_rate / len(SCENARIOS)
        out = {k: float(self.scenario_rates.get(k, base)) for k in SCENARIOS}
        if any(r < 0 for r in out.values()) or sum(out.values()) > 1.0:
            raise ValueError(f"scenario rates must be >= 0 and sum to at most 1, got {out}")
        return out

    def validate(self) -> None:
        if self.tenants < 1 or self.sites_per_tenant < 1 or self.guards_per_site < 1:
            raise ValueError("tenants, sites_per_tenant and guards_per_site must be >= 1")
        if self.span <= 0:
            raise ValueError("span must be positive")
        if not 0.0 <= self.late_rate <= 0.5:
            raise ValueError("late_rate must be in [0, 0.5]")
        if self.shift_labels not in SHIFT_LABEL_MODES:
            raise ValueError(f"shift_labels must be one of {', '.join(SHIFT_LABEL_MODES)}")
        self.rates()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}


def parse_duration(text: str) -> int:
    """``"6h"``, ``"30d"``, ``"1d12h"``, ``"90m"``, ``"45s"`` (or plain seconds) to milliseconds."""
    s = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        return round(float(s) * SECOND_MS)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"not a duration: {text!r} (use e.g. 6h, 30d, 1d12h, 90m)")
    return round(total)


def parse_time(text: str) -> int:
    """An ISO-8601 time (``2026-11-01`` or ``2026-11-01T06:00Z``; naive means UTC) to epoch ms."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
