"""Geometry for telemetry: great-circle distance and a movement odometer that ignores GPS jitter."""

from __future__ import annotations

import math

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius

# A fix: (occurred_at ms, lat, lon, accuracy m). Accuracy 0 when the phone did not report one.
Fix = tuple[int, float, float, float]


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


_M_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180


def surely_within_m(lat1: float, lon1: float, lat2: float, lon2: float, limit_m: float) -> bool:
    """True when the two points are certainly at most ``limit_m`` apart, without trigonometry: the great circle is
    no longer than going along the meridian, then along the parallel (``R * (|dlat| + |dlon|)``, radians). A
    metre of margin covers rounding. False: not sure, compute :func:`haversine_m` (most GPS jitter stops here)."""
    return (abs(lat2 - lat1) + abs(lon2 - lon1)) * _M_PER_DEGREE <= limit_m - 1.0


def odometer(anchor: Fix | None, fixes: list[Fix]) -> tuple[float, Fix | None]:
    """Distance walked along ``fixes`` (already in time order) starting from ``anchor``; returns it and the
    new anchor.

    A move counts only when the two fixes' accuracy circles do not overlap (distance > sum of the radii):
    overlapping circles could be the same spot, so standing still with a wandering fix adds nothing. The anchor stays at
    the last accepted fix (slow walking still adds up once it leaves the radius), but a more accurate fix
    within the radius replaces it, so one poor fix (a cell-tower position) does not freeze the odometer.
    """
    total = 0.0
    for fix in fixes:
        if anchor is None:
            anchor = fix
            continue
        radii = anchor[3] + fix[3]
        d = 0.0 if surely_within_m(anchor[1], anchor[2], fix[1], fix[2], radii) else \
            haversine_m(anchor[1], anchor[2], fix[1], fix[2])
        if d > radii:
            total += d
            anchor = fix
        elif fix[3] < anchor[3]:
            anchor = fix
    return total, anchor
