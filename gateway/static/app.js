// NOC dashboard: REST for the initial state, then everything live over /ws/noc/dashboard.
// The token goes in the WebSocket subprotocol list (browsers cannot set headers on a WebSocket), never the URL.
"use strict";
(() => {
  const API = "/api/v2/noc";
  const $ = (id) => document.getElementById(id);
  const state = { token: null, ws: null, lastEventId: null, lastCursor: null, retry: 0, closedByUs: false };

  function setStatus(cls, text) { const s = $("status"); s.className = "status " + cls; s.textContent = text;
                                  s.dataset.state = cls; }

  async function get(path, init = {}) {
    const r = await fetch(API + path, { ...init, headers: { ...init.headers, Authorization: "Bearer " + state.token } });
    const body = await r.json();
    if (!r.ok) { const e = new Error(body.message || r.statusText); e.status = r.status; throw e; }
    return body.data;
  }
  const post = (path, body) => get(path, { method: "POST", headers: { "content-type": "application/json" },
                                           body: JSON.stringify(body) });

  // The panels (wall/*.js) keep their own state and render in batches; each event only updates that state.
  function onEvent(ev) {
    state.lastEventId = ev.event_id; state.lastCursor = ev.cursor;
    window.NocWall.onEvent(ev);
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
      await window.NocWall.start({ get, post });
    } catch (e) {
      if (e.status === 401 || e.status === 403) { $("signin-error").textContent = e.message; state.token = null; return; }
      $("signin-error").textContent = "some panels could not load: " + e.message;
    }
    sessionStorage.setItem("noc-token", token);
    $("signin").hidden = true; $("dashboard").hidden = false; $("signout").hidden = false;
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
