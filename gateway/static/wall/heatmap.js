// Fraud heatmap: sites × hour of day (the site's local hours), coloured by flagged punches or mean score over the
// chosen period, with the value written in each cell. Flagged counts go up live with each fraud_scored event
// (only HIGH and CRITICAL scores are on the feed, so the mean score waits); the whole grid is re-read every minute. A click (or Enter) on
// a cell lists that site's recent scores at that hour, with their reasons.
"use strict";
(() => {
  const W = window.NocWall, { h, $, state } = W;
  const MAX_ROWS = 30;
  // viridis: perceptually even, readable in greyscale and by colour-blind readers
  const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const H = { hours: Number(localStorage.getItem("noc-wall-heat-hours")) || 168,
              metric: localStorage.getItem("noc-wall-heat-metric") || "flagged", rows: new Map() };
  W.heat = H;

  function colour(x) {
    const f = Math.max(0, Math.min(1, x)) * (STOPS.length - 1), i = Math.min(STOPS.length - 2, Math.floor(f)), r = f - i;
    const c = STOPS[i].map((v, k) => Math.round(v + (STOPS[i + 1][k] - v) * r));
    return { bg: `rgb(${c[0]},${c[1]},${c[2]})`, dark: x > 0.55 };
  }
  // A zone's local hour of an instant; cached per (zone, UTC quarter hour: offsets are whole quarter hours).
  const hourFormats = new Map(), hourCache = new Map();
  function localHour(ms, zone) {
    const key = zone + "|" + Math.floor(ms / 900000);
    const hit = hourCache.get(key);
    if (hit !== undefined) return hit;
    let f = hourFormats.get(zone);
    if (!f) {
      try { f = new Intl.DateTimeFormat("en-GB", { timeZone: zone, hour: "2-digit", hourCycle: "h23" }); }
      catch (e) { f = new Intl.DateTimeFormat("en-GB", { timeZone: "UTC", hour: "2-digit", hourCycle: "h23" }); }
      hourFormats.set(zone, f);
    }
    const hour = Number(f.format(new Date(ms))) % 24;
    if (hourCache.size >= 4000) hourCache.clear();
    hourCache.set(key, hour);
    return hour;
  }
  function row(siteId) {
    let r = H.rows.get(siteId);
    if (!r) {
      if (H.rows.size >= W.CAP.sites) return null;
      const s = state.sites.get(siteId);
      r = { site_id: siteId, name: s ? s.name : siteId, timezone: s ? s.timezone : "UTC",
            scores: new Array(24).fill(0), flagged: new Array(24).fill(0), sum: new Array(24).fill(0) };
      H.rows.set(siteId, r);
    }
    return r;
  }

  W.loadHeatmap = (d) => {
    H.rows = new Map();
    for (const s of d.sites) { const r = row(s.site_id); if (r) { r.name = s.name; r.timezone = s.timezone; } }
    for (const c of d.cells) {
      const r = row(c.site_id);
      if (!r || !(c.hour >= 0 && c.hour < 24)) continue;
      r.scores[c.hour] = c.scores; r.flagged[c.hour] = c.flagged; r.sum[c.hour] = (c.mean_score || 0) * c.scores;
    }
    H.until = d.until;
    W.dirty("heatmap");
  };
  W.countHeat = (ev, p) => {
    const siteId = ev.site_id || p.site_id;
    const ms = Number(p.occurred_at ?? ev.timestamp);
    if (typeof siteId !== "string" || !isFinite(ms)) return;
    const r = row(siteId);
    if (!r) return;
    const hr = localHour(ms, r.timezone);
    if (!(hr >= 0 && hr < 24)) return;
    // Only flagged scores are on the feed: they count live; the mean (of all scores) waits for the next refresh.
    if (p.risk_level !== "HIGH" && p.risk_level !== "CRITICAL") return;
    r.flagged[hr] += 1;
    W.dirty("heatmap");
  };

  function value(r, hr) {
    return H.metric === "mean" ? (r.scores[hr] ? r.sum[hr] / r.scores[hr] : null) : r.flagged[hr];
  }
  // The table is built when its rows change (a new site, the filter, the metric, or a new order by flagged count,
  // at most every REORDER_MS); in between a render only rewrites the cells' text and colour.
  const REORDER_MS = 5000;
  let table = null;  // {ids: [...], metric, cells: Map(site -> {tds, sum})}
  const total = (r) => r.flagged.reduce((a, b) => a + b, 0);
  function build(shown) {
    const head = h("tr", null, h("th", { scope: "col" }, "Site (local time)"),
      ...Array.from({ length: 24 }, (_, i) => h("th", { scope: "col", class: "hr" }, String(i).padStart(2, "0"))),
      h("th", { scope: "col" }, "Σ flagged"));
    const cells = new Map();
    const body = shown.map((r) => {
      const tds = Array.from({ length: 24 }, (_, i) => h("td", { tabindex: 0, class: "hcell", dataset: { site: r.site_id, hour: i },
        onclick: () => openCell(r.site_id, i),
        onkeydown: (e) => { if (e.key === "Enter") { e.preventDefault(); openCell(r.site_id, i); } } }));
      const sum = h("td", { class: "cell", dataset: { site: r.site_id } });
      cells.set(r.site_id, { tds, sum });
      return h("tr", { dataset: { site: r.site_id } },
        h("th", { scope: "row", title: `${r.name} · ${r.timezone}` }, r.site_id, h("small", null, " " + r.timezone)), ...tds, sum);
    });
    const box = $("heatmap"), tbl = h("table", { class: "heat" }, h("thead", null, head), h("tbody", null, ...body));
    box.replaceChildren(tbl);
    // The box has the table's height (fixed row heights in wall.css) and is its own layout root (contain: strict),
    // so the cell updates between rebuilds lay out the table only, not the page.
    box.style.height = `calc(${shown.length} * var(--heat-row) + var(--heat-head) + 4px)`;
    return { ids: shown.map((r) => r.site_id), metric: H.metric, cells, at: Date.now() };
  }
  W.register("heatmap", () => {
    const rows = [...H.rows.values()].filter((r) => W.matchesSite(r.site_id))
      .sort((a, b) => total(b) - total(a) || a.site_id.localeCompare(b.site_id));
    let shown = rows.slice(0, MAX_ROWS);
    const ids = shown.map((r) => r.site_id);
    const sameSet = table && table.metric === H.metric && ids.length === table.ids.length &&
                    ids.every((id) => table.cells.has(id));
    if (sameSet && Date.now() - table.at < REORDER_MS) shown = table.ids.map((id) => H.rows.get(id));  // keep the order a while
    else if (!sameSet || ids.some((id, k) => id !== table.ids[k])) table = build(shown);
    else table.at = Date.now();
    let max = 0;
    for (const r of shown) for (let i = 0; i < 24; i++) { const v = value(r, i); if (v != null && v > max) max = v; }
    if (H.metric === "mean") max = 1;
    const recolour = max !== table.max;  // colours are relative to the largest value shown
    table.max = max;
    for (const r of shown) {
      const c = table.cells.get(r.site_id);
      for (let i = 0; i < 24; i++) {
        const v = value(r, i), td = c.tds[i];
        const text = v == null || v === 0 ? "" : H.metric === "mean" ? W.num(v) : String(v);
        if (!recolour && td.textContent === text && td.dataset.value === String(v ?? "")) continue;
        td.textContent = text;
        td.dataset.value = v ?? "";
        td.setAttribute("aria-label", `${r.site_id} ${String(i).padStart(2, "0")}:00 local: ${r.flagged[i]} flagged; ${r.scores[i]} scores at the last refresh`);
        const col = v ? colour(max ? v / max : 0) : null;
        td.style.backgroundColor = col ? col.bg : "";
        td.classList.toggle("on-light", !!(col && col.dark));
      }
      const t = String(total(r));
      if (c.sum.textContent !== t) { c.sum.textContent = t; c.sum.dataset.high = t; }
    }
    const more = rows.length > MAX_ROWS ? `${rows.length - MAX_ROWS} more sites not shown` : "";
    if ($("heat-more").textContent !== more) $("heat-more").textContent = more;
  });

  // -- a cell's scores -----------------------------------------------------------------------------------------
  async function openCell(siteId, hour) {
    const out = $("heat-detail");
    out.dataset.site = siteId; out.dataset.hour = hour; out.dataset.state = "loading";
    out.replaceChildren(h("p", { class: "muted" }, `loading ${siteId} at ${String(hour).padStart(2, "0")}:00…`));
    try {
      const q = new URLSearchParams({ hours: H.hours, hour, anchor: "latest", limit: 30 });
      const d = await W.state.api.get(`/wall/sites/${encodeURIComponent(siteId)}/scores?${q}`);
      const items = d.items.map((s) => h("tr", { dataset: { scoreId: s.score_id } },
        h("td", { class: "when" }, W.when(s.occurred_at, siteId)), h("td", null, s.person_id), h("td", null, s.event_type),
        h("td", null, W.badge(s.risk_level), " ", W.num(s.fraud_probability)),
        h("td", null, (Array.isArray(s.reasons) ? s.reasons : []).slice(0, 3).map((x) => x && x.description).filter(Boolean).join("; "))));
      out.replaceChildren(
        h("h3", null, `${d.site.name || siteId} (${siteId}) · ${String(hour).padStart(2, "0")}:00–${String(hour).padStart(2, "0")}:59 ${d.site.timezone}`,
          h("button", { type: "button", class: "link", onclick: () => W.setSiteFilter(siteId) }, "filter page to this site")),
        d.items.length ? h("table", null, h("thead", null, h("tr", null, ...["When", "Person", "Punch", "Risk", "Reasons"].map((x) => h("th", null, x)))),
                           h("tbody", null, ...items))
                       : h("p", { class: "muted" }, "no scores at this hour in the period"));
      out.dataset.state = "loaded";
    } catch (e) {
      out.replaceChildren(h("p", { class: "error" }, e.message)); out.dataset.state = "error";
    }
  }
  W.openHeatCell = openCell;

  W.heatControls = (reload) => {
    const period = h("select", { id: "heat-hours", "aria-label": "heatmap period",
      onchange: () => { H.hours = Number(period.value); localStorage.setItem("noc-wall-heat-hours", H.hours); reload(); } },
      ...[[24, "last 24 h"], [168, "last 7 days"], [720, "last 30 days"]].map(([v, t]) => h("option", { value: v, selected: v === H.hours }, t)));
    const metric = h("select", { id: "heat-metric", "aria-label": "heatmap colour",
      onchange: () => { H.metric = metric.value; localStorage.setItem("noc-wall-heat-metric", H.metric); W.dirty("heatmap"); } },
      h("option", { value: "flagged", selected: H.metric === "flagged" }, "flagged punches"),
      h("option", { value: "mean", selected: H.metric === "mean" }, "mean score"));
    return h("span", { class: "controls" }, period, metric);
  };
})();
