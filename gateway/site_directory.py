"""The tenants' sites (name, coordinates, geofence, time zone) for the dashboard wall, read from ``<ns>.ref.sites``.

Sites are reference data on a compacted Kafka topic (one partition, keyed by tenant and site); Postgres has
no table of them. :class:`SiteDirectory` reads the whole topic in a worker thread when asked and its copy is
older than ``ttl_s``; concurrent callers share one read. A record that does not decode, or whose coordinates,
radius or time zone are unusable, is skipped (counted in ``rejected``): a site keeps its last usable version,
and a bad record never costs more than its own site.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.compacted import read_to_end
from schemas.serde import DecodeError, SchemaStore
from schemas.topics import topic

__all__ = ["Site", "SiteDirectory", "parse_site"]

log = logging.getLogger("nocstream.gateway.sites")
MAX_RADIUS_M = 50_000.0
MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class Site:
    tenant_id: int
    site_id: str
    name: str
    timezone: str
    lat: float
    lon: float
    geofence_radius_m: float
    active: bool

    def as_json(self) -> dict[str, Any]:
        return {"site_id": self.site_id, "name": self.name, "timezone": self.timezone, "lat": self.lat,
                "lon": self.lon, "geofence_radius_m": self.geofence_radius_m, "active": self.active}


def _valid_zone(name: str) -> bool:
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def parse_site(rec: dict[str, Any]) -> Site | None:
    """The site of a decoded ref.sites record, or None when a field the wall draws from is unusable."""
    try:
        tenant, site_id, name = int(rec["tenant_id"]), str(rec["site_id"]), str(rec["name"])
        tz, lat, lon = str(rec["timezone"]), float(rec["lat"]), float(rec["lon"])
        radius = float(rec["geofence_radius_m"])
    except (KeyError, TypeError, ValueError):
        return None
    if not 0 < len(site_id) <= MAX_TEXT or any(ord(c) < 32 for c in site_id) or len(name) > MAX_TEXT:
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    if not (math.isfinite(radius) and 0 <= radius <= MAX_RADIUS_M) or not _valid_zone(tz):
        return None
    return Site(tenant, site_id, name, tz, lat, lon, radius, bool(rec.get("active", True)))


class SiteDirectory:
    def __init__(self, bootstrap: str, namespace: str, ttl_s: float = 30.0, timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic("ref.sites", namespace)
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.rejected = 0
        self._sites: dict[tuple[int, str], Site] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._schemas = SchemaStore()

    async def for_tenant(self, tenant_id: int) -> dict[str, Site]:
        """The tenant's sites by id (possibly ``ttl_s`` old); TimeoutError or KafkaException when the broker does
        not answer."""
        if time.monotonic() - self._loaded_at > self.ttl_s:
            async with self._lock:
                if time.monotonic() - self._loaded_at > self.ttl_s:
                    self._sites, rejected = await asyncio.to_thread(self._read)
                    if rejected >= 0:  # -1: the topic is missing; look again on the next call
                        self.rejected, self._loaded_at = rejected, time.monotonic()
        return {s.site_id: s for (t, _), s in self._sites.items() if t == tenant_id}

    def _read(self) -> tuple[dict[tuple[int, str], Site], int]:
        """Every record of the topic, the latest per key winning (a tombstone removes its key), and how many
        records were skipped (-1 when the topic does not exist)."""
        by_key: dict[bytes, Site] = {}
        rejected = 0

        def apply(key: bytes, value: bytes | None) -> None:
            nonlocal rejected
            if value is None:
                by_key.pop(key, None)
                return
            try:
                _, rec = self._schemas.decode(value, expected="site")
            except DecodeError:
                rejected += 1
                return
            site = parse_site(rec)
            if site is None:  # the key's last usable version, if any, stays
                rejected += 1
                return
            by_key[key] = site

        if not read_to_end(self.bootstrap, self.topic, self.timeout_s, apply):
            return {}, -1  # no ref.sites topic (yet): no sites, and no copy to keep
        if rejected:
            log.warning("%s: %d site record(s) left out (undecodable or unusable)", self.topic, rejected)
        return {(s.tenant_id, s.site_id): s for s in by_key.values()}, rejected
