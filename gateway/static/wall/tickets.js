// Ticket actions for tokens with noc:manage: acknowledge (→ OPEN), start (→ IN_PROGRESS), resolve (→ RESOLVED with
// a resolution), through POST /tickets/{id}/state. The answer updates the row at once; the ticket_updated event
// that follows on the feed updates it again (the higher version wins) wherever the ticket is shown.
"use strict";
(() => {
  const W = window.NocWall, { h, $, state } = W;
  const MOVES = { NEW: ["OPEN", "IN_PROGRESS", "RESOLVED"], OPEN: ["IN_PROGRESS", "RESOLVED"],
                  IN_PROGRESS: ["RESOLVED"] };
  const LABEL = { OPEN: "Acknowledge", IN_PROGRESS: "Start", RESOLVED: "Resolve…" };
  W.RESOLUTIONS = ["FALSE_POSITIVE", "FRAUD_CONFIRMED", "RESOLVED_OTHER", "DUPLICATE"];

  async function change(ticket, status, resolution, note) {
    const body = { status };
    if (resolution) body.resolution = resolution;
    if (note) body.note = note.slice(0, 1000);
    const row = document.querySelector(`#tickets tr[data-id="${CSS.escape(ticket.ticket_id)}"]`);
    if (row) row.dataset.pending = status;
    // One Idempotency-Key per (ticket, version it is moved from, move): a retry after a 503 or a lost answer
    // (once, here; or the operator clicking again) gets the first answer, and the ticket changes once.
    const key = ["wall", ticket.ticket_id, ticket.version, status, resolution || ""].map((x) => encodeURIComponent(String(x))).join(":").slice(0, 200);
    const send = () => W.state.api.get(`/tickets/${encodeURIComponent(ticket.ticket_id)}/state`, {
      method: "POST", headers: { "content-type": "application/json", "idempotency-key": key }, body: JSON.stringify(body) });
    try {
      let t;
      try { t = await send(); }
      catch (e) {
        if (e.status !== 503 && !(e instanceof TypeError)) throw e;  // TypeError: the request or its answer was lost
        await new Promise((r) => setTimeout(r, 1000));
        t = await send();
      }
      W.putTicket(t);
      W.toast(`${t.ticket_no || t.ticket_id}: ${t.status}${t.resolution ? " · " + t.resolution : ""}`);
      W.dirty("tickets", "drill");
    } catch (e) {
      W.toast(`${ticket.ticket_no || ticket.ticket_id}: ${e.message}`, true);
    } finally {
      if (row) delete row.dataset.pending;
    }
  }

  W.ticketActions = (t) => {
    if (!state.canManage) return "";
    const moves = MOVES[t.status] || [];
    return h("span", { class: "btns" }, ...moves.map((to) => h("button", {
      type: "button", class: "act act-" + to, dataset: { to }, "aria-label": `${LABEL[to]} ticket ${t.ticket_no || t.ticket_id}`,
      onclick: (e) => { e.stopPropagation(); if (to === "RESOLVED") openResolve(t); else change(t, to); } }, LABEL[to])));
  };

  // -- the resolve dialog: resolution (required) and an optional note ------------------------------------------
  let resolving = null;
  function openResolve(t) {
    resolving = t;
    $("resolve-title").textContent = `Resolve ${t.ticket_no || t.ticket_id}: ${String(t.title || "").slice(0, 120)}`;
    $("resolve-note").value = "";
    const dlg = $("resolve-dialog");
    dlg.returnValue = "";  // Esc closes without a value: only the Resolve button resolves
    if (!dlg.open) dlg.showModal();
    $("resolve-resolution").focus();
  }
  W.buildResolveDialog = () => {
    const select = h("select", { id: "resolve-resolution", required: true },
      ...W.RESOLUTIONS.map((r) => h("option", { value: r }, r)));
    const form = h("form", { method: "dialog", id: "resolve-form" },
      h("h3", { id: "resolve-title" }),
      h("label", { for: "resolve-resolution" }, "Resolution"), select,
      h("label", { for: "resolve-note" }, "Note (optional)"),
      h("textarea", { id: "resolve-note", rows: 2, maxlength: 1000 }),
      h("div", { class: "btns" },
        h("button", { type: "submit", id: "resolve-submit", value: "ok" }, "Resolve"),
        h("button", { type: "button", id: "resolve-cancel", onclick: () => $("resolve-dialog").close("cancel") }, "Cancel")));
    const dlg = h("dialog", { id: "resolve-dialog", "aria-labelledby": "resolve-title" }, form);
    dlg.addEventListener("close", () => {
      const t = resolving; resolving = null;
      if (t && dlg.returnValue === "ok") change(t, "RESOLVED", select.value, $("resolve-note").value.trim());
    });
    document.body.append(dlg);
  };

  // -- a short message at the bottom of the screen --------------------------------------------------------------
  let toastTimer = null;
  W.toast = (text, bad = false) => {
    const el = $("wall-toast");
    el.textContent = text; el.className = bad ? "toast bad" : "toast"; el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
  };
})();
