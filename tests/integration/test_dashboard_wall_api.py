"""The wall's REST endpoints (gateway/wall_api.py) over real Postgres and Kafka, and the site directory under
hostile ref.sites records."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import statistics
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from dashboard_world import LATENCIES_MS, SITES, World, clean_sites, produce_sites, seed_world, site_record

from gateway.config import GatewayConfig
from gateway.site_directory import SiteDirectory
from gateway.testing import running_gateway
from gateway.tokens import create_token
from schemas import serde
from schemas.topics import site_key

pytestmark = [pytest.mark.integration]
API = "/api/v2/noc"


def _get(client: httpx.Client, path: str, token: str, status: int = 200) -> Any:
    r = client.get(API + path, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == status, r.text
    return r.json().get("data")


def _expected_heat(w: World) -> list[dict[str, Any]]:
    zones = {s["site_id"]: s["timezone"] for s in SITES}
    cells: dict[tuple[str, int], Counter[str]] = {}
    for site, items in w.score_times.items():
        if site.startswith("s-2"):
            continue
        for at, risk in items:
            c = cells.setdefault((site, at.astimezone(ZoneInfo(zones[site])).hour), Counter())
            c["scores"] += 1
            c["flagged"] += risk in ("HIGH", "CRITICAL")
    return [{"site_id": s, "hour": h, "scores": c["scores"], "flagged": c["flagged"]}
            for (s, h), c in sorted(cells.items())]


def test_wall_endpoints_answer_from_the_world(pg_schema: tuple[str, str], namespace: str,
                                              kafka_bootstrap: str) -> None:
    dsn, _ = pg_schema
    w = seed_world(dsn)
    produce_sites(kafka_bootstrap, namespace, clean_sites())
    view = create_token(dsn, 1, ["noc:view"])[1]
    manage = create_token(dsn, 1, ["noc:manage"])[1]
    cfg = dataclasses.replace(GatewayConfig(), dsn=dsn, bootstrap=kafka_bootstrap, namespace=namespace)
    with running_gateway(cfg) as url, httpx.Client(base_url=url, timeout=20) as client:
        assert _get(client, "/wall/me", view) == {"tenant_id": 1, "capabilities": ["noc:view"], "can_manage": False}
        assert _get(client, "/wall/me", manage)["can_manage"] is True  # not the view token's cached answer

        sites = _get(client, "/wall/sites", view)
        assert [(s["site_id"], s["open_incidents"], s["max_severity"], s["timezone"]) for s in sites["sites"]] == [
            ("s-lon-1", 1, "MEDIUM", "Europe/London"), ("s-nbo-1", 1, "CRITICAL", "Africa/Nairobi"),
            ("s-nbo-2", 0, None, "Africa/Nairobi")]
        assert sites["sites"][1]["lat"] == -1.2764 and sites["sites"][1]["geofence_radius_m"] == 150.0
        assert sites["unplaced"] == []

        heat = _get(client, "/wall/heatmap?hours=24&anchor=latest", view)
        got = [{k: c[k] for k in ("site_id", "hour", "scores", "flagged")} for c in heat["cells"]]
        assert got == _expected_heat(w)
        nbo = next(c for c in heat["cells"] if c["site_id"] == "s-nbo-1")
        assert math.isclose(nbo["mean_score"], statistics.mean([0.95, 0.85, 0.7, 0.1, 0.2]))
        assert {s["site_id"]: s["timezone"] for s in heat["sites"]} == {
            "s-lon-1": "Europe/London", "s-nbo-1": "Africa/Nairobi", "s-nbo-2": "Africa/Nairobi"}

        hour = nbo["hour"]
        scores = _get(client, f"/wall/sites/s-nbo-1/scores?hours=24&hour={hour}&anchor=latest", view)
        assert [s["score_id"] for s in scores["items"]] == [f"fs-nbo-{i}" for i in range(4, -1, -1)]
        assert scores["items"][0]["reasons"][0]["description"] == "checked in far outside the geofence"
        flagged = _get(client, f"/wall/sites/s-nbo-1/scores?hours=24&hour={hour}&flagged=1&anchor=latest", view)
        assert [s["score_id"] for s in flagged["items"]] == ["fs-nbo-2", "fs-nbo-1", "fs-nbo-0"]
        other_hour = _get(client, f"/wall/sites/s-nbo-1/scores?hours=24&hour={(hour + 1) % 24}&anchor=latest", view)
        assert other_hour["items"] == []
        assert _get(client, "/wall/sites/s-2-lagos/scores?hours=24&anchor=latest", view)["items"] == []

        trends = _get(client, "/wall/trends?anchor=latest", view)
        lat = trends["latency"]
        assert lat["targets_ms"] == {"avg": 300.0, "p95": 500.0}
        assert lat["overall"]["n"] == len(LATENCIES_MS)  # tenant 1's rows only
        assert math.isclose(lat["overall"]["avg_ms"], statistics.mean(LATENCIES_MS))
        assert math.isclose(lat["overall"]["p95_ms"], statistics.quantiles(LATENCIES_MS, n=20, method="inclusive")[-1])
        assert sum(lat["n"]) == len(LATENCIES_MS) and len(lat["t"]) == len(lat["avg_ms"]) == len(lat["p95_ms"])
        assert [x for x in lat["avg_ms"] if x is not None] == LATENCIES_MS  # one a minute, oldest first
        alone = _get(client, "/wall/latency", view)
        assert (alone["overall"], alone["targets_ms"]) == (lat["overall"], lat["targets_ms"])
        by_type = {k: sum(v) for k, v in trends["events_per_minute"]["by_type"].items()}
        assert by_type == {"alert_created": 5, "incident_created": 3, "incident_updated": 3}
        assert len(trends["events_per_minute"]["t"]) in (24 * 60, 24 * 60 + 1)
        by_sev = {k: sum(v) for k, v in trends["incidents_per_hour"]["by_severity"].items()}
        assert by_sev == {"CRITICAL": 1, "MEDIUM": 1, "HIGH": 1}

        drill = _get(client, "/wall/incidents/inc-a", view)
        assert drill["incident"]["incident_id"] == "inc-a" and drill["site"]["name"] == "Nairobi Depot"
        tl = {e["kind"]: e for e in drill["timeline"]}
        assert sorted(tl) == ["ANOMALY", "AUDIT_FINDING", "FRAUD_SCORE", "NOC_ALERT"]
        assert (tl["ANOMALY"]["detail"]["observed"], tl["ANOMALY"]["detail"]["expected"]) == (12.5, 840.0)
        assert tl["FRAUD_SCORE"]["detail"]["reasons"][1]["feature"] == "is_mock_location"
        assert tl["NOC_ALERT"]["detail"]["message"] == "panic button pressed at gate 2"
        assert tl["AUDIT_FINDING"]["detail"]["finding_type"] == "UNIFORM_MISSING"
        assert [r["revision"] for r in drill["revisions"]] == [1, 2, 3]
        assert [t["ticket_id"] for t in drill["tickets"]] == ["tk-a"]
        assert drill["person"]["person_id"] == "p-guard-1" and len(drill["person"]["recent_scores"]) == 5
        _get(client, "/wall/incidents/inc-t2", view, status=404)  # tenant 2's: no existence leak
        _get(client, "/wall/sites", "noc_bogus_" + "x" * 30, status=401)
        _get(client, "/wall/heatmap?hours=100000", view, status=400)
        _get(client, "/wall/sites/s-nbo-1/scores?hour=24", view, status=400)
        _get(client, "/wall/incidents/" + "i" * 300, view, status=400)
        _get(client, "/wall/sites/s%01x/scores", view, status=400)
        _get(client, "/wall/trends?hours=two", view, status=400)
        _get(client, "/wall/heatmap?until=yesterday", view, status=400)


def _hostile_sites() -> list[tuple[bytes, bytes | None]]:
    """Records the directory must skip, most of them under the keys of clean sites (so they come after them)."""
    good = SITES[0]
    k1 = site_key(1, good["site_id"])
    bad = [site_record(good, timezone="Mars/Olympus_Mons"), site_record(good, timezone="../../etc/passwd"),
           site_record(good, lat=float("nan")), site_record(good, lat=200.0), site_record(good, lon=-181.0),
           site_record(good, geofence_radius_m=-5.0), site_record(good, geofence_radius_m=float("inf")),
           site_record(good, name="N" * 10_000), site_record(good, site_id="s-nbo-1\n<script>")]
    person = {"tenant_id": 1, "person_id": "p-1", "name": "x", "role": "GUARD", "home_site_id": "s-nbo-1",
              "device_ids": [], "usual_check_in_minute": 0, "active": True, "updated_at": 0}
    out: list[tuple[bytes, bytes | None]] = [(k1, serde.encode("site", r)) for r in bad]
    out += [(k1, b"\x00not avro at all"), (k1, serde.encode("person", person)), (k1, b"\xc3\x01" + b"\x00" * 8)]
    # a site that comes and goes (a tombstone removes it: not a rejection)
    gone = site_record(SITES[1], site_id="s-gone")
    out += [(site_key(1, "s-gone"), serde.encode("site", gone)), (site_key(1, "s-gone"), None)]
    return out


def test_hostile_site_records_leave_the_other_sites_exactly_as_a_clean_topic_does(
        namespace: str, kafka_bootstrap: str) -> None:
    from infra.topics_admin import apply_topics, delete_namespace

    hostile_ns = namespace + "h"
    apply_topics(kafka_bootstrap, hostile_ns)
    try:
        clean = clean_sites()
        produce_sites(kafka_bootstrap, namespace, clean)
        hostile = _hostile_sites()
        produce_sites(kafka_bootstrap, hostile_ns, clean[:2] + hostile + clean[2:])

        async def read(ns: str) -> tuple[dict[int, Any], int]:
            d = SiteDirectory(kafka_bootstrap, ns)
            return {t: await d.for_tenant(t) for t in (1, 2, 3)}, d.rejected

        want, want_rejected = asyncio.run(read(namespace))
        got, got_rejected = asyncio.run(read(hostile_ns))
        assert want_rejected == 0 and sorted(want[1]) == ["s-lon-1", "s-nbo-1", "s-nbo-2"] and want[3] == {}
        assert got == want
        assert got_rejected == len(hostile) - 2  # all but the site that came and went
    finally:
        delete_namespace(kafka_bootstrap, hostile_ns)
