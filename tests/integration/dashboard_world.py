"""A small world for the dashboard wall's tests: sites on ``ref.sites``, rows in the sinks' tables, a browser.

Tenant 1 has three sites with coordinates (two in Nairobi, one in London), open incidents at two of them (one with
evidence of all four kinds, revisions in the feed log and a fraud ticket), fraud scores at known instants, feed-log
rows with broadcast latencies; tenant 2 has a site, an incident and a ticket that must never show.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from confluent_kafka import Producer

from schemas import serde
from schemas.topics import site_key, topic

SHOTS = Path(__file__).resolve().parents[2] / ".cache" / "screenshots"

SITES: list[dict[str, Any]] = [
    {"tenant_id": 1, "site_id": "s-nbo-1", "name": "Nairobi Depot", "timezone": "Africa/Nairobi",
     "lat": -1.2764, "lon": 36.8172, "geofence_radius_m": 150.0},
    {"tenant_id": 1, "site_id": "s-nbo-2", "name": "Nairobi Mall", "timezone": "Africa/Nairobi",
     "lat": -1.3000, "lon": 36.7800, "geofence_radius_m": 220.0},
    {"tenant_id": 1, "site_id": "s-lon-1", "name": "London Office", "timezone": "Europe/London",
     "lat": 51.5072, "lon": -0.1276, "geofence_radius_m": 120.0},
    {"tenant_id": 2, "site_id": "s-2-lagos", "name": "Lagos Yard of tenant 2", "timezone": "Africa/Lagos",
     "lat": 6.5244, "lon": 3.3792, "geofence_radius_m": 100.0},
]
LATENCIES_MS = [100.0, 200.0, 300.0, 400.0, 900.0]  # broadcast latencies of tenant 1's feed-log rows


def site_record(s: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"tours": [], "active": True, "updated_at": 1_700_000_000_000, **s, **changes}


def produce_sites(bootstrap: str, namespace: str, items: list[tuple[bytes, bytes | None]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "message.timeout.ms": 10_000})
    for key, value in items:
        p.produce(topic("ref.sites", namespace), key=key, value=value)
    if p.flush(10) != 0:
        raise RuntimeError("ref.sites records not delivered within 10 s")


def clean_sites() -> list[tuple[bytes, bytes | None]]:
    return [(site_key(s["tenant_id"], s["site_id"]), serde.encode("site", site_record(s))) for s in SITES]


@dataclass
class World:
    now: datetime
    base: datetime  # a whole UTC hour, three hours before now
    score_times: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)  # site -> (when, risk)


def seed_world(dsn: str, now: datetime | None = None) -> World:
    """Migrate ``dsn`` and write tenant 1's and tenant 2's rows (see the module doc)."""
    from sinks.migrate import migrate

    migrate(dsn)
    now = now or datetime.now(UTC)
    base = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    w = World(now, base)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        for table in ("signal_windows", "fraud_scores", "event_log", "attendance", "activity"):
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table}_pdefault PARTITION OF {table} DEFAULT".encode())

        def score(tenant: int, sid: str, site: str, person: str, at: datetime, p: float, risk: str) -> None:
            reasons = [{"feature": "distance_from_site_m", "value": 1840.0, "contribution": 0.41,
                        "description": "checked in far outside the geofence"},
                       {"feature": "is_mock_location", "value": 1.0, "contribution": 0.22,
                        "description": "the phone reported a mock location"}]
            conn.execute(
                "INSERT INTO fraud_scores (score_id, event_id, tenant_id, site_id, person_id, device_id, event_type, "
                "occurred_at, fraud_probability, risk_level, model_version, reasons, feature_names, features) VALUES "
                "(%s, %s, %s, %s, %s, 'dev-1', 'CHECK_IN', %s, %s, %s, 'rules-v1', %s, '{}', '{}')",
                (sid, "att-" + sid, tenant, site, person, at, p, risk, orjson.dumps(reasons).decode()))
            w.score_times.setdefault(site, []).append((at, risk))

        # Nairobi depot: three flagged and two low scores in the base hour; London: one flagged an hour later.
        for i, (p, risk) in enumerate([(0.95, "CRITICAL"), (0.85, "CRITICAL"), (0.7, "HIGH"), (0.1, "LOW"),
                                       (0.2, "LOW")]):
            score(1, f"fs-nbo-{i}", "s-nbo-1", "p-guard-1", base + timedelta(minutes=5 + 7 * i), p, risk)
        score(1, "fs-lon-0", "s-lon-1", "p-guard-3", base + timedelta(hours=1, minutes=10), 0.75, "HIGH")
        score(2, "fs-t2-0", "s-2-lagos", "p-t2", base + timedelta(minutes=10), 0.99, "CRITICAL")

        t0 = base + timedelta(minutes=5)
        conn.execute("INSERT INTO alerts (event_id, tenant_id, site_id, person_id, occurred_at, received_at, "
                     "alert_type, severity, message, source) VALUES ('al-1', 1, 's-nbo-1', 'p-guard-1', %s, %s, "
                     "'PANIC_BUTTON', 'HIGH', 'panic button pressed at gate 2', 'guard-app')", (t0, t0))
        conn.execute("INSERT INTO anomalies (anomaly_id, tenant_id, site_id, person_id, window_id, baseline_id, "
                     "metric, observed, expected, stddev, threshold, score, severity, window_start, window_end) VALUES "
                     "('an-1', 1, 's-nbo-1', NULL, 'w-1', '1:s-nbo-1:movement:42', 'movement_distance_meters', "
                     "12.5, 840.0, 120.0, 3.0, 6.8, 'HIGH', %s, %s)", (t0, t0 + timedelta(minutes=5)))
        conn.execute("INSERT INTO audit_findings (event_id, tenant_id, site_id, person_id, occurred_at, received_at, "
                     "finding_type, severity, evidence_summary, auditor_id) VALUES ('f-1', 1, 's-nbo-1', "
                     "'p-guard-1', %s, %s, 'UNIFORM_MISSING', 'MEDIUM', 'guard without uniform on camera 4', "
                     "'auditor-1-01')", (t0 + timedelta(minutes=20), t0 + timedelta(minutes=20)))
        evidence = [("al-1", "NOC_ALERT", "HIGH", t0, "PANIC_BUTTON: panic button pressed at gate 2"),
                    ("an-1", "ANOMALY", "HIGH", t0 + timedelta(minutes=5), "movement_distance_meters 12.5 vs 840"),
                    ("fs-nbo-0", "FRAUD_SCORE", "CRITICAL", base + timedelta(minutes=5), "fraud 0.95 on CHECK_IN"),
                    ("f-1", "AUDIT_FINDING", "MEDIUM", t0 + timedelta(minutes=20), "UNIFORM_MISSING")]
        incidents = [("inc-a", 1, "s-nbo-1", "p-guard-1", "OPEN", "CRITICAL", "Fraud and panic at Nairobi Depot",
                      evidence, 3),
                     ("inc-b", 1, "s-lon-1", None, "OPEN", "MEDIUM", "Late tours at London Office", [], 1),
                     ("inc-c", 1, "s-nbo-2", None, "CLOSED", "HIGH", "Closed incident at Nairobi Mall", [], 2),
                     ("inc-t2", 2, "s-2-lagos", None, "OPEN", "CRITICAL", "Incident of tenant 2", [], 1)]
        for k, (iid, tenant, site, person, status, sev, title, ev, rev) in enumerate(incidents):
            first, last = t0 + timedelta(minutes=k), t0 + timedelta(minutes=30 + k)
            kinds = sorted({e[1] for e in ev}) or ["NOC_ALERT"]
            conn.execute(
                "INSERT INTO incidents (incident_id, tenant_id, site_id, person_id, status, combined_severity, kinds, "
                "related_event_ids, evidence, title, first_seen, last_seen, revision, updated_at) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, '[]', %s, %s, %s, %s, %s)",
                (iid, tenant, site, person, status, sev, kinds, [e[0] for e in ev], title, first, last, rev, last))
            for eid, kind, esev, at, summary in ev:
                conn.execute("INSERT INTO incident_events (incident_id, event_id, tenant_id, kind, severity, "
                             "occurred_at, summary) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                             (iid, eid, tenant, kind, esev, at, summary))
            for r in range(1, rev + 1):
                at = first + (last - first) * (r - 1) / max(1, rev - 1)
                payload = {"incident_id": iid, "tenant_id": tenant, "revision": r, "combined_severity": sev,
                           "status": status if r == rev else "OPEN", "title": title,
                           "related_event_ids": [e[0] for e in ev][: r + 1]}
                conn.execute("INSERT INTO event_log (event_id, type, ts, tenant_id, site_id, payload) VALUES "
                             "(%s, %s, %s, %s, %s, %s)",
                             (f"evt-{iid}-{r}", "incident_created" if r == 1 else "incident_updated", at, tenant, site,
                              orjson.dumps(payload).decode()))
        tickets = [("tk-a", 1, "NOC-2026-000101", "s-nbo-1", "p-guard-1", "NEW", "URGENT", "fs-nbo-0",
                    "Suspected attendance fraud by p-guard-1 at site s-nbo-1"),
                   ("tk-b", 1, "NOC-2026-000102", "s-lon-1", None, "OPEN", "HIGH", None, "Tour overdue at London"),
                   ("tk-t2", 2, "NOC-2026-000201", "s-2-lagos", None, "NEW", "URGENT", None, "Ticket of tenant 2")]
        for tid, tenant, no, site, person, status, prio, rel, title in tickets:
            conn.execute(
                "INSERT INTO tickets (ticket_id, tenant_id, ticket_no, site_id, person_id, category, source, status, "
                "priority, title, description, related_event_id, related_kind, created_at, updated_at, version) "
                "VALUES (%s, %s, %s, %s, %s, 'SECURITY_FRAUD', 'SYSTEM_GENERATED', %s, %s, %s, 'd', %s, %s, %s, %s, 1)",
                (tid, tenant, no, site, person, status, prio, title, rel, "FRAUD_SCORE" if rel else None, t0, t0))
        # Feed-log rows with broadcast latencies (wall clock: the last hour), one per minute, for tenant 1 and 2.
        for i, lat in enumerate(LATENCIES_MS):
            for tenant in (1, 2):
                at = now - timedelta(minutes=10 - i)
                conn.execute("INSERT INTO event_log (event_id, type, ts, tenant_id, site_id, payload, broadcast_at, "
                             "broadcast_latency_ms) VALUES (%s, 'alert_created', %s, %s, 's-nbo-1', '{}', %s, %s)",
                             (f"lat-{tenant}-{i}", base + timedelta(minutes=40 + i), tenant, at,
                              lat if tenant == 1 else lat * 10))
    return w


@contextlib.contextmanager
def chrome(width: int = 1500, height: int = 1300) -> Iterator[Any]:
    """Headless Chromium (Debian's chromium + chromedriver) with its console log readable."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="noc-chrome-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    try:
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()


def sign_in(driver: Any, url: str, token: str, timeout: float = 20) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-button").click()
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "live")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-wall") == "ready")


def page_errors(driver: Any) -> list[str]:
    """Script errors, console errors and CSP violations the page logged (not HTTP error answers: a 401 to the
    session probe before sign-in, the browser's own /favicon.ico request)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and e.get("source") != "network"]
