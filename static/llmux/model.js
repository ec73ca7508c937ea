// The model page: its live state, and the engine log's live tail (follow once per
// connection, from the byte offset the page's lines end at), pause/follow, search.
"use strict";

(() => {
  if (document.body.dataset.page !== "model") return;
  const MAX_LINES = 5000; // the page keeps this many lines; the download has them all
  const box = document.getElementById("log");
  const pause = document.getElementById("log-pause");
  const search = document.getElementById("log-search");
  const status = document.getElementById("log-status");
  const marker = box.dataset.marker;
  let offset = Number(box.dataset.offset || 0);
  let paused = false;
  const held = [];

  const matches = (text) => {
    const wanted = search.value.trim().toLowerCase();
    return !wanted || text.toLowerCase().includes(wanted);
  };

  function addLine(text, at) {
    const line = document.createElement("div");
    line.className = text.startsWith(marker) ? "line marker" : "line";
    line.dataset.text = text;
    if (at) {
      const time = document.createElement("time");
      time.dateTime = at;
      time.textContent = new Date(Date.parse(at)).toLocaleTimeString();
      line.append(time, " ");
    }
    line.append(text);
    line.hidden = !matches(text);
    box.append(line);
  }

  function show(chunk) {
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    for (const text of chunk.lines) addLine(text, chunk.at);
    while (box.childElementCount > MAX_LINES) box.firstElementChild.remove();
    if (atEnd) box.scrollTop = box.scrollHeight;
  }

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Follow" : "Pause";
    if (!paused) {
      for (const chunk of held.splice(0)) show(chunk);
      box.scrollTop = box.scrollHeight;
    }
    llmux.setText(status, paused ? "paused: new lines are held" : "following");
  });

  search.addEventListener("input", () => {
    for (const line of box.children) line.hidden = !matches(line.dataset.text || "");
  });

  document.addEventListener("llmux:snapshot", (event) => {
    const mine = event.detail.models.find((m) => m.name === box.dataset.model);
    const badge = document.getElementById("state");
    if (mine && badge) {
      badge.className = `badge state-${mine.state}`;
      llmux.setText(badge, mine.state_label);
      llmux.setText(document.getElementById("error"), mine.state === "failed" ? mine.error : "");
    }
  });

  for (const line of box.querySelectorAll(".line")) line.dataset.text = line.textContent;
  box.scrollTop = box.scrollHeight;
  llmux.setText(status, "following");
  llmux.live((message) => {
    if (message.kind !== "log") return;
    offset = message.data.offset;
    if (paused) {
      held.push(message.data);
      llmux.setText(status, `paused: ${held.reduce((n, c) => n + c.lines.length, 0)} new lines held`);
    } else {
      show(message.data);
    }
  }, (socket) => socket.send(JSON.stringify({ follow_log: box.dataset.model, offset })));
})();
