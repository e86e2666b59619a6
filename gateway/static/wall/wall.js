// The wall's entry points for app.js (which signs in and owns the WebSocket):
//   NocWall.start({get, post}) after sign-in: builds the panels and loads them over REST;
//   NocWall.onEvent(ev) for every feed event: O(1) state updates only; the scheduler renders (core.js).
"use strict";
(() => {
  const W = window.NocWall, { h, $, state } = W;
  const REFRESH_MS = 60000;
  let built = false, refreshTimer = null;

  function build() {
    if (built) return;
    built = true;
    const main = $("dashboard");
    const zone = h("select", { id: "wall-zone", "aria-label": "time zone of the times shown",
      onchange: () => { W.zoneMode = zone.value; localStorage.setItem("noc-wall-zone", zone.value);
                        $("feed").dataset.zone = zone.value; W.feedReset();
                        for (const r of (W.panelsWithTimes || [])) W.dirty(r); } },
      h("option", { value: "site", selected: W.zoneMode === "site" }, "site's time zone"),
      h("option", { value: "user", selected: W.zoneMode === "user" }, `my time zone (${W.userZone})`),
      h("option", { value: "utc", selected: W.zoneMode === "utc" }, "UTC"));
    const chip = h("span", { id: "site-filter", hidden: true },
      h("span", { id: "site-filter-name" }),
      h("button", { type: "button", id: "site-filter-clear", "aria-label": "show all sites", onclick: () => W.setSiteFilter(null) }, "✕ all sites"));
    main.before(h("nav", { id: "wall-toolbar", "aria-label": "wall settings" }, h("label", { for: "wall-zone" }, "Times in "), zone, chip));
    const trends = h("section", { class: "panel wide", id: "trends-panel" }, h("h2", null, "Trends"),
      h("div", { class: "charts" }, h("div", { id: "trend-events", class: "chart" }), h("div", { id: "trend-incidents", class: "chart" }),
        h("div", { class: "chart" }, h("div", { id: "trend-latency" }), h("p", { id: "latency-summary", class: "latency" }))));
    const sites = h("section", { class: "panel wide", id: "sites-panel" }, h("h2", null, "Sites at a glance ",
      h("small", null, "open incidents by highest severity; click a site to filter the page")), h("div", { id: "sites-map" }));
    main.prepend(trends, sites);
    const heatPanel = $("heatmap-panel");
    heatPanel.classList.add("wide");
    heatPanel.querySelector("h2").replaceChildren("Fraud by site and hour of day ",
      h("small", null, "site-local hours; flagged = HIGH or CRITICAL "), W.heatControls(loadHeatmap));
    heatPanel.append(h("p", { id: "heat-more", class: "muted" }), h("div", { id: "heat-detail", "aria-live": "polite" }));
    const ticketHead = document.querySelector("#tickets-panel thead tr");
    if (ticketHead && !ticketHead.querySelector(".actions")) ticketHead.append(h("th", { class: "actions" }, "Actions"));
    document.body.append(h("div", { id: "wall-toast", class: "toast", role: "status", hidden: true }));
    W.buildDrillDialog();
    W.buildResolveDialog();
    W.panelsWithTimes = ["feed", "incidents", "drill", "trends"];
    W.onFilter.push((site) => { chip.hidden = !site; $("site-filter-name").textContent = site ? `site: ${site}` : ""; });
  }

  async function panel(name, fn) {
    try { await fn(); }
    catch (e) {
      if (e.status === 401 || e.status === 403) { clearInterval(refreshTimer); throw e; }  // signed out
      console.warn(`wall: ${name} not loaded`, e);
      W.toast(`${name}: ${e.message}`, true);
    }
  }
  async function loadHeatmap() {
    await panel("heatmap", async () => W.loadHeatmap(await state.api.get(`/wall/heatmap?hours=${W.heat.hours}&anchor=latest`)));
  }
  async function refresh() {
    await Promise.allSettled([
      panel("sites", async () => { W.loadSites(await state.api.get("/wall/sites")); W.recountSites(); }),
      loadHeatmap(),
      panel("latency", async () => W.loadLatency(await state.api.get("/wall/latency")))]);
  }

  W.start = async (api) => {
    state.api = api;
    build();
    const me = await api.get("/wall/me");  // 401/403 here: back to the sign-in form (app.js)
    state.canManage = !!me.can_manage;
    document.body.dataset.canManage = state.canManage ? "1" : "0";
    await Promise.all([
      panel("incidents", async () => { (await api.get("/incidents?status=OPEN&limit=200")).items.forEach(W.putIncident); W.dirty("incidents"); }),
      panel("tickets", async () => { (await api.get("/tickets?limit=100")).items.forEach(W.putTicket); W.dirty("tickets"); }),
      panel("sites", async () => W.loadSites(await api.get("/wall/sites"))),
      panel("trends", async () => W.loadTrends(await api.get("/wall/trends?anchor=latest"))),
      loadHeatmap(),
      panel("models", async () => {
        const perf = await api.get("/security/ml-models/performance?anchor=latest&hours=24");
        perf.live.forEach((m) => state.models.set(m.model_version, m));
        const active = perf.models.find((m) => m.is_active);
        $("active-model").textContent = active ? `active: ${active.version} (${active.algorithm})` : "no registered model active";
        W.dirty("models");
      })]);
    W.recountSites();
    W.dirty("heatmap", "sites");
    clearInterval(refreshTimer);
    refreshTimer = setInterval(refresh, REFRESH_MS);
    document.body.dataset.wall = "ready";
  };

  W.onEvent = (ev) => {
    if (!ev || typeof ev !== "object" || typeof ev.event_id !== "string") return;
    W.stats.events += 1;
    state.feed[state.feedHead] = ev;
    state.feedHead = (state.feedHead + 1) % W.CAP.feed;
    state.feedSize = Math.min(state.feedSize + 1, W.CAP.feed);
    state.feedTotal += 1;
    const p = W.payload(ev);
    W.countTrend(ev, p);
    if (ev.type === "incident_created" || ev.type === "incident_updated") {
      W.putIncident(p); W.recountSites(); W.dirty("incidents");
    } else if (ev.type === "ticket_updated") {
      W.putTicket(p); W.dirty("tickets", "drill");
    } else if (ev.type === "fraud_scored") {
      W.countHeat(ev, p); W.countModel(p);
    }
    W.dirty("feed");
  };
})();
