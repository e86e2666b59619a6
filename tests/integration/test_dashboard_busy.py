"""The wall under a busy feed in headless Chromium: 1,000 events/s for 10 s, with hostile records mixed in.

Asserts that the page stays responsive (long tasks, event-loop lag, renders per second), keeps a bounded DOM, and
ends with exactly the state the clean records alone give (incidents, tickets, heatmap, trend counts): hostile
records change nothing but the feed's count. Prints the figures.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from typing import Any

import orjson
import pytest
from dashboard_world import SHOTS, chrome, clean_sites, page_errors, produce_sites, seed_world, sign_in

from gateway.config import GatewayConfig
from gateway.testing import FeedProducer, noc_event, running_gateway
from gateway.tokens import create_token

pytestmark = [pytest.mark.integration, pytest.mark.browser]
RATE, SECONDS = 1_000, 10
FAR_FUTURE_MS = 253_402_300_799_000  # 9999-12-31
IDLE_S = 3
SITES = ("s-nbo-1", "s-nbo-2", "s-lon-1")
TYPES = {"alert_created", "anomaly_detected", "finding_created", "finding_escalated", "incident_created",
         "incident_updated", "fraud_scored", "ticket_updated"}

PROBE = """
window.__probe = { longtasks: [], lags: [] };
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__probe.longtasks.push(e.duration); })
  .observe({ type: "longtask" });
let due = performance.now() + 100;
setInterval(() => {
  const now = performance.now(); window.__probe.lags.push(Math.max(0, now - due)); due = now + 100;
}, 100);
window.__probe.renders0 = NocWall.stats.renders;
window.__probe.renderMs0 = NocWall.stats.renderMs;
window.__probe.frameMs0 = NocWall.stats.frameMs;
window.__probe.byPanel0 = { ...NocWall.stats.byPanel };
"""

STATE = """
const W = NocWall, s = W.state;
return {
  incidents: Object.fromEntries([...s.incidents.values()].map((i) => [i.incident_id, Number(i.revision)])),
  tickets: Object.fromEntries([...s.tickets.values()].map((t) => [t.ticket_id, [t.status, Number(t.version)]])),
  heat: Object.fromEntries([...W.heat.rows.values()].map((r) => [r.site_id, r.flagged.reduce((a, b) => a + b, 0)])),
  trend_events: W.trends.ev.types.reduce((a, k) => a + W.trends.ev.counts[k].reduce((x, y) => x + y, 0), 0),
  feed_total: s.feedTotal, events: W.stats.events,
  feed_rows: document.querySelectorAll("#feed li").length,
  incident_rows: document.querySelectorAll("#incidents tr").length,
  nodes: document.getElementsByTagName("*").length,
  buttons: document.querySelectorAll("#tickets button").length,
};
"""


def _p95(xs: list[float]) -> float:
    return sorted(xs)[int(len(xs) * 0.95)] if xs else 0.0


def _metrics(driver: Any) -> dict[str, float]:
    """Chromium's cumulative main-thread times (s): all tasks, script, style recalculation, layout."""
    return {m["name"]: float(m["value"]) for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}


