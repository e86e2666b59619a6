// Incident drill-down (a modal <dialog>: Esc closes it and focus goes back to the row that opened it): the evidence
// timeline (alerts, anomalies with observed vs expected, fraud scores with their reasons, audit findings), the
// person and the site, the incident's revisions, and its tickets with their actions; tickets update live.
"use strict";
(() => {
  const W = window.NocWall, { h, $, state } = W;
  const D = { data: null, opener: null, seq: 0 };
  W.drill = D;

  const dl = (...pairs) => h("dl", null, ...pairs.flatMap(([k, v]) => (v == null || v === "" ? [] : [h("dt", null, k), h("dd", null, v)])));
  function detail(e) {
    const d = e.detail;
    if (!d) return h("p", { class: "muted" }, "no record of this evidence in the database (yet)");
    if (e.kind === "ANOMALY") {
      const z = d.stddev ? (d.observed - d.expected) / d.stddev : null;
      return dl(["metric", d.metric], ["observed vs expected", `${W.num(d.observed)} vs ${W.num(d.expected)}` +
                (d.stddev ? ` (± ${W.num(d.stddev)}; ${W.num(z, 1)} σ)` : "")],
                ["threshold", W.num(d.threshold)], ["score", W.num(d.score)], ["person", d.person_id],
                ["window", `${W.when(d.window_start, e.site)} – ${W.when(d.window_end, e.site)}`]);
    }
    if (e.kind === "FRAUD_SCORE") {
      const reasons = Array.isArray(d.reasons) ? d.reasons : [];
      return h("div", null, dl(["probability", `${W.num(d.fraud_probability)} (${d.risk_level})`], ["model", d.model_version],
                               ["punch", `${d.event_type} ${d.event_id}`], ["person", d.person_id], ["device", d.device_id]),
        reasons.length ? h("ol", { class: "reasons" }, ...reasons.slice(0, 10).map((r) => h("li", null,
          `${(r && r.description) || "?"} (${(r && r.feature) || "?"} = ${W.num(r && r.value, 3)}, contribution ${W.num(r && r.contribution, 3)})`))) : "");
    }
    if (e.kind === "NOC_ALERT") return dl(["alert", d.alert_type], ["message", d.message], ["source", d.source]);
    if (e.kind === "AUDIT_FINDING") return dl(["finding", d.finding_type], ["evidence", d.evidence_summary], ["auditor", d.auditor_id],
                                              ["escalated", d.escalated_to_ticket ? `yes, ticket ${d.escalation_ticket_id || ""}` : "no"]);
    return h("span");
  }

  function ticketRows(tickets) {
    return tickets.map((t0) => {
      const live = state.tickets.get(t0.ticket_id);
      const t = live && Number(live.version) >= Number(t0.version) ? { ...t0, ...live } : t0;
      return h("tr", { dataset: { id: t.ticket_id, status: t.status, version: t.version } },
        h("td", null, t.ticket_no), h("td", null, W.badge(t.priority)),
        h("td", { class: "tstatus" }, t.status, t.resolution ? ` · ${t.resolution}` : ""), h("td", null, t.title),
        h("td", { class: "actions" }, W.ticketActions(t)));
    });
  }

  const signature = (d) => JSON.stringify([W.zoneMode, state.canManage, d.tickets.map((t) => {
    const live = state.tickets.get(t.ticket_id);
    return live && Number(live.version) >= Number(t.version) ? [live.version, live.status] : [t.version, t.status];
  })]);
  function render() {
    const d = D.data;
    if (!d) return;
    D.sig = signature(d);
    const inc = d.incident, site = d.site, sid = inc.site_id;
    const body = $("drill-body");
    $("drill-title").replaceChildren(W.badge(inc.combined_severity), " ", String(inc.title || inc.incident_id));
    body.dataset.incident = inc.incident_id;
    body.replaceChildren(
      dl(["status", `${inc.status} · revision ${inc.revision}`], ["kinds", (inc.kinds || []).join(", ")],
         ["site", `${site.name || sid} (${sid})${site.timezone ? " · " + site.timezone : ""}`],
         ["person", inc.person_id || "—"],
         ["first seen", W.when(inc.first_seen, sid)], ["last seen", W.when(inc.last_seen, sid)]),
      h("h3", null, `Evidence (${d.timeline.length})`),
      h("ol", { class: "timeline", id: "drill-timeline" }, ...d.timeline.map((e) => h("li", { dataset: { kind: e.kind, eventId: e.event_id } },
        h("div", { class: "head" }, h("span", { class: "when" }, W.when(e.occurred_at, sid)), " ",
          h("span", { class: "kind" }, e.kind), " ", W.badge(e.severity), " ", e.summary),
        detail({ ...e, site: sid })))),
      h("h3", null, `Revisions (${d.revisions.length})`),
      d.revisions.length ? h("table", { id: "drill-revisions" }, h("thead", null, h("tr", null, ...["Rev.", "When", "Status", "Severity", "Evidence", "Title"].map((x) => h("th", null, x)))),
        h("tbody", null, ...d.revisions.map((r) => h("tr", { dataset: { revision: r.revision } }, h("td", null, r.revision),
          h("td", { class: "when" }, W.when(r.ts, sid)), h("td", null, r.status), h("td", null, W.badge(r.combined_severity)),
          h("td", null, r.evidence_count), h("td", null, r.title)))))
        : h("p", { class: "muted" }, "no revisions in the feed log"),
      h("h3", null, `Tickets (${d.tickets.length})`),
      d.tickets.length ? h("table", { id: "drill-tickets" }, h("tbody", null, ...ticketRows(d.tickets)))
        : h("p", { class: "muted" }, "no ticket for this incident"),
      d.person ? h("div", null, h("h3", null, `Person ${d.person.person_id}: recent scores`),
        h("ul", { class: "plain" }, ...d.person.recent_scores.map((s) => h("li", null,
          `${W.when(s.occurred_at, s.site_id)} · ${s.site_id} · ${s.event_type} · `, W.badge(s.risk_level), ` ${W.num(s.fraud_probability)}`)))) : "");
  }
  // Live changes re-render the dialog only when what it shows changed (a ticket's version, the time zone): the
  // answer to an action and its feed event carry the same version, and the second leaves the buttons alone.
  W.register("drill", () => {
    if (!$("drill").open || !D.data) return;
    if (signature(D.data) !== D.sig) render();
  });

  W.openIncident = async (id) => {
    const dlg = $("drill");
    D.opener = document.activeElement; D.openerId = id;
    const seq = ++D.seq;
    D.data = null;
    $("drill-title").textContent = "loading…";
    $("drill-body").replaceChildren();
    $("drill-body").dataset.incident = "";
    if (!dlg.open) dlg.showModal();
    $("drill-close").focus();
    try {
      const d = await W.state.api.get(`/wall/incidents/${encodeURIComponent(id)}`);
      if (seq !== D.seq) return;  // another incident was opened meanwhile
      D.data = d;
      render();
    } catch (e) {
      if (seq === D.seq) $("drill-title").textContent = `incident ${id}: ${e.message}`;
    }
  };
  W.buildDrillDialog = () => {
    const dlg = h("dialog", { id: "drill", class: "drill", "aria-labelledby": "drill-title" },
      h("header", null, h("h2", { id: "drill-title" }),
        h("button", { type: "button", id: "drill-close", "aria-label": "close (Esc)", onclick: () => dlg.close() }, "✕ Close")),
      h("div", { id: "drill-body" }));
    dlg.addEventListener("close", () => {
      D.data = null; D.seq++;
      // the row may have been re-rendered while the dialog was open: focus its current element
      const row = document.querySelector(`#incidents tr[data-id="${CSS.escape(D.openerId || "")}"]`);
      const back = row || (D.opener && D.opener.isConnected ? D.opener : null);
      if (back) back.focus();
    });
    document.body.append(dlg);
  };
})();
