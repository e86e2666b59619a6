"""End to end in headless Chromium: sign in with a token, see a fraud event arrive live, save a screenshot."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.testing import FeedProducer, noc_event, running_gateway, seed_rows
from gateway.tokens import create_token

pytestmark = [pytest.mark.integration, pytest.mark.browser]
SHOTS = Path(__file__).resolve().parents[2] / ".cache" / "screenshots"


def test_dashboard_shows_a_fraud_event_live(pg_schema: tuple[str, str], namespace: str, kafka_bootstrap: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    dsn, _ = pg_schema
    seed_rows(dsn)
    token = create_token(dsn, 1, ["noc:view"])[1]
    cfg = dataclasses.replace(GatewayConfig(), dsn=dsn, bootstrap=kafka_bootstrap, namespace=namespace)
    feed = FeedProducer(kafka_bootstrap, namespace)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="noc-chrome-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    with running_gateway(cfg) as url:
        driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
        try:
            driver.set_page_load_timeout(20)
            wait = WebDriverWait(driver, 20)
            driver.get(url + "/")
            driver.find_element(By.ID, "token").send_keys("noc_wrong_" + "x" * 30)
            driver.find_element(By.ID, "signin-button").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "signin-error"), "invalid bearer token"))
            field = driver.find_element(By.ID, "token")
            field.clear()
            field.send_keys(token)
            driver.find_element(By.ID, "signin-button").click()
            wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "live")
            # The REST panels are filled (rendered in batches, after the feed may already be live): the seeded
            # incident, ticket and heatmap site of tenant 1 only.
            wait.until(ec.text_to_be_present_in_element((By.ID, "incidents"), "Incident of tenant 1"))
            wait.until(ec.text_to_be_present_in_element((By.ID, "tickets"), "Ticket of tenant 1"))
            assert "tenant 2" not in driver.find_element(By.ID, "dashboard").text

            started = time.monotonic()
            feed.send(noc_event("fraud_scored", "fraud-live-1", 1,
                                {"fraud_probability": 0.97, "risk_level": "CRITICAL", "model_version": "rules-v1",
                                 "site_id": "s-live"}, site_id="s-live", person_id="p-1"))
            feed.send(noc_event("fraud_scored", "fraud-other-tenant", 2, {"risk_level": "CRITICAL"},
                                site_id="s-2-live"))
            row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'li[data-event-id="fraud-live-1"]')))
            seen_after = time.monotonic() - started
            assert "fraud_scored" in row.text and "0.97" in row.text
            cell = driver.find_element(By.CSS_SELECTOR, '.cell[data-site="s-live"]')
            assert cell.get_attribute("data-high") == "1"
            assert not driver.find_elements(By.CSS_SELECTOR, 'li[data-event-id="fraud-other-tenant"]')
            # Incidents and tickets update live too.
            feed.send(noc_event("incident_created", "inc-live-evt", 1,
                                {"incident_id": "inc-live", "status": "OPEN", "combined_severity": "CRITICAL",
                                 "title": "Live incident at s-live", "site_id": "s-live",
                                 "last_seen": int(time.time() * 1000)}, site_id="s-live"))
            feed.send(noc_event("ticket_updated", "tk-live-evt", 1,
                                {"ticket_id": "tk-live", "ticket_no": "NOC-2026-000777", "status": "NEW",
                                 "priority": "URGENT", "title": "Live fraud ticket", "version": 1}))
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '#incidents tr[data-id="inc-live"]')))
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '#tickets tr[data-id="tk-live"]')))
            first_ticket = driver.find_element(By.CSS_SELECTOR, "#tickets tr")
            assert first_ticket.get_attribute("data-id") == "tk-live"  # urgent first
            SHOTS.mkdir(parents=True, exist_ok=True)
            assert driver.save_screenshot(str(SHOTS / "dashboard.png"))
            assert seen_after < 10
        finally:
            driver.quit()


SNIPPET = """
const ws = new WebSocket('ws://localhost:8000/ws/noc/dashboard/');
ws.onmessage = (event) => {
  const data = JSON.parse(event.data);
  if (data.type === 'anomaly_detected') {
    console.log('Anomaly:', data.person_name, data.anomaly_type, data.fraud_score);
  }
};
"""


def test_the_runbook_snippet_typed_into_the_signed_in_dashboard_receives_anomalies_and_ticket_changes(
        pg_schema: tuple[str, str], namespace: str, kafka_bootstrap: str) -> None:
    """Sign in on the dashboard (a session cookie, no token kept by the page), then run the runbook's browser
    snippet as written (host and port changed) in the page: it receives an anomaly and a ticket's status change
    made through the REST API, one event per message with their fields at the top level."""
    import httpx
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    dsn, _ = pg_schema
    seed_rows(dsn)
    token = create_token(dsn, 1, ["noc:view"])[1]
    manage = create_token(dsn, 1, ["noc:manage"])[1]
    cfg = dataclasses.replace(GatewayConfig(), dsn=dsn, bootstrap=kafka_bootstrap, namespace=namespace)
    feed = FeedProducer(kafka_bootstrap, namespace)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    profile = tempfile.mkdtemp(prefix="noc-chrome-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    with running_gateway(cfg) as url:
        driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
        try:
            driver.set_page_load_timeout(20)
            wait = WebDriverWait(driver, 20)
            driver.get(url + "/")
            driver.find_element(By.ID, "token").send_keys(token)
            driver.find_element(By.ID, "signin-button").click()
            wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "live")
            # The page keeps no token: not in storage, not in a script-readable cookie (the session cookie is HttpOnly).
            visible = driver.execute_script(
                "return JSON.stringify(sessionStorage) + JSON.stringify(localStorage) + document.cookie")
            assert token not in visible and "noc_session" not in visible
            host = url.removeprefix("http://")
            driver.execute_script("window.__got = [];\n" + SNIPPET.replace("localhost:8000", host)
                                  + "ws.addEventListener('message', (e) => window.__got.push(JSON.parse(e.data)));")
            wait.until(lambda d: any(m["type"] == "hello" for m in d.execute_script("return window.__got")))
            feed.send(noc_event("anomaly_detected", "an-browser", 1,
                                {"anomaly_id": "an-b", "tenant_id": 1, "site_id": "s-1", "person_id": "p-1",
                                 "metric": "tour_checkpoints_scanned", "observed": 0.0, "expected": 12.0,
                                 "score": 0.87, "severity": "HIGH"}, site_id="s-1", person_id="p-1"))
            changed = httpx.post(f"{url}/api/v2/noc/tickets/tk-1/state/", json={"status": "OPEN"}, timeout=30,
                                 headers={"Authorization": f"Bearer {manage}", "Idempotency-Key": "browser-1"})
            assert changed.status_code == 200, changed.text

            def got(kind: str) -> list[dict[str, object]]:
                return [m for m in driver.execute_script("return window.__got") if m["type"] == kind]

            wait.until(lambda d: got("anomaly_detected") and got("ticket_updated"))
            anomaly, ticket = got("anomaly_detected")[0], got("ticket_updated")[0]
            assert anomaly["anomaly_type"] == "tour_checkpoints_scanned" and anomaly["fraud_score"] == 0.87
            assert "person_name" in anomaly and anomaly["tenant_id"] == 1 and anomaly["event_id"] == "an-browser"
            assert ticket["ticket_id"] == "tk-1" and ticket["status"] == "OPEN" and ticket["tenant_id"] == 1
            assert isinstance(ticket["timestamp"], str) and ticket["timestamp"].endswith("Z")
            logs = [e["message"] for e in driver.get_log("browser")]
            assert any("Anomaly:" in m and "tour_checkpoints_scanned" in m and "0.87" in m for m in logs), logs
        finally:
            driver.quit()
