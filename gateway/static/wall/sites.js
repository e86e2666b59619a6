// Sites at a glance: the tenant's sites drawn (SVG) from their coordinates and geofence radius, grouped into one
// inset per area (sites within ~60 km of each other), each site coloured by the highest severity of its open
// incidents, with the severity's shape and the count beside it. A click (or Enter) filters the page to that site.
"use strict";
(() => {
  const W = window.NocWall, { h, svg, $, state } = W;
  const FILL = { CRITICAL: "#D55E00", HIGH: "#E69F00", MEDIUM: "#F0E442", LOW: "#56B4E9" };
  const CLUSTER_KM = 60, SIZE = 220, PAD = 26;
  const S = { open: new Map() };  // site -> {open_incidents, max_severity}
  W.siteMap = S;

  const km = (a, b) => {
    const dy = (a.lat - b.lat) * 111.32, dx = (a.lon - b.lon) * 111.32 * Math.cos(((a.lat + b.lat) / 2) * Math.PI / 180);
    return Math.hypot(dx, dy);
  };
  function clusters(sites) {
    const out = [];
    for (const s of sites) {
      const c = out.find((c) => km(c.centre, s) <= CLUSTER_KM);
      if (c) { c.sites.push(s); c.centre = { lat: (c.centre.lat * (c.sites.length - 1) + s.lat) / c.sites.length,
                                              lon: (c.centre.lon * (c.sites.length - 1) + s.lon) / c.sites.length }; }
      else out.push({ centre: { lat: s.lat, lon: s.lon }, sites: [s] });
    }
    return out;
  }

  W.loadSites = (d) => {
    for (const s of d.sites) state.sites.set(s.site_id, s);
    S.open = new Map([...d.sites, ...d.unplaced].map((s) => [s.site_id, { open_incidents: s.open_incidents, max_severity: s.max_severity }]));
    S.unplaced = d.unplaced;
    W.dirty("sites");
  };
  // Open incidents change live: the map counts the open incidents the page holds (the incidents panel's set), at
  // its next render rather than on every event.
  W.recountSites = () => { S.stale = true; W.dirty("sites"); };
  function recount() {
    const open = new Map();
    for (const i of state.incidents.values()) {
      const o = open.get(i.site_id) || { open_incidents: 0, max_severity: null };
      o.open_incidents += 1;
      if (W.sevRank(i.combined_severity) > W.sevRank(o.max_severity)) o.max_severity = i.combined_severity;
      open.set(i.site_id, o);
    }
    S.open = open;
    S.stale = false;
  }

  function inset(c) {
    const { centre } = c;
    const kx = 111.32 * Math.cos(centre.lat * Math.PI / 180), ky = 111.32;
    let span = 0.5;  // km from the centre to the farthest site, at least 0.5
    for (const s of c.sites) span = Math.max(span, Math.abs((s.lon - centre.lon) * kx), Math.abs((s.lat - centre.lat) * ky));
    const scale = (SIZE / 2 - PAD) / span;  // px per km
    const xy = (s) => [SIZE / 2 + (s.lon - centre.lon) * kx * scale, SIZE / 2 - (s.lat - centre.lat) * ky * scale];
    const nodes = c.sites.map((s) => {
      const [x, y] = xy(s);
      const o = S.open.get(s.site_id) || { open_incidents: 0, max_severity: null };
      const sev = o.max_severity;
      const r = Math.max(5, Math.min(30, (s.geofence_radius_m / 1000) * scale));
      const g = svg("g", { class: "site" + (state.siteFilter === s.site_id ? " selected" : "") + (sev ? " sev-" + sev : " quiet"),
                           tabindex: 0, role: "button", "data-site": s.site_id, "data-severity": sev || "",
                           "data-open": o.open_incidents, "aria-label": `${s.name} (${s.site_id}): ${o.open_incidents} open incidents${sev ? ", highest " + sev : ""}. Filter the page to this site` },
        svg("title", null, `${s.name} (${s.site_id}) · ${s.timezone} · geofence ${Math.round(s.geofence_radius_m)} m · ${o.open_incidents} open${sev ? " · " + sev : ""}`),
        svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: r.toFixed(1), fill: sev ? FILL[sev] : "#2d3a46",
                        "fill-opacity": sev ? 0.85 : 0.5, stroke: "#e6edf3", "stroke-width": state.siteFilter === s.site_id ? 3 : 1 }),
        sev ? svg("text", { x: x.toFixed(1), y: (y + 4).toFixed(1), "text-anchor": "middle", class: "shape" }, W.SHAPE[sev]) : null,
        svg("text", { x: (x > SIZE * 0.6 ? x - r - 3 : x + r + 3).toFixed(1), y: (y + 4).toFixed(1), class: "lbl",
                      "text-anchor": x > SIZE * 0.6 ? "end" : "start" },
            `${s.site_id}${o.open_incidents ? " · " + o.open_incidents : ""}`));
      const pick = () => W.setSiteFilter(state.siteFilter === s.site_id ? null : s.site_id);
      g.addEventListener("click", pick);
      g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(); } });
      return g;
    });
    const zones = [...new Set(c.sites.map((s) => s.timezone))].join(", ");
    // scale bar: 1, 2, 5 or 10 km, whichever fits in a quarter of the inset
    const bar = [1, 2, 5, 10, 20, 50].find((k) => k * scale >= SIZE / 6) || 50;
    return h("figure", { class: "inset" },
      svg("svg", { viewBox: `0 0 ${SIZE} ${SIZE}`, width: SIZE, height: SIZE, role: "group", "aria-label": `sites near ${centre.lat.toFixed(2)}, ${centre.lon.toFixed(2)}` },
        svg("rect", { x: 0, y: 0, width: SIZE, height: SIZE, fill: "#0f1419" }),
        ...nodes,
        svg("line", { x1: 8, y1: SIZE - 10, x2: 8 + bar * scale, y2: SIZE - 10, stroke: "#8b98a5", "stroke-width": 2 }),
        svg("text", { x: 8, y: SIZE - 14, class: "lbl" }, `${bar} km`)),
      h("figcaption", null, `${centre.lat.toFixed(2)}°, ${centre.lon.toFixed(2)}° · ${zones}`));
  }

  let drawn = "";  // what the map shows: redrawn only when it changes
  W.register("sites", () => {
    if (S.stale) recount();
    const sites = [...state.sites.values()].filter((s) => s.active !== false).sort((a, b) => a.site_id.localeCompare(b.site_id));
    const sig = JSON.stringify([state.siteFilter, sites.map((s) => [s.site_id, s.lat, s.lon, s.geofence_radius_m, S.open.get(s.site_id)]),
                                S.unplaced]);
    if (sig === drawn) return;
    drawn = sig;
    const legend = h("p", { class: "legend" }, ...W.SEVERITIES.slice().reverse().map((s) => W.badge(s)),
      h("span", { class: "badge quiet" }, "● no open incident"));
    const unplaced = (S.unplaced || []).filter((u) => !state.sites.has(u.site_id));
    $("sites-map").replaceChildren(legend, h("div", { class: "insets" }, ...clusters(sites).map(inset)),
      unplaced.length ? h("p", { class: "muted" }, `no coordinates for: ${unplaced.map((u) => u.site_id).slice(0, 20).join(", ")}`) : "");
    $("sites-panel").dataset.sites = sites.length;
  }, 1000);
})();
