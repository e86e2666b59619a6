"""``noc verify``: the runbook's post-deployment verification checklist, run against a live deployment.

Each check fetches its figure (the gateway's REST API and WebSocket, called at the paths the runbook documents;
Postgres only for what the API does not expose: audit-finding escalation and baselines) and a pure judge turns
the figure into a :class:`Check` (✓/✗ and the figure behind it). Every network call has a timeout.

Checks, in runbook order: tour checkpoints collected in the last 2 hours (not 0); correlated incidents with
related alerts; HIGH/CRITICAL findings escalated to SECURITY_AUDIT tickets; stable baselines with their
false-positive rate and dynamic threshold; an active model with PR-AUC and precision at 80% recall;
SECURITY_FRAUD tickets with their scores; each documented REST route answers ``success`` within 500 ms; a
WebSocket client receives a live event; broadcast latency over the last hour (avg < 300 ms, p95 < 500 ms).
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "Check",
    "Verifier",
    "judge_baselines",
    "judge_checkpoints",
    "judge_correlation",
    "judge_escalation",
    "judge_fraud_tickets",
    "judge_latency",
    "judge_model",
    "judge_routes",
    "judge_websocket",
    "render",
]

PREFIX = "/api/v2/noc"
ROUTE_BUDGET_MS = 500.0
LATENCY_AVG_MS = 300.0
LATENCY_P95_MS = 500.0
FRAUD_THRESHOLD = 0.80
# The REST routes the runbook documents, with its trailing slashes; {person} and {site} are filled with ids the
# deployment knows (the runbook's "1" is an example id).
DOCUMENTED_ROUTES: tuple[str, ...] = (
    "/telemetry/signals/{person}/",
    "/telemetry/signals/site/{site}/",
    "/telemetry/correlations/",
    "/security/fraud-scores/live/",
    "/security/fraud-scores/history/{person}/",
    "/security/fraud-scores/heatmap/",
    "/security/ml-models/performance/",
)
WS_PATH = "/ws/noc/dashboard/"
CONTROL_TYPES = frozenset({"hello", "subscribed", "pong", "heartbeat", "error"})


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    figure: str


def render(checks: Iterable[Check]) -> str:
    return "\n".join(f"{'✓' if c.ok else '✗'} {c.name}: {c.figure}" for c in checks)


# -- judges (pure) ----------------------------------------------------------------------------------------------

def judge_checkpoints(site_totals: Mapping[str, int]) -> Check:
    """Tour checkpoints scanned in the last 2 hours, per site (SITE windows): not 0."""
    total = sum(site_totals.values())
    busiest = max(site_totals.items(), key=lambda kv: (kv[1], kv[0]), default=None)
    figure = f"{total:,} checkpoints scanned in the last 2 h over {len(site_totals)} site(s)"
    if busiest is not None and total:
        figure += f" (most: {busiest[1]:,} at {busiest[0]})"
    return Check("tour checkpoints collected", total > 0, figure)


def judge_correlation(incidents: Sequence[Mapping[str, Any]]) -> Check:
    """Correlated incidents, and how many of them hold related alerts (NOC_ALERT evidence): at least one."""
    with_alerts = [i for i in incidents if "NOC_ALERT" in (i.get("kinds") or [])]
    most = max((sum(1 for e in i.get("evidence") or [] if e.get("kind") == "NOC_ALERT") for i in with_alerts),
               default=0)
    multi = sum(1 for i in incidents if len(i.get("kinds") or []) > 1)
    return Check("signal correlation", bool(with_alerts),
                 f"{len(incidents):,} correlated incident(s), {multi:,} across several kinds, {len(with_alerts):,} "
                 f"with related alerts (most in one: {most})")


def judge_escalation(high_findings: int, escalated: int, audit_tickets: int) -> Check:
    """HIGH/CRITICAL findings escalated (all of them) and SECURITY_AUDIT tickets opened for them (some)."""
    ok = high_findings > 0 and escalated >= high_findings and audit_tickets > 0
    return Check("audit escalation", ok, f"{escalated:,} of {high_findings:,} HIGH/CRITICAL findings escalated; "
                                         f"{audit_tickets:,} SECURITY_AUDIT ticket(s)")


def judge_baselines(rows: Sequence[Mapping[str, Any]], total: int) -> Check:
    """Stable baselines, each with a false-positive rate in [0, 1] and a positive dynamic threshold."""
    stable = [r for r in rows if r.get("is_stable")]
    sound = [r for r in stable if _finite(r.get("false_positive_rate")) and 0 <= r["false_positive_rate"] <= 1
             and _finite(r.get("dynamic_threshold")) and r["dynamic_threshold"] > 0]
    figure = f"{len(stable):,} of {total:,} baselines stable"
    if stable:
        fp = sum(r["false_positive_rate"] for r in sound) / max(1, len(sound))
        th = [r["dynamic_threshold"] for r in sound]
        figure += (f"; mean FP rate {fp:.2%}, dynamic threshold {min(th):.2f}-{max(th):.2f}" if th else
                   "; none with a sound FP rate and threshold")
        reviewed = sum(int(r.get("feedback_total") or 0) for r in stable)
        figure += f"; {reviewed:,} review(s) fed back"
    return Check("baseline tuning", bool(stable) and len(sound) == len(stable), figure)


def judge_model(models: Sequence[Mapping[str, Any]]) -> Check:
    """An active model whose holdout metrics carry PR-AUC and precision at 80% recall (both in [0, 1])."""
    active = [m for m in models if m.get("is_active")]
    for m in active:
        met = m.get("metrics") or {}
        pr, p80 = met.get("pr_auc"), met.get("precision_at_80_recall")
        if isinstance(pr, int | float) and isinstance(p80, int | float) and _finite(pr) and _finite(p80) \
                and 0 <= pr <= 1 and 0 <= p80 <= 1:
            return Check("ML model", True, f"active {m.get('version')}: PR-AUC {pr:.3f}, precision at 80% recall "
                                           f"{p80:.3f}, {met.get('positives', '?')} fraud / "
                                           f"{met.get('negatives', '?')} normal holdout samples")
    if active:
        return Check("ML model", False, f"active {active[0].get('version')} has no PR-AUC / precision at 80% recall")
    return Check("ML model", False, f"no active model ({len(models)} registered)")


def judge_fraud_tickets(tickets: int, scores: Mapping[str, float | None]) -> Check:
    """Auto-created SECURITY_FRAUD tickets exist, and the score behind each one looked at is known and >= 0.80."""
    shown = ", ".join(f"{no} {s:.0%}" if s is not None else f"{no} score not found" for no, s in scores.items())
    ok = tickets > 0 and bool(scores) and all(s is not None and s >= FRAUD_THRESHOLD for s in scores.values())
    return Check("fraud tickets", ok, f"{tickets:,} auto-created SECURITY_FRAUD ticket(s)"
                 + (f": {shown}" if shown else ""))


def judge_routes(results: Sequence[tuple[str, int, str | None, float]]) -> Check:
    """(path, HTTP status, body status, elapsed ms) per documented route: 200, ``success``, within 500 ms."""
    bad = [f"{path} {code} {status or '-'} {ms:.0f} ms" for path, code, status, ms in results
           if code != 200 or status != "success" or ms >= ROUTE_BUDGET_MS]
    slowest = max((ms for *_, ms in results), default=0.0)
    figure = f"{len(results) - len(bad)} of {len(results)} routes answered success, slowest {slowest:.0f} ms"
    if bad:
        figure += "; failing: " + "; ".join(bad)
    return Check("REST routes < 500 ms", bool(results) and not bad, figure)


def judge_websocket(event_type: str | None, waited_s: float, how: str) -> Check:
    if event_type is None:
        return Check("WebSocket live event", False, f"no event within {waited_s:.0f} s ({how})")
    return Check("WebSocket live event", True, f"{event_type} after {waited_s:.1f} s ({how})")


def judge_latency(by_type: Sequence[Mapping[str, Any]]) -> Check:
    """Broadcast latency over the last hour from the per-type figures: the average weighted by broadcasts, and the
    largest per-type p95 (a bound on the overall p95)."""
    rows = [r for r in by_type if int(r.get("broadcast") or 0) > 0 and _finite(r.get("avg_latency_ms"))]
    n = sum(int(r["broadcast"]) for r in rows)
    if not n:
        return Check("broadcast latency", False, "no broadcast in the last hour")
    avg = sum(float(r["avg_latency_ms"]) * int(r["broadcast"]) for r in rows) / n
    p95 = max(float(r["p95_latency_ms"]) for r in rows if _finite(r.get("p95_latency_ms")))
    return Check("broadcast latency", avg < LATENCY_AVG_MS and p95 < LATENCY_P95_MS,
                 f"avg {avg:.0f} ms, p95 <= {p95:.0f} ms over {n:,} broadcasts in the last hour "
                 f"(targets {LATENCY_AVG_MS:.0f} / {LATENCY_P95_MS:.0f})")


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


# -- fetching ---------------------------------------------------------------------------------------------------

class ApiFailure(RuntimeError):
    """A REST call that did not answer ``success``."""


class Verifier:
    """Runs the checks against one deployment: the gateway at ``url`` with ``token``; Postgres at ``dsn``."""

    def __init__(self, url: str, token: str, dsn: str, timeout_s: float = 5.0, ws_wait_s: float = 30.0,
                 poke: bool = False, latency_wait_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.dsn = dsn
        self.timeout_s = timeout_s
        self.ws_wait_s = ws_wait_s
        self.poke = poke
        self.latency_wait_s = latency_wait_s
        self._ticket_rows: list[dict[str, Any]] | None = None
        self._tenant: int | None = None

    # REST

    def call(self, path: str, method: str = "GET", body: Any = None) -> tuple[int, Any, float]:
        """(HTTP status, decoded body or None, elapsed ms)."""
        data = None if body is None else orjson.dumps(body)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                code, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            code, raw = exc.code, exc.read()
        ms = (time.perf_counter() - t0) * 1000
        try:
            decoded = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            decoded = None
        return code, decoded, ms

    def data(self, path: str, **query: Any) -> Any:
        q = {k: v for k, v in query.items() if v is not None}
        full = path + ("?" + urllib.parse.urlencode(q) if q else "")
        code, body, _ = self.call(full)
        if code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            message = body.get("message") if isinstance(body, dict) else None
            raise ApiFailure(f"GET {full}: HTTP {code}{f' ({message})' if message else ''}")
        return body["data"]

    def pages(self, path: str, limit: int = 200, max_pages: int = 50, **query: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset: int | None = 0
        for _ in range(max_pages):
            if offset is None:
                break
            d = self.data(path, limit=limit, offset=offset, **query)
            out.extend(d["items"])
            offset = d.get("next_offset")
        return out

    def _pg(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.dsn, connect_timeout=int(max(1, self.timeout_s)), row_factory=dict_row) as conn:
            conn.execute(f"SET statement_timeout = {int(self.timeout_s * 1000)}")
            return conn.execute(sql, params).fetchall()

    # the checks

    def run(self) -> list[Check]:
        import psycopg
        from websockets.exceptions import WebSocketException

        steps: list[tuple[str, Callable[[], Check]]] = [
            ("tour checkpoints collected", self.checkpoints),
            ("signal correlation", self.correlation),
            ("audit escalation", self.escalation),
            ("baseline tuning", self.baselines),
            ("ML model", self.model),
            ("fraud tickets", self.fraud_tickets),
            ("REST routes < 500 ms", self.routes),
            ("WebSocket live event", self.websocket),
            ("broadcast latency", self.latency),
        ]
        out = []
        for name, step in steps:
            try:
                out.append(step())
            except (ApiFailure, OSError, KeyError, TypeError, ValueError, psycopg.Error, WebSocketException) as exc:
                # the deployment answered wrongly or not at all: this check fails, the others still run
                why = " ".join(str(exc).split())  # one line per check
                out.append(Check(name, False, f"could not be checked: {type(exc).__name__}: {why}"))
        return out

    def _sites(self) -> list[str]:
        heat = self.data(f"{PREFIX}/security/fraud-scores/heatmap/", hours=720, anchor="latest")
        return sorted({str(s["site_id"]) for s in heat.get("sites", [])})

    def checkpoints(self) -> Check:
        totals = {}
        for site in self._sites():
            d = self.data(f"{PREFIX}/telemetry/signals/site/{urllib.parse.quote(site)}/", window_minutes=120)
            totals[site] = int(d["totals"]["tour_checkpoints_scanned"])
        return judge_checkpoints(totals)

    def correlation(self) -> Check:
        return judge_correlation(self.pages(f"{PREFIX}/telemetry/correlations/", min_kinds=1))

    def _tickets(self) -> list[dict[str, Any]]:
        if self._ticket_rows is None:
            self._ticket_rows = self.pages(f"{PREFIX}/tickets/")
        return self._ticket_rows

    def tenant(self) -> int:
        """The token's tenant (the API answers for it alone, so the database figures are taken for it too)."""
        if self._tenant is None:
            parts = self.token.split("_")
            rows = self._pg("SELECT tenant_id FROM gateway_tokens WHERE token_id = %s",
                            (parts[1] if len(parts) >= 3 else "",))
            if not rows:
                raise ValueError("the token is unknown to the database (another deployment's?)")
            self._tenant = int(rows[0]["tenant_id"])
        return self._tenant

    def escalation(self) -> Check:
        audit = sum(1 for t in self._tickets()
                    if t.get("category") == "SECURITY_AUDIT" and t.get("source") == "SYSTEM_GENERATED")
        rows = self._pg("SELECT count(*) FILTER (WHERE severity IN ('HIGH', 'CRITICAL') AND finding_type IS NOT NULL) "
                        "AS high, count(*) FILTER (WHERE severity IN ('HIGH', 'CRITICAL') AND escalated_to_ticket) "
                        "AS escalated FROM audit_findings WHERE tenant_id = %s", (self.tenant(),))
        return judge_escalation(int(rows[0]["high"]), int(rows[0]["escalated"]), audit)

    def baselines(self) -> Check:
        rows = self._pg("SELECT is_stable, false_positive_rate, dynamic_threshold, feedback_total FROM baselines "
                        "WHERE is_stable AND tenant_id = %s", (self.tenant(),))
        total = self._pg("SELECT count(*) AS n FROM baselines WHERE tenant_id = %s", (self.tenant(),))[0]["n"]
        return judge_baselines(rows, int(total))

    def model(self) -> Check:
        return judge_model(self.data(f"{PREFIX}/security/ml-models/performance/")["models"])

    def fraud_tickets(self, sample: int = 5) -> Check:
        """The auto-created (SYSTEM_GENERATED) SECURITY_FRAUD tickets and the score behind each of the first few
        (a supervisor's own fraud tickets name a punch, whatever its score)."""
        fraud = [t for t in self._tickets()
                 if t.get("category") == "SECURITY_FRAUD" and t.get("source") == "SYSTEM_GENERATED"]
        scores: dict[str, float | None] = {}
        for t in fraud[:sample]:
            found = None
            if t.get("person_id") and t.get("related_event_id"):
                hist = self.data(f"{PREFIX}/security/fraud-scores/history/{urllib.parse.quote(t['person_id'])}/",
                                 days=365, limit=1000, anchor="latest")
                for s in hist.get("scores") or hist.get("items") or []:
                    if t["related_event_id"] in (s.get("score_id"), s.get("event_id")):
                        found = float(s["fraud_probability"])
                        break
            scores[str(t.get("ticket_no") or t["ticket_id"])] = found
        return judge_fraud_tickets(len(fraud), scores)

    def routes(self) -> Check:
        person = site = "1"
        fraud = self.data(f"{PREFIX}/security/fraud-scores/live/", minutes=1440, min_risk="LOW", limit=1,
                          anchor="latest")
        if fraud["items"]:
            person, site = str(fraud["items"][0]["person_id"]), str(fraud["items"][0]["site_id"])
        results = []
        for route in DOCUMENTED_ROUTES:
            path = PREFIX + route.format(person=urllib.parse.quote(person), site=urllib.parse.quote(site))
            code, body, ms = self.call(path)
            results.append((path, code, body.get("status") if isinstance(body, dict) else None, ms))
        return judge_routes(results)

    def websocket(self) -> Check:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        ws_url = "ws" + self.url[len("http"):] + WS_PATH
        t0 = time.monotonic()
        with connect(ws_url, additional_headers={"Authorization": f"Bearer {self.token}"},
                     open_timeout=self.timeout_s, close_timeout=self.timeout_s) as ws:
            # the documented default: no subscribe, one event per message
            got = _first_event(ws, t0 + self.ws_wait_s)
            how = "waited for the live feed"
            if got is None and self.poke:
                poked = self._poke()
                how = f"after moving ticket {poked} to OPEN (as the runbook's Gap #13 does)" if poked else \
                    "no NEW ticket to move"
                got = _first_event(ws, time.monotonic() + self.ws_wait_s) if poked else None
            try:
                ws.close()
            except WebSocketException:
                pass
        return judge_websocket(got, time.monotonic() - t0, how)

    def _poke(self) -> str | None:
        """Move one NEW ticket to OPEN (acknowledged): the feed carries its ticket_updated event."""
        for t in self.pages(f"{PREFIX}/tickets/", status="NEW", max_pages=1):
            code, _body, _ms = self.call(f"{PREFIX}/tickets/{urllib.parse.quote(t['ticket_id'])}/state", "POST",
                                         {"status": "OPEN", "note": "acknowledged by noc verify"})
            if code == 200:
                return str(t.get("ticket_no") or t["ticket_id"])
        return None

    def latency(self) -> Check:
        """The last hour up to now (``until`` = now: a fresh figure, not one the gateway cached a minute ago). The
        gateway records a broadcast's latency a moment after sending it (once the sink has logged the event), so a
        figure without broadcasts is asked again for up to ``latency_wait_s``."""
        deadline = time.monotonic() + self.latency_wait_s
        while True:
            until = time.time_ns() // 1_000_000
            check = judge_latency(self.data(f"{PREFIX}/events/stats/", hours=1, until=until)["by_type"])
            if check.ok or "no broadcast" not in check.figure or time.monotonic() >= deadline:
                return check
            time.sleep(1.0)  # the deployment writes latencies once a second: retry period, not synchronisation


def _first_event(ws: Any, deadline: float) -> str | None:
    """The type of the first feed event received before ``deadline`` (frames of several events or one each)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            raw = ws.recv(timeout=left)
        except TimeoutError:
            return None
        msg = orjson.loads(raw)
        kind = msg.get("type")
        if kind == "events":
            if msg.get("events"):
                return str(msg["events"][0].get("type"))
        elif kind not in CONTROL_TYPES:
            return str(kind)

