"""A small hand-made, seeded world for the models tests: reference data, activity, punches, labels.

Independent of the simulator on purpose: the tests pin down feature semantics on records whose meaning
is obvious, and stay fast.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

Rec = tuple[str, dict[str, Any]]
MIN = 60_000
T0 = datetime(2026, 3, 2, tzinfo=ZoneInfo("Africa/Nairobi"))
SITES = [("s-1", -1.2921, 36.8219), ("s-2", -1.3000, 36.7800), ("s-3", -1.2500, 36.9000)]
SCENARIOS = ("OFF_GEOFENCE", "GPS_SPOOFING", "BUDDY_PUNCHING", "IMPOSSIBLE_TRAVEL", "LATE_ARRIVAL", "MISSED_TOUR")


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def offset(lat: float, lon: float, metres: float, rng: random.Random) -> tuple[float, float]:
    ang = rng.uniform(0, 2 * math.pi)
    dlat = metres * math.cos(ang) / 111_320
    dlon = metres * math.sin(ang) / (111_320 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def site_rec(site_id: str, lat: float, lon: float) -> dict[str, Any]:
    return {"tenant_id": 1, "site_id": site_id, "name": site_id, "timezone": "Africa/Nairobi", "lat": lat, "lon": lon,
            "geofence_radius_m": 150.0, "active": True, "updated_at": ms(T0) - 86_400_000,
            "tours": [{"tour_id": f"{site_id}-t", "checkpoint_ids": [f"{site_id}-cp{i}" for i in range(4)],
                       "interval_minutes": 120}]}


def world(days: int = 20, people: int = 18, fraud_rate: float = 0.08, seed: int = 1, tenant: int = 1) -> list[Rec]:
    """Time-ordered ``(stem, record)`` pairs: 1 tenant, 3 sites, day shifts 06:00-14:00 site time."""
    rng = random.Random(seed)
    out: list[tuple[int, int, str, dict[str, Any]]] = []
    seq = 0

    def emit(t: int, stem: str, rec: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        out.append((t, seq, stem, rec))

    for sid, lat, lon in SITES:
        emit(ms(T0) - 86_400_000, "site", site_rec(sid, lat, lon))
    for p in range(people):
        emit(ms(T0) - 86_400_000, "person", {
            "tenant_id": 1, "person_id": f"p-{p}", "name": f"Guard {p}", "role": "GUARD",
            "home_site_id": SITES[p % 3][0], "device_ids": [f"d-{p}"], "usual_check_in_minute": 6 * 60 - 5,
            "active": True, "updated_at": ms(T0) - 86_400_000})
    n = 0
    for day in range(days):
        for p in range(people):
            sid, slat, slon = SITES[p % 3]
            start = T0 + timedelta(days=day, hours=6)
            end = start + timedelta(hours=8)
            shift_id = f"sh-{p}-{day}"
            emit(ms(start) - 12 * 3600_000, "shift", {
                "tenant_id": 1, "shift_id": shift_id, "person_id": f"p-{p}", "site_id": sid, "starts_at": ms(start),
                "ends_at": ms(end), "status": "SCHEDULED", "updated_at": ms(start) - 12 * 3600_000})
            scen = rng.choice(SCENARIOS) if rng.random() < fraud_rate else "NONE"
            t_in = ms(start) + rng.randint(-10, 8) * MIN
            if scen == "LATE_ARRIVAL":
                t_in = ms(start) + rng.randint(50, 120) * MIN
            ilat, ilon = offset(slat, slon, rng.uniform(0, 60), rng)
            acc, mock, device, face = rng.uniform(5, 25), False, f"d-{p}", rng.uniform(0.8, 0.99)
            if scen == "OFF_GEOFENCE":
                ilat, ilon = offset(slat, slon, rng.uniform(1500, 5000), rng)
            elif scen == "GPS_SPOOFING":
                mock, acc = True, 1.0
            elif scen == "BUDDY_PUNCHING":
                device, face = f"d-{(p + 3) % people}", rng.uniform(0.1, 0.45)
            elif scen == "IMPOSSIBLE_TRAVEL":
                far = offset(slat, slon, 80_000, rng)
                emit(t_in - 15 * MIN, "activity_signal", _act(p, sid, t_in - 15 * MIN, "LOCATION_UPDATE", rng,
                                                              latlon=far))
            # the shift's activity: location updates, tour scans (unless missed), some phone events
            t = t_in + 5 * MIN
            while t < ms(end):
                emit(t, "activity_signal", _act(p, sid, t, "LOCATION_UPDATE", rng, latlon=offset(slat, slon, 40, rng)))
                if scen != "MISSED_TOUR" and (t - t_in) % (120 * MIN) < 15 * MIN:
                    for cp in range(4):
                        emit(t + cp * MIN, "activity_signal",
                             _act(p, sid, t + cp * MIN, "TOUR_CHECKPOINT_SCANNED", rng, checkpoint=f"{sid}-cp{cp}",
                                  latlon=offset(slat, slon, 50, rng)))
                if rng.random() < 0.3:
                    emit(t + 2 * MIN, "activity_signal", _act(p, sid, t + 2 * MIN, "PHONE_EVENT", rng))
                t += 15 * MIN
            t_out = ms(end) + rng.randint(-5, 10) * MIN
            olat, olon = offset(slat, slon, rng.uniform(0, 60), rng)
            for kind, tt, la, lo, lab_fraud in (("CHECK_IN", t_in, ilat, ilon, scen not in ("NONE", "MISSED_TOUR")),
                                                ("CHECK_OUT", t_out, olat, olon, scen == "MISSED_TOUR")):
                n += 1
                ev = f"att-{n:06d}"
                emit(tt, "attendance_event", {
                    "event_id": ev, "tenant_id": 1, "site_id": sid, "person_id": f"p-{p}", "occurred_at": tt,
                    "received_at": tt + 500, "event_type": kind, "shift_id": shift_id, "lat": la, "lon": lo,
                    "accuracy_m": acc if kind == "CHECK_IN" else rng.uniform(5, 25), "device_id":
                    device if kind == "CHECK_IN" else f"d-{p}", "is_mock_location": mock and kind == "CHECK_IN",
                    "face_match_score": face if kind == "CHECK_IN" else None})
                emit(tt, "label", {
                    "label_id": f"SIMULATOR:{ev}", "tenant_id": 1, "site_id": sid, "person_id": f"p-{p}",
                    "event_id": ev, "is_fraud": lab_fraud, "scenario": scen if lab_fraud else "NONE",
                    "source": "SIMULATOR", "occurred_at": tt})
    out.sort(key=lambda e: (e[0], e[1]))
    return [(stem, dict(rec, tenant_id=tenant)) for _, _, stem, rec in out]


def _act(p: int, sid: str, t: int, kind: str, rng: random.Random, latlon: tuple[float, float] | None = None,
         checkpoint: str | None = None) -> dict[str, Any]:
    return {"event_id": f"act-{p}-{t}-{kind[:3]}-{rng.getrandbits(24):06x}", "tenant_id": 1, "site_id": sid,
            "person_id": f"p-{p}", "occurred_at": t, "received_at": t + 300, "kind": kind, "device_id": f"d-{p}",
            "shift_id": None, "lat": latlon[0] if latlon else None, "lon": latlon[1] if latlon else None,
            "accuracy_m": 10.0 if latlon else None, "is_mock_location": False,
            "phone_event_type": "SCREEN_ON" if kind == "PHONE_EVENT" else None, "task_id": None,
            "tour_id": f"{sid}-t" if checkpoint else None, "checkpoint_id": checkpoint}
