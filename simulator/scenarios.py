"""Shift plans: what one guard's shift looks like, legit or with a fraud scenario injected.

A :class:`Plan` says when and where the punches happen, on which device, with what GPS quality, and how
the phone behaves in between (normal patrol, nothing, spoofed, away from the site). :func:`plan_legit`
draws an ordinary shift — including the *hard negatives* a model must not flag on one feature alone
(poor GPS, a check-in just outside the fence, a borrowed phone, a mock-location flag from developer
options, traffic delays, a dead battery) — and :func:`apply_scenario` turns it into one of the seven
labelled frauds. Positions are metres (north, east) from the site centre; plain Python, no I/O.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from simulator.config import HOUR_MS, MINUTE_MS, SECOND_MS
from simulator.world import M_PER_DEG_LAT, Guard, ShiftSlot, Site

# Activity styles
NORMAL = "NORMAL"  # patrols, tours, tasks, phone use
NONE = "NONE"  # nothing at all (ghost shift)
SPOOFED = "SPOOFED"  # fake positions at the site with perfect accuracy, real ones leaking through
AWAY = "AWAY"  # the phone stays away from the site (off-geofence check-in, never arrived)

# Roster states of a shift (GHOST_SHIFT may punch against a shift that was never rostered)
PUBLISHED = "PUBLISHED"
UNROSTERED_NO_ID = "UNROSTERED_NO_ID"
UNROSTERED_WITH_ID = "UNROSTERED_WITH_ID"

Pos = tuple[float, float]


@dataclass(slots=True)
class Punch:
    at: int
    pos: Pos
    acc: float
    device: str
    mock: bool
    face: float | None
    shift_id: str | None
    fraud: bool = False
    scenario: str = "NONE"
    event_id: str = ""


@dataclass(slots=True)
class Plan:
    slot: ShiftSlot
    rng: random.Random
    scenario: str
    check_in: Punch
    check_out: Punch | None
    act_from: int  # own phone's activity window
    act_to: int
    phone: str = ""  # the guard's own phone, which sends the activity signals
    style: str = NORMAL
    tour_completion: float = 0.985  # chance each due checkpoint is scanned
    skip_round: float = 0.0  # chance a whole tour round is skipped
    tasks: bool = True
    away_pos: Pos | None = None  # where the phone is when AWAY, or where it starts when arriving late
    arrive_min: float = 0.0  # minutes to walk/drive from away_pos to the site (0: already there)
    pre_fixes: list[tuple[int, Pos, float]] = field(default_factory=list)  # (t, pos, accuracy) before check-in
    gaps: list[tuple[int, int]] = field(default_factory=list)  # phone off
    spoof_mock: bool = False
    suspicious: str | None = None  # legit-but-suspicious kind (hard negative), for FALSE_POSITIVE tickets
    # Drawn by a non-standard variation (simulator.variation); the defaults are the standard world's.
    spoof_acc: tuple[float, float] | None = None  # accuracy range of spoofed fixes (None: perfect_accuracy)
    leak: float = 0.15  # share of a spoofer's fixes where the real position leaks through
    gps_quality: float | None = None  # the phone's GPS quality this shift (None: the guard's usual)
    sleep: tuple[int, int] | None = None  # asleep: no scans, no tasks, the phone still reports from the post
    alerts: list[tuple[int, str, str, str]] = field(default_factory=list)  # (t, type, severity, message)
    findings: list[tuple[int, str, str, str]] = field(default_factory=list)  # (t, type, severity, evidence)

    @property
    def guard(self) -> Guard:
        return self.slot.guard

    @property
    def site(self) -> Site:
        return self.slot.guard.site


def clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def gps_accuracy(rng: random.Random, quality: float) -> float:
    """Typical urban phone accuracy, 5-25 m mostly."""
    return round(min(35.0, max(3.0, rng.gauss(11.0, 4.0) * quality)), 1)


def jitter(rng: random.Random, pos: Pos, acc: float) -> Pos:
    """A reported fix: the true position plus GPS error consistent with the accuracy radius."""
    s = acc * 0.5
    return pos[0] + rng.gauss(0.0, s), pos[1] + rng.gauss(0.0, s)


def ring(rng: random.Random, r_lo: float, r_hi: float) -> Pos:
    r, a = rng.uniform(r_lo, r_hi), rng.uniform(0.0, 2 * math.pi)
    return r * math.cos(a), r * math.sin(a)


def to_local(site: Site, lat: float, lon: float) -> Pos:
    return (lat - site.lat) * M_PER_DEG_LAT, (lon - site.lon) * M_PER_DEG_LAT * math.cos(math.radians(site.lat))


def face_legit(rng: random.Random) -> float | None:
    if rng.random() < 0.12:
        return None
    return round(clamp(rng.gauss(0.9, 0.045), 0.55, 0.995), 3)


def plan_legit(slot: ShiftSlot, rng: random.Random, hard: float) -> Plan:
    """An ordinary shift; ``hard`` scales the rate of legit-but-suspicious-looking cases."""
    g, site = slot.guard, slot.guard.site
    device = g.devices[1] if len(g.devices) > 1 and rng.random() < 0.15 else g.device
    in_at = slot.starts_at + round(clamp(rng.gauss(g.arrival_mean_min, g.arrival_sd_min), -40, 12) * MINUTE_MS) \
        + rng.randrange(60) * SECOND_MS
    out_at = slot.ends_at + round(clamp(rng.gauss(4, 4), -15, 30) * MINUTE_MS) + rng.randrange(60) * SECOND_MS
    kiosk = site.kiosk_id is not None and rng.random() < 0.7

    def punch(at: int) -> Punch:
        if kiosk:
            assert site.kiosk_id is not None
            acc = round(rng.uniform(3, 8), 1)
            face = round(clamp(rng.gauss(0.92, 0.03), 0.6, 0.995), 3) if rng.random() < 0.97 else None
            return Punch(at, jitter(rng, site.kiosk_pos, acc), acc, site.kiosk_id, False, face, slot.shift_id)
        acc = gps_accuracy(rng, g.gps_quality)
        true = (site.post[0] + rng.gauss(0, 15), site.post[1] + rng.gauss(0, 15))
        return Punch(at, jitter(rng, true, acc), acc, device, False, face_legit(rng), slot.shift_id)

    p = Plan(slot, rng, "NONE", punch(in_at), punch(out_at), in_at + MINUTE_MS, out_at - MINUTE_MS, device)
    if p.check_out is not None and not kiosk and rng.random() < 0.75:
        p.check_out.face = None  # face checks run mostly on check-in
    # Commuting: the app reports a few fixes on the way in.
    if rng.random() < 0.35:
        home = to_local(site, *g.home)
        n = rng.randint(2, 4)
        span_min = rng.uniform(20, 70)
        for k in range(n):
            f = k / n
            t = in_at - round(span_min * (1 - f) * MINUTE_MS)
            pos = (home[0] * (1 - f), home[1] * (1 - f))
            acc = gps_accuracy(rng, g.gps_quality)
            p.pre_fixes.append((t, jitter(rng, pos, acc), acc))
    # -- hard negatives: each rare, scaled by ``hard``
    u = rng.random()
    ci = p.check_in
    if kiosk:
        pass
    elif u < 0.06 * hard:  # indoors or an urban canyon: poor accuracy, fix may land outside the fence
        ci.acc = round(rng.uniform(35, 150), 1)
        ci.pos = jitter(rng, (site.post[0], site.post[1]), ci.acc)
        p.suspicious = "POOR_GPS"
    elif u < 0.10 * hard:  # at the gate or the car park, with a so-so fix
        ci.acc = round(rng.uniform(25, 120), 1)
        ci.pos = ring(rng, site.radius_m + 10, site.radius_m + 120)
        p.suspicious = "NEAR_FENCE"
    elif u < 0.103 * hard:  # developer options left on: the OS flags the fix as mocked
        ci.mock = True
        p.suspicious = "MOCK_FLAG"
    elif u < 0.113 * hard:  # a new phone, not registered yet
        ci.device = p.phone = f"dev-{rng.getrandbits(48):012x}"
        if p.check_out is not None:
            p.check_out.device = ci.device
        p.suspicious = "NEW_DEVICE"
    elif u < 0.143 * hard:  # poor lighting: low face score
        if ci.face is not None:
            ci.face = round(rng.uniform(0.35, 0.65), 3)
            p.suspicious = "LOW_FACE"
    u = rng.random()
    if u < 0.04 * hard:  # traffic: late, but not a pattern
        delay = round(rng.uniform(8, 35) * MINUTE_MS)
        shift_by(p, slot.starts_at + delay - ci.at)
        if delay > 15 * MINUTE_MS:
            p.suspicious = p.suspicious or "LATE"
    elif u < 0.055 * hard:  # the app did not match the shift
        ci.shift_id = None
        if p.check_out is not None:
            p.check_out.shift_id = None
    u = rng.random()
    if u < 0.03 * hard:  # battery died for a few hours
        t0 = rng.randint(p.act_from, max(p.act_from, p.act_to - 5 * HOUR_MS))
        t1 = t0 + round(rng.uniform(1.5, 5) * HOUR_MS)
        p.gaps.append((t0, t1))
        if rng.random() < 0.5:
            p.alerts.append((t0 + round(rng.uniform(15, 45) * MINUTE_MS), "DEVICE_OFFLINE", "LOW",
                             f"{g.name}'s phone stopped reporting"))
    elif u < 0.08 * hard:
        p.skip_round = 0.25
    if rng.random() < 0.01:
        p.check_out = None  # forgot to check out
    return p


def shift_by(p: Plan, delta: int) -> None:
    """Move the check-in (and the start of activity) by ``delta`` ms."""
    p.check_in.at += delta
    p.act_from = max(p.act_from, p.check_in.at + MINUTE_MS)
    p.pre_fixes = [(t + delta, pos, acc) for t, pos, acc in p.pre_fixes]


def share_device(p: Plan, owner: Plan, rng: random.Random, buddy: bool) -> None:
    """Check in on ``owner``'s device a few minutes after the owner's own check-in."""
    ci, oc = p.check_in, owner.check_in
    ci.device = oc.device
    ci.at = oc.at + round(rng.uniform(0.5, 4.0) * MINUTE_MS)
    ci.acc = round(clamp(oc.acc + rng.gauss(0, 2), 3, 40), 1)
    ci.pos = (oc.pos[0] + rng.gauss(0, 3), oc.pos[1] + rng.gauss(0, 3))
    ci.mock = oc.mock
    p.pre_fixes = []
    if not buddy:
        p.gaps.append((p.act_from, ci.at + round(rng.uniform(1, 3) * HOUR_MS)))  # own phone is dead for a while
        ci.face = round(clamp(rng.gauss(0.9, 0.04), 0.7, 0.99), 3)
        p.suspicious = "SHARED_DEVICE"


def perfect_accuracy(rng: random.Random) -> float:
    """Spoofing apps report accuracy that real phones in a city never achieve."""
    if rng.random() < 0.6:
        return rng.choice((0.0, 1.0, 1.0, 2.0, 3.0, 5.0))
    return round(rng.uniform(0.5, 4.0), 1)


def apply_scenario(p: Plan, kind: str, buddy: Plan | None, ghost_checks_out: bool = False) -> bool:
    """Turn a legit plan into fraud ``kind``; False when it cannot apply (buddy punching alone on shift).

    ``ghost_checks_out``: a GHOST_SHIFT keeps its check-out (the same random draws are made either way).
    """
    rng, slot, site, g = p.rng, p.slot, p.site, p.guard
    ci = p.check_in
    p.scenario = kind
    p.suspicious = None
    ci.fraud, ci.scenario = True, kind
    if kind == "BUDDY_PUNCHING":
        if buddy is None:
            p.scenario, ci.fraud, ci.scenario = "NONE", False, "NONE"
            return False
        share_device(p, buddy, rng, buddy=True)
        u = rng.random()
        ci.face = (round(rng.uniform(0.05, 0.5), 3) if u < 0.8 else None if u < 0.92
                   else round(rng.uniform(0.55, 0.8), 3))
        if rng.random() < 0.55:  # turns up late; checks out on his own phone
            arrive = slot.starts_at + round(rng.uniform(40, 180) * MINUTE_MS)
            p.act_from = max(p.act_from, arrive)
            p.away_pos = to_local(site, *g.home)
            p.arrive_min = rng.uniform(20, 50)
            p.act_from -= round(p.arrive_min * MINUTE_MS)
        else:  # never comes; the buddy checks him out too
            p.style = NONE
            if p.check_out is not None and buddy.check_out is not None:
                co, bo = p.check_out, buddy.check_out
                co.device, co.at = bo.device, bo.at + round(rng.uniform(0.5, 4.0) * MINUTE_MS)
                co.pos, co.acc, co.face = (bo.pos[0] + rng.gauss(0, 3), bo.pos[1] + rng.gauss(0, 3)), bo.acc, None
                co.fraud, co.scenario = True, kind
    elif kind == "GPS_SPOOFING":
        p.style = SPOOFED
        p.away_pos = to_local(site, *g.home)
        p.spoof_mock = rng.random() < 0.65
        ci.mock = p.spoof_mock
        ci.acc = perfect_accuracy(rng)
        ci.pos = (site.post[0] + rng.gauss(0, 5), site.post[1] + rng.gauss(0, 5))
        p.tour_completion = rng.uniform(0.0, 0.2)
        p.tasks = False
        p.pre_fixes = []
        for _ in range(rng.randint(0, 2)):  # real fixes from home before the spoofing app starts
            acc = gps_accuracy(rng, g.gps_quality)
            p.pre_fixes.append((ci.at - round(rng.uniform(25, 100) * MINUTE_MS), jitter(rng, p.away_pos, acc), acc))
        p.pre_fixes.sort()
        if p.check_out is not None:
            co = p.check_out
            co.mock, co.acc, co.pos = p.spoof_mock, perfect_accuracy(rng), (ci.pos[0] + rng.gauss(0, 2),
                                                                           ci.pos[1] + rng.gauss(0, 2))
            co.fraud, co.scenario = True, kind
        if rng.random() < 0.25:
            p.alerts.append((ci.at + round(rng.uniform(20, 240) * MINUTE_MS), "GEOFENCE_BREACH",
                             rng.choice(("MEDIUM", "HIGH")), f"{g.name} reported outside {site.name} between fixes"))
    elif kind == "IMPOSSIBLE_TRAVEL":
        # A fix far away, shortly before a check-in at the site.
        far_km = rng.uniform(30, 150) if rng.random() < 0.6 else rng.uniform(150, 700)
        gap = round(rng.uniform(5, 45) * MINUTE_MS)
        acc = gps_accuracy(rng, g.gps_quality)
        far = ring(rng, far_km * 1000, far_km * 1000)
        p.pre_fixes = [(ci.at - gap, far, acc)]
    elif kind == "OFF_GEOFENCE":
        d = rng.uniform(300, 1500) if rng.random() < 0.6 else rng.uniform(1500, 6000)
        ci.pos = ring(rng, site.radius_m + d, site.radius_m + d)
        ci.acc = gps_accuracy(rng, g.gps_quality)
        p.pre_fixes = []
        p.away_pos = ci.pos
        if rng.random() < 0.3:  # never turns up
            p.style = AWAY
            p.tasks = False
            p.tour_completion = 0.0
            if p.check_out is not None:
                p.check_out.pos = jitter(rng, ci.pos, p.check_out.acc)
        else:
            p.arrive_min = rng.uniform(10, 60)
        if rng.random() < 0.4:
            p.alerts.append((ci.at + round(rng.uniform(2, 20) * MINUTE_MS), "GEOFENCE_BREACH",
                             rng.choice(("LOW", "MEDIUM")), f"{g.name} checked in {d:.0f} m outside {site.name}"))
    elif kind == "GHOST_SHIFT":
        p.style = NONE
        p.tasks = False
        p.pre_fixes = []
        p.gaps = []
        if slot.roster_state == UNROSTERED_NO_ID:
            ci.shift_id = None
        if rng.random() < 0.3:
            ci.face = None
        if p.check_out is not None:
            if slot.roster_state == UNROSTERED_NO_ID:
                p.check_out.shift_id = None
            if rng.random() < 0.5:  # checked out from home
                p.check_out.pos = jitter(rng, to_local(site, *g.home), p.check_out.acc)
            if rng.random() < 0.3 and not ghost_checks_out:
                p.check_out = None
        if rng.random() < 0.6:
            p.alerts.append((ci.at + round(rng.uniform(30, 120) * MINUTE_MS), "DEVICE_OFFLINE", "MEDIUM",
                             f"No signal from {g.name} since check-in at {site.name}"))
        if rng.random() < 0.3:
            p.findings.append((ci.at + round(rng.uniform(2, 9) * HOUR_MS), "POST_ABANDONED",
                               rng.choice(("HIGH", "CRITICAL")),
                               f"Post at {site.name} found unmanned; {g.name} on the roster but not on site"))
    elif kind == "MISSED_TOUR":
        p.tour_completion = rng.uniform(0.0, 0.4)
        p.skip_round = rng.uniform(0.3, 0.8)
        if rng.random() < 0.35:
            p.findings.append((ci.at + round(rng.uniform(3, 10) * HOUR_MS), "MISSED_PATROL",
                               rng.choice(("MEDIUM", "HIGH")),
                               f"Patrol log at {site.name} shows checkpoints not visited during {g.name}'s shift"))
    elif kind == "LATE_ARRIVAL":
        late = round(min(180.0, 25 + rng.expovariate(1 / 35)) * MINUTE_MS)
        shift_by(p, slot.starts_at + late - ci.at)
    else:
        raise ValueError(f"unknown scenario {kind}")
    return True
