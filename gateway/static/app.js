// NOC dashboard: REST for the initial state, then everything live over /ws/noc/dashboard.
// The token goes in the WebSocket subprotocol list (browsers cannot set headers on a WebSocket), never the URL.
"use strict";
(() => {
  const API = "/api/v2/noc";
  const $ = (id) => document.getElementById(id);
  const state = { token: null, ws: null, lastEventId: null, lastCursor: null, retry: 0, feedCount: 0,
                  incidents: new Map(), tickets: new Map(), sites: new Map(), models: new Map(), closedByUs: false };

  function setStatus(cls, text) { const s = $("status"); s.className = "status " + cls; s.textContent = text;
                                  s.dataset.state = cls; }
  const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                                 '"': "&quot;", "'": "&#39;" }[c]));
  const hhmm = (t) => { const d = new Date(t); return isNaN(d) ? "" : d.toISOString().slice(11, 19); };

  async function get(path) {
    const r = await fetch(API + path, { headers: { Authorization: "Bearer " + state.token } });
    const body = await r.json();
    if (!r.ok) { const e = new Error(body.message || r.statusText); e.status = r.status; throw e; }
    return body.data;
  }

  // -- panels ------------------------------------------------------------------------------------------------
  function renderIncidents() {
    const rows = [...state.incidents.values()].filter((i) => i.status === "OPEN")
      .sort((a, b) => String(b.last_seen).localeCompare(String(a.last_seen))).slice(0, 50);
    $("incident-count").textContent = rows.length;
    $("incidents").innerHTML = rows.map((i) => `<tr data-id="${esc(i.incident_id)}"><td class="sev-${esc(i.combined_severity)}">` +
      `${esc(i.combined_severity)}</td><td>${esc(i.title)}</td><td>${esc(i.site_id)}</td><td>${esc(hhmm(i.last_seen))}</td></tr>`).join("");
  }
  function renderTickets() {
    const order = { URGENT: 0, HIGH: 1, MEDIUM: 2, LOW: 3 };
    const rows = [...state.tickets.values()].filter((t) => t.status !== "CLOSED")
      .sort((a, b) => (order[a.priority] ?? 9) - (order[b.priority] ?? 9)).slice(0, 50);
    $("ticket-count").textContent = rows.length;
    $("tickets").innerHTML = rows.map((t) => `<tr data-id="${esc(t.ticket_id)}"><td>${esc(t.ticket_no)}</td>` +
      `<td class="sev-${esc(t.priority)}">${esc(t.priority)}</td><td>${esc(t.status)}</td><td>${esc(t.title)}</td></tr>`).join("");
  }
  function renderHeatmap() {
    const sites = [...state.sites.values()].sort((a, b) => b.high_risk - a.high_risk || a.site_id.localeCompare(b.site_id));
    $("heatmap").innerHTML = sites.map((s) => {
      const cls = s.high_risk >= 3 ? "hot" : s.high_risk > 0 ? "warm" : "";
      return `<div class="cell ${cls}" data-site="${esc(s.site_id)}" data-high="${s.high_risk}"><b>${esc(s.site_id)}</b>` +
        `${s.high_risk} high / ${s.scores} scored<br>max ${(s.max_probability ?? 0).toFixed(2)}</div>`;
    }).join("");
  }
  function renderModels() {
    const rows = [...state.models.values()];
    $("models").innerHTML = rows.map((m) => `<tr><td>${esc(m.model_version)}</td><td>${m.predictions}</td><td>${m.flagged}</td>` +
      `<td>${m.precision == null ? "–" : m.precision.toFixed(2)}</td><td>${m.recall == null ? "–" : m.recall.toFixed(2)}</td></tr>`).join("");
  }

  // -- live events -------------------------------------------------------------------------------------------
  function onEvent(ev) {
    state.lastEventId = ev.event_id; state.lastCursor = ev.cursor;
    const p = ev.payload && typeof ev.payload === "object" ? ev.payload : {};
    const li = document.createElement("li");
    li.className = ev.type + " new"; li.dataset.eventId = ev.event_id;
    const what = p.title || p.message || (p.fraud_probability != null ? `p=${Number(p.fraud_probability).toFixed(2)} ${p.risk_level || ""}` : "");
    li.innerHTML = `<span class="t">${esc(hhmm(ev.timestamp))}</span><span class="k">${esc(ev.type)}</span>` +
      `<span>${esc(ev.site_id || "")} ${esc(ev.person_id || "")} ${esc(what)}</span>`;
    const feed = $("feed"); feed.prepend(li);
    while (feed.children.length > 100) feed.lastChild.remove();
    $("feed-count").textContent = ++state.feedCount;
    if (ev.type === "incident_created" || ev.type === "incident_updated") {
      if (p.incident_id) { state.incidents.set(p.incident_id, { ...p, last_seen: p.last_seen }); renderIncidents(); }
    } else if (ev.type === "ticket_updated") {
      if (p.ticket_id) { state.tickets.set(p.ticket_id, p); renderTickets(); }
    } else if (ev.type === "fraud_scored") {
      const site = ev.site_id || p.site_id || "?";
      const s = state.sites.get(site) || { site_id: site, scores: 0, high_risk: 0, max_probability: 0 };
      s.scores += 1;
      if (p.risk_level === "HIGH" || p.risk_level === "CRITICAL") s.high_risk += 1;
      s.max_probability = Math.max(s.max_probability || 0, Number(p.fraud_probability) || 0);
      state.sites.set(site, s); renderHeatmap();
      const mv = p.model_version || "unknown";
      const m = state.models.get(mv) || { model_version: mv, predictions: 0, flagged: 0, precision: null, recall: null };
      m.predictions += 1;
      if (p.risk_level === "HIGH" || p.risk_level === "CRITICAL") m.flagged += 1;
      state.models.set(mv, m); renderModels();
    }
  }

  function connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/noc/dashboard";
    const ws = new WebSocket(url, ["noc.v1", "bearer." + state.token]);
    state.ws = ws;
    setStatus("retry", "connecting…");
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "hello") {
        state.tenant = msg.tenant_id;
        const sub = { action: "subscribe" };
        if (state.lastEventId) { sub.resume_from = state.lastEventId; sub.cursor = state.lastCursor; }
        ws.send(JSON.stringify(sub));
      } else if (msg.type === "subscribed") {
        state.retry = 0; setStatus("live", "live · tenant " + state.tenant);
      } else if (msg.type === "events") {
        msg.events.forEach(onEvent);
      }
    };
    ws.onclose = (e) => {
      if (state.closedByUs || state.ws !== ws) return;
      if (e.code === 4401) {  // token revoked or expired: back to the sign-in form
        sessionStorage.removeItem("noc-token"); state.token = null; setStatus("off", "signed out");
        $("dashboard").hidden = true; $("signout").hidden = true; $("signin").hidden = false;
        $("signin-error").textContent = e.reason || "token revoked"; return;
      }
      const delay = Math.min(10000, 500 * 2 ** state.retry++);
      setStatus("retry", `reconnecting (${e.code}${e.reason ? ": " + e.reason : ""})`);
      setTimeout(() => { if (state.token && !state.closedByUs) connect(); }, delay);
    };
  }

  async function signIn(token) {
    state.token = token; state.closedByUs = false;
    try {
      const [inc, tickets, heat, perf] = await Promise.all([
        get("/incidents?status=OPEN&limit=50"), get("/tickets?limit=50"),
        get("/security/fraud-scores/heatmap?anchor=latest&hours=24"),
        get("/security/ml-models/performance?anchor=latest&hours=24")]);
      inc.items.forEach((i) => state.incidents.set(i.incident_id, i));
      tickets.items.forEach((t) => state.tickets.set(t.ticket_id, t));
      heat.sites.forEach((s) => state.sites.set(s.site_id, s));
      perf.live.forEach((m) => state.models.set(m.model_version, m));
      const active = perf.models.find((m) => m.is_active);
      $("active-model").textContent = active ? `active: ${active.version} (${active.algorithm})` : "no registered model active";
    } catch (e) {
      if (e.status === 401 || e.status === 403) { $("signin-error").textContent = e.message; state.token = null; return; }
      $("signin-error").textContent = "some panels could not load: " + e.message;
    }
    sessionStorage.setItem("noc-token", token);
    $("signin").hidden = true; $("dashboard").hidden = false; $("signout").hidden = false;
    renderIncidents(); renderTickets(); renderHeatmap(); renderModels();
    connect();
  }

  $("signin-form").addEventListener("submit", (e) => { e.preventDefault(); $("signin-error").textContent = "";
                                                       signIn($("token").value.trim()); });
  $("signout").addEventListener("click", () => {
    state.closedByUs = true; sessionStorage.removeItem("noc-token");
    if (state.ws) state.ws.close(1000, "signed out");
    location.reload();
  });
  const saved = sessionStorage.getItem("noc-token");
  if (saved) signIn(saved);
})();