def _world_events(newest_ms: int) -> list[tuple[dict[str, Any], bool]]:
    """(event, clean) in send order: RATE * SECONDS events, about 1% of them hostile."""
    rng = random.Random(23)
    revision: dict[str, int] = {}
    version: dict[str, int] = {}
    out: list[tuple[dict[str, Any], bool]] = []
    for i in range(RATE * SECONDS):
        ts = newest_ms + i * 10
        site = rng.choice(SITES)
        r = rng.random()
        eid = f"busy-{i}"
        if r < 0.01:  # hostile
            kind = i % 6
            if kind == 0:
                ev = noc_event("incident_created", eid, 1, {}, site_id=site, ts_ms=ts)
                ev["payload"] = "{{{ not json"
            elif kind == 1 and revision:
                iid = rng.choice(sorted(revision))
                ev = noc_event("incident_updated", eid, 1, {"incident_id": iid, "revision": 0, "status": "OPEN",
                                                            "combined_severity": "LOW", "title": "stale"}, ts_ms=ts)
            elif kind == 2 and version:
                tid = rng.choice(sorted(version))
                ev = noc_event("ticket_updated", eid, 1, {"ticket_id": tid, "version": 0, "status": "NEW"}, ts_ms=ts)
            elif kind == 3:
                ev = noc_event("fraud_scored", eid, 1, {"risk_level": "CRITICAL", "occurred_at": "garbage",
                                                        "fraud_probability": "x", "model_version": "rules-v1"},
                               ts_ms=ts)
            elif kind == 4:
                ev = noc_event("bogus_type", eid, 1, {"title": "<script>window.__pwned = 1</script>"}, site_id=site,
                               ts_ms=ts)
            else:  # an event 7,000 years ahead: must not push the trend window off the chart
                ev = noc_event("alert_created", eid, 1, {"message": "from the future"}, site_id=site,
                               ts_ms=FAR_FUTURE_MS)
            out.append((ev, False))
        elif r < 0.71:
            out.append((noc_event("alert_created", eid, 1, {"message": f"door alarm {i}", "site_id": site},
                                  site_id=site, ts_ms=ts), True))
        elif r < 0.91:
            p = 0.6 + rng.random() * 0.4
            out.append((noc_event("fraud_scored", eid, 1, {
                "fraud_probability": p, "risk_level": "CRITICAL" if p >= 0.8 else "HIGH", "model_version": "rules-v1",
                "site_id": site, "occurred_at": ts, "score_id": f"fs-{eid}"}, site_id=site, ts_ms=ts), True))
        elif r < 0.99:
            iid = f"inc-busy-{rng.randrange(300)}"
            rev = revision[iid] = revision.get(iid, 0) + 1
            status = "CLOSED" if rng.random() < 0.1 else "OPEN"
            out.append((noc_event("incident_created" if rev == 1 else "incident_updated", eid, 1, {
                "incident_id": iid, "revision": rev, "status": status, "site_id": site,
                "combined_severity": rng.choice(("LOW", "MEDIUM", "HIGH", "CRITICAL")), "title": f"busy {iid}",
                "last_seen": ts, "first_seen": ts}, site_id=site, ts_ms=ts), True))
        else:
            tid = f"tk-busy-{rng.randrange(50)}"
            ver = version[tid] = version.get(tid, 0) + 1
            out.append((noc_event("ticket_updated", eid, 1, {
                "ticket_id": tid, "ticket_no": f"NOC-2026-9{tid[-2:]}", "version": ver, "priority": "HIGH",
                "status": ("NEW", "OPEN", "IN_PROGRESS", "RESOLVED")[ver % 4], "title": f"busy ticket {tid}",
                "site_id": site, "updated_at": ts}, site_id=site, ts_ms=ts), True))
    return out


def _expected(events: list[tuple[dict[str, Any], bool]]) -> dict[str, Any]:
    """What the clean records alone give, from the seeded world's state at sign-in."""
    incidents = {"inc-a": 3, "inc-b": 1}
    tickets: dict[str, list[Any]] = {"tk-a": ["NEW", 1], "tk-b": ["OPEN", 1]}
    heat = {"s-nbo-1": 3, "s-lon-1": 1, "s-nbo-2": 0}
    trend = 11
    for ev, clean in events:
        # the trend counts feed events by type, whatever their payload; one from the far future is out of range
        trend += ev["type"] in TYPES and ev["timestamp"] < FAR_FUTURE_MS
        if not clean:
            continue
        p = orjson.loads(ev["payload"])
        if ev["type"] in ("incident_created", "incident_updated"):
            if p["status"] == "OPEN":
                incidents[p["incident_id"]] = p["revision"]
            else:
                incidents.pop(p["incident_id"], None)
        elif ev["type"] == "ticket_updated":
            tickets[p["ticket_id"]] = [p["status"], p["version"]]
        elif ev["type"] == "fraud_scored":
            heat[p["site_id"]] += 1
    return {"incidents": incidents, "tickets": tickets, "heat": heat, "trend_events": trend}


