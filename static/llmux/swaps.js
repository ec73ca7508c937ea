// The swap history's first page, live: whenever a status snapshot shows that a swap
// started, moved on or ended, the count and the table are fetched again (the same filters,
// views.swaps_rows) and put in place; rows new since the last look are marked.
"use strict";

(() => {
  const history = document.getElementById("swap-history");
  let busy = false;
  let again = false;

  function put(html) {
    const before = new Set([...history.querySelectorAll("tr[data-swap]")].map((r) => r.dataset.swap));
    const open = new Set([...history.querySelectorAll("tr[data-swap-error] details[open]")]
      .map((d) => d.closest("tr").dataset.swapError));
    const fresh = document.createElement("template");
    fresh.innerHTML = html;
    for (const row of fresh.content.querySelectorAll("tr[data-swap]")) {
      if (!before.has(row.dataset.swap)) row.classList.add("fresh");
    }
    for (const row of fresh.content.querySelectorAll("tr[data-swap-error]")) {
      if (open.has(row.dataset.swapError)) row.querySelector("details").open = true;
    }
    history.replaceChildren(fresh.content);
  }

  async function load() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(history.dataset.url, { headers: { Accept: "text/html" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      put(await response.text());
    } catch (error) {
      llmux.setText(document.getElementById("live"), `not updated: ${error.message}`);
    } finally {
      busy = false;
      if (again) { again = false; load(); }
    }
  }

  // The first snapshot loads too: a swap may have changed since the page was rendered.
  // (dashboard.js shows the connection's state in #live and the stale banner.)
  let seen = null;
  llmux.connect((message) => {
    if (message.kind !== "snapshot") return;
    const mark = llmux.historyMark(message.data);
    if (mark !== seen) { seen = mark; load(); }
  });
})();
