// The list panels: live feed (a fixed pool of rows, updated in place), open incidents, ticket queue, models.
// Events only change state and mark panels dirty; rendering happens in the scheduler's frames (core.js).
"use strict";
(() => {
  const W = window.NocWall, { h, $, state } = W;

  // -- live feed: the newest CAP.feed events in a ring; the list is a pool of CAP.feed <li>, never more ---------
  const pool = [];
  function feedPool() {
    const ol = $("feed");
    if (pool.length) return pool;
    ol.textContent = "";
    for (let i = 0; i < W.CAP.feed; i++) {
      const t = h("span", { class: "t" }), k = h("span", { class: "k" }), m = h("span", { class: "m" });
      const li = h("li", { hidden: true }, t, k, m);
      pool.push({ li, t, k, m, id: null });
      ol.append(li);
    }
    return pool;
  }
  function feedText(ev, p) {
    if (ev.type === "fraud_scored") return `p=${W.num(p.fraud_probability)} ${p.risk_level || ""} ${ev.person_id || ""}`;
    if (ev.type === "ticket_updated") return `${p.ticket_no || p.ticket_id || ""} ${p.status || ""} ${p.resolution || ""} ${p.title || ""}`;
    if (ev.type === "anomaly_detected") return `${p.metric || ""} ${W.num(p.observed)} vs ${W.num(p.expected)}`;
    return String(p.title || p.message || p.evidence_summary || p.finding_type || "");
  }
  W.feedReset = () => { for (const r of pool) r.id = null; };  // re-write every row (the time zone changed)
  W.register("feed", () => {
    const rows = feedPool();
    let shown = 0;
    for (let i = 0; i < state.feedSize && shown < rows.length; i++) {
      const ev = state.feed[(state.feedHead - 1 - i + W.CAP.feed) % W.CAP.feed];
      if (!W.matchesSite(ev.site_id)) continue;
      const r = rows[shown++];
      if (r.id !== ev.event_id) {
        const p = W.payload(ev);
        r.id = ev.event_id;
        r.li.className = "ev-" + String(ev.type).replace(/[^a-z_]/g, "");
        r.li.dataset.eventId = ev.event_id;
        r.li.dataset.site = ev.site_id || "";
        r.t.textContent = W.when(ev.timestamp, ev.site_id);
        r.k.textContent = ev.type;
        r.m.textContent = `${ev.site_id || ""} ${feedText(ev, p)}`.slice(0, 300);
      }
      r.li.hidden = false;
    }
    for (let i = shown; i < rows.length; i++) { if (rows[i].id !== null) { rows[i].id = null; rows[i].li.removeAttribute("data-event-id"); } rows[i].li.hidden = true; }
    $("feed-count").textContent = state.feedTotal;
  });

  // -- open incidents ------------------------------------------------------------------------------------------
  const ts = (v) => { const d = W.toDate(v); return d ? d.getTime() : 0; };
  // The revision each closed incident closed at (bounded, oldest forgotten first): a late or replayed older
  // revision of a closed incident must not bring it back.
  const closedAt = new Map();
  W.putIncident = (i) => {
    if (!i || typeof i.incident_id !== "string") return;
    const old = state.incidents.get(i.incident_id);
    const rev = Number(i.revision);
    if (old && Number(old.revision) > rev) return;  // an older revision arriving late
    if (closedAt.has(i.incident_id) && closedAt.get(i.incident_id) >= rev) return;
    if (i.status !== "OPEN") {
      state.incidents.delete(i.incident_id);
      closedAt.delete(i.incident_id);
      closedAt.set(i.incident_id, isFinite(rev) ? rev : Infinity);
      if (closedAt.size > 5000) closedAt.delete(closedAt.keys().next().value);
      return;
    }
    closedAt.delete(i.incident_id);
    i._ls = ts(i.last_seen);
    state.incidents.set(i.incident_id, i);
    if (state.incidents.size > W.CAP.incidents) {  // evict the least recently seen
      let oldest = null;
      for (const [id, v] of state.incidents) if (!oldest || ts(v.last_seen) < ts(oldest[1].last_seen)) oldest = [id, v];
      state.incidents.delete(oldest[0]);
    }
  };
  const openDrill = (id) => W.openIncident && W.openIncident(id);
  function incidentRow(i) {
    return h("tr", {
      tabindex: 0, class: "clickable", dataset: { id: i.incident_id, site: i.site_id || "" },
      "aria-label": `Incident ${i.title || i.incident_id}: open details`,
      onclick: () => openDrill(i.incident_id),
      onkeydown: (e) => { if (e.key === "Enter") { e.preventDefault(); openDrill(i.incident_id); } } },
      h("td", null, W.badge(i.combined_severity)),
      h("td", { title: String(i.title || i.incident_id).slice(0, 500) }, String(i.title || i.incident_id).slice(0, 200)),
      h("td", null, i.site_id || ""), h("td", { class: "when" }, W.when(i.last_seen, i.site_id)));
  }
  // Rows are built once per (record version, time zone) and moved, not rebuilt, by later renders; a render that
  // would show the same rows in the same order touches nothing.
  function cachedRows(tbody, cache, items, idOf, keyOf, build) {
    const next = new Map();
    const trs = items.map((x) => {
      const id = idOf(x), key = keyOf(x) + "|" + W.zoneMode + "|" + state.canManage;
      let c = cache.get(id);
      if (!c || c.key !== key) c = { key, tr: build(x) };
      next.set(id, c);
      return c.tr;
    });
    const same = trs.length === tbody.children.length && trs.every((tr, k) => tbody.children[k] === tr);
    if (!same) W.keepFocus(tbody, () => tbody.replaceChildren(...trs));
    return next;
  }
  let incidentRows = new Map();
  W.register("incidents", () => {
    const all = [];
    for (const i of state.incidents.values()) if (W.matchesSite(i.site_id)) all.push(i);
    const rows = all.sort((a, b) => b._ls - a._ls).slice(0, 50);
    $("incident-count").textContent = all.length;
    incidentRows = cachedRows($("incidents"), incidentRows, rows, (i) => i.incident_id, (i) => i.revision, incidentRow);
  });

  // -- ticket queue --------------------------------------------------------------------------------------------
  const PRIORITY = { URGENT: 0, HIGH: 1, MEDIUM: 2, LOW: 3 };
  W.putTicket = (t) => {
    if (!t || typeof t.ticket_id !== "string") return;
    const old = state.tickets.get(t.ticket_id);
    if (old && Number(old.version) > Number(t.version)) return;
    const merged = { ...old, ...t };
    merged._ut = ts(merged.updated_at);
    state.tickets.set(t.ticket_id, merged);
    if (state.tickets.size > W.CAP.tickets) {
      let oldest = null;
      for (const [id, v] of state.tickets) if (!oldest || ts(v.updated_at) < ts(oldest[1].updated_at)) oldest = [id, v];
      state.tickets.delete(oldest[0]);
    }
  };
  function ticketRow(t) {
    return h("tr", { dataset: { id: t.ticket_id, status: t.status || "", version: t.version ?? "" } },
      h("td", null, t.ticket_no || t.ticket_id), h("td", null, W.badge(t.priority)),
      h("td", { class: "tstatus", title: `${t.status || ""}${t.resolution ? " · " + t.resolution : ""}` },
        t.status || "", t.resolution ? ` · ${t.resolution}` : ""),
      h("td", { title: String(t.title || "").slice(0, 500) }, String(t.title || "").slice(0, 200)),
      h("td", { class: "actions" }, W.ticketActions ? W.ticketActions(t) : ""));
  }
  let ticketRows = new Map();
  W.register("tickets", () => {
    const all = [];
    for (const t of state.tickets.values()) if (t.status !== "CLOSED" && W.matchesSite(t.site_id)) all.push(t);
    const rows = all.sort((a, b) => (PRIORITY[a.priority] ?? 9) - (PRIORITY[b.priority] ?? 9) || b._ut - a._ut).slice(0, 50);
    $("ticket-count").textContent = all.length;
    ticketRows = cachedRows($("tickets"), ticketRows, rows, (t) => t.ticket_id, (t) => `${t.version}|${t.status}|${t.resolution}`,
                            ticketRow);
  });

  // -- models --------------------------------------------------------------------------------------------------
  W.register("models", () => {
    $("models").replaceChildren(...[...state.models.values()].map((m) => h("tr", null,
      h("td", null, m.model_version), h("td", null, m.predictions), h("td", null, m.flagged),
      h("td", null, W.num(m.precision)), h("td", null, W.num(m.recall)))));
  }, 1000);
  W.countModel = (p) => {
    const mv = String(p.model_version || "unknown").slice(0, 60);
    let m = state.models.get(mv);
    if (!m) {
      if (state.models.size >= W.CAP.models) return;
      m = { model_version: mv, predictions: 0, flagged: 0, precision: null, recall: null };
      state.models.set(mv, m);
    }
    m.predictions += 1;
    if (p.risk_level === "HIGH" || p.risk_level === "CRITICAL") m.flagged += 1;
    W.dirty("models");
  };
})();
