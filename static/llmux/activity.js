// The overview's traffic table (templates/dashboard/_activity_rates.html): requests/s and
// tokens/s per model, redrawn from every status snapshot dashboard.js dispatches.
"use strict";

(() => {
  function cell(text, field) {
    const td = document.createElement("td");
    td.textContent = text;
    if (field) td.dataset.field = field;
    return td;
  }

  function render(rates) {
    const body = document.querySelector("#rates tbody");
    if (!body || !rates) return;
    const rows = Object.entries(rates).sort(([a], [b]) => a.localeCompare(b)).map(([name, rate]) => {
      const tr = document.createElement("tr");
      tr.dataset.rateModel = name;
      tr.append(cell(name), cell(String(rate.requests_per_s), "requests_per_s"),
        cell(String(rate.tokens_per_s), "tokens_per_s"));
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.dataset.rateEmpty = "";
      const td = cell("No requests in the last minute.");
      td.colSpan = 3;
      td.className = "muted";
      tr.append(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  document.addEventListener("llmux:snapshot", (event) => render(event.detail.rates));
})();
