// GPU telemetry on the overview: each GPU's utilisation, memory, temperature and power with
// sparklines of the last minutes, a bar of which model holds how much of its memory, and the
// host RAM of sleeping models. Renders every snapshot that dashboard.js announces with the
// `llmux:snapshot` event; no inline script, as the Content-Security-Policy allows none, and
// no style attribute either: SVG geometry and colours are attributes, not styles.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const BAR_WIDTH = 1000; // the bar's viewBox width
  const SPARK = { width: 300, height: 30 }; // the sparklines' viewBox
  let rendered = false;

  // Like Django's filesizeformat, which renders the page's first figures.
  function bytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let value = Number(n);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
  }

  // One colour per model name, the same on every page and whatever the order of models.
  function colour(name) {
    let hash = 0;
    for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
    return `hsl(${hash % 360}, 60%, 48%)`;
  }

  function setText(element, text) {
    if (element && element.textContent !== String(text)) element.textContent = String(text);
  }

  function svg(tag, attributes) {
    const element = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
    return element;
  }

  function card(container, template, gpu) {
    let element = container.querySelector(`[data-gpu="${gpu.id}"]`);
    if (!element) {
      element = template.content.firstElementChild.cloneNode(true);
      element.dataset.gpu = String(gpu.id);
      container.append(element);
    }
    return element;
  }

  // What the bar and the legend show: each model's bytes, then what no engine of llmux holds.
  function segments(gpu) {
    const parts = gpu.models.map((share) => ({ model: share.model, bytes: share.bytes }));
    if (gpu.other > 0) parts.push({ model: "", bytes: gpu.other });
    return parts;
  }

  function renderBar(bar, gpu, parts) {
    const key = JSON.stringify([gpu.total, parts]);
    if (bar.dataset.key === key) return;
    bar.dataset.key = key;
    bar.replaceChildren();
    let x = 0;
    for (const part of parts) {
      const width = gpu.total > 0 ? (part.bytes / gpu.total) * BAR_WIDTH : 0;
      const rect = svg("rect", { x, y: 0, width: Math.max(width, 0), height: 16, "data-model": part.model });
      if (part.model) rect.setAttribute("fill", colour(part.model));
      else rect.setAttribute("class", "other");
      const title = svg("title", {});
      title.textContent = `${part.model || "other"}: ${bytes(part.bytes)}`;
      rect.append(title);
      bar.append(rect);
      x += width;
    }
    bar.setAttribute("aria-label",
      `GPU memory: ${parts.map((p) => `${p.model || "other"} ${bytes(p.bytes)}`).join(", ") || "nothing held"}`);
  }

  function renderLegend(legend, parts) {
    const key = JSON.stringify(parts);
    if (legend.dataset.key === key) return;
    legend.dataset.key = key;
    legend.replaceChildren(...parts.map((part) => {
      const item = document.createElement("li");
      item.dataset.share = part.model;
      const swatch = svg("svg", { class: "swatch", viewBox: "0 0 10 10", "aria-hidden": "true" });
      const rect = svg("rect", { width: 10, height: 10 });
      if (part.model) rect.setAttribute("fill", colour(part.model));
      else rect.setAttribute("class", "other");
      swatch.append(rect);
      item.append(swatch, `${part.model || "other"} ${bytes(part.bytes)}`);
      return item;
    }));
  }

  // A path over the last `span` seconds up to `now`; a step longer than `gap` seconds is
  // left blank (nobody read the GPU then) rather than drawn across.
  function sparkPath(at, values, { low, high, now, span, gap }) {
    const range = high - low || 1;
    let path = "";
    let previous = null;
    at.forEach((time, index) => {
      const value = values[index];
      if (value === null || value === undefined) { previous = null; return; }
      const x = SPARK.width * (1 - (now - time) / span);
      const y = SPARK.height * (1 - (Math.min(Math.max(value, low), high) - low) / range);
      const move = previous === null || time - previous > gap;
      path += `${move ? "M" : "L"}${x.toFixed(1)},${y.toFixed(1)}`;
      previous = time;
    });
    return path;
  }

  function renderSparks(element, gpu, telemetry, now) {
    const history = gpu.history;
    const frame = { now, span: telemetry.history_s, gap: telemetry.history_every_s * 2.5 };
    const temperatures = history.temperature.filter((t) => t !== null);
    const scales = {
      utilization: { low: 0, high: 100 },
      used: { low: 0, high: gpu.total },
      temperature: { low: Math.min(20, ...temperatures), high: Math.max(90, ...temperatures) },
      power: { low: 0, high: gpu.power_limit || Math.max(1, ...history.power.filter((p) => p !== null)) },
    };
    for (const [field, scale] of Object.entries(scales)) {
      const path = element.querySelector(`[data-spark="${field}"] path`);
      if (path) path.setAttribute("d", sparkPath(history.at, history[field], { ...scale, ...frame }));
    }
  }

  function renderGpu(element, gpu, telemetry, now) {
    setText(element.querySelector('[data-gpu-field="title"]'), `GPU ${gpu.id}`);
    setText(element.querySelector('[data-gpu-field="name"]'), gpu.name);
    setText(element.querySelector('[data-gpu-field="utilization"]'),
      gpu.utilization === null ? "—" : `${gpu.utilization} %`);
    setText(element.querySelector('[data-gpu-field="memory"]'), `${bytes(gpu.used)} / ${bytes(gpu.total)}`);
    setText(element.querySelector('[data-gpu-field="temperature"]'),
      gpu.temperature === null ? "—" : `${gpu.temperature} °C`);
    const limit = gpu.power_limit === null ? "" : ` / ${Math.round(gpu.power_limit)}`;
    setText(element.querySelector('[data-gpu-field="power"]'),
      gpu.power === null ? "—" : `${Math.round(gpu.power)}${limit} W`);
    const parts = segments(gpu);
    renderBar(element.querySelector("[data-gpu-bar]"), gpu, parts);
    renderLegend(element.querySelector("[data-gpu-legend]"), parts);
    renderSparks(element, gpu, telemetry, now);
  }

  function renderSleeping(sleeping) {
    const list = document.querySelector("[data-sleeping-list]");
    if (!list) return;
    document.querySelector("[data-sleeping-empty]").hidden = sleeping.length > 0;
    const key = JSON.stringify(sleeping);
    if (list.dataset.key === key) return;
    list.dataset.key = key;
    list.replaceChildren(...sleeping.map((engine) => {
      const item = document.createElement("li");
      item.dataset.sleeping = engine.model;
      const name = document.createElement("strong");
      name.textContent = engine.model;
      const state = document.createElement("span");
      state.className = "muted";
      state.textContent = engine.state_label;
      const held = document.createElement("span");
      held.dataset.sleepingBytes = "";
      held.textContent = bytes(engine.host_bytes);
      item.append(name, " ", state, " ", held);
      return item;
    }));
  }

  function render(snapshot) {
    const section = document.getElementById("gpus");
    const telemetry = snapshot.telemetry;
    if (!section || !telemetry) return;
    rendered = true;
    const container = section.querySelector("[data-gpu-cards]");
    const template = document.getElementById("gpu-card-template");
    const now = Date.parse(snapshot.at) / 1000;
    const seen = new Set();
    for (const gpu of telemetry.gpus) {
      renderGpu(card(container, template, gpu), gpu, telemetry, now);
      seen.add(String(gpu.id));
    }
    for (const element of container.querySelectorAll("[data-gpu]")) {
      if (!seen.has(element.dataset.gpu)) element.remove();
    }
    section.querySelector("[data-gpus-empty]").hidden = telemetry.gpus.length > 0;
    renderSleeping(telemetry.sleeping);
  }

  document.addEventListener("llmux:snapshot", (event) => render(event.detail));
  // If the page's first snapshot was announced before this script listened, read it here.
  document.addEventListener("DOMContentLoaded", () => {
    const initial = document.getElementById("snapshot");
    if (!rendered && initial) render(JSON.parse(initial.textContent));
  });
})();
