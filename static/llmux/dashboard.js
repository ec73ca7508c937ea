// llmux dashboard: live status over /ws/status/, the actions' loop, the overview.
// Plain browser JavaScript, no build step. Page parts live in their own files (model.js,
// charts.js, ...) and use the `llmux` object this file defines.
"use strict";

const llmux = (() => {
  const PHASE_NAMES = {
    backoff: "backoff", cooldown: "cooldown", drain: "drain", evict: "evict",
    bringup: "bring-up", readiness: "readiness", starting: "starting",
  };
  let skew = 0; // browser clock minus server clock, from the last snapshot's `at`
  let fresh = false; // a snapshot came since the socket (re)opened
  let isLive = false; // this page follows the live status (pages that do not never go stale)

  // -- formatting -------------------------------------------------------------------

  // Changes whenever a swap starts, moves on a phase or ends: the swap history and the
  // charts fetch their data again then (static/llmux/swaps.js, charts.js).
  function historyMark(snapshot) {
    const current = snapshot.switch;
    return JSON.stringify([snapshot.last_swap, current && current.id, current && current.phase]);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || seconds === "") return "—";
    const s = Math.floor(Number(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function millis(ms) {
    if (ms === null || ms === undefined) return "";
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let value = Number(n);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
  }

  function serverNow() { return Date.now() - skew; }

  function ago(iso) {
    if (!iso) return "—";
    return `${duration(Math.max(0, serverNow() - Date.parse(iso)) / 1000)} ago`;
  }

  function setText(element, text) {
    if (element && element.textContent !== String(text)) element.textContent = String(text);
  }

  // -- the live connection and staleness ----------------------------------------------

  function connect(onMessage, onOpen) {
    isLive = true;
    // A snapshot comes on every (re)connect; reconnect with backoff up to 10 s. Until a
    // snapshot has come after a (re)connect, the page is stale: see markStale.
    let delay = 500;
    const open = () => {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const socket = new WebSocket(`${scheme}://${location.host}/ws/status/`);
      socket.addEventListener("open", () => { delay = 500; if (onOpen) onOpen(socket); });
      socket.addEventListener("message", (event) => {
        let message;
        try { message = JSON.parse(event.data); } catch (error) { console.warn(error); return; }
        if (message.kind === "snapshot") {
          skew = Date.now() - Date.parse(message.data.at);
          markFresh(message.data.at);
        }
        onMessage(message, socket);
      });
      socket.addEventListener("close", () => {
        markStale();
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      });
    };
    open();
  }

  function markStale() {
    // What the page shows may be out of date: a banner says since when, rows are greyed,
    // counters stop, actions are disabled until a fresh snapshot comes.
    fresh = false;
    document.body.classList.add("stale");
    const banner = document.getElementById("stale");
    if (banner) banner.hidden = false;
    setText(document.getElementById("live"), "reconnecting…");
    for (const button of document.querySelectorAll("form[data-live-action] button")) {
      button.disabled = true;
    }
  }

  function markFresh(at) {
    fresh = true;
    document.body.classList.remove("stale");
    const banner = document.getElementById("stale");
    if (banner) banner.hidden = true;
    const since = document.getElementById("stale-since");
    if (since) since.textContent = new Date(Date.parse(at)).toLocaleTimeString();
    setText(document.getElementById("live"), "live");
    for (const form of document.querySelectorAll("form[data-live-action]")) {
      const button = form.querySelector("button");
      if (button) button.disabled = Boolean(form.dataset.blocked);
    }
  }

  // -- actions: sent without a reload, their outcome shown when the operation ends -------

  const pending = new Map(); // operation id -> the outcome's list item
  let sequence = 0; // numbers the outcome items, newest highest

  function outcomeItem(text, state) {
    const list = document.getElementById("outcomes");
    if (!list) return null;
    list.hidden = false;
    const item = document.createElement("li");
    item.className = `outcome outcome-${state}`;
    item.textContent = text;
    sequence += 1;
    item.dataset.seq = String(sequence);
    list.prepend(item);
    while (list.children.length > 8) list.lastElementChild.remove();
    return item;
  }

  async function sendAction(form) {
    const button = form.querySelector("button");
    if (button) button.disabled = true;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      const body = await response.json().catch(() => ({ message: response.statusText }));
      if (!response.ok) {
        outcomeItem(body.message || `error ${response.status}`, "failed");
        return;
      }
      if (body.operation) {
        const item = outcomeItem(`${body.message} — pending…`, "pending");
        if (item) { item.dataset.operation = String(body.operation); pending.set(body.operation, { item, message: body.message }); }
      } else {
        outcomeItem(body.message, "succeeded");
      }
      document.dispatchEvent(new CustomEvent("llmux:acted", { detail: { form, body } }));
    } catch (error) {
      outcomeItem(`failed: ${error}`, "failed");
    } finally {
      if (button) button.disabled = (isLive && !fresh) || Boolean(form.dataset.blocked);
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    const text = form.dataset && form.dataset.confirm;
    if (text && !window.confirm(text)) { event.preventDefault(); return; }
    // On a live page the outcome comes back over the socket; elsewhere the form posts
    // and the page reloads with the message, as without JavaScript.
    if (isLive && form.dataset && form.dataset.liveAction !== undefined) {
      event.preventDefault();
      sendAction(form);
    }
  });

  function renderOperations(snapshot) {
    const open = new Map();
    for (const op of snapshot.operations || []) {
      if (op.status === "pending" || op.status === "running") {
        open.set(op.target, `${op.kind} ${op.status}`);
      }
      const mine = pending.get(op.id);
      if (!mine) continue;
      if (op.finished_at) {
        mine.item.className = `outcome outcome-${op.status}`;
        mine.item.textContent = `${mine.message} → ${op.detail}`;
        pending.delete(op.id);
      } else {
        setText(mine.item, `${mine.message} — ${op.status}…`);
      }
    }
    for (const cell of document.querySelectorAll("[data-field=\"pending\"]")) {
      setText(cell, open.get(cell.closest("[data-model]").dataset.model) || "");
    }
  }

  function renderBlocked(model) {
    // Each action form of the model: disabled with the reason when it cannot apply.
    for (const form of document.querySelectorAll(`form[data-live-action][data-model="${CSS.escape(model.name)}"]`)) {
      const reason = (model.blocked || {})[form.dataset.act] || "";
      const button = form.querySelector("button");
      form.dataset.blocked = reason;
      if (button) {
        button.disabled = (isLive && !fresh) || Boolean(reason);
        button.title = reason;
      }
      const why = form.querySelector(".why");
      if (why) setText(why, reason);
    }
  }

  // -- the overview --------------------------------------------------------------------

  function renderModels(snapshot) {
    for (const model of snapshot.models) {
      renderBlocked(model);
      const row = document.querySelector(`[data-model="${CSS.escape(model.name)}"].model-row`);
      if (!row) continue;
      const badge = row.querySelector('[data-field="state"]');
      badge.className = `badge state-${model.state}`;
      setText(badge, model.state_label);
      setText(row.querySelector('[data-field="eviction"]'), model.eviction);
      setText(row.querySelector('[data-field="gpu_memory"]'), bytes(model.gpu_memory));
      setText(row.querySelector('[data-field="in_flight"]'), model.in_flight);
      setText(row.querySelector('[data-field="queued"]'), model.queued);
      const error = row.querySelector('[data-field="error"]');
      if (error) setText(error, model.state === "failed" ? model.error : "");
      const last = row.querySelector('[data-field="last_switch"]');
      last.dataset.time = model.last_switch || "";
      const up = row.querySelector('[data-field="uptime"]');
      up.dataset.seconds = model.uptime_s === null ? "" : String(model.uptime_s);
      up.dataset.at = String(Date.now());
    }
    tick();
  }

  function renderGroups(snapshot) {
    const list = document.getElementById("groups");
    if (!list) return;
    const mode = snapshot.mode + (snapshot.pinned ? `, pinned to ${snapshot.pinned}` : "");
    const items = snapshot.groups.map((group) => {
      const gpus = group.gpu_ids.length ? `GPU ${group.gpu_ids.join(", ")}` : "no GPU";
      const serving = group.serving.length ? group.serving.join(", ") : "nothing";
      return `${gpus}: serving ${serving}${group.switching ? " (switching)" : ""} · mode ${mode}`;
    });
    const current = Array.from(list.children).map((li) => li.textContent);
    if (current.join("\n") === items.join("\n")) return;
    list.replaceChildren(...items.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
  }

  function renderToolbar(snapshot) {
    setText(document.getElementById("mode"), snapshot.mode);
    const pinned = document.getElementById("pinned");
    if (pinned) setText(pinned, snapshot.pinned ? `, pinned to ${snapshot.pinned}` : "");
    const mode = document.querySelector('form[data-act="mode"]');
    if (mode) {
      const next = snapshot.mode === "auto" ? "manual" : "auto";
      mode.querySelector('input[name="mode"]').value = next;
      setText(mode.querySelector("button"), `Mode: ${next}`);
      mode.dataset.confirm = next === "manual"
        ? "Switch to manual mode? Only the pinned or active model will be served."
        : "Switch to auto mode?";
    }
    const unpin = document.querySelector('form[data-act="unpin"]');
    if (unpin) unpin.hidden = !snapshot.pinned;
  }

  function tick() {
    if (document.body.classList.contains("stale")) return; // counters freeze while stale
    for (const cell of document.querySelectorAll('[data-field="last_switch"]')) {
      setText(cell, ago(cell.dataset.time));
    }
    for (const cell of document.querySelectorAll('[data-field="uptime"]')) {
      const base = cell.dataset.seconds;
      const since = Number(cell.dataset.at || Date.now());
      setText(cell, base === "" || base === undefined ? "—"
        : duration(Number(base) + (Date.now() - since) / 1000));
    }
    tickSwitches();
  }

  // -- switch progress -------------------------------------------------------------------

  let switches = [];

  function renderSwitches(snapshot) {
    switches = snapshot.switches || [];
    const first = document.getElementById("switch");
    if (!first) return;
    for (const extra of document.querySelectorAll(".switch.extra")) extra.remove();
    first.hidden = switches.length === 0;
    switches.forEach((progress, index) => {
      let panel = first;
      if (index > 0) {
        panel = first.cloneNode(true);
        panel.id = "";
        panel.classList.add("extra");
        first.after(panel);
      }
      fillSwitch(panel, progress);
    });
    tickSwitches();
  }

  function fillSwitch(panel, progress) {
    const field = (name) => panel.querySelector(`[data-switch="${name}"]`);
    setText(field("group"), `GPU group ${progress.group}`);
    setText(field("from"), progress.from || "nothing");
    setText(field("to"), progress.to || "(evict)");
    setText(field("phase"), PHASE_NAMES[progress.phase] || progress.phase);
    setText(field("waiting"), `${progress.waiting} request${progress.waiting === 1 ? "" : "s"} waiting for ${progress.to || "it"}`);
    setText(field("restore"), progress.restore ? `restoring ${bytes(progress.restore.total)}` : "");
    const next = progress.next;
    setText(field("next"), next ? `next queued: ${next.kind} ${next.target} (${next.trigger})` : "nothing queued next");
    for (const item of panel.querySelectorAll("[data-phase]")) {
      const phase = progress.phases.find((p) => p.name === item.dataset.phase);
      item.className = phase ? phase.state : "todo";
      const took = phase && phase.state === "done" ? millis(phase.ms) : phase && phase.state === "skipped" ? "skipped" : "";
      setText(item.querySelector(".ms"), took);
    }
    panel.dataset.progress = JSON.stringify(progress);
    panel.dataset.at = String(serverNow());
  }

  function tickSwitches() {
    if (document.body.classList.contains("stale")) return;
    for (const panel of document.querySelectorAll(".switch[data-progress]")) {
      if (panel.hidden) continue;
      const progress = JSON.parse(panel.dataset.progress);
      const field = (name) => panel.querySelector(`[data-switch="${name}"]`);
      const now = serverNow();
      setText(field("elapsed"), duration((now - Date.parse(progress.started_at)) / 1000));
      const ends = progress.phase_ends_at ? Date.parse(progress.phase_ends_at) : null;
      setText(field("countdown"), ends ? `ends in ${duration(Math.max(0, ends - now) / 1000 + 0.999)}` : "");
      let estimate = "no estimate yet (no earlier switch to it)";
      if (progress.remaining_ms !== null) {
        const left = Math.max(0, progress.remaining_ms - (now - Number(panel.dataset.at)));
        estimate = `about ${duration(left / 1000 + 0.999)} left (from ${progress.estimate_from} earlier switch${progress.estimate_from === 1 ? "" : "es"})`;
      }
      setText(field("estimate"), estimate);
    }
  }

  function render(snapshot) {
    renderToolbar(snapshot);
    renderGroups(snapshot);
    renderModels(snapshot);
    renderSwitches(snapshot);
    renderOperations(snapshot);
    document.dispatchEvent(new CustomEvent("llmux:snapshot", { detail: snapshot }));
  }

  function live(onMessage, onOpen) {
    // Every live page: the initial snapshot rendered, then each pushed one.
    const initial = document.getElementById("snapshot");
    if (initial) {
      const snapshot = JSON.parse(initial.textContent);
      skew = Date.now() - Date.parse(snapshot.at);
      render(snapshot);
    }
    connect((message, socket) => {
      if (message.kind === "snapshot") render(message.data);
      if (onMessage) onMessage(message, socket);
    }, onOpen);
    setInterval(tick, 250);
  }

  return { live, connect, setText, bytes, duration, millis, ago, historyMark };
})();

// Each page names its part in <body data-page>: no inline script starts it, as the
// Content-Security-Policy (script-src 'self') allows none. Pages whose part lives in a
// file of its own start it there.
({
  overview: () => llmux.live(),
}[document.body.dataset.page] || (() => {}))();
