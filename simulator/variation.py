"""How the seven frauds and the legit look-alikes are drawn: named parameter *variations* of one world.

The world (sites, guards, roster, background activity) is the same in every variation; what changes is
how a fraud is committed and how the legit-but-suspicious cases look. ``SimConfig.variation`` picks one:

``standard``
    The generator's own draws (:func:`simulator.scenarios.plan_legit` and
    :func:`simulator.scenarios.apply_scenario`); same seed, same bytes as always. The simulator's default.
``randomised``
    The training world (``noc train --from-sim`` and the benchmark's training seed): every scenario and
    every look-alike drawn from wide, overlapping ranges with several modes each, so no single feature
    separates a fraud from its look-alikes. Ranges below.
``careful``, ``noisy``, ``blend``
    Held-out *shifted* configurations for evaluation only (``tests/bench/bench_model_quality.py``):
    ``careful`` has cautious fraudsters (realistic spoofed accuracy, rarely a mock flag, buddies with
    passable faces on team phones, short implausible trips, fences missed by 100-400 m, sleepers,
    slightly late guards); ``noisy`` has ordinary frauds among hard legit cases (drifting and very
    precise GPS, fast highway commutes, team phones, late traffic); ``blend`` sits between the two.

Ranges of ``randomised`` (modes are weight: range; "beyond" is metres outside the geofence):

=====================  ==========================================================================
GPS spoofing           fix accuracy 0-3 m (.45) | 3-9 m (.35) | 9-18 m (.20); OS mock flag 40%;
                       0-3 real fixes from home 15-120 min before; real position leaks in 3-25%
                       of fixes; tours 0-50% done
buddy punching         face 0.05-0.5 (.45) | none (.20) | 0.55-0.85 (.35); on the buddy's phone 50%,
                       else the site's team phone; the absent guard turns up 30-180 min late 45%,
                       else his phone stays home (reporting) 40% or silent
impossible travel      a fix 8-60 km (.5) | 60-700 km (.5) away, at an implied 140-3,000 km/h
off-geofence           beyond 60-300 m (.45) | 300-1,500 m (.35) | 1,500-6,000 m (.20); never comes 30%
missed tour            tours 0-45% done and rounds skipped 20-80% (.55), or asleep 2-7 h mid-shift
                       after normal rounds (.45)
late arrival           10-25 min (.40) | 25-60 min (.40) | 60-180 min (.20)
ghost shift            the standard draws
look-alikes (rate)     poor GPS 5% (35-200 m); near the fence 4% (10-150 m beyond, 20-120 m
                       accuracy); drifting GPS all shift 5% (quality 1.6-3.2); very precise GPS 5%
                       (2-5 m); fast commute 4% (15-60 km at 60-120 km/h); team phone 5%; mock flag
                       0.5%; new phone 1%; low face 3% (0.3-0.7); traffic 5% (8-60 min); no shift id
                       1.5%; battery dead 3%; a round skipped 5%
=====================  ==========================================================================

The shifted configurations use other ranges (see :data:`VARIATIONS`); a model trained on one
variation is evaluated on the others. Every draw comes from a ``random.Random`` seeded from the seed
and the shift id, so each variation is deterministic too. Plain Python, no I/O.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from simulator.config import HOUR_MS, MINUTE_MS
from simulator.scenarios import (
    AWAY,
    NONE,
    SPOOFED,
    Plan,
    apply_scenario,
    clamp,
    gps_accuracy,
    jitter,
    ring,
    share_device,
    shift_by,
    to_local,
)

# (weight, lo, hi): a mixture of uniform ranges
Modes = tuple[tuple[float, float, float], ...]

STANDARD = "standard"
RANDOMISED = "randomised"
SHIFTED: tuple[str, ...] = ("careful", "noisy", "blend")


def draw(rng: random.Random, modes: Modes) -> float:
    """One value from a mixture of uniform ranges."""
    total = sum(w for w, _, _ in modes)
    u = rng.random() * total
    for w, lo, hi in modes:
        if u < w:
            return rng.uniform(lo, hi)
        u -= w
    return rng.uniform(modes[-1][1], modes[-1][2])


@dataclass(frozen=True, slots=True)
class Variation:
    name: str
    # GPS spoofing
    spoof_acc: Modes
    spoof_mock: float
    spoof_pre_fixes: tuple[int, int]
    spoof_leak: tuple[float, float]
    spoof_tours: tuple[float, float]
    # buddy punching
    buddy_face: Modes  # a value below 0 means no face check
    buddy_owner_phone: float  # share on the buddy's own phone (else the site's team phone)
    buddy_late: float  # the absent guard turns up late
    buddy_phone_home: float  # (not coming) his phone stays home and reports from there
    # impossible travel
    travel_km: Modes
    travel_kmh: Modes
    # off-geofence
    fence_beyond_m: Modes
    fence_away: float
    # missed tour
    tour_sleeper: float
    tour_done: tuple[float, float]
    tour_skip: tuple[float, float]
    sleep_hours: tuple[float, float]
    # late arrival
    late_min: Modes
    # legit look-alikes: (rate per shift, parameters)
    poor_gps: tuple[float, float, float]  # rate, accuracy lo, hi
    near_fence: tuple[float, float, float]  # rate, beyond lo, hi (accuracy 20-120 m)
    drift_gps: tuple[float, float, float]  # rate, quality lo, hi (whole shift)
    precise_gps: tuple[float, float, float]  # rate, accuracy lo, hi
    fast_commute: tuple[float, float, float]  # rate, km lo, hi (60-120 km/h)
    team_phone: float
    mock_flag: float
    new_device: float
    low_face: tuple[float, float, float]
    traffic: tuple[float, float, float]  # rate, delay minutes lo, hi
    no_shift_id: float
    battery: float
    skip_round: float


_RANDOMISED = Variation(
    RANDOMISED,
    spoof_acc=((0.45, 0.0, 3.0), (0.35, 3.0, 9.0), (0.20, 9.0, 18.0)), spoof_mock=0.4, spoof_pre_fixes=(0, 3),
    spoof_leak=(0.03, 0.25), spoof_tours=(0.0, 0.5),
    buddy_face=((0.45, 0.05, 0.5), (0.20, -1, -1), (0.35, 0.55, 0.85)), buddy_owner_phone=0.5, buddy_late=0.45,
    buddy_phone_home=0.4,
    travel_km=((0.5, 8, 60), (0.5, 60, 700)), travel_kmh=((0.6, 140, 600), (0.4, 600, 3000)),
    fence_beyond_m=((0.45, 60, 300), (0.35, 300, 1500), (0.20, 1500, 6000)), fence_away=0.3,
    tour_sleeper=0.45, tour_done=(0.0, 0.45), tour_skip=(0.2, 0.8), sleep_hours=(2.0, 7.0),
    late_min=((0.4, 10, 25), (0.4, 25, 60), (0.2, 60, 180)),
    poor_gps=(0.05, 35, 200), near_fence=(0.04, 10, 150), drift_gps=(0.05, 1.6, 3.2), precise_gps=(0.05, 2.0, 5.0),
    fast_commute=(0.04, 15, 60), team_phone=0.05, mock_flag=0.005, new_device=0.01, low_face=(0.03, 0.3, 0.7),
    traffic=(0.05, 8, 60), no_shift_id=0.015, battery=0.03, skip_round=0.05)

VARIATIONS: dict[str, Variation] = {
    RANDOMISED: _RANDOMISED,
    # Cautious fraudsters, ordinary look-alikes.
    "careful": Variation(
        "careful",
        spoof_acc=((1.0, 4.0, 12.0),), spoof_mock=0.1, spoof_pre_fixes=(1, 2), spoof_leak=(0.05, 0.12),
        spoof_tours=(0.1, 0.4),
        buddy_face=((0.5, 0.6, 0.8), (0.5, -1, -1)), buddy_owner_phone=0.2, buddy_late=0.3, buddy_phone_home=0.6,
        travel_km=((1.0, 12, 40),), travel_kmh=((1.0, 180, 500),),
        fence_beyond_m=((1.0, 100, 400),), fence_away=0.5,
        tour_sleeper=0.8, tour_done=(0.2, 0.5), tour_skip=(0.2, 0.5), sleep_hours=(3.0, 8.0),
        late_min=((1.0, 12, 30),),
        poor_gps=(0.04, 40, 120), near_fence=(0.03, 10, 100), drift_gps=(0.03, 1.6, 2.4),
        precise_gps=(0.03, 3.0, 6.0), fast_commute=(0.02, 15, 40), team_phone=0.03, mock_flag=0.003,
        new_device=0.01, low_face=(0.03, 0.35, 0.65), traffic=(0.04, 8, 35), no_shift_id=0.015, battery=0.03,
        skip_round=0.05),
    # Ordinary frauds among hard legit cases.
    "noisy": Variation(
        "noisy",
        spoof_acc=((0.5, 0.0, 2.0), (0.5, 6.0, 10.0)), spoof_mock=0.5, spoof_pre_fixes=(0, 2),
        spoof_leak=(0.1, 0.2), spoof_tours=(0.0, 0.2),
        buddy_face=((0.8, 0.1, 0.45), (0.2, -1, -1)), buddy_owner_phone=0.7, buddy_late=0.6, buddy_phone_home=0.3,
        travel_km=((1.0, 40, 400),), travel_kmh=((1.0, 200, 1500),),
        fence_beyond_m=((1.0, 250, 2500),), fence_away=0.3,
        tour_sleeper=0.3, tour_done=(0.0, 0.35), tour_skip=(0.3, 0.8), sleep_hours=(2.0, 5.0),
        late_min=((1.0, 20, 90),),
        poor_gps=(0.08, 50, 250), near_fence=(0.06, 20, 150), drift_gps=(0.08, 2.0, 3.5),
        precise_gps=(0.08, 2.0, 4.0), fast_commute=(0.06, 25, 70), team_phone=0.08, mock_flag=0.008,
        new_device=0.015, low_face=(0.04, 0.3, 0.6), traffic=(0.08, 15, 50), no_shift_id=0.02, battery=0.04,
        skip_round=0.08),
    "blend": Variation(
        "blend",
        spoof_acc=((0.5, 2.0, 6.0), (0.5, 10.0, 16.0)), spoof_mock=0.3, spoof_pre_fixes=(0, 2),
        spoof_leak=(0.06, 0.15), spoof_tours=(0.1, 0.3),
        buddy_face=((0.4, 0.3, 0.6), (0.3, 0.7, 0.82), (0.3, -1, -1)), buddy_owner_phone=0.4, buddy_late=0.5,
        buddy_phone_home=0.5,
        travel_km=((0.5, 20, 80), (0.5, 200, 900)), travel_kmh=((1.0, 160, 900),),
        fence_beyond_m=((0.5, 120, 500), (0.5, 800, 3000)), fence_away=0.4,
        tour_sleeper=0.5, tour_done=(0.1, 0.4), tour_skip=(0.3, 0.6), sleep_hours=(2.5, 6.0),
        late_min=((0.5, 15, 40), (0.5, 40, 120)),
        poor_gps=(0.06, 40, 180), near_fence=(0.05, 30, 130), drift_gps=(0.05, 1.8, 2.8),
        precise_gps=(0.05, 2.5, 4.5), fast_commute=(0.04, 20, 50), team_phone=0.06, mock_flag=0.005,
        new_device=0.01, low_face=(0.03, 0.4, 0.7), traffic=(0.06, 10, 45), no_shift_id=0.015, battery=0.03,
        skip_round=0.06),
}
NAMES: tuple[str, ...] = (STANDARD, RANDOMISED, *SHIFTED)


def variation(name: str) -> Variation | None:
    """The named variation; None for ``standard`` (the generator's own draws)."""
    if name == STANDARD:
        return None
    try:
        return VARIATIONS[name]
    except KeyError:
        raise ValueError(f"unknown variation {name!r}; known: {', '.join(NAMES)}") from None


def team_phone(p: Plan) -> str:
    """The site's shared team phone (registered to no guard)."""
    return f"team-{p.site.site_id}"


def vary_legit(p: Plan, v: Variation, rng: random.Random, hard: float) -> None:
    """Add the variation's look-alikes to a legit plan drawn with ``plan_legit(..., hard=0)``."""
    g, site, ci = p.guard, p.site, p.check_in
    kiosk = ci.device == site.kiosk_id
    u = rng.random()
    lo = 0.0

    def pick(rate: float) -> bool:
        nonlocal lo
        hit = lo <= u < lo + rate * hard
        lo += rate * hard
        return hit

    if kiosk:
        pass
    elif pick(v.poor_gps[0]):
        ci.acc = round(rng.uniform(v.poor_gps[1], v.poor_gps[2]), 1)
        ci.pos = jitter(rng, site.post, ci.acc)
        p.suspicious = "POOR_GPS"
    elif pick(v.near_fence[0]):
        ci.acc = round(rng.uniform(20, 120), 1)
        ci.pos = ring(rng, site.radius_m + v.near_fence[1], site.radius_m + v.near_fence[2])
        p.suspicious = "NEAR_FENCE"
    elif pick(v.drift_gps[0]):
        q = rng.uniform(v.drift_gps[1], v.drift_gps[2])
        p.gps_quality = q
        for pu in (ci, p.check_out):
            if pu is not None:
                pu.acc = round(min(120.0, max(3.0, rng.gauss(11.0, 4.0) * q)), 1)
                pu.pos = jitter(rng, site.post, pu.acc)
        p.pre_fixes = [(t, pos, round(min(120.0, acc * q), 1)) for t, pos, acc in p.pre_fixes]
        p.suspicious = "DRIFTING_GPS"
    elif pick(v.precise_gps[0]):
        p.gps_quality = 0.2
        for pu in (ci, p.check_out):
            if pu is not None:
                pu.acc = round(rng.uniform(v.precise_gps[1], v.precise_gps[2]), 1)
                pu.pos = jitter(rng, site.post, pu.acc)
        p.suspicious = "PRECISE_GPS"
    elif pick(v.fast_commute[0]):
        km = rng.uniform(v.fast_commute[1], v.fast_commute[2])
        kmh = rng.uniform(60, 120)
        ang = rng.uniform(0, 2 * math.pi)
        start = (km * 1000 * math.cos(ang), km * 1000 * math.sin(ang))
        span = km / kmh * 60 + rng.uniform(2, 6)  # minutes, with a few on foot at the end
        n = rng.randint(2, 5)
        p.pre_fixes = []
        for k in range(n):
            f = k / n
            t = ci.at - round(span * (1 - f) * MINUTE_MS)
            acc = gps_accuracy(rng, g.gps_quality)
            p.pre_fixes.append((t, jitter(rng, (start[0] * (1 - f), start[1] * (1 - f)), acc), acc))
        p.suspicious = "FAST_COMMUTE"
    elif pick(v.team_phone):
        ci.device = team_phone(p)
        if p.check_out is not None and rng.random() < 0.6:
            p.check_out.device = ci.device
        p.suspicious = "TEAM_PHONE"
    elif pick(v.mock_flag):
        ci.mock = True
        p.suspicious = "MOCK_FLAG"
    elif pick(v.new_device):
        ci.device = p.phone = f"dev-{rng.getrandbits(48):012x}"
        if p.check_out is not None:
            p.check_out.device = ci.device
        p.suspicious = "NEW_DEVICE"
    elif pick(v.low_face[0]) and ci.face is not None:
        ci.face = round(rng.uniform(v.low_face[1], v.low_face[2]), 3)
        p.suspicious = "LOW_FACE"
    u = rng.random()
    if u < v.traffic[0] * hard:
        delay = round(rng.uniform(v.traffic[1], v.traffic[2]) * MINUTE_MS)
        shift_by(p, p.slot.starts_at + delay - ci.at)
        if delay > 15 * MINUTE_MS:
            p.suspicious = p.suspicious or "LATE"
    elif u < (v.traffic[0] + v.no_shift_id) * hard:
        ci.shift_id = None
        if p.check_out is not None:
            p.check_out.shift_id = None
        p.suspicious = p.suspicious or "NO_SHIFT_ID"
    u = rng.random()
    if u < v.battery * hard:
        t0 = rng.randint(p.act_from, max(p.act_from, p.act_to - 5 * HOUR_MS))
        p.gaps.append((t0, t0 + round(rng.uniform(1.5, 5) * HOUR_MS)))
    elif u < (v.battery + v.skip_round) * hard:
        p.skip_round = 0.25


def apply_varied(p: Plan, kind: str, buddy: Plan | None, v: Variation, rng: random.Random,
                 ghost_checks_out: bool) -> bool:
    """:func:`simulator.scenarios.apply_scenario` with the variation's parameters; False when it cannot apply."""
    if kind in ("GHOST_SHIFT",):
        return apply_scenario(p, kind, buddy, ghost_checks_out)
    slot, site, g, ci = p.slot, p.site, p.guard, p.check_in
    if kind == "BUDDY_PUNCHING" and buddy is None:
        return False
    p.scenario = kind
    p.suspicious = None
    ci.fraud, ci.scenario = True, kind
    home = to_local(site, *g.home)
    if kind == "BUDDY_PUNCHING":
        assert buddy is not None
        share_device(p, buddy, rng, buddy=True)
        if rng.random() >= v.buddy_owner_phone:
            ci.device = team_phone(p)
        f = draw(rng, v.buddy_face)
        ci.face = None if f < 0 else round(f, 3)
        if rng.random() < v.buddy_late:
            arrive = slot.starts_at + round(rng.uniform(30, 180) * MINUTE_MS)
            p.act_from = max(p.act_from, arrive)
            p.away_pos = home
            p.arrive_min = rng.uniform(20, 50)
            p.act_from -= round(p.arrive_min * MINUTE_MS)
        else:
            p.style = AWAY if rng.random() < v.buddy_phone_home else NONE
            p.away_pos = home
            p.tasks = False
            p.tour_completion = 0.0
            if p.check_out is not None and buddy.check_out is not None:
                co, bo = p.check_out, buddy.check_out
                co.device = ci.device
                co.at = bo.at + round(rng.uniform(0.5, 4.0) * MINUTE_MS)
                co.pos, co.acc, co.face = (bo.pos[0] + rng.gauss(0, 3), bo.pos[1] + rng.gauss(0, 3)), bo.acc, None
                co.fraud, co.scenario = True, kind
    elif kind == "GPS_SPOOFING":
        p.style = SPOOFED
        p.away_pos = home
        acc = draw(rng, v.spoof_acc)
        p.spoof_acc = (max(0.0, acc * 0.6), acc * 1.4 + 0.5)
        p.spoof_mock = rng.random() < v.spoof_mock
        p.leak = rng.uniform(*v.spoof_leak)
        ci.mock = p.spoof_mock
        ci.acc = round(acc, 1)
        ci.pos = (site.post[0] + rng.gauss(0, max(2.0, acc * 0.5)), site.post[1] + rng.gauss(0, max(2.0, acc * 0.5)))
        p.tour_completion = rng.uniform(*v.spoof_tours)
        p.tasks = rng.random() < 0.3
        p.pre_fixes = []
        for _ in range(rng.randint(*v.spoof_pre_fixes)):
            a = gps_accuracy(rng, g.gps_quality)
            p.pre_fixes.append((ci.at - round(rng.uniform(15, 120) * MINUTE_MS), jitter(rng, home, a), a))
        p.pre_fixes.sort()
        if p.check_out is not None:
            co = p.check_out
            co.mock, co.acc = p.spoof_mock, round(rng.uniform(*p.spoof_acc), 1)
            co.pos = (ci.pos[0] + rng.gauss(0, 3), ci.pos[1] + rng.gauss(0, 3))
            co.fraud, co.scenario = True, kind
    elif kind == "IMPOSSIBLE_TRAVEL":
        km = draw(rng, v.travel_km)
        kmh = draw(rng, v.travel_kmh)
        gap = max(MINUTE_MS, round(km / kmh * HOUR_MS))
        acc = gps_accuracy(rng, g.gps_quality)
        p.pre_fixes = [(ci.at - gap, ring(rng, km * 1000, km * 1000), acc)]
    elif kind == "OFF_GEOFENCE":
        d = draw(rng, v.fence_beyond_m)
        ci.acc = gps_accuracy(rng, g.gps_quality)
        ci.pos = ring(rng, site.radius_m + d, site.radius_m + d)
        p.pre_fixes = []
        p.away_pos = ci.pos
        if rng.random() < v.fence_away:
            p.style = AWAY
            p.tasks = False
            p.tour_completion = 0.0
            if p.check_out is not None:
                p.check_out.pos = jitter(rng, ci.pos, p.check_out.acc)
        else:
            p.arrive_min = rng.uniform(10, 60)
    elif kind == "MISSED_TOUR":
        if rng.random() < v.tour_sleeper:
            span = p.act_to - p.act_from
            hours = min(rng.uniform(*v.sleep_hours), span / HOUR_MS * 0.8)
            t0 = p.act_from + round(rng.uniform(0.1, 0.9) * (span - hours * HOUR_MS))
            p.sleep = (t0, t0 + round(hours * HOUR_MS))
        else:
            p.tour_completion = rng.uniform(*v.tour_done)
            p.skip_round = rng.uniform(*v.tour_skip)
    elif kind == "LATE_ARRIVAL":
        late = round(draw(rng, v.late_min) * MINUTE_MS)
        shift_by(p, slot.starts_at + late - ci.at)
    else:
        raise ValueError(f"unknown scenario {kind}")
    ci.face = ci.face if ci.face is None else round(clamp(ci.face, 0.0, 1.0), 3)
    return True


__all__ = ["NAMES", "RANDOMISED", "SHIFTED", "STANDARD", "VARIATIONS", "Modes", "Variation", "apply_varied", "draw",
           "team_phone", "variation", "vary_legit"]
