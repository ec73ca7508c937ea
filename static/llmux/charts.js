// Charts of the swap history, drawn with plotly.js's cartesian bundle (an npm package,
// served compressed from /static/vendor/). Live: the charts are fetched again whenever a
// status snapshot shows the swap history changed, and each minute as the window slides.
"use strict";

const llmuxCharts = (() => {
  const REFRESH_EVERY = 60000;
  const GPU_LINES = ["#343a40", "#868e96", "#495057", "#adb5bd"];
  const layout = (extra) => Object.assign({
    margin: { l: 70, r: 20, t: 10, b: 50 }, height: 320, showlegend: true,
    legend: { orientation: "h", y: -0.25 }, font: { family: "system-ui, sans-serif", size: 12 },
  }, extra || {});
  const config = { displaylogo: false, responsive: true };

  // An empty chart says so in words, instead of plotly's empty axes (of the year 2000).
  function show(id, drawn) {
    const chart = document.getElementById(id);
    const empty = document.querySelector(`[data-empty-for="${id}"]`);
    empty.hidden = drawn;
    chart.hidden = !drawn;
    if (!drawn) Plotly.purge(chart);
    return chart;
  }

  function duration(ms) {
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  function timeline(data) {
    const chart = show("chart-timeline", data.timeline.length > 0);
    if (chart.hidden) return;
    const traces = data.timeline.map((holds) => {
      const held = holds.start.map((start, i) => Date.parse(holds.end[i]) - Date.parse(start));
      return {
        type: "bar", orientation: "h", name: holds.model, y: holds.group, base: holds.start, x: held,
        customdata: holds.start.map((start, i) => `${start.slice(0, 19).replace("T", " ")} for ${duration(held[i])}`),
        marker: { color: data.colours[holds.model] },
        hovertemplate: "%{y}: <b>%{fullData.name}</b><br>%{customdata}<extra></extra>",
      };
    });
    Plotly.react(chart, traces, layout({
      barmode: "overlay",
      xaxis: { type: "date", range: [data.drawn_from, data.until], title: { text: "time" } },
      yaxis: { type: "category", title: { text: "GPU group" } },
    }), config);
  }

  function latency(data) {
    const chart = show("chart-latency", data.latency.length > 0);
    if (chart.hidden) return;
    const traces = data.latency.map((entry) => ({
      type: "box", name: entry.label, y: entry.values, legendgroup: entry.model,
      marker: { color: data.colours[entry.model] },
      boxpoints: entry.values.length < 200 ? "all" : false,
      hovertemplate: `${entry.label}: %{y:,.0f} ms<extra></extra>`,
    }));
    Plotly.react(chart, traces, layout({
      showlegend: false,
      xaxis: { type: "category", title: { text: "target model · how it came up" } },
      yaxis: { title: { text: "switch total (ms)" }, rangemode: "tozero" },
    }), config);
  }

  function memory(data) {
    const gpus = Object.entries(data.memory);
    const chart = show("chart-memory", gpus.length > 0);
    if (chart.hidden) return;
    const traces = gpus.map(([gpu, series], index) => ({
      type: "scatter", mode: "lines+markers", line: { shape: "hv", color: GPU_LINES[index % GPU_LINES.length] },
      name: `GPU ${gpu}`,
      x: series.at, y: series.used.map((used) => used / 2 ** 30),
      customdata: series.model.map((model) => model || "nobody"),
      marker: { size: 8, color: series.model.map((model) => data.colours[model] || "#ffffff"),
        line: { width: 1, color: GPU_LINES[index % GPU_LINES.length] } },
      hovertemplate: `GPU ${gpu}: %{y:.1f} GiB, held by %{customdata}<extra></extra>`,
    }));
    Plotly.react(chart, traces, layout({
      xaxis: { type: "date", range: [data.drawn_from, data.until], title: { text: "time" } },
      yaxis: { title: { text: "GiB in use" }, rangemode: "tozero" },
    }), config);
  }

  function note(data) {
    const text = data.drawn < data.swaps
      ? `Drawn: the newest ${data.drawn.toLocaleString()} of the ${data.swaps.toLocaleString()} swaps in this window, from ${data.drawn_from.slice(0, 16).replace("T", " ")}.`
      : `${data.swaps.toLocaleString()} swaps in this window.`;
    document.getElementById("chart-note").textContent = text;
  }

  function page(form) {
    const select = form.querySelector("select");
    const failure = document.getElementById("chart-error");
    let busy = false;
    let again = false;

    async function load() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        const response = await fetch(`${form.dataset.url}?hours=${encodeURIComponent(select.value)}`);
        const data = await response.json();
        if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
        failure.hidden = true;
        note(data);
        timeline(data);
        latency(data);
        memory(data);
        document.dispatchEvent(new CustomEvent("llmux:charts", { detail: data }));
      } catch (error) {
        failure.hidden = false;
        failure.textContent = `The charts could not be loaded: ${error.message}`;
      } finally {
        busy = false;
        if (again) { again = false; load(); }
      }
    }

    select.addEventListener("change", () => {
      history.replaceState(null, "", `?hours=${encodeURIComponent(select.value)}`);
      load();
    });
    form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
    // (dashboard.js shows the connection's state in #live and the stale banner.)
    let seen = null;
    llmux.connect((message) => {
      if (message.kind !== "snapshot") return;
      const mark = llmux.historyMark(message.data);
      if (mark !== seen) { seen = mark; load(); }
    });
    setInterval(load, REFRESH_EVERY);
    load();
  }

  return { page };
})();

// Started here, not by an inline script (the Content-Security-Policy allows none).
llmuxCharts.page(document.getElementById("chart-window"));
