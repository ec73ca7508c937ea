// llmux playground: a conversation through /v1/ with a short-lived key minted for the
// logged-in user (POST /playground/key/: session and CSRF token), kept in memory only.
// /v1/ gets the key and never this site's cookies. Loaded after dashboard.js, whose
// `llmux.connect` brings the live status snapshots shown while a request waits.
"use strict";

(() => {
  const form = document.getElementById("playground");
  if (!form) return;
  const byId = (id) => document.getElementById(id);
  const ui = {
    send: byId("pg-send"), stop: byId("pg-stop"), clear: byId("pg-clear"), copy: byId("pg-copy"),
    prompt: byId("pg-prompt"), conversation: byId("pg-conversation"), status: byId("pg-status"),
    ttft: byId("pg-ttft"), tps: byId("pg-tps"), completion: byId("pg-completion"),
    total: byId("pg-total"), progress: byId("pg-progress"), curl: byId("pg-curl"),
    curlText: byId("pg-curl-text"),
  };
  const RENEW_BEFORE_MS = 30000; // mint a new key this long before the old one expires
  const history = []; // the conversation's user and assistant turns, sent with each request
  let key = null; // { value, until: performance.now() milliseconds }
  let controller = null; // the request in flight
  let lastBody = null;
  let snapshot = null;
  let waitingFor = null; // the model while no token has come yet

  const setText = (element, text) => { if (element) element.textContent = String(text); };

  // -- the key --------------------------------------------------------------------------
  async function mintKey() {
    const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
    const response = await fetch(form.dataset.keyUrl, {
      method: "POST", headers: { "X-CSRFToken": token }, redirect: "manual",
    });
    if (response.type === "opaqueredirect") throw new Error("your session has ended: log in again");
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `no key (${response.status})`);
    key = { value: body.key, until: performance.now() + body.expires_in * 1000 };
    return key.value;
  }

  async function currentKey() {
    if (key && performance.now() < key.until - RENEW_BEFORE_MS) return key.value;
    return mintKey();
  }

  async function post(body, signal) {
    // A 401 means the key expired or was revoked (a logout elsewhere): mint once more.
    for (let attempt = 0; ; attempt += 1) {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        signal,
        credentials: "omit", // /v1/ takes the key, never this site's cookies
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${await currentKey()}` },
        body: JSON.stringify(body),
      });
      if (response.status !== 401 || attempt > 0) return response;
      key = null;
    }
  }

  // -- the request ----------------------------------------------------------------------
  function requestBody() {
    const data = new FormData(form);
    const messages = [];
    const system = String(data.get("system") || "").trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...history, { role: "user", content: String(data.get("prompt") || "") });
    const body = {
      model: String(data.get("model")),
      messages,
      max_tokens: Number(data.get("max_tokens")),
      stream: true,
      stream_options: { include_usage: true },
    };
    const temperature = String(data.get("temperature") || "").trim();
    if (temperature !== "") body.temperature = Number(temperature);
    return body;
  }

  function addTurn(role, text) {
    const item = document.createElement("li");
    item.className = `turn-${role}`;
    const label = document.createElement("span");
    label.className = "role";
    label.textContent = role;
    const content = document.createElement("p");
    content.className = "text";
    content.textContent = text;
    item.append(label, content);
    ui.conversation.append(item);
    return item;
  }

  function setBusy(busy) {
    ui.send.disabled = busy;
    ui.clear.disabled = busy;
    ui.stop.disabled = !busy;
  }

  async function send(event) {
    event.preventDefault();
    if (controller) return; // one request at a time: Send is disabled, Enter is ignored
    const body = requestBody();
    const asked = body.messages[body.messages.length - 1];
    lastBody = body;
    const turns = [addTurn("user", asked.content), addTurn("assistant", "")];
    const answer = turns[1].querySelector(".text");
    controller = new AbortController();
    setBusy(true);
    showMetrics({});
    setText(ui.status, "waiting for the model…");
    const clock = { started: performance.now(), first: null, end: null, chunks: 0, usage: null };
    waitFor(body.model);
    try {
      const response = await post(body, controller.signal);
      if (!response.ok) throw new Error(await errorOf(response));
      await readStream(response, answer, clock);
      history.push(asked, { role: "assistant", content: answer.textContent });
      ui.prompt.value = "";
      setText(ui.status, "done");
    } catch (error) {
      if (error.name === "AbortError" && answer.textContent) {
        history.push(asked, { role: "assistant", content: answer.textContent });
        setText(ui.status, "stopped");
      } else {
        turns.forEach((turn) => turn.remove()); // not part of the conversation
        setText(ui.status, error.name === "AbortError" ? "stopped" : `failed: ${error.message}`);
      }
    } finally {
      clock.end = clock.end || performance.now();
      showMetrics(clock);
      waitFor(null);
      controller = null;
      setBusy(false);
    }
  }

  async function errorOf(response) {
    const body = await response.json().catch(() => ({}));
    const message = (body.error && body.error.message) || body.error || response.statusText;
    return `error ${response.status}: ${message}`;
  }

  async function readStream(response, answer, clock) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) takeEvent(event, answer, clock);
    }
    clock.end = performance.now();
  }

  function takeEvent(event, answer, clock) {
    for (const line of event.split("\n")) {
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const chunk = JSON.parse(line.slice(6));
      if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
      if (chunk.usage) clock.usage = chunk.usage;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (!delta || !delta.content) continue;
      if (clock.first === null) {
        clock.first = performance.now();
        waitFor(null);
        setText(ui.status, "streaming…");
      }
      clock.chunks += 1;
      answer.textContent += delta.content;
      showMetrics(clock);
    }
  }

  // -- what the answer measured ---------------------------------------------------------
  function showMetrics(clock) {
    const now = clock.end || performance.now();
    const tokens = clock.usage ? clock.usage.completion_tokens : clock.chunks;
    const first = clock.first === undefined ? null : clock.first;
    setText(ui.ttft, first === null ? "—" : `${Math.round(first - clock.started)} ms`);
    setText(ui.completion, tokens === undefined || first === null ? "—" : tokens);
    // Generation speed: the tokens after the first over the time since the first came.
    const span = (now - first) / 1000;
    setText(ui.tps, first === null || tokens < 2 || span <= 0 ? "—" : ((tokens - 1) / span).toFixed(1));
    setText(ui.total, clock.started === undefined ? "—" : `${Math.round(now - clock.started)} ms`);
  }

  // -- the switch while the request waits -----------------------------------------------
  function waitFor(model) {
    waitingFor = model;
    renderProgress();
  }

  function renderProgress() {
    ui.progress.hidden = waitingFor === null;
    if (waitingFor === null) return;
    setText(ui.progress.querySelector('[data-progress="model"]'), waitingFor);
    const models = (snapshot && snapshot.models) || [];
    const mine = models.find((m) => m.name === waitingFor);
    const queued = mine && mine.queued ? `, ${mine.queued} request(s) queued` : "";
    setText(ui.progress.querySelector('[data-progress="state"]'),
      mine ? `${mine.name} is ${mine.state_label.toLowerCase()}${queued}` : "");
    // The progress of the switch to the model waited for (phases, countdown, estimate).
    const progress = ((snapshot && snapshot.switches) || []).find((p) => p.to === waitingFor);
    const current = progress || (snapshot && snapshot.switch);
    setText(ui.progress.querySelector('[data-progress="switch"]'), current
      ? `Switch ${current.from || "—"} → ${current.to || "(evict)"} · phase ${current.phase || "starting"}`
      : "No switch in progress");
    renderFacts(ui.progress.querySelector('[data-progress="facts"]'), current || {});
  }

  // Every field the switch carries, whatever it is (the snapshot gains fields over time):
  // numbers and words as they are, a nested object's entries one by one.
  const SHOWN_ABOVE = new Set(["id", "from", "to", "phase", "started_at", "outcome", "phases"]);

  function renderFacts(list, current) {
    const facts = [];
    if (current.started_at && !("elapsed" in current) && !("elapsed_ms" in current)) {
      const seconds = (Date.now() - Date.parse(current.started_at)) / 1000;
      facts.push(["elapsed", `${Math.max(0, seconds).toFixed(1)} s`]);
    }
    for (const [name, value] of Object.entries(current)) {
      if (SHOWN_ABOVE.has(name) || value === null || value === "") continue;
      if (typeof value === "object") {
        for (const [inner, v] of Object.entries(value)) {
          if (v !== null && typeof v !== "object") facts.push([`${name}.${inner}`, fact(name, v)]);
        }
      } else {
        facts.push([name, fact(name, value)]);
      }
    }
    list.replaceChildren(...facts.flatMap(([name, value]) => {
      const term = document.createElement("dt");
      term.textContent = name;
      const detail = document.createElement("dd");
      detail.textContent = value;
      return [term, detail];
    }));
  }

  function fact(name, value) {
    // A name ending in _ms holds milliseconds (total_ms; phases_ms holds them per phase).
    if (typeof value !== "number") return String(value);
    if (name.endsWith("_ms")) return `${Math.round(value)} ms`;
    return Number.isInteger(value) ? String(value) : value.toFixed(1);
  }

  // -- copy as curl ---------------------------------------------------------------------
  const shellQuote = (text) => `'${text.replace(/'/g, "'\\''")}'`;

  function curlCommand(body) {
    // The key is named, not written: a command gets pasted into shells, tickets and chats.
    return [
      `curl -sN ${shellQuote(`${location.origin}/v1/chat/completions`)} \\`,
      '  -H "Authorization: Bearer $LLMUX_API_KEY" \\',
      "  -H 'Content-Type: application/json' \\",
      `  -d ${shellQuote(JSON.stringify(body))}`,
    ].join("\n");
  }

  async function copyCurl() {
    const body = ui.prompt.value.trim() || !lastBody ? requestBody() : lastBody;
    const command = curlCommand(body);
    setText(ui.curlText, command);
    ui.curl.hidden = false;
    try {
      await navigator.clipboard.writeText(command);
      setText(ui.status, "curl command copied");
    } catch (error) {
      setText(ui.status, "copy the curl command from below");
    }
  }

  function clearConversation() {
    history.length = 0;
    ui.conversation.replaceChildren();
    showMetrics({});
    setText(ui.status, "");
  }

  form.addEventListener("submit", send);
  ui.stop.addEventListener("click", () => { if (controller) controller.abort(); });
  ui.clear.addEventListener("click", clearConversation);
  ui.copy.addEventListener("click", copyCurl);
  llmux.connect((message) => {
    if (message.kind !== "snapshot") return;
    snapshot = message.data;
    renderProgress();
  }, () => {});
  setInterval(() => { if (waitingFor !== null) renderProgress(); }, 500);
})();
