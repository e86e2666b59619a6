// The wall's shared pieces: DOM building (text only, never HTML from data), date formatting in a chosen time zone,
// the page state, and the render scheduler that batches every DOM update into at most a few frames a second.
"use strict";
window.NocWall = (() => {
  const W = {};

  // -- DOM ---------------------------------------------------------------------------------------------------
  // h("td", {class: "x", dataset: {id: 1}, onclick: fn}, "text", child): attributes via properties, children as
  // text nodes or elements. Data never goes through innerHTML.
  W.h = (tag, attrs, ...children) => {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k === "class") el.className = v;
        else if (k === "dataset") Object.assign(el.dataset, v);
        else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
        else if (k === "text") el.textContent = v;
        else el.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
    return el;
  };
  const SVG_NS = "http://www.w3.org/2000/svg";
  W.svg = (tag, attrs, ...children) => {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, String(v));
    for (const c of children) if (c != null) el.append(c instanceof Node ? c : String(c));
    return el;
  };
  W.$ = (id) => document.getElementById(id);

  // -- time --------------------------------------------------------------------------------------------------
  // Times are shown with their date, in the site's zone (default), the browser's, or UTC (the toolbar picks).
  const formatters = new Map();
  W.userZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  W.zoneMode = localStorage.getItem("noc-wall-zone") || "site";
  function formatter(zone) {
    let f = formatters.get(zone);
    if (!f) {
      try {
        f = new Intl.DateTimeFormat("en-GB", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
          hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short" });
      } catch (e) {
        f = formatter("UTC");  // a zone this browser does not know: UTC, labelled as such
      }
      formatters.set(zone, f);
    }
    return f;
  }
  W.toDate = (t) => {
    if (t == null || t === "") return null;
    const d = new Date(typeof t === "string" && /^[0-9]+$/.test(t) ? Number(t) : t);
    return isNaN(d.getTime()) ? null : d;
  };
  W.zoneFor = (siteId) => {
    if (W.zoneMode === "utc") return "UTC";
    if (W.zoneMode === "site") { const s = W.state.sites.get(siteId); if (s && s.timezone) return s.timezone; }
    return W.userZone;
  };
  // "2026-12-07 14:03:22 GMT+3". Formatting is the costly part of a busy feed's rows, and a busy feed's times
  // repeat within a second: results are cached per (zone, second), a few thousand at most.
  const whenCache = new Map();
  W.when = (t, siteId) => {
    const d = W.toDate(t);
    if (!d) return "";
    const zone = W.zoneFor(siteId), ms = d.getTime();
    const key = zone + "|" + Math.floor(ms / 1000);
    let text = whenCache.get(key);
    if (text === undefined) {
      const parts = {};
      for (const p of formatter(zone).formatToParts(d)) parts[p.type] = p.value;
      text = `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second} ${parts.timeZoneName || ""}`.trim();
      if (whenCache.size >= 4000) whenCache.clear();
      whenCache.set(key, text);
    }
    return text;
  };
  W.num = (v, digits = 2) => (v == null || !isFinite(Number(v)) ? "–" : Number(v).toFixed(digits));

  // Severity and risk: a colour, and always a shape and the word too (never colour alone).
  W.SEVERITIES = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];
  W.SHAPE = { LOW: "○", MEDIUM: "◆", HIGH: "▲", CRITICAL: "⬣", URGENT: "⬣" };
  W.sevRank = (s) => W.SEVERITIES.indexOf(s === "URGENT" ? "CRITICAL" : s);
  W.badge = (sev) => W.h("span", { class: "badge sev-" + (W.SHAPE[sev] ? sev : "UNKNOWN") },
                         (W.SHAPE[sev] || "?") + " " + (sev || "?"));

  W.payload = (ev) => {
    const p = ev.payload;
    if (p && typeof p === "object") return p;
    if (typeof p === "string" && p.length < 65536) { try { const o = JSON.parse(p); if (o && typeof o === "object") return o; } catch (e) { /* not JSON */ } }
    return {};
  };

  // -- state -------------------------------------------------------------------------------------------------
  W.CAP = { feed: 100, incidents: 500, tickets: 500, models: 20, sites: 2000 };
  W.state = {
    api: null, canManage: false, siteFilter: null,
    incidents: new Map(), tickets: new Map(), models: new Map(), sites: new Map(),
    feed: new Array(W.CAP.feed), feedHead: 0, feedSize: 0, feedTotal: 0,
  };
  // renderMs: script time of renders (byPanel: per panel); frameMs: renders with their style, layout and paint
  W.stats = { renders: 0, events: 0, renderMs: 0, frameMs: 0, byPanel: {} };

  // -- render scheduler ----------------------------------------------------------------------------------------
  // Panels mark themselves dirty; one timer (RENDER_EVERY_MS) then one animation frame renders what is dirty.
  // A renderer may ask to wait longer between its own renders (charts: 2 s; models, the sites map: 1 s).
  // The wait between renders is RENDER_EVERY_MS, or four times what the last render cost (its script, style,
  // layout and paint: measured up to the first task after its frame), at most MAX_WAIT_MS (2 s): on a slow or starved
  // machine rendering backs off and keeps under about a fifth of the main thread, leaving it free for input.
  W.RENDER_EVERY_MS = 250;
  const MAX_WAIT_MS = 2000;
  let wait = W.RENDER_EVERY_MS;
  const renderers = new Map();  // name -> {fn, minGapMs, last, dirty}
  let timer = null;
  W.register = (name, fn, minGapMs = 0) => renderers.set(name, { fn, minGapMs, last: 0, dirty: false });
  W.dirty = (...names) => {
    for (const n of names) { const r = renderers.get(n); if (r) r.dirty = true; }
    if (timer == null) timer = setTimeout(() => requestAnimationFrame(flush), wait);
  };
  function flush() {
    timer = null;
    const started = performance.now();
    setTimeout(() => {
      const cost = performance.now() - started;
      W.stats.frameMs += cost;
      wait = Math.min(MAX_WAIT_MS, Math.max(W.RENDER_EVERY_MS, 4 * cost));
    }, 0);
    const now = Date.now();
    let again = false;
    for (const [name, r] of renderers) {
      if (!r.dirty) continue;
      if (now - r.last < r.minGapMs) { again = true; continue; }
      r.dirty = false; r.last = now;
      const t0 = performance.now();
      try { r.fn(); } catch (e) { console.error("wall: render of", name, "failed", e); }
      W.stats.byPanel[name] = (W.stats.byPanel[name] || 0) + performance.now() - t0;
    }
    W.stats.renders += 1;
    W.stats.renderMs += performance.now() - started;
    if (again && timer == null) timer = setTimeout(() => requestAnimationFrame(flush), wait);
  }

  // Re-render a container's rows without losing the keyboard focus: the element focused before (found again by
  // its row's data-id and, for buttons, data-to) is focused again after.
  W.keepFocus = (container, fn) => {
    const a = document.activeElement;
    const row = a && container.contains(a) ? a.closest("tr[data-id]") : null;
    const key = row ? [row.dataset.id, a.dataset.to || null] : null;
    fn();
    if (!key) return;
    const again = container.querySelector(`tr[data-id="${CSS.escape(key[0])}"]`);
    const target = again && key[1] ? again.querySelector(`[data-to="${CSS.escape(key[1])}"]`) : again;
    if (target) target.focus({ preventScroll: true });
  };

  // -- site filter -------------------------------------------------------------------------------------------
  W.setSiteFilter = (siteId) => {
    W.state.siteFilter = siteId || null;
    document.body.dataset.siteFilter = siteId || "";
    for (const fn of W.onFilter) fn(W.state.siteFilter);
    W.dirty("feed", "incidents", "tickets", "heatmap", "sites");
  };
  W.onFilter = [];
  W.matchesSite = (siteId) => !W.state.siteFilter || siteId === W.state.siteFilter;
  return W;
})();
