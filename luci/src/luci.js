// luci: live updates through server-sent events, and service operations
// sent with fetch so the page stays (the result shows in #msg).
"use strict";


function follow() {
  const live = document.getElementById("live");
  if (!live) return;
  const plots = document.getElementById("plots");
  const asof = document.getElementById("asof");
  const conn = document.getElementById("conn");
  let last = null;
  const es = new EventSource("/events");
  es.addEventListener("cluster", (e) => {
    const d = JSON.parse(e.data);
    asof.textContent = d.asof;
    conn.textContent = "live";
    // Replaced only when changed, and the node chosen in a relocation
    // menu is kept across it (the view's age changes at every reading).
    if (d.live !== last) {
      const chosen = new Map();
      live.querySelectorAll("select").forEach((s) => {
        const row = s.closest("[id]");
        if (row) chosen.set(row.id + " " + s.className, s.value);
      });
      live.innerHTML = d.live;
      last = d.live;
      live.querySelectorAll("select").forEach((s) => {
        const row = s.closest("[id]");
        const v = row && chosen.get(row.id + " " + s.className);
        if (v && [...s.options].some((o) => o.value === v)) s.value = v;
      });
    }
    plots.innerHTML = d.plots;
  });
  es.addEventListener("expired", () => {
    es.close();
    window.location = "/login";
  });
  es.onerror = () => {
    conn.textContent = "reconnecting…";
  };
}

async function act(form) {
  const msg = document.getElementById("msg");
  const data = new URLSearchParams(new FormData(form));
  const node = data.get("node");
  msg.hidden = false;
  msg.className = "msg";
  msg.textContent = "Working: " + data.get("action") + " " + data.get("service") +
    (data.get("action") === "relocate" && node ? " to " + node : "") + "…";
  form.querySelectorAll("button").forEach((b) => (b.disabled = true));
  try {
    // getAttribute: the form has a field named "action" that hides form.action.
    const r = await fetch(form.getAttribute("action"), {
      method: "POST",
      body: data,
      headers: { "X-Luci-Fetch": "1" },
      credentials: "same-origin",
    });
    msg.textContent = await r.text();
    msg.className = r.ok ? "msg ok" : "msg error";
  } catch (e) {
    msg.textContent = "luci did not answer: " + e;
    msg.className = "msg error";
  } finally {
    form.querySelectorAll("button").forEach((b) => (b.disabled = false));
  }
}

document.addEventListener("submit", (e) => {
  const f = e.target;
  if (f.classList && f.classList.contains("act")) {
    e.preventDefault();
    act(f);
  }
});

document.addEventListener("DOMContentLoaded", follow);