def test_busy_feed_keeps_the_page_responsive_bounded_and_exact(pg_schema: tuple[str, str], namespace: str,
                                                                 kafka_bootstrap: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    dsn, _ = pg_schema
    w = seed_world(dsn)
    produce_sites(kafka_bootstrap, namespace, clean_sites())
    token = create_token(dsn, 1, ["noc:view"])[1]
    cfg = dataclasses.replace(GatewayConfig(), dsn=dsn, bootstrap=kafka_bootstrap, namespace=namespace)
    feed = FeedProducer(kafka_bootstrap, namespace)
    newest_ms = int((w.base.timestamp() + 44 * 60) * 1000) + 1
    events = _world_events(newest_ms)
    want = _expected(events)
    with running_gateway(cfg) as url, chrome() as d:
        sign_in(d, url, token)
        WebDriverWait(d, 20).until(lambda _: d.execute_script(STATE)["trend_events"] == 11)
        before = d.execute_script(STATE)
        assert before["buttons"] == 0  # a noc:view token gets no ticket actions
        d.execute_script(PROBE)
        time.sleep(IDLE_S)  # a same-run baseline: how late timers are with the page idle (the machine's share)
        idle_lags = d.execute_script("const l = window.__probe.lags; window.__probe.lags = []; return l")
        d.execute_cdp_cmd("Performance.enable", {})
        m0 = _metrics(d)
        started = time.monotonic()
        slice_n = RATE // 20  # 50 events every 50 ms
        for k in range(0, len(events), slice_n):
            for ev, _ in events[k:k + slice_n]:
                feed.send(ev, flush=False)
            if k == len(events) // 2:
                feed.send_raw(b"1", b"\x00 undecodable: the gateway dead-letters it")
            pause = started + (k + slice_n) / RATE - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the producer to RATE, not waiting for the page
        feed.flush()
        sent_s = time.monotonic() - started
        WebDriverWait(d, 30).until(lambda _: d.execute_script(STATE)["events"] >= len(events))
        seen_s = time.monotonic() - started
        probe = d.execute_script("return window.__probe")
        m1 = _metrics(d)
        stats = d.execute_script("return NocWall.stats")
        WebDriverWait(d, 10).until(lambda _: d.execute_script(STATE)["trend_events"] == want["trend_events"])
        after = d.execute_script(STATE)
        d.execute_script("window.scrollTo(0, 0)")
        SHOTS.mkdir(parents=True, exist_ok=True)
        assert d.save_screenshot(str(SHOTS / "dashboard-busy.png"))
        errors = page_errors(d)
        pwned = d.execute_script("return window.__pwned !== undefined")

    longtasks, lags = probe["longtasks"], probe["lags"]
    renders = stats["renders"] - probe["renders0"]
    render_ms = stats["renderMs"] - probe["renderMs0"]
    figures = {
        "events": len(events), "sent_s": round(sent_s, 2), "all_seen_s": round(seen_s, 2),
        "longtasks": len(longtasks), "longtask_total_ms": round(sum(longtasks)), "longtask_max_ms":
            round(max(longtasks, default=0)), "loop_lag_max_ms": round(max(lags, default=0)),
        "loop_lag_p95_ms": round(_p95(lags)), "idle_loop_lag_p95_ms": round(_p95(idle_lags)),
        "idle_loop_lag_max_ms": round(max(idle_lags, default=0)),
        "renders": renders, "renders_per_s": round(renders / seen_s, 2),
        "render_ms_per_render": round(render_ms / max(renders, 1), 2),
        "frame_ms_per_render": round((stats["frameMs"] - probe["frameMs0"]) / max(renders, 1), 2),
        "dom_nodes_before": before["nodes"], "dom_nodes_after": after["nodes"],
        "render_ms_by_panel": {k: round(v - probe["byPanel0"].get(k, 0)) for k, v in stats["byPanel"].items()},
        "main_thread_s": {k: round(m1[k] - m0[k], 2) for k in ("TaskDuration", "ScriptDuration", "RecalcStyleDuration",
                                                               "LayoutDuration")},
        "load_avg_1m": round(os.getloadavg()[0], 1)}
    print("\nbusy feed figures:", figures)

    # exactly the clean records' state: hostile records changed nothing but the feed's count
    assert after["incidents"] == want["incidents"]
    assert after["tickets"] == want["tickets"]
    assert after["heat"] == want["heat"]
    assert after["trend_events"] == want["trend_events"]
    assert after["feed_total"] == after["events"] == len(events)  # every record once; the undecodable one never
    assert errors == [] and not pwned
    # bounded DOM: a fixed pool of feed rows, at most 50 incident rows, node count flat
    assert after["feed_rows"] == 100
    assert after["incident_rows"] == 50
    assert after["nodes"] <= 2_500  # 10,000 events later: the node count does not grow with the events
    # batched rendering: at most a few renders a second
    assert renders / seen_s <= 5
    # keeps up: every event was applied within 2 s of the last one sent
    assert seen_s <= sent_s + 2, figures
    # responsive, on this shared 2-core machine at the loads seen (load average up to 42: frames that take 40 ms of
    # script take 350 ms of wall time): long tasks take at most half the main thread (rendering backs off when
    # frames get expensive), 95% of timers (and so of clicks and keys) run within a second of when they were due,
    # none more than 2 s late.
    assert sum(longtasks) <= 0.5 * seen_s * 1000, figures
    assert _p95(lags) <= 1000 and max(lags, default=0) <= 2000, figures
