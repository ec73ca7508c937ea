// Charts of the swap history, drawn with plotly.js (served from the installed package).
"use strict";

const llmuxCharts = (() => {
  const layout = (title, extra) => Object.assign({
    margin: { l: 60, r: 20, t: 10, b: 40 }, height: 320, showlegend: true,
    legend: { orientation: "h", y: -0.25 }, font: { family: "system-ui, sans-serif", size: 12 },
  }, extra || {});
  const config = { displaylogo: false, responsive: true };

  function timeline(data) {
    const byModel = {};
    for (const s of data.timeline) {
      const trace = byModel[s.model] || (byModel[s.model] = {
        type: "bar", orientation: "h", name: s.model, y: [], x: [], base: [],
        hovertemplate: "%{y}: " + s.model + "<br>%{base} → %{x}<extra></extra>",
      });
      trace.y.push(s.group);
      trace.base.push(s.start);
      trace.x.push(Date.parse(s.end) - Date.parse(s.start));
    }
    Plotly.react("chart-timeline", Object.values(byModel),
      layout("timeline", { barmode: "overlay", xaxis: { type: "date" } }), config);
  }

  function latency(data) {
    const traces = Object.entries(data.latency_ms).map(([key, values]) => ({
      type: "box", name: key, y: values, boxpoints: values.length < 200 ? "all" : false,
    }));
    Plotly.react("chart-latency", traces,
      layout("latency", { yaxis: { title: { text: "ms" } }, showlegend: false }), config);
  }

  function memory(data) {
    const traces = Object.entries(data.memory).map(([gpu, points]) => ({
      type: "scatter", mode: "lines+markers", line: { shape: "hv" }, name: `GPU ${gpu}`,
      x: points.map((p) => p[0]), y: points.map((p) => p[1] / 2 ** 30),
    }));
    Plotly.react("chart-memory", traces,
      layout("memory", { yaxis: { title: { text: "GiB" } }, xaxis: { type: "date" } }), config);
  }

  async function load(url, hours) {
    const response = await fetch(`${url}?hours=${encodeURIComponent(hours)}`);
    if (!response.ok) throw new Error(`chart data: HTTP ${response.status}`);
    const data = await response.json();
    timeline(data);
    latency(data);
    memory(data);
  }

  function page(url) {
    const select = document.querySelector("#chart-window select");
    const refresh = () => load(url, select.value).catch((error) => console.warn(error));
    select.addEventListener("change", refresh);
    refresh();
  }

  return { page };
})();

// Started here, not by an inline script (the Content-Security-Policy allows none).
llmuxCharts.page(document.getElementById("chart-window").dataset.url);
