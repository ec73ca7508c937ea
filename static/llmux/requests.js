// The requests view (templates/dashboard/requests.html): finished and in-flight gateway
// requests from /requests/data/, refreshed every 2 s; operators cancel requests in flight.
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const form = document.getElementById("request-filters");
  const state = document.getElementById("requests-state");
  if (!form) return;

  const dash = "—";
  const ms = (value) => (value === null || value === undefined ? dash : `${Math.round(value)} ms`);
  const num = (value) => (value === null || value === undefined ? dash : String(value));
  const time = (iso) => new Date(iso).toLocaleTimeString();

  function cell(text, field) {
    const td = document.createElement("td");
    td.textContent = text;
    if (field) td.dataset.field = field;
    return td;
  }

  function statusText(row) {
    if (row.cancelled) return `${row.status} cancelled`;
    return String(row.status);
  }

  function finishedRow(row) {
    const tr = document.createElement("tr");
    tr.dataset.request = String(row.id);
    const model = cell(row.model, "model");
    if (row.prompt_text || row.completion_text) {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "text";
      const prompt = document.createElement("pre");
      prompt.textContent = row.prompt_text;
      const answer = document.createElement("pre");
      answer.textContent = row.completion_text;
      details.append(summary, prompt, answer);
      model.append(details);
    }
    const status = cell(statusText(row), "status");
    status.className = row.cancelled || row.status >= 400 ? "bad" : "";
    tr.append(cell(time(row.started_at), "time"), model, cell(row.who || dash, "who"), status,
      cell(ms(row.wait_ms), "wait"), cell(ms(row.ttft_ms), "ttft"),
      cell(num(row.prompt_tokens), "prompt_tokens"), cell(num(row.completion_tokens), "completion_tokens"),
      cell(num(row.tokens_per_s), "tokens_per_s"), cell(ms(row.duration_ms), "duration"));
    return tr;
  }

  function liveRow(row, canCancel) {
    const tr = document.createElement("tr");
    tr.dataset.request = row.id;
    tr.append(cell(time(row.started_at), "time"), cell(row.model, "model"),
      cell(row.who || dash, "who"), cell(row.path, "path"),
      cell(row.waiting ? "waiting for its model" : row.stream ? "streaming" : "answering", "state"),
      cell(`${Math.round(row.elapsed_s)} s`, "elapsed"));
    if (canCancel) {
      const td = document.createElement("td");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.action = "cancel";
      button.textContent = `Cancel ${row.model} request`;
      button.addEventListener("click", () => cancel(row, button));
      td.append(button);
      tr.append(td);
    }
    return tr;
  }

  function empty(columns, text) {
    const tr = document.createElement("tr");
    const td = cell(text);
    td.colSpan = columns;
    td.className = "muted";
    tr.append(td);
    return tr;
  }

  function csrf() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  async function cancel(row, button) {
    if (!window.confirm(`Cancel this ${row.model} request? Its client gets an error.`)) return;
    button.disabled = true;
    const body = new URLSearchParams({ instance: row.instance, request: row.id });
    const answer = await fetch("/requests/cancel/", {
      method: "POST", body, headers: { "X-CSRFToken": csrf() }, credentials: "same-origin",
    });
    const result = await answer.json().catch(() => ({ message: `HTTP ${answer.status}` }));
    state.textContent = result.message;
    refresh();
  }

  function render(data) {
    const live = document.querySelector("#in-flight tbody");
    const finished = document.querySelector("#finished tbody");
    const columns = document.querySelectorAll("#in-flight thead th").length;
    live.replaceChildren(...(data.live.length
      ? data.live.map((row) => liveRow(row, data.can_cancel))
      : [empty(columns, "Nothing in flight.")]));
    document.getElementById("live-count").textContent = `(${data.live.length})`;
    finished.replaceChildren(...(data.finished.length
      ? data.finished.map(finishedRow) : [empty(10, "No finished requests match.")]));
  }

  function query() {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) params.set(name, value);
    return params.toString();
  }

  async function refresh() {
    try {
      const answer = await fetch(`/requests/data/?${query()}`, { credentials: "same-origin" });
      if (!answer.ok) { state.textContent = await answer.text(); return; }
      render(await answer.json());
    } catch (error) {
      state.textContent = "reconnecting…";
    }
  }

  // Filters start from the address (a shared link) and are kept in it.
  const initial = new URLSearchParams(location.search);
  for (const [name, value] of initial) if (form.elements[name]) form.elements[name].value = value;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    history.replaceState(null, "", `?${query()}`);
    state.textContent = "";
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
