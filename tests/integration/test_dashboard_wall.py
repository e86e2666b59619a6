"""The wall in headless Chromium, from live data: trends, the site × local-hour heatmap and a cell's scores, the sites
map and its filter, the incident drill-down by keyboard and mouse, and ticket actions that change Postgres and
come back over the feed."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from dashboard_world import SHOTS, chrome, clean_sites, page_errors, produce_sites, seed_world, sign_in

from gateway.config import GatewayConfig
from gateway.testing import FeedProducer, noc_event, running_gateway
from gateway.tokens import create_token

pytestmark = [pytest.mark.integration, pytest.mark.browser]
DATED = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \S+$")


def _ticket(dsn: str, ticket_id: str) -> tuple[str, str | None, int]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT status, resolution, version FROM tickets WHERE ticket_id = %s",
                           (ticket_id,)).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def _until(check: Any, timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def test_wall_panels_clicks_and_ticket_actions(pg_schema: tuple[str, str], namespace: str,
                                               kafka_bootstrap: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    dsn, _ = pg_schema
    w = seed_world(dsn)
    produce_sites(kafka_bootstrap, namespace, clean_sites())
    token = create_token(dsn, 1, ["noc:manage"])[1]
    cfg = dataclasses.replace(GatewayConfig(), dsn=dsn, bootstrap=kafka_bootstrap, namespace=namespace)
    feed = FeedProducer(kafka_bootstrap, namespace)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with running_gateway(cfg) as url, chrome(1500, 1900) as d:
        wait = WebDriverWait(d, 20)
        css = lambda sel: d.find_element(By.CSS_SELECTOR, sel)  # noqa: E731
        attr = lambda sel, name: css(sel).get_attribute(name)  # noqa: E731
        sign_in(d, url, token)
        dash = d.find_element(By.ID, "dashboard")
        assert "tenant 2" not in dash.text and "s-2-lagos" not in dash.text

        # -- trends: three uPlot charts; latency against the targets; live counting ----------------------------
        for chart in ("trend-events", "trend-incidents", "trend-latency"):
            assert css(f"#{chart} canvas").size["width"] >= 300
        assert float(attr("#latency-summary", "data-avg")) == pytest.approx(380.0)
        assert float(attr("#latency-summary", "data-p95")) == pytest.approx(800.0)
        assert css("#latency-summary").text.count("✗ over") == 2  # 380 > 300 and 800 > 500
        wait.until(lambda _: attr("#trends-panel", "data-events") == "11")
        newest_ms = int((w.base.timestamp() + 44 * 60) * 1000)
        feed.send(noc_event("alert_created", "live-alert-1", 1, {"message": "live door alarm", "site_id": "s-nbo-2"},
                            site_id="s-nbo-2", ts_ms=newest_ms))
        wait.until(lambda _: attr("#trends-panel", "data-events") == "12")

        # -- heatmap: the Nairobi depot's flagged punches sit at its local hour -----------------------------------
        local = w.score_times["s-nbo-1"][0][0].astimezone(ZoneInfo("Africa/Nairobi")).hour
        cell = f'td.hcell[data-site="s-nbo-1"][data-hour="{local}"]'
        wait.until(lambda _: attr(cell, "data-value") == "3")
        london = w.score_times["s-lon-1"][0][0].astimezone(ZoneInfo("Europe/London")).hour
        assert attr(f'td.hcell[data-site="s-lon-1"][data-hour="{london}"]', "data-value") == "1"
        Select(css("#heat-metric")).select_by_value("mean")
        wait.until(lambda _: attr(cell, "data-value") not in ("3", None))
        assert float(attr(cell, "data-value")) == pytest.approx((0.95 + 0.85 + 0.7 + 0.1 + 0.2) / 5)
        Select(css("#heat-metric")).select_by_value("flagged")
        wait.until(lambda _: attr(cell, "data-value") == "3")  # the table is rebuilt for the metric: click the new one
        css(cell).click()
        wait.until(lambda _: attr("#heat-detail", "data-state") == "loaded")
        ids = [r.get_attribute("data-score-id") for r in d.find_elements(By.CSS_SELECTOR, "#heat-detail tbody tr")]
        assert ids == [f"fs-nbo-{i}" for i in range(4, -1, -1)]
        assert "checked in far outside the geofence" in css("#heat-detail").text

        # -- sites map: severity of open incidents; a click filters the page; live incidents recolour -----------
        wait.until(lambda _: attr('g.site[data-site="s-nbo-1"]', "data-severity") == "CRITICAL")
        assert attr('g.site[data-site="s-lon-1"]', "data-severity") == "MEDIUM"
        assert attr('g.site[data-site="s-nbo-2"]', "data-severity") == ""
        d.execute_script("arguments[0].focus()", css('g.site[data-site="s-lon-1"]'))
        ActionChains(d).send_keys(Keys.ENTER).perform()  # the keyboard picks a site as a click does
        wait.until(lambda _: [r.get_attribute("data-id") for r in d.find_elements(By.CSS_SELECTOR, "#incidents tr")]
                   == ["inc-b"])
        wait.until(lambda _: [r.get_attribute("data-id") for r in d.find_elements(By.CSS_SELECTOR, "#tickets tr")]
                   == ["tk-b"])
        assert css("#site-filter").is_displayed() and "s-lon-1" in css("#site-filter").text
        shown = [r.get_attribute("data-site") for r in d.find_elements(By.CSS_SELECTOR, "#feed li:not([hidden])")]
        assert shown == []  # the only live event so far was at s-nbo-2
        css("#site-filter-clear").click()
        wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#incidents tr")) == 2)
        feed.send(noc_event("incident_created", "live-inc-evt", 1,
                            {"incident_id": "inc-live", "status": "OPEN", "combined_severity": "HIGH", "revision": 1,
                             "title": "<img src=x onerror=window.__pwned=1> at mall", "site_id": "s-nbo-2",
                             "last_seen": newest_ms, "first_seen": newest_ms}, site_id="s-nbo-2", ts_ms=newest_ms))
        wait.until(lambda _: attr('g.site[data-site="s-nbo-2"]', "data-severity") == "HIGH")
        assert "<img src=x onerror=window.__pwned=1> at mall" in css('#incidents tr[data-id="inc-live"]').text
        assert d.execute_script("return window.__pwned === undefined")

        # -- dates: with the date, in the site's zone, or UTC ------------------------------------------------------
        when = css('#incidents tr[data-id="inc-a"] td.when').text
        assert DATED.match(when) and when.endswith("GMT+3"), when
        Select(css("#wall-zone")).select_by_value("utc")
        wait.until(lambda _: css('#incidents tr[data-id="inc-a"] td.when').text.endswith("UTC"))
        Select(css("#wall-zone")).select_by_value("site")

        # -- ticket action from the queue: acknowledge tk-a (NEW -> OPEN) ------------------------------------------
        css('#tickets tr[data-id="tk-a"] button[data-to="OPEN"]').click()
        _until(lambda: _ticket(dsn, "tk-a")[0] == "OPEN", what="tk-a OPEN in Postgres")
        wait.until(lambda _: any("NOC-2026-000101 OPEN" in e.text
                                 for e in d.find_elements(By.CSS_SELECTOR, "#feed li.ev-ticket_updated")))
        wait.until(lambda _: attr('#tickets tr[data-id="tk-a"]', "data-status") == "OPEN")

        # -- drill-down by keyboard: Enter opens, Esc closes and gives the focus back -------------------------------
        d.execute_script("arguments[0].focus()", css('#incidents tr[data-id="inc-a"]'))
        assert d.switch_to.active_element.get_attribute("data-id") == "inc-a"
        ActionChains(d).send_keys(Keys.ENTER).perform()
        wait.until(lambda _: attr("#drill-body", "data-incident") == "inc-a")
        assert css("#drill").get_attribute("open") is not None
        kinds = [e.get_attribute("data-kind") for e in d.find_elements(By.CSS_SELECTOR, "#drill-timeline > li")]
        assert sorted(kinds) == ["ANOMALY", "AUDIT_FINDING", "FRAUD_SCORE", "NOC_ALERT"]
        body = css("#drill-body").text
        for text in ("12.50 vs 840.00", "checked in far outside the geofence", "panic button pressed at gate 2",
                     "guard without uniform on camera 4", "Nairobi Depot (s-nbo-1) · Africa/Nairobi", "p-guard-1"):
            assert text in body, text
        assert [r.get_attribute("data-revision") for r in d.find_elements(By.CSS_SELECTOR, "#drill-revisions tbody tr")
                ] == ["1", "2", "3"]
        assert d.save_screenshot(str(SHOTS / "dashboard-wall-drilldown.png"))
        ActionChains(d).send_keys(Keys.ESCAPE).perform()
        wait.until(lambda _: css("#drill").get_attribute("open") is None)
        assert d.switch_to.active_element.get_attribute("data-id") == "inc-a"

        # -- ticket actions from the drill-down: start, then resolve as FRAUD_CONFIRMED -----------------------------
        css('#incidents tr[data-id="inc-a"]').click()
        wait.until(lambda _: attr("#drill-body", "data-incident") == "inc-a")
        css('#drill-tickets tr[data-id="tk-a"] button[data-to="IN_PROGRESS"]').click()
        _until(lambda: _ticket(dsn, "tk-a")[0] == "IN_PROGRESS", what="tk-a IN_PROGRESS in Postgres")
        wait.until(lambda _: attr('#drill-tickets tr[data-id="tk-a"]', "data-status") == "IN_PROGRESS")
        css('#drill-tickets tr[data-id="tk-a"] button[data-to="RESOLVED"]').click()
        wait.until(lambda _: css("#resolve-dialog").get_attribute("open") is not None)
        Select(css("#resolve-resolution")).select_by_value("FRAUD_CONFIRMED")
        css("#resolve-note").send_keys("seen on camera")
        css("#resolve-submit").click()
        _until(lambda: _ticket(dsn, "tk-a")[:2] == ("RESOLVED", "FRAUD_CONFIRMED"), what="tk-a resolved")
        wait.until(lambda _: attr('#drill-tickets tr[data-id="tk-a"]', "data-status") == "RESOLVED")
        css("#drill-close").click()

        # -- resolve from the queue as FALSE_POSITIVE (Esc first: closing the dialog changes nothing) --------------
        css('#tickets tr[data-id="tk-b"] button[data-to="RESOLVED"]').click()
        wait.until(lambda _: css("#resolve-dialog").get_attribute("open") is not None)
        ActionChains(d).send_keys(Keys.ESCAPE).perform()
        wait.until(lambda _: css("#resolve-dialog").get_attribute("open") is None)
        css('#tickets tr[data-id="tk-b"] button[data-to="RESOLVED"]').click()
        wait.until(lambda _: css("#resolve-dialog").get_attribute("open") is not None)
        Select(css("#resolve-resolution")).select_by_value("FALSE_POSITIVE")
        css("#resolve-submit").click()
        _until(lambda: _ticket(dsn, "tk-b")[:2] == ("RESOLVED", "FALSE_POSITIVE"), what="tk-b resolved")
        wait.until(lambda _: any("NOC-2026-000102 RESOLVED FALSE_POSITIVE" in e.text
                                 for e in d.find_elements(By.CSS_SELECTOR, "#feed li.ev-ticket_updated")))
        assert attr('#tickets tr[data-id="tk-b"]', "data-status") == "RESOLVED"
        assert not d.find_elements(By.CSS_SELECTOR, '#tickets tr[data-id="tk-b"] button')  # nothing left to do
        assert _ticket(dsn, "tk-a")[2] == 4 and _ticket(dsn, "tk-b")[2] == 2  # one version per action, no repeats

        d.execute_script("window.scrollTo(0, 0)")
        assert d.save_screenshot(str(SHOTS / "dashboard-wall.png"))
        assert page_errors(d) == []
