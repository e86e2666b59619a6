"""The pure generator: ``generate(config) -> Iterator[SimRecord]`` in event-time order.

Reference data (sites, people, the first two days of the roster) comes first; after that records are
yielded in non-decreasing ``at`` order, where ``at`` is the event time (``occurred_at``; ``updated_at`` for
reference data) except for the few records injected as *late*: those keep their earlier ``occurred_at``
but are yielded at their (later) arrival time, like a phone that was offline for a while.

How: work is split into tasks (publish a roster day, a site's background day, a group of shifts), each
with a time no later than any record it makes. Tasks run in time order and push their records onto a
heap; before a task at time T runs, everything on the heap before T is final and is yielded. Every
random draw comes from a ``random.Random`` seeded from the seed and a stable name (a shift id, a site
and date), so the same seed and config give the same records in the same order.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from schemas.topics import BY_SHORT, person_key, site_key
from simulator.config import AFTER_CHECK_IN_SCENARIOS, HOUR_MS, MINUTE_MS, SHIFT_SCENARIOS, SimConfig
from simulator.scenarios import (
    AWAY,
    NONE,
    PUBLISHED,
    SPOOFED,
    Plan,
    Punch,
    apply_scenario,
    gps_accuracy,
    perfect_accuracy,
    plan_legit,
    share_device,
)
from simulator.variation import apply_varied, vary_legit
from simulator.variation import variation as named_variation
from simulator.world import M_PER_DEG_LAT, PRE_LEAD_MS, Group, Guard, ShiftSlot, Site, World, build_world, roster, zone

Record = dict[str, Any]
# The topics the simulator writes, by short name, and the schema stem each carries.
TOPICS: tuple[str, ...] = ("ref.sites", "ref.people", "ref.shifts", "attendance", "activity", "alerts",
                           "audit-findings", "tickets", "labels")
STEM = {short: BY_SHORT[short].schema for short in TOPICS}
LATE_GRACE_MS = 2 * MINUTE_MS  # the pipeline's window grace; some late events fall beyond it


class SimRecord:
    """One record to produce: topic short name, partition key, schema stem, the record, and its stream time."""

    __slots__ = ("at", "key", "record", "stem", "topic")

    def __init__(self, topic: str, key: bytes, stem: str, record: Record, at: int) -> None:
        self.topic = topic
        self.key = key
        self.stem = stem
        self.record = record
        self.at = at

    @property
    def late(self) -> bool:
        """True for a record delivered after records that happened later than it."""
        occurred = self.record.get("occurred_at")
        return occurred is not None and occurred < self.at

    def __repr__(self) -> str:
        return f"SimRecord({self.topic!r}, {self.key!r}, {self.stem!r}, at={self.at}, {self.record!r})"


@dataclass(slots=True)
class SimStats:
    records: Counter[str] = field(default_factory=Counter)  # yielded, by topic short name
    shifts: int = 0  # shifts worked (not cancelled) that started inside the span
    cancelled: int = 0
    scenarios: Counter[str] = field(default_factory=Counter)  # injected, per shift
    fallbacks: Counter[str] = field(default_factory=Counter)  # drawn but impossible (buddy punching alone)
    hard_negatives: Counter[str] = field(default_factory=Counter)  # legit-but-suspicious check-ins
    fraud_labels: Counter[str] = field(default_factory=Counter)  # yielded labels with is_fraud, by scenario
    # "observable" labels: check-ins of a fraudulent shift labelled is_fraud=False (nothing to see yet), by scenario
    deferred_labels: Counter[str] = field(default_factory=Counter)
    late: int = 0  # records delivered out of order
    late_beyond_grace: int = 0
    tickets: Counter[str] = field(default_factory=Counter)  # ticket workflows by final resolution

    @property
    def total(self) -> int:
        return sum(self.records.values())


def _uid(rng: random.Random) -> str:
    """A UUID-formatted id (version nibble 4) from 128 seeded random bits."""
    h = rng.getrandbits(128).to_bytes(16, "little").hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"


# Background NOC alerts: type, weight, about a person?, severities (weighted), raising system
ALERT_TYPES: tuple[tuple[str, int, bool, tuple[str, ...], str], ...] = (
    ("DEVICE_OFFLINE", 20, True, ("LOW", "LOW", "MEDIUM"), "device-mdm"),
    ("LOW_BATTERY", 14, True, ("LOW",), "device-mdm"),
    ("CAMERA_OFFLINE", 14, False, ("LOW", "MEDIUM"), "cctv"),
    ("GEOFENCE_BREACH", 10, True, ("MEDIUM", "MEDIUM", "HIGH"), "noc-geofence"),
    ("POWER_FAILURE", 8, False, ("MEDIUM", "HIGH"), "noc-monitor"),
    ("DOOR_FORCED", 8, False, ("HIGH",), "access-control"),
    ("INTRUSION_DETECTED", 5, False, ("HIGH", "CRITICAL"), "alarm-panel"),
    ("FIRE_ALARM", 3, False, ("HIGH", "CRITICAL"), "alarm-panel"),
    ("PANIC_BUTTON", 4, True, ("CRITICAL", "CRITICAL", "HIGH"), "panic-app"),
    ("MAN_DOWN", 3, True, ("HIGH", "CRITICAL"), "panic-app"),
)
_ALERT_WEIGHTS = list(itertools.accumulate(a[1] for a in ALERT_TYPES))
ALERT_TEXT = {
    "DEVICE_OFFLINE": "{who}'s phone stopped reporting at {site}", "LOW_BATTERY": "{who}'s phone battery below 10%",
    "CAMERA_OFFLINE": "Camera {n} offline at {site}", "GEOFENCE_BREACH": "{who} left the geofence of {site}",
    "POWER_FAILURE": "Mains power lost at {site}; on backup", "DOOR_FORCED": "Door {n} forced open at {site}",
    "INTRUSION_DETECTED": "Intrusion detected in zone {n} at {site}", "FIRE_ALARM": "Fire alarm zone {n} at {site}",
    "PANIC_BUTTON": "{who} pressed the panic button at {site}", "MAN_DOWN": "Man-down triggered for {who} at {site}",
}
# Audit findings: type, weight, about a person?, severities, evidence template
FINDING_TYPES: tuple[tuple[str, int, bool, tuple[str, ...], str], ...] = (
    ("UNIFORM", 14, True, ("LOW", "LOW", "MEDIUM"), "{who} on duty without full uniform or ID badge"),
    ("LOGBOOK_GAP", 14, True, ("LOW", "MEDIUM"), "Occurrence book has no entries for {n} hours on {who}'s shift"),
    ("VISITOR_LOG_INCOMPLETE", 10, False, ("LOW",), "Visitor register at {site} missing {n} sign-outs"),
    ("LIGHTING_FAULT", 8, False, ("LOW", "MEDIUM"), "{n} perimeter lights out at {site}"),
    ("EQUIPMENT_MISSING", 8, False, ("LOW", "MEDIUM", "HIGH"), "Radio and torch not at the post at {site}"),
    ("MISSED_PATROL", 8, True, ("MEDIUM", "HIGH"), "Patrol log shows {n} checkpoints not visited by {who}"),
    ("SLEEPING_ON_DUTY", 5, True, ("HIGH", "HIGH", "CRITICAL"), "{who} found asleep at the post at {site}"),
    ("POST_ABANDONED", 4, True, ("HIGH", "CRITICAL"), "Post at {site} unmanned for {n}0 minutes; {who} absent"),
    ("UNAUTHORISED_ACCESS", 3, False, ("HIGH", "CRITICAL"), "Unlogged vehicle admitted at {site} gate {n}"),
)
_FINDING_WEIGHTS = list(itertools.accumulate(f[1] for f in FINDING_TYPES))
OPS_TICKETS = (
    ("OPERATIONS", "Gate barrier fault at {site}"), ("OPERATIONS", "Replace radio batteries at {site}"),
    ("OPERATIONS", "Uniform request for {site}"), ("OTHER", "Client complaint: slow gate response at {site}"),
    ("OPERATIONS", "Relief guard needed at {site}"), ("OTHER", "Access card reader offline at {site}"),
    ("SECURITY_INCIDENT", "Suspicious vehicle reported near {site}"),
)
PHONE_EVENTS = ("SCREEN_ON", "SCREEN_ON", "SCREEN_ON", "APP_OPEN", "APP_OPEN", "CALL", "APP_BACKGROUND",
                "BATTERY_LOW", "SOS_TEST", "SMS")
# Helpdesk wording of a flagged check-in: the same titles for frauds and for the look-alikes.
TICKET_TITLES = {
    "OFF_GEOFENCE": "Check-in outside the geofence", "NEAR_FENCE": "Check-in outside the geofence",
    "POOR_GPS": "Check-in outside the geofence", "GPS_SPOOFING": "Mock location on check-in",
    "MOCK_FLAG": "Mock location on check-in", "BUDDY_PUNCHING": "Check-in on another person's device",
    "SHARED_DEVICE": "Check-in on another person's device", "NEW_DEVICE": "Check-in on an unregistered device",
    "LOW_FACE": "Face match below threshold", "IMPOSSIBLE_TRAVEL": "Implausible travel before check-in",
    "GHOST_SHIFT": "No activity after check-in", "MISSED_TOUR": "Tour checkpoints missed",
    "LATE_ARRIVAL": "Late arrival", "LATE": "Late arrival",
    "DRIFTING_GPS": "Check-in outside the geofence", "PRECISE_GPS": "Mock location on check-in",
    "FAST_COMMUTE": "Implausible travel before check-in", "TEAM_PHONE": "Check-in on another person's device",
    "NO_SHIFT_ID": "Check-in without a scheduled shift",
}
TICKET_PRIORITY = {"GHOST_SHIFT": "URGENT", "BUDDY_PUNCHING": "HIGH", "GPS_SPOOFING": "HIGH",
                   "IMPOSSIBLE_TRAVEL": "HIGH", "OFF_GEOFENCE": "MEDIUM", "MISSED_TOUR": "MEDIUM"}


class Simulation:
    """Iterate to run the simulation once (each iteration starts afresh); ``stats`` describes the last run."""

    def __init__(self, cfg: SimConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.stats = SimStats()
        self.world: World = build_world(cfg)
        self._heap: list[tuple[int, int, SimRecord]] = []
        self._seq: Iterator[int] = itertools.count()
        self._now = cfg.start
        self._keys: dict[tuple[int, str], bytes] = {}
        self._by_site: dict[str, list[Group]] = {}
        self._buddy_debt = 0
        self._variation = named_variation(cfg.variation)
        # Legit-but-suspicious check-ins by event id -> their kind (for per-look-alike evaluation).
        self.lookalikes: dict[str, str] = {}

    def __iter__(self) -> Iterator[SimRecord]:
        return self._run()

    # -- the engine ---------------------------------------------------------------------------------

    def _push(self, at: int, topic: str, key: bytes, record: Record) -> None:
        if at < self._now:
            raise AssertionError(f"{topic} record at {at} pushed after the stream reached {self._now}")
        heapq.heappush(self._heap, (at, next(self._seq), SimRecord(topic, key, STEM[topic], record, at)))

    def _run(self) -> Iterator[SimRecord]:
        cfg = self.cfg
        self.stats = st = SimStats()
        heap: list[tuple[int, int, SimRecord]] = []
        self._heap = heap
        self._seq = itertools.count()
        self._now = cfg.start
        self._buddy_debt = 0
        groups = roster(self.world, cfg, cfg.rates())
        self._by_site = {}
        for g in groups:
            self._by_site.setdefault(g.site.site_id, []).append(g)
        tasks: list[tuple[int, int, int, Callable[[], None]]] = []
        self._reference()
        published: dict[int, list[ShiftSlot]] = {}
        for g in groups:
            for s in g.shifts:
                published.setdefault(s.published_at, []).append(s)
        for t, shifts in published.items():
            tasks.append((t, 0, len(tasks), partial(self._roster_day, shifts)))
        for site in self.world.sites:
            tz = zone(site.tz)
            d = datetime.fromtimestamp(cfg.start / 1000, tz).date()
            while True:
                day0 = int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp() * 1000)
                if day0 >= cfg.end:
                    break
                nxt = d + timedelta(days=1)
                day1 = int(datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp() * 1000)
                lo = max(day0, cfg.start)
                tasks.append((lo, 1, len(tasks), partial(self._site_day, site, d.isoformat(), lo, day1)))
                d = nxt
        for g in groups:
            tasks.append((g.starts_at - PRE_LEAD_MS, 2, len(tasks), partial(self._group, g)))
        tasks.sort(key=lambda x: x[:3])
        end = cfg.end
        pop = heapq.heappop
        counts = st.records
        fraud = st.fraud_labels
        skip_before = cfg.start if cfg.carry_in else None  # records of shifts under way before the start
        for t, _prio, _n, run in tasks:
            if t >= end:
                break
            while heap and heap[0][0] < t:
                sr = pop(heap)[2]
                if skip_before is not None and sr.at < skip_before:
                    continue
                counts[sr.topic] += 1
                if sr.topic == "labels" and sr.record["scenario"] != "NONE":
                    (fraud if sr.record["is_fraud"] else st.deferred_labels)[sr.record["scenario"]] += 1
                yield sr
            self._now = t
            run()
        while heap:
            at, _, sr = pop(heap)
            if at >= end:
                break
            if skip_before is not None and at < skip_before:
                continue
            counts[sr.topic] += 1
            if sr.topic == "labels" and sr.record["scenario"] != "NONE":
                (fraud if sr.record["is_fraud"] else st.deferred_labels)[sr.record["scenario"]] += 1
            yield sr
        heap.clear()

    def _pkey(self, tenant: int, person_id: str) -> bytes:
        k = (tenant, person_id)
        key = self._keys.get(k)
        if key is None:
            key = self._keys[k] = person_key(tenant, person_id)
        return key

    # -- reference data ---------------------------------------------------------------------------

    def _reference(self) -> None:
        t = self.cfg.start
        for site in self.world.sites:
            self._push(t, "ref.sites", site_key(site.tenant_id, site.site_id), {
                "tenant_id": site.tenant_id, "site_id": site.site_id, "name": site.name, "timezone": site.tz,
                "lat": site.lat, "lon": site.lon, "geofence_radius_m": site.radius_m,
                "tours": [{"tour_id": tour.tour_id, "checkpoint_ids": [c.checkpoint_id for c in tour.checkpoints],
                           "interval_minutes": tour.interval_minutes} for tour in site.tours],
                "active": True, "updated_at": t})
        for g in self.world.guards:
            self._push(t, "ref.people", self._pkey(g.tenant_id, g.person_id), {
                "tenant_id": g.tenant_id, "person_id": g.person_id, "name": g.name, "role": "GUARD",
                "home_site_id": g.site.site_id, "device_ids": list(g.devices),
                "usual_check_in_minute": g.usual_check_in_minute, "active": True, "updated_at": t})

    def _shift_record(self, s: ShiftSlot, status: str, t: int) -> None:
        self._push(t, "ref.shifts", f"{s.guard.tenant_id}:{s.shift_id}".encode(), {
            "tenant_id": s.guard.tenant_id, "shift_id": s.shift_id, "person_id": s.guard.person_id,
            "site_id": s.site.site_id, "starts_at": s.starts_at, "ends_at": s.ends_at, "status": status,
            "updated_at": t})

    def _roster_day(self, shifts: list[ShiftSlot]) -> None:
        for s in shifts:
            if s.roster_state != PUBLISHED:
                continue  # a ghost shift: never on the roster
            self._shift_record(s, "SCHEDULED", s.published_at)
            if s.cancelled:
                self._shift_record(s, "CANCELLED", s.cancelled_at)

    # -- background: alerts, audits, helpdesk -----------------------------------------------------

    def _on_duty(self, site: Site, t: int, rng: random.Random) -> Guard | None:
        on = [s.guard for g in self._by_site.get(site.site_id, ()) if g.starts_at <= t < g.shifts[0].ends_at
              for s in g.shifts if not s.cancelled and s.scenario != "GHOST_SHIFT"]
        return rng.choice(on) if on else None

    def _site_day(self, site: Site, day: str, lo: int, hi: int) -> None:
        cfg = self.cfg
        rng = random.Random(f"nocstream-site:{cfg.seed}:{site.site_id}:{day}")
        hi = min(hi, cfg.end)
        tenant = self.world.tenants[site.tenant_id - 1]
        # NOC alerts: a Poisson process, with the odd burst of related alarms
        rate = cfg.alerts_per_site_hour / HOUR_MS
        t = float(lo)
        while rate > 0:
            t += rng.expovariate(rate)
            if t >= hi:
                break
            at = int(t)
            i = _pick(rng, _ALERT_WEIGHTS)
            self._alert(site, at, rng, i, tenant.users)
            if rng.random() < 0.06:  # a burst: door forced, intrusion, panic
                bt = at
                for kind in ("DOOR_FORCED", "INTRUSION_DETECTED", "PANIC_BUTTON")[: rng.randint(2, 3)]:
                    bt += round(rng.uniform(0.2, 4) * MINUTE_MS)
                    self._alert(site, bt, rng, [a[0] for a in ALERT_TYPES].index(kind), tenant.users)
        # Audit visits, in daylight hours
        n = _poisson(rng, cfg.audits_per_site_day)
        for _ in range(n):
            at = lo + int(rng.random() * (hi - lo))
            for _k in range(rng.randint(1, 3)):
                self._finding(site, at + rng.randrange(30 * MINUTE_MS), rng, rng.choice(tenant.auditors))
        # Helpdesk tickets unrelated to attendance
        for _ in range(_poisson(rng, cfg.ops_tickets_per_site_day)):
            at = lo + int(rng.random() * (hi - lo))
            category, title = rng.choice(OPS_TICKETS)
            res = "DUPLICATE" if rng.random() < 0.12 else "RESOLVED_OTHER"
            self._ticket(rng, site.tenant_id, site.site_id, None, at, category, rng.choice(("LOW", "MEDIUM")),
                         title.format(site=site.name), f"Raised by the site supervisor at {site.name}.", None, res,
                         tenant.users)

    def _alert(self, site: Site, at: int, rng: random.Random, i: int, users: tuple[str, ...],
               guard: Guard | None = None, severity: str | None = None, message: str | None = None) -> None:
        kind, _w, personal, severities, source = ALERT_TYPES[i]
        if guard is None and personal:
            guard = self._on_duty(site, at, rng)
        sev = severity or rng.choice(severities)
        event_id = _uid(rng)
        text = message or ALERT_TEXT[kind].format(who=guard.name if guard else "A guard", site=site.name,
                                                  n=rng.randint(1, 9))
        pid = guard.person_id if guard else None
        self._push(at, "alerts", person_key(site.tenant_id, pid, site.site_id), {
            "event_id": event_id, "tenant_id": site.tenant_id, "site_id": site.site_id, "person_id": pid,
            "occurred_at": at, "received_at": at + 100 + int(rng.random() ** 3 * 3000), "alert_type": kind,
            "severity": sev, "message": text, "source": source})
        if sev in ("HIGH", "CRITICAL") and rng.random() < 0.3:
            self._ticket(rng, site.tenant_id, site.site_id, pid, at + round(rng.uniform(2, 30) * MINUTE_MS),
                         "SECURITY_INCIDENT", "URGENT" if sev == "CRITICAL" else "HIGH",
                         f"{kind.replace('_', ' ').capitalize()} at {site.name}", text, event_id, "RESOLVED_OTHER",
                         users)

    def _finding(self, site: Site, at: int, rng: random.Random, auditor: str, guard: Guard | None = None,
                 kind: str | None = None, severity: str | None = None, evidence: str | None = None) -> None:
        i = _pick(rng, _FINDING_WEIGHTS) if kind is None else [f[0] for f in FINDING_TYPES].index(kind)
        ftype, _w, personal, severities, template = FINDING_TYPES[i]
        if guard is None and personal:
            guard = self._on_duty(site, at, rng)
        event_id = _uid(rng)
        text = evidence or template.format(who=guard.name if guard else "the guard", site=site.name,
                                           n=rng.randint(2, 6))
        pid = guard.person_id if guard else None
        urls = [f"https://evidence.nocstream.example/{site.tenant_id}/{event_id}/{k}.jpg"
                for k in range(rng.randint(0, 3))]
        self._push(at, "audit-findings", person_key(site.tenant_id, pid, site.site_id), {
            "event_id": event_id, "tenant_id": site.tenant_id, "site_id": site.site_id, "person_id": pid,
            "occurred_at": at, "received_at": at + 1000 + int(rng.random() * 600_000), "finding_type": ftype,
            "severity": severity or rng.choice(severities), "evidence_summary": text, "auditor_id": auditor,
            "evidence_urls": urls})

    def _ticket(self, rng: random.Random, tenant: int, site_id: str | None, person_id: str | None, t0: int,
                category: str, priority: str, title: str, description: str, related: str | None,
                resolution: str, users: tuple[str, ...]) -> None:
        """A helpdesk workflow NEW -> OPEN -> IN_PROGRESS -> RESOLVED -> CLOSED, one record per change."""
        ticket_id = _uid(rng)
        key = f"{tenant}:{ticket_id}".encode()
        reporter, handler = rng.choice(users), rng.choice(users)
        t = t0
        steps = (("NEW", 0.0, 0.0), ("OPEN", 5, 60), ("IN_PROGRESS", 10, 120), ("RESOLVED", 30, 720),
                 ("CLOSED", 60, 1440))
        for status, lo, hi in steps:
            t += round(rng.uniform(lo, hi) * MINUTE_MS)
            done = status in ("RESOLVED", "CLOSED")
            self._push(t, "tickets", key, {
                "event_id": _uid(rng), "tenant_id": tenant, "site_id": site_id, "person_id": person_id,
                "occurred_at": t, "received_at": t + 50 + int(rng.random() ** 3 * 2000), "ticket_id": ticket_id,
                "ticket_no": None, "category": category, "source": "USER", "status": status, "priority": priority,
                "resolution": resolution if done else None, "title": title, "description": description,
                "related_event_id": related, "actor": reporter if status == "NEW" else handler})
        if t < self.cfg.end:
            self.stats.tickets[resolution] += 1

    # -- shifts -----------------------------------------------------------------------------------

    def _group(self, group: Group) -> None:
        cfg = self.cfg
        hard = cfg.hard_negatives
        var = self._variation
        plans: list[Plan] = []
        vrng: dict[int, random.Random] = {}
        for s in group.shifts:
            if s.cancelled:
                self.stats.cancelled += 1
                continue
            rng = random.Random(f"nocstream-shift:{cfg.seed}:{s.shift_id}")
            if var is None:
                plans.append(plan_legit(s, rng, hard))
                continue
            # A variation draws its own look-alikes (and, below, its frauds) from a stream of its own.
            p = plan_legit(s, rng, 0.0)
            vrng[id(p)] = vr = random.Random(f"nocstream-vary:{var.name}:{cfg.seed}:{s.shift_id}")
            vary_legit(p, var, vr, hard)
            plans.append(p)
        legit = [p for p in plans if p.slot.scenario == "NONE"]
        grng = random.Random(f"nocstream-group:{cfg.seed}:{group.site.site_id}:{group.starts_at}")
        # Borrowed phones (legit, rare): the colleague checks in first, then lends the phone.
        for p in legit:
            if p.rng.random() < 0.006 * hard:
                others = [o for o in legit if o is not p and o.suspicious != "SHARED_DEVICE"
                          and o.check_in.device == o.phone]
                if others and p.check_in.device == p.phone:
                    share_device(p, grng.choice(others), p.rng, buddy=False)
        # Buddy punching needs a colleague on the same shift. When a draw found none, the next group with
        # two legit guards makes up for it, so the realised rate stays at the configured one.
        kinds = {id(p): p.slot.scenario for p in plans}
        if self._buddy_debt > 0:
            free = [p for p in legit if p.suspicious != "SHARED_DEVICE" and p.check_out is not None]
            if len(free) >= 2:
                kinds[id(grng.choice(free))] = "BUDDY_PUNCHING"
                self._buddy_debt -= 1
        buddy: Plan | None = None
        for p in plans:
            kind = kinds[id(p)]
            if kind == "NONE":
                continue
            if kind == "BUDDY_PUNCHING" and buddy is None:
                cands = [o for o in legit if kinds[id(o)] == "NONE" and o.check_out is not None
                         and o.suspicious != "SHARED_DEVICE"]
                buddy = grng.choice(cands) if cands else None
            mate = buddy if kind == "BUDDY_PUNCHING" else None
            ghost_out = cfg.shift_labels == "observable"
            if not (apply_scenario(p, kind, mate, ghost_checks_out=ghost_out) if var is None
                    else apply_varied(p, kind, mate, var, vrng[id(p)], ghost_out)):
                self.stats.fallbacks[kind] += 1
                self._buddy_debt += 1
        self.stats.shifts += len(plans)
        for p in plans:
            if p.scenario != "NONE":
                self.stats.scenarios[p.scenario] += 1
            elif p.suspicious:
                self.stats.hard_negatives[p.suspicious] += 1
            self._emit_plan(p)

    def _emit_plan(self, p: Plan) -> None:
        cfg = self.cfg
        rng, g, site = p.rng, p.guard, p.site
        key = self._pkey(g.tenant_id, g.person_id)
        users = self.world.tenants[g.tenant_id - 1].users
        klat = 1.0 / M_PER_DEG_LAT
        klon = 1.0 / (M_PER_DEG_LAT * math.cos(math.radians(site.lat)))
        floor = p.slot.starts_at - PRE_LEAD_MS
        for t, pos, acc in p.pre_fixes:
            self._activity(p, key, max(t, floor), "LOCATION_UPDATE", site.lat + pos[0] * klat,
                           site.lon + pos[1] * klon, acc, False, None, None, None, None)
        ci, co = p.check_in, p.check_out
        if cfg.shift_labels == "observable" and p.scenario in AFTER_CHECK_IN_SCENARIOS and co is not None:
            # The fraud shows on the check-out (no activity, tours missed since the check-in). A ghost's check-in
            # shows it too when the shift is not on the roster (no shift id, or an id no roster has); otherwise
            # the check-in looks like any other: is_fraud=False, the scenario kept as a marker.
            co.fraud, co.scenario = True, p.scenario
            ci.fraud = p.scenario == "GHOST_SHIFT" and p.slot.roster_state != PUBLISHED
        self._punch(p, key, ci, "CHECK_IN", klat, klon)
        if p.suspicious and p.scenario == "NONE":
            self.lookalikes[ci.event_id] = p.suspicious
        if p.style != NONE:
            self._patrol(p, key, klat, klon)
        if co is not None:
            if co.at <= p.check_in.at:
                co.at = p.check_in.at + MINUTE_MS
            if cfg.shift_labels == "check_in_and_out" and p.scenario in SHIFT_SCENARIOS:
                co.fraud, co.scenario = True, p.scenario
            self._punch(p, key, co, "CHECK_OUT", klat, klon)
        for at, kind, sev, msg in p.alerts:
            self._alert(site, at, rng, [a[0] for a in ALERT_TYPES].index(kind), users, g, sev, msg)
        for at, kind, sev, text in p.findings:
            self._finding(site, at, rng, rng.choice(self.world.tenants[g.tenant_id - 1].auditors), g, kind, sev, text)
        # A supervisor raises a ticket about a flagged punch (the check-in, or the check-out where the fraud is
        # labelled in "observable" mode); the resolution agrees with the truth.
        fraud = p.scenario != "NONE"
        why = p.scenario if fraud else p.suspicious
        chance = cfg.fraud_ticket_rate if fraud else cfg.suspicious_ticket_rate if why else 0.0
        if why and rng.random() < chance:
            after = p.slot.ends_at if why in ("GHOST_SHIFT", "MISSED_TOUR") else ci.at
            t0 = after + round(rng.uniform(20, 480) * MINUTE_MS)
            on_out = cfg.shift_labels == "observable" and why in AFTER_CHECK_IN_SCENARIOS and co is not None
            about, what = (co, "Check-out") if on_out and co is not None else (ci, "Check-in")
            self._ticket(rng, g.tenant_id, site.site_id, g.person_id, t0, "SECURITY_FRAUD",
                         TICKET_PRIORITY.get(why, "MEDIUM"), f"{TICKET_TITLES[why]}: {g.name} at {site.name}",
                         f"{what} {about.event_id} by {g.person_id} flagged for review.", about.event_id,
                         "FRAUD_CONFIRMED" if fraud else "FALSE_POSITIVE", users)

    def _delivery(self, rng: random.Random, t: int) -> tuple[int, int]:
        """(stream time, received_at) of an event that occurred at ``t``; a few arrive late."""
        if rng.random() < self.cfg.late_rate:
            lateness = round(rng.uniform(20, 110) * 1000) if rng.random() < 0.6 else round(rng.uniform(150, 900) * 1000)
            if t < self.cfg.end:
                self.stats.late += 1
                if lateness > LATE_GRACE_MS:
                    self.stats.late_beyond_grace += 1
            return t + lateness, t + lateness + rng.randrange(50, 500)
        return t, t + 120 + int(rng.random() ** 3 * 4000)

    def _punch(self, p: Plan, key: bytes, pu: Punch, kind: str, klat: float, klon: float) -> None:
        rng, g, site = p.rng, p.guard, p.site
        pu.event_id = event_id = _uid(rng)
        t = pu.at
        at, received = self._delivery(rng, t)
        self._push(at, "attendance", key, {
            "event_id": event_id, "tenant_id": g.tenant_id, "site_id": site.site_id, "person_id": g.person_id,
            "occurred_at": t, "received_at": received, "event_type": kind, "shift_id": pu.shift_id,
            "lat": site.lat + pu.pos[0] * klat, "lon": site.lon + pu.pos[1] * klon, "accuracy_m": pu.acc,
            "device_id": pu.device, "is_mock_location": pu.mock, "face_match_score": pu.face})
        self._push(at, "labels", key, {
            "label_id": f"SIMULATOR:{event_id}", "tenant_id": g.tenant_id, "site_id": site.site_id,
            "person_id": g.person_id, "event_id": event_id, "is_fraud": pu.fraud,
            "scenario": pu.scenario, "source": "SIMULATOR", "occurred_at": t})

    def _activity(self, p: Plan, key: bytes, t: int, kind: str, lat: float | None, lon: float | None,
                  acc: float | None, mock: bool, phone_type: str | None, task: str | None, tour: str | None,
                  cp: str | None) -> None:
        rng, g = p.rng, p.guard
        at, received = self._delivery(rng, t)
        heapq.heappush(self._heap, (at, next(self._seq), SimRecord("activity", key, "activity_signal", {
            "event_id": _uid(rng), "tenant_id": g.tenant_id, "site_id": g.site.site_id, "person_id": g.person_id,
            "occurred_at": t, "received_at": received, "kind": kind, "device_id": p.phone,
            "shift_id": p.check_in.shift_id, "lat": lat, "lon": lon, "accuracy_m": acc, "is_mock_location": mock,
            "phone_event_type": phone_type, "task_id": task, "tour_id": tour, "checkpoint_id": cp}, at)))

    def _patrol(self, p: Plan, key: bytes, klat: float, klon: float) -> None:
        """The phone between the punches: tours, location updates, phone events, tasks."""
        rng, g, site = p.rng, p.guard, p.site
        a, b = p.act_from, p.act_to
        if b <= a:
            return
        gaps = p.gaps
        style = p.style
        arrive_end = a + round(p.arrive_min * MINUTE_MS)
        act = self._activity
        slat, slon = site.lat, site.lon
        quality = g.gps_quality if p.gps_quality is None else p.gps_quality
        sleep = p.sleep

        def off(t: int) -> bool:
            for g0, g1 in gaps:
                if g0 <= t < g1:
                    return True
            return False

        # Tour rounds: (t, tour id, checkpoint)
        scans: list[tuple[int, str, Any]] = []
        if style != AWAY and p.tour_completion > 0:
            for tour in site.tours:
                iv = tour.interval_minutes * MINUTE_MS
                r = arrive_end + round(rng.uniform(5 * MINUTE_MS, iv))
                dur = len(tour.checkpoints) * 4 * MINUTE_MS
                while r + dur < b:
                    if not (p.skip_round and rng.random() < p.skip_round):
                        t = r
                        for cp in tour.checkpoints:
                            t += round(rng.uniform(1.0, 3.5) * MINUTE_MS)
                            if rng.random() < p.tour_completion and not off(t) \
                                    and not (sleep and sleep[0] <= t < sleep[1]):
                                scans.append((t, tour.tour_id, cp))
                    r += iv + round(rng.gauss(0, 3 * MINUTE_MS))
            scans.sort(key=lambda s: s[0])
        for t, tour_id, cp in scans:
            if style == SPOOFED:
                acc = _spoof_acc(p, rng)
                n, e, mock = cp.north_m + rng.gauss(0, 1), cp.east_m + rng.gauss(0, 1), p.spoof_mock
            else:
                acc = gps_accuracy(rng, quality)
                s = acc * 0.5
                n, e, mock = cp.north_m + rng.gauss(0, s), cp.east_m + rng.gauss(0, s), False
            act(p, key, t, "TOUR_CHECKPOINT_SCANNED", slat + n * klat, slon + e * klon, acc, mock, None, None,
                tour_id, cp.checkpoint_id)
        # Location updates: walk between the post and the next checkpoint due; arrive from away_pos if late.
        period = g.location_every_min * MINUTE_MS
        post_n, post_e = site.post
        pos_n, pos_e = p.away_pos if p.away_pos is not None else site.post
        away_n, away_e = pos_n, pos_e
        home = None
        if style == SPOOFED:
            hn, he = p.away_pos if p.away_pos is not None else site.post
            home = (hn, he)
        si, ns = 0, len(scans)
        t = a + int(rng.random() * period)
        last = t
        while t < b:
            if gaps and off(t):
                t += int(period)
                continue
            if style == AWAY:
                tn, te, wander = away_n, away_e, 900.0  # variance, m^2: idling around somewhere else
            elif t < arrive_end:
                f = (t - a) / (arrive_end - a)
                tn, te, wander = away_n + (post_n - away_n) * f, away_e + (post_e - away_e) * f, 0.0
                pos_n, pos_e = tn, te
            else:
                while si < ns and scans[si][0] <= t:
                    cp = scans[si][2]
                    pos_n, pos_e = cp.north_m, cp.east_m
                    si += 1
                if si < ns and scans[si][0] - t < 15 * MINUTE_MS:
                    gn, ge = scans[si][2].north_m, scans[si][2].east_m
                else:
                    gn, ge = post_n, post_e
                dn, de = gn - pos_n, ge - pos_e
                dist = math.hypot(dn, de)
                step = 0.6 * (t - last) / 1000  # metres: a slow patrol walk
                if dist > step > 0:
                    pos_n += dn * step / dist
                    pos_e += de * step / dist
                else:
                    pos_n, pos_e = gn, ge
                tn, te, wander = pos_n, pos_e, 16.0
            last = t
            mock = False
            if style == SPOOFED:
                if rng.random() < p.leak and home is not None:  # the real position leaks through: a teleport
                    acc = gps_accuracy(rng, quality)
                    tn, te = home[0] + rng.gauss(0, acc * 0.5), home[1] + rng.gauss(0, acc * 0.5)
                else:
                    acc = _spoof_acc(p, rng)
                    tn, te, mock = post_n + rng.gauss(0, 1), post_e + rng.gauss(0, 1), p.spoof_mock
            elif rng.random() < 0.004:  # a cell-tower fix
                acc = round(rng.uniform(300, 1500), 1)
                rad, ang = rng.uniform(0.3, 1.0) * acc, rng.uniform(0, 2 * math.pi)
                tn, te = tn + rad * math.cos(ang), te + rad * math.sin(ang)
            else:  # GPS error (sd half the accuracy radius) on top of the wander around the walked path
                acc = gps_accuracy(rng, quality)
                s = math.sqrt(wander + acc * acc * 0.25)
                tn, te = tn + rng.gauss(0, s), te + rng.gauss(0, s)
            act(p, key, t, "LOCATION_UPDATE", slat + tn * klat, slon + te * klon, acc, mock, None, None, None, None)
            t += int(period * rng.uniform(0.8, 1.2))
        # Phone events: a Poisson process, ~2 an hour
        rate = 2.0 / HOUR_MS
        t = a + int(rng.expovariate(rate))
        while t < b:
            if not (gaps and off(t)):
                act(p, key, t, "PHONE_EVENT", None, None, None, False, rng.choice(PHONE_EVENTS), None, None, None)
            t += int(rng.expovariate(rate))
        # Tasks every two to three hours
        if p.tasks and style != AWAY:
            t = max(a, arrive_end) + round(rng.uniform(30, 120) * MINUTE_MS)
            while t < b:
                if not (gaps and off(t)) and not (sleep and sleep[0] <= t < sleep[1]):
                    act(p, key, t, "TASK_COMPLETED", None, None, None, False, None,
                        f"{site.site_id}-{rng.choice(site.tasks)}", None, None)
                t += round(rng.uniform(100, 200) * MINUTE_MS)


def _spoof_acc(p: Plan, rng: random.Random) -> float:
    """Reported accuracy of a spoofed fix: the variation's range, else the standard near-perfect values."""
    if p.spoof_acc is None:
        return perfect_accuracy(rng)
    return round(rng.uniform(*p.spoof_acc), 1)


def _pick(rng: random.Random, cum: list[int]) -> int:
    u = rng.random() * cum[-1]
    for i, c in enumerate(cum):
        if u < c:
            return i
    return len(cum) - 1


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method; fine for the small means used here."""
    if lam <= 0:
        return 0
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


def generate(cfg: SimConfig) -> Iterator[SimRecord]:
    """The records of one simulation run, in stream order (see the module doc)."""
    return iter(Simulation(cfg))


__all__ = ["STEM", "TOPICS", "SimConfig", "SimRecord", "SimStats", "Simulation", "generate"]
