// Trends (uPlot): feed events per minute by type and incidents opened per hour by severity over the last 24 h,
// both counted on from the live feed; broadcast latency (avg, p95) per minute over the last hour against the
// 300/500 ms targets, re-read from the server every minute. Series differ by colour (Okabe-Ito, safe for
// colour-blind readers) and by dash pattern, and the legend names them.
"use strict";
(() => {
  const W = window.NocWall, { h, $ } = W;
  const PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#BBBBBB", "#FFFFFF"];
  const DASHES = [[], [6, 3], [2, 2], [8, 3, 2, 3], [], [6, 3], [2, 2], [8, 3, 2, 3], []];
  const TYPES = ["alert_created", "anomaly_detected", "finding_created", "finding_escalated", "incident_created",
                 "incident_updated", "fraud_scored", "ticket_updated"];
  const SEV_COLOURS = { LOW: "#56B4E9", MEDIUM: "#F0E442", HIGH: "#E69F00", CRITICAL: "#D55E00" };
  const SEV_DASH = { LOW: [2, 2], MEDIUM: [6, 3], HIGH: [8, 3, 2, 3], CRITICAL: [] };
  const T = { ev: null, inc: null, charts: {}, outOfRange: 0 };
  W.trends = T;

  // x labels: "MM-DD hh:mm" over a day, "hh:mm" over the last hour (in the zone the toolbar picks)
  function axes(short) {
    const stroke = "#8b98a5", grid = { stroke: "#2d3a46", width: 1 };
    const label = (v) => (short ? W.when(v * 1000).slice(11, 16) : W.when(v * 1000).slice(5, 16));
    return [{ stroke, grid, ticks: grid, values: (u, vals) => vals.map(label) },
            { stroke, grid, ticks: grid, size: 50 }];
  }
  function chart(id, title, series, data, extra = {}, short = false) {
    const el = $(id);
    el.textContent = "";
    const width = Math.max(300, el.clientWidth || 400);
    const opts = { title, width, height: 170, series: [{ value: (u, v) => (v == null ? "–" : W.when(v * 1000)) }, ...series],
                   axes: axes(short), scales: { x: { time: false } }, legend: { live: true }, cursor: { drag: { x: false, y: false } }, ...extra };
    const u = new uPlot(opts, data, el);
    new ResizeObserver(() => { const w = Math.max(300, el.clientWidth); if (Math.abs(w - u.width) > 4) u.setSize({ width: w, height: 170 }); }).observe(el);
    return u;
  }

  // -- building from the REST answer ----------------------------------------------------------------------------
  W.loadTrends = (d) => {
    // Always the known feed types (so a type's first event counts live); anything else the feed carries is not drawn.
    T.ev = { t: d.events_per_minute.t.slice(), types: TYPES, counts: {} };
    for (const k of T.ev.types) T.ev.counts[k] = (d.events_per_minute.by_type[k] || new Array(T.ev.t.length).fill(0)).slice();
    T.inc = { t: d.incidents_per_hour.t.slice(), counts: {} };
    for (const s of W.SEVERITIES) T.inc.counts[s] = (d.incidents_per_hour.by_severity[s] || new Array(T.inc.t.length).fill(0)).slice();
    T.charts.ev = chart("trend-events", "Feed events per minute, by type",
      T.ev.types.map((k, i) => ({ label: k, stroke: PALETTE[i], dash: DASHES[i], width: 1.5, points: { show: false } })),
      [T.ev.t, ...T.ev.types.map((k) => T.ev.counts[k])]);
    T.charts.inc = chart("trend-incidents", "Incidents opened per hour, by severity",
      W.SEVERITIES.map((s) => ({ label: `${W.SHAPE[s]} ${s}`, stroke: SEV_COLOURS[s], dash: SEV_DASH[s], width: 2,
                                 points: { show: true, size: 5 } })),
      [T.inc.t, ...W.SEVERITIES.map((s) => T.inc.counts[s])]);
    W.loadLatency(d.latency);
    $("trends-panel").dataset.loaded = "1";
    W.dirty("trends");
  };
  W.loadLatency = (l) => {
    const tAvg = l.targets_ms.avg, tP95 = l.targets_ms.p95;
    const data = [l.t, l.avg_ms, l.p95_ms, l.t.map(() => tAvg), l.t.map(() => tP95)];
    const o = l.overall || {};
    const summary = $("latency-summary");
    summary.replaceChildren(
      h("span", { class: o.avg_ms != null && o.avg_ms > tAvg ? "over" : "ok" },
        `avg ${W.num(o.avg_ms, 0)} ms (target ${tAvg}) ${o.avg_ms != null && o.avg_ms > tAvg ? "✗ over" : "✓"}`),
      h("span", { class: o.p95_ms != null && o.p95_ms > tP95 ? "over" : "ok" },
        `p95 ${W.num(o.p95_ms, 0)} ms (target ${tP95}) ${o.p95_ms != null && o.p95_ms > tP95 ? "✗ over" : "✓"}`),
      h("span", { class: "muted" }, `${o.n || 0} events in the last hour`));
    summary.dataset.avg = o.avg_ms ?? ""; summary.dataset.p95 = o.p95_ms ?? "";
    if (T.charts.lat) { T.charts.lat.setData(data); return; }
    T.charts.lat = chart("trend-latency", "Broadcast latency per minute, last hour (ms)", [
      { label: "avg", stroke: "#56B4E9", width: 2, points: { show: true, size: 4 } },
      { label: "p95", stroke: "#E69F00", dash: [6, 3], width: 2, points: { show: true, size: 4 } },
      { label: "avg target", stroke: "#56B4E9", dash: [2, 4], width: 1, points: { show: false } },
      { label: "p95 target", stroke: "#E69F00", dash: [2, 4], width: 1, points: { show: false } }], data,
      { scales: { x: { time: false }, y: { range: (u, mn, mx) => [0, Math.max(600, (mx || 0) * 1.1)] } } }, true);
  };

  // -- live counting -------------------------------------------------------------------------------------------
  // Move a grid forward to hold `bucket`: drop the oldest buckets, add zeros. A bucket more than a whole window
  // ahead (a bad clock upstream) is not allowed to wipe the chart: it is counted as out of range instead.
  function slot(g, bucket, step) {
    const n = g.t.length;
    if (!n) return -1;
    const last = g.t[n - 1];
    if (bucket > last) {
      const ahead = Math.round((bucket - last) / step);
      if (ahead > n) { T.outOfRange += 1; return -1; }
      for (let k = 1; k <= ahead; k++) {
        g.t.push(last + k * step); g.t.shift();
        for (const arr of Object.values(g.counts)) { arr.push(0); arr.shift(); }
      }
    }
    const i = Math.round((bucket - g.t[0]) / step);
    return i >= 0 && i < n ? i : -1;
  }
  W.countTrend = (ev, p) => {
    const ms = Number(ev.timestamp);
    if (!T.ev || !isFinite(ms)) return;
    const minute = Math.floor(ms / 60000) * 60;
    let arr = T.ev.counts[ev.type];
    if (!arr) return;  // a type the chart was not built with
    const i = slot(T.ev, minute, 60);
    if (i >= 0) { arr = T.ev.counts[ev.type]; arr[i] += 1; W.dirty("trends"); }
    if (ev.type === "incident_created" && T.inc) {
      const sev = W.SEVERITIES.includes(p.combined_severity) ? p.combined_severity : null;
      const first = Number(p.first_seen ?? ms);
      if (sev && isFinite(first)) {
        const j = slot(T.inc, Math.floor(first / 3600000) * 3600, 3600);
        if (j >= 0) { T.inc.counts[sev][j] += 1; W.dirty("trends"); }
      }
    }
  };
  W.register("trends", () => {
    if (T.charts.ev) T.charts.ev.setData([T.ev.t, ...T.ev.types.map((k) => T.ev.counts[k])]);
    if (T.charts.inc) T.charts.inc.setData([T.inc.t, ...W.SEVERITIES.map((s) => T.inc.counts[s])]);
    const total = T.ev ? T.ev.types.reduce((a, k) => a + T.ev.counts[k].reduce((x, y) => x + y, 0), 0) : 0;
    $("trends-panel").dataset.events = total;
  }, 2000);
})();
