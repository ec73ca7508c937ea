// llmux dashboard: live status over /ws/status/, confirmations, log tail. (playground.js)
// Plain browser JavaScript, no build step; charts live in charts.js.
"use strict";

const llmux = (() => {
  const PHASES = ["drain", "evict", "bringup", "readiness"];

  // Every form with data-confirm asks before it is sent.
  document.addEventListener("submit", (event) => {
    const text = event.target.dataset && event.target.dataset.confirm;
    if (text && !window.confirm(text)) event.preventDefault();
  });

  function connect(onMessage, onState) {
    // A snapshot comes on every (re)connect; reconnect with backoff up to 10 s.
    let delay = 500;
    let socket = null;
    const open = () => {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${location.host}/ws/status/`);
      socket.addEventListener("open", () => { delay = 500; onState("live"); });
      socket.addEventListener("message", (event) => {
        try { onMessage(JSON.parse(event.data), socket); } catch (error) { console.warn(error); }
      });
      socket.addEventListener("close", () => {
        onState("reconnecting…");
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      });
    };
    open();
    return () => socket;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || seconds === "") return "—";
    const s = Math.floor(Number(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let value = Number(n);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
  }

  function ago(iso) {
    if (!iso) return "—";
    return `${duration((Date.now() - Date.parse(iso)) / 1000)} ago`;
  }

  function setText(element, text) {
    if (element && element.textContent !== String(text)) element.textContent = String(text);
  }

  function renderModels(snapshot) {
    const known = new Set();
    for (const model of snapshot.models) {
      const row = document.querySelector(`tr[data-model="${CSS.escape(model.name)}"]`);
      if (!row) continue;
      known.add(model.name);
      const badge = row.querySelector('[data-field="state"]');
      badge.className = `badge state-${model.state}`;
      setText(badge, model.state_label);
      setText(row.querySelector('[data-field="eviction"]'), model.eviction);
      setText(row.querySelector('[data-field="gpu_memory"]'), bytes(model.gpu_memory));
      setText(row.querySelector('[data-field="in_flight"]'), model.in_flight);
      setText(row.querySelector('[data-field="queued"]'), model.queued);
      const last = row.querySelector('[data-field="last_switch"]');
      last.dataset.time = model.last_switch || "";
      const up = row.querySelector('[data-field="uptime"]');
      up.dataset.seconds = model.uptime_s === null ? "" : String(model.uptime_s);
      up.dataset.at = String(Date.now());
    }
    tick();
  }

  function tick() {
    for (const cell of document.querySelectorAll('[data-field="last_switch"]')) {
      setText(cell, ago(cell.dataset.time));
    }
    for (const cell of document.querySelectorAll('[data-field="uptime"]')) {
      const base = cell.dataset.seconds;
      const since = Number(cell.dataset.at || Date.now());
      setText(cell, base === "" || base === undefined ? "—"
        : duration(Number(base) + (Date.now() - since) / 1000));
    }
  }

  function renderSwitch(snapshot) {
    const section = document.getElementById("switch");
    if (!section) return;
    const current = snapshot.switch;
    section.hidden = !current;
    if (!current) return;
    setText(section.querySelector('[data-switch="from"]'), current.from || "—");
    setText(section.querySelector('[data-switch="to"]'), current.to || "(evict)");
    setText(section.querySelector('[data-switch="phase"]'), current.phase || "starting");
    const at = PHASES.indexOf(current.phase);
    for (const item of section.querySelectorAll("[data-phase]")) {
      const index = PHASES.indexOf(item.dataset.phase);
      const took = current.phases_ms[item.dataset.phase];
      item.className = index < at || took !== null ? "done" : index === at ? "now" : "";
      item.title = took === null || took === undefined ? "" : `${Math.round(took)} ms`;
    }
  }

  function renderGpus(snapshot) {
    for (const gpu of snapshot.gpus) {
      const meter = document.querySelector(`meter[data-gpu="${gpu.id}"]`);
      if (meter) { meter.max = gpu.total; meter.value = gpu.used; }
      const text = document.querySelector(`[data-gpu-text="${gpu.id}"]`);
      setText(text, `${(gpu.used / 2 ** 30).toFixed(1)} / ${(gpu.total / 2 ** 30).toFixed(1)} GiB`);
    }
  }

  function render(snapshot) {
    setText(document.getElementById("mode"), snapshot.mode);
    renderModels(snapshot);
    renderSwitch(snapshot);
    renderGpus(snapshot);
    document.dispatchEvent(new CustomEvent("llmux:snapshot", { detail: snapshot }));
  }

  function overview() {
    const initial = document.getElementById("snapshot");
    if (initial) render(JSON.parse(initial.textContent));
    const live = document.getElementById("live");
    connect((message) => { if (message.kind === "snapshot") render(message.data); },
      (state) => setText(live, state));
    setInterval(tick, 1000);
  }

  function followLog(pre) {
    if (!pre) return;
    pre.scrollTop = pre.scrollHeight;
    connect((message, socket) => {
      if (message.kind === "snapshot") {
        socket.send(JSON.stringify({ follow_log: pre.dataset.model }));
        const mine = message.data.models.find((m) => m.name === pre.dataset.model);
        const badge = document.getElementById("state");
        if (mine && badge) { badge.className = `badge state-${mine.state}`; setText(badge, mine.state_label); }
      } else if (message.kind === "log") {
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent += message.data.join("\n") + "\n";
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      }
    }, () => {});
  }

  return { overview, followLog, connect };
})();

// Each page names its part in <body data-page>: no inline script starts it, as the
// Content-Security-Policy (script-src 'self') allows none.
({
  overview: () => llmux.overview(),
  model: () => llmux.followLog(document.getElementById("log")),
}[document.body.dataset.page] || (() => {}))();
