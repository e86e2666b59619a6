// NOC dashboard: REST for the initial state, then everything live over /ws/noc/dashboard.
// Signing in trades the token for an HttpOnly session cookie (POST /api/v2/noc/session): from then on the page holds
// no token; REST calls and the WebSocket are authenticated by the cookie. The WebSocket asks for the "noc.v1"
// subprotocol: the batched protocol (subscribe, resume, one frame per tick), the efficient one.
"use strict";
(() => {
  const API = "/api/v2/noc";
  const $ = (id) => document.getElementById(id);
  const state = { signedIn: false, ws: null, lastEventId: null, lastCursor: null, retry: 0, closedByUs: false };

  function setStatus(cls, text) { const s = $("status"); s.className = "status " + cls; s.textContent = text;
                                  s.dataset.state = cls; }

  async function get(path, init = {}) {
    const r = await fetch(API + path, { credentials: "same-origin", ...init });
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
    const ws = new WebSocket(url, ["noc.v1"]);
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
      if (e.code === 4401) {  // token revoked or session expired: back to the sign-in form
        state.signedIn = false; setStatus("off", "signed out");
        $("dashboard").hidden = true; $("signout").hidden = true; $("signin").hidden = false;
        $("signin-error").textContent = e.reason || "token revoked"; return;
      }
      const delay = Math.min(10000, 500 * 2 ** state.retry++);
      setStatus("retry", `reconnecting (${e.code}${e.reason ? ": " + e.reason : ""})`);
      setTimeout(() => { if (state.signedIn && !state.closedByUs) connect(); }, delay);
    };
  }

  // The token is sent once, to open a session; the cookie it sets is HttpOnly (no script here can read it).
  async function signIn(token) {
    try {
      await get("/session", { method: "POST", headers: { Authorization: "Bearer " + token } });
    } catch (e) {
      $("signin-error").textContent = e.message; return;
    }
    $("token").value = "";
    await start();
  }

  async function start() {
    state.signedIn = true; state.closedByUs = false;
    try {
      await window.NocWall.start({ get, post });
    } catch (e) {
      if (e.status === 401 || e.status === 403) { $("signin-error").textContent = e.message; state.signedIn = false; return; }
      $("signin-error").textContent = "some panels could not load: " + e.message;
    }
    $("signin").hidden = true; $("dashboard").hidden = false; $("signout").hidden = false;
    connect();
  }

  $("signin-form").addEventListener("submit", (e) => { e.preventDefault(); $("signin-error").textContent = "";
                                                       signIn($("token").value.trim()); });
  $("signout").addEventListener("click", async () => {
    state.closedByUs = true; state.signedIn = false;
    if (state.ws) state.ws.close(1000, "signed out");
    try { await get("/session", { method: "DELETE" }); } finally { location.reload(); }
  });
  // A session cookie from earlier (same browser, not expired, token not revoked): straight to the dashboard.
  fetch(API + "/session", { credentials: "same-origin" }).then((r) => { if (r.ok) start(); });
})();
