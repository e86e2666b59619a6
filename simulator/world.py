"""The synthetic world: tenants, sites with geofences and tours, guards with devices, and the roster.

Everything is derived from the seed with private ``random.Random`` streams, so the same seed and
config always give the same world. Plain Python, no I/O.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from simulator.config import DAY_MS, HOUR_MS, MINUTE_MS, SimConfig

M_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True, slots=True)
class City:
    name: str
    lat: float
    lon: float
    tz: str


# Cities grouped by region; tenant n operates in region (n - 1) mod len(REGIONS).
REGIONS: tuple[tuple[City, ...], ...] = (
    (City("Nairobi", -1.2864, 36.8172, "Africa/Nairobi"), City("Mombasa", -4.0435, 39.6682, "Africa/Nairobi"),
     City("Kampala", 0.3476, 32.5825, "Africa/Kampala"), City("Kigali", -1.9441, 30.0619, "Africa/Kigali")),
    (City("Johannesburg", -26.2041, 28.0473, "Africa/Johannesburg"),
     City("Cape Town", -33.9249, 18.4241, "Africa/Johannesburg"),
     City("Durban", -29.8587, 31.0218, "Africa/Johannesburg")),
    (City("Lagos", 6.5244, 3.3792, "Africa/Lagos"), City("Abuja", 9.0765, 7.3986, "Africa/Lagos"),
     City("Accra", 5.6037, -0.1870, "Africa/Accra")),
    (City("Cairo", 30.0444, 31.2357, "Africa/Cairo"), City("Dubai", 25.2048, 55.2708, "Asia/Dubai"),
     City("London", 51.5072, -0.1276, "Europe/London")),
)

SITE_KINDS = ("Mall", "Warehouse", "Office Park", "Bank Branch", "Hospital", "Residential Estate", "Depot",
              "Data Centre", "School", "Hotel", "Fuel Depot", "Embassy Annex")
TASK_NAMES = ("gate-log", "visitor-register", "fire-panel-check", "perimeter-lights", "vehicle-search",
              "key-handover", "cctv-check")
FIRST_NAMES = ("Amina", "Brian", "Chidi", "Dineo", "Esi", "Faith", "George", "Halima", "Ibrahim", "Joy", "Kofi",
               "Lerato", "Moses", "Ngozi", "Otieno", "Precious", "Sipho", "Tendai", "Wanjiru", "Yaw", "Zanele",
               "Kwame", "Achieng", "Thabo", "Fatima", "Emeka", "Nomsa", "Juma", "Ama", "Musa")
LAST_NAMES = ("Mwangi", "Okafor", "Nkosi", "Mensah", "Abubakar", "Kamau", "Dlamini", "Adeyemi", "Owusu",
              "Ochieng", "Mokoena", "Balogun", "Boateng", "Wanjiku", "Ndlovu", "Eze", "Asante", "Kiprop",
              "Khumalo", "Bello", "Otieno", "Naidoo", "Achebe", "Mutua")

DAY, NIGHT = "D", "N"
SLOT_HOUR = {DAY: 6, NIGHT: 18}  # local start hour; both shifts last until the next slot (12 h)


# -- geometry --------------------------------------------------------------------------------------


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """Move a point by metres north and east (flat-earth, fine at site scale and good to ~0.5% at 100 km)."""
    return lat + north_m / M_PER_DEG_LAT, lon + east_m / (M_PER_DEG_LAT * math.cos(math.radians(lat)))


def polar(lat: float, lon: float, dist_m: float, bearing: float) -> tuple[float, float]:
    return offset(lat, lon, dist_m * math.cos(bearing), dist_m * math.sin(bearing))


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_ms(d: date, hour: int, tz: str) -> int:
    """UTC epoch ms of a local wall time at a site (DST-aware)."""
    return int(datetime(d.year, d.month, d.day, hour, tzinfo=zone(tz)).timestamp() * 1000)


# -- entities --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Checkpoint:
    checkpoint_id: str
    north_m: float  # position relative to the site centre
    east_m: float


@dataclass(slots=True)
class Tour:
    tour_id: str
    checkpoints: list[Checkpoint]
    interval_minutes: int


@dataclass(slots=True)
class Site:
    tenant_id: int
    site_id: str
    name: str
    city: City
    lat: float
    lon: float
    radius_m: float
    tours: list[Tour]
    tasks: list[str]
    post: tuple[float, float]  # guard post, metres (north, east) from the centre
    kiosk_id: str | None  # a shared attendance terminal, at some sites
    kiosk_pos: tuple[float, float]
    guards: list[Guard] = field(default_factory=list)

    @property
    def tz(self) -> str:
        return self.city.tz

    def point(self, north_m: float, east_m: float) -> tuple[float, float]:
        return offset(self.lat, self.lon, north_m, east_m)


@dataclass(slots=True)
class Guard:
    tenant_id: int
    person_id: str
    name: str
    site: Site
    devices: list[str]  # registered phones; devices[0] is the usual one
    slot: str  # DAY or NIGHT
    rest_days: tuple[int, int]  # weekdays off (0 = Monday), local calendar
    arrival_mean_min: float  # habit: minutes relative to the shift start (negative = early)
    arrival_sd_min: float
    gps_quality: float  # multiplies GPS accuracy (phone quality); 0.7 good .. 1.6 poor
    location_every_min: float  # the app's location-update period on this phone
    home: tuple[float, float]  # lat, lon
    usual_check_in_minute: int

    @property
    def device(self) -> str:
        return self.devices[0]


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: int
    region: tuple[City, ...]
    auditors: tuple[str, ...]
    users: tuple[str, ...]  # helpdesk users and supervisors


@dataclass(slots=True)
class ShiftSlot:
    """One rostered shift."""

    shift_id: str
    guard: Guard
    starts_at: int
    ends_at: int
    slot: str
    cancelled: bool = False
    scenario: str = "NONE"
    roster_state: str = "PUBLISHED"  # GHOST_SHIFT may punch against a shift never rostered (see scenarios)
    published_at: int = 0
    cancelled_at: int = 0

    @property
    def site(self) -> Site:
        return self.guard.site


@dataclass(slots=True)
class Group:
    """The shifts of one site starting at the same time (the guards who work together)."""

    site: Site
    starts_at: int
    shifts: list[ShiftSlot]


@dataclass(slots=True)
class World:
    tenants: list[Tenant]
    sites: list[Site]
    guards: list[Guard]


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def build_world(cfg: SimConfig) -> World:
    rng = random.Random(f"nocstream-world:{cfg.seed}")
    tenants: list[Tenant] = []
    sites: list[Site] = []
    guards: list[Guard] = []
    for t in range(1, cfg.tenants + 1):
        region = REGIONS[(t - 1) % len(REGIONS)]
        tenants.append(Tenant(t, region, tuple(f"auditor-{t}-{k:02d}" for k in range(1, 4)),
                              tuple(f"user-{t}-{k:02d}" for k in range(1, 7))))
        for i in range(1, cfg.sites_per_tenant + 1):
            city = region[(i - 1) % len(region)]
            # Within ~12 km of the city centre.
            lat, lon = polar(city.lat, city.lon, 12_000 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi))
            radius = round(rng.uniform(80, 250), 1)
            site_id = f"site-{t}-{i:03d}"
            tours = []
            for k in range(1, rng.randint(2, 3) + 1):
                cps = []
                for m in range(1, rng.randint(4, 8) + 1):
                    r, a = radius * 0.85 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
                    cps.append(Checkpoint(f"{site_id}-t{k}-cp{m}", r * math.cos(a), r * math.sin(a)))
                tours.append(Tour(f"{site_id}-tour{k}", cps, rng.choice((60, 75, 90, 120))))
            r, a = radius * 0.5 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            post = (r * math.cos(a), r * math.sin(a))
            has_kiosk = rng.random() < 0.15
            kiosk_id = f"kiosk-{t}-{i:03d}-{_hex(rng, 16)}"
            kiosk_pos = (post[0] + rng.uniform(-10, 10), post[1] + rng.uniform(-10, 10))
            site = Site(t, site_id, f"{city.name} {rng.choice(SITE_KINDS)} {i}", city, round(lat, 6), round(lon, 6),
                        radius, tours, rng.sample(TASK_NAMES, rng.randint(2, 4)), post,
                        kiosk_id if has_kiosk else None, kiosk_pos)
            sites.append(site)
            for j in range(cfg.guards_per_site):
                n = (i - 1) * cfg.guards_per_site + j + 1
                person_id = f"guard-{t}-{n:04d}"
                devices = [f"dev-{_hex(rng, 48)}"]
                if rng.random() < 0.1:
                    devices.append(f"dev-{_hex(rng, 48)}")
                slot = DAY if j % 2 == 0 else NIGHT
                first = rng.randrange(7)
                arrival = rng.uniform(-16, -2)
                home = polar(lat, lon, rng.uniform(2_000, 15_000), rng.uniform(0, 2 * math.pi))
                usual = SLOT_HOUR[slot] * 60 + round(arrival + rng.gauss(0, 2))
                g = Guard(t, person_id, f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}", site, devices, slot,
                          (first, (first + 1) % 7), arrival, rng.uniform(1.5, 6), rng.uniform(0.7, 1.6),
                          rng.uniform(3, 6), home, usual % 1440)
                site.guards.append(g)
                guards.append(g)
    return World(tenants, sites, guards)


PRE_LEAD_MS = 3 * HOUR_MS  # a shift's events start at most this long before its scheduled start


def roster(world: World, cfg: SimConfig, rates: dict[str, float]) -> list[Group]:
    """Every shift whose events fall inside the simulated span (with ``carry_in``, also those under way at its
    start), grouped by site and start, in start order.

    Scenarios are drawn here, per shift, in (start, shift id) order from one seeded stream, so the same
    prefix of shifts gets the same scenarios whatever the span. Shifts are published on the roster 24-48 h
    ahead (the first two days at the start); 1% are cancelled a few hours before they start.
    """
    groups: list[Group] = []
    for site in world.sites:
        tz = zone(site.tz)
        first = datetime.fromtimestamp(cfg.start / 1000, tz).date() - timedelta(days=1)
        last = datetime.fromtimestamp(cfg.end / 1000, tz).date()
        d = first
        while d <= last:
            for slot in (DAY, NIGHT):
                starts = local_ms(d, SLOT_HOUR[slot], site.tz)
                ends = local_ms(d, 18, site.tz) if slot == DAY else local_ms(d + timedelta(days=1), 6, site.tz)
                if (ends <= cfg.start if cfg.carry_in else starts - PRE_LEAD_MS < cfg.start) or starts >= cfg.end:
                    continue
                shifts = [ShiftSlot(f"shift-{g.person_id}-{d:%Y%m%d}{slot}", g, starts, ends, slot)
                          for g in site.guards if g.slot == slot and d.weekday() not in g.rest_days]
                if shifts:
                    groups.append(Group(site, starts, shifts))
            d += timedelta(days=1)
    groups.sort(key=lambda g: (g.starts_at, g.site.site_id))
    kinds = list(rates)
    cum = []
    acc = 0.0
    for k in kinds:
        acc += rates[k]
        cum.append(acc)
    rng = random.Random(f"nocstream-roster:{cfg.seed}")
    for g in groups:
        for s in g.shifts:
            u = rng.random()
            s.scenario = "NONE"
            for k, c in zip(kinds, cum, strict=True):
                if u < c:
                    s.scenario = k
                    break
            v = rng.random()
            if s.scenario == "GHOST_SHIFT":
                s.roster_state = "UNROSTERED_NO_ID" if v < 0.35 else "UNROSTERED_WITH_ID" if v < 0.6 else "PUBLISHED"
            days_ahead = (s.starts_at - cfg.start) // DAY_MS
            s.published_at = cfg.start if days_ahead < 2 else cfg.start + (days_ahead - 1) * DAY_MS
            cancel = rng.random() < 0.01 and s.scenario == "NONE"
            lead = rng.randint(2 * 60, 20 * 60) * MINUTE_MS
            if cancel:
                s.cancelled = True
                s.cancelled_at = max(s.published_at, s.starts_at - lead)
    return groups
