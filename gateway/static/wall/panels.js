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
  W.putIncident = (i) => {
    if (!i || typeof i.incident_id !== "string") return;
    const old = state.incidents.get(i.incident_id);
    if (old && Number(old.revision) > Number(i.revision)) return;  // an older revision arriving late
    if (i.status !== "OPEN") { state.incidents.delete(i.incident_id); return; }
    state.incidents.set(i.incident_id, i);
    if (state.incidents.size > W.CAP.incidents) {  // evict the least recently seen
      let oldest = null;
      for (const [id, v] of state.incidents) if (!oldest || ts(v.last_seen) < ts(oldest[1].last_seen)) oldest = [id, v];
      state.incidents.delete(oldest[0]);
    }
  };
  const openDrill = (id) => W.openIncident && W.openIncident(id);
  W.register("incidents", () => {
    const all = [...state.incidents.values()].filter((i) => W.matchesSite(i.site_id));
    const rows = all.sort((a, b) => ts(b.last_seen) - ts(a.last_seen)).slice(0, 50);
    $("incident-count").textContent = all.length;
    W.keepFocus($("incidents"), () => $("incidents").replaceChildren(...rows.map((i) => h("tr", {
      tabindex: 0, class: "clickable", dataset: { id: i.incident_id, site: i.site_id || "" },
      "aria-label": `Incident ${i.title || i.incident_id}: open details`,
      onclick: () => openDrill(i.incident_id),
      onkeydown: (e) => { if (e.key === "Enter") { e.preventDefault(); openDrill(i.incident_id); } } },
      h("td", null, W.badge(i.combined_severity)), h("td", null, String(i.title || i.incident_id).slice(0, 200)),
      h("td", null, i.site_id || ""), h("td", { class: "when" }, W.when(i.last_seen, i.site_id))))));
  });

  // -- ticket queue --------------------------------------------------------------------------------------------
  const PRIORITY = { URGENT: 0, HIGH: 1, MEDIUM: 2, LOW: 3 };
  W.putTicket = (t) => {
    if (!t || typeof t.ticket_id !== "string") return;
    const old = state.tickets.get(t.ticket_id);
    if (old && Number(old.version) > Number(t.version)) return;
    state.tickets.set(t.ticket_id, { ...old, ...t });
    if (state.tickets.size > W.CAP.tickets) {
      let oldest = null;
      for (const [id, v] of state.tickets) if (!oldest || ts(v.updated_at) < ts(oldest[1].updated_at)) oldest = [id, v];
      state.tickets.delete(oldest[0]);
    }
  };
  W.register("tickets", () => {
    const all = [...state.tickets.values()].filter((t) => t.status !== "CLOSED" && W.matchesSite(t.site_id));
    const rows = all.sort((a, b) => (PRIORITY[a.priority] ?? 9) - (PRIORITY[b.priority] ?? 9) ||
                                    ts(b.updated_at) - ts(a.updated_at)).slice(0, 50);
    $("ticket-count").textContent = all.length;
    W.keepFocus($("tickets"), () => $("tickets").replaceChildren(...rows.map((t) => h("tr", { dataset: { id: t.ticket_id, status: t.status || "", version: t.version ?? "" } },
      h("td", null, t.ticket_no || t.ticket_id), h("td", null, W.badge(t.priority)),
      h("td", { class: "tstatus" }, t.status || "", t.resolution ? ` · ${t.resolution}` : ""),
      h("td", null, String(t.title || "").slice(0, 200)),
      h("td", { class: "actions" }, W.ticketActions ? W.ticketActions(t) : "")))));
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
