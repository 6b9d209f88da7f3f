// The control page: one EventSource (/api/events) pushes a snapshot of every
// stream; cards are updated in place.  No framework, nothing from the network
// but this server.  Every remote string goes through textContent.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const cards = new Map();   // stream id -> {root, fields, img, thumb}
let closed = false;

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
}

async function post(url) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(url, { method: "POST", headers });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error || response.statusText);
  }
  return response.json();
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function size(bytes) {
  if (!bytes) return "–";
  return bytes >= 1e6 ? (bytes / 1e6).toFixed(1) + " MB" : Math.round(bytes / 1e3) + " kB";
}

function clock(seconds) {
  if (!seconds) return "–";
  const s = Math.round(seconds);
  return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
}

const FIELDS = [["video", "video"], ["audio", "audio"], ["resolution", "size"], ["kbps", "kbit/s"],
                ["frames", "frames"], ["frames_lost", "lost"], ["sync", "sync"], ["part", "part"],
                ["bytes", "file size"], ["seconds", "time"], ["file", "file"]];

function makeCard(stream) {
  const root = el("article", { class: "card", "data-stream": stream });
  const shot = el("div", { class: "shot" }, "no picture yet");
  const img = el("img", { class: "thumb", alt: "thumbnail of " + stream });
  shot.append(img);
  const body = el("div", { class: "body" });
  const title = el("div", { class: "title" });
  const state = el("span", { class: "state" });
  title.append(el("b", {}, stream), state);
  const dl = el("dl");
  const fields = {};
  for (const [key, label] of FIELDS) {
    const dd = el("dd", { "data-field": key });
    dl.append(el("dt", {}, label), dd);
    fields[key] = dd;
  }
  const meter = el("div", { class: "meter" });
  const bar = el("div", { class: "bar" });
  const fill = el("i");
  bar.append(fill);
  const level = el("span", { class: "level" }, "– dB");
  meter.append(el("span", {}, "audio"), bar, level);
  const actions = el("div", { class: "actions" });
  const stop = el("button", { class: "stop", type: "button" }, "Stop");
  const start = el("button", { class: "start", type: "button" }, "Start");
  const why = el("span", { class: "why" });
  actions.append(stop, start, why);
  stop.addEventListener("click", () => act(stream, "stop", why));
  start.addEventListener("click", () => act(stream, "start", why));
  body.append(title, dl, meter, actions);
  root.append(shot, body);
  document.getElementById("streams").append(root);
  return { root, state, fields, img, fill, level, stop, start, why, thumb: null };
}

async function act(stream, what, why) {
  why.textContent = what === "stop" ? "stopping…" : "asking…";
  try {
    await post("/api/streams/" + encodeURIComponent(stream) + "/" + what);
  } catch (error) {
    why.textContent = what + " failed: " + error.message;
  }
}

function stateLabel(row) {
  if (row.state === "ended") return "finalising";
  if (row.state === "stopped") return "stopped";
  return row.state;
}

function updateCard(card, row) {
  card.root.dataset.state = row.state;
  card.root.dataset.endReason = row.end_reason || "";
  card.state.textContent = stateLabel(row);
  for (const [key] of FIELDS) {
    let value = row[key];
    if (key === "bytes") value = size(value);
    else if (key === "seconds") value = clock(value);
    else if (value === null || value === undefined || value === "") value = "–";
    card.fields[key].textContent = String(value);
    card.fields[key].title = String(value);
  }
  const db = row.level_db;
  card.fill.style.width = db === null || db === undefined ? "0" : Math.max(0, Math.min(100, (db + 60) / 60 * 100)) + "%";
  card.level.textContent = db === null || db === undefined ? "– dB" : db.toFixed(0) + " dB";
  card.fill.classList.toggle("loud", db !== null && db !== undefined && db > -12);
  card.fill.classList.toggle("clip", db !== null && db !== undefined && db > -3);
  if (row.thumbnail !== null && row.thumbnail !== card.thumb) {
    card.thumb = row.thumbnail;
    card.img.src = withToken("/api/streams/" + encodeURIComponent(row.stream) + "/thumbnail?v=" + row.thumbnail);
  }
  const live = !row.held && row.state !== "ended";
  card.stop.disabled = !live || closed;
  card.start.disabled = live || closed;
  if (row.state === "stopped") {
    card.why.textContent = row.end_reason === "stopped" ? "file finalised" : "stopped";
  } else if (row.state === "waiting" && row.end_reason) {
    card.why.textContent = "last part ended: " + row.end_reason;
  } else if (row.state === "recording") {
    card.why.textContent = "";
  }
}

function renderFinished(data) {
  const body = document.querySelector("#finished tbody");
  body.replaceChildren();
  if (!data.finished.length) {
    const tr = el("tr", { class: "empty" });
    tr.append(el("td", { colspan: "7" }, "none yet"));
    body.append(tr);
  }
  for (const entry of data.finished.slice().reverse()) {
    const tr = el("tr", { "data-stream": entry.stream_id, "data-reason": entry.end_reason || "" });
    const codecs = [entry.video_codec, entry.audio_codec].filter(Boolean).join(" + ");
    for (const value of [entry.stream_id, entry.part ?? "–", entry.file || "(nothing recorded)", codecs || "–",
                         clock(entry.duration_s), size(entry.bytes), entry.error || entry.end_reason || ""]) {
      tr.append(el("td", {}, String(value)));
    }
    body.append(tr);
  }
  document.getElementById("finished-count").textContent = data.finished_count ? "(" + data.finished_count + ")" : "";
}

function render(data) {
  document.getElementById("room").textContent = data.room || "";
  document.getElementById("manifest").textContent = data.manifest;
  const seen = new Set();
  for (const row of data.streams) {
    seen.add(row.stream);
    let card = cards.get(row.stream);
    if (!card) cards.set(row.stream, card = makeCard(row.stream));
    updateCard(card, row);
  }
  for (const [stream, card] of cards) {
    if (!seen.has(stream)) { card.root.remove(); cards.delete(stream); }
  }
  const grid = document.getElementById("streams");
  data.streams.forEach((row, i) => {  // the server's order (by name), moving only what is out of place
    const node = cards.get(row.stream).root;
    if (grid.children[i] !== node) grid.insertBefore(node, grid.children[i] || null);
  });
  const empty = document.querySelector("#streams .empty");
  if (!data.streams.length && !empty) grid.append(el("p", { class: "empty" }, "No stream in the room yet."));
  if (data.streams.length && empty) empty.remove();
  renderFinished(data);
  const banner = document.getElementById("banner");
  if (data.closed) {
    banner.textContent = "The recorder has stopped; every file is finalised.";
  } else if (data.stopping) {
    banner.textContent = "Stopping: finalising every file…";
  }
  banner.hidden = !(data.closed || data.stopping);
  document.getElementById("stop-all").disabled = Boolean(data.stopping || data.closed);
}

function setLink(state, text) {
  const link = document.getElementById("link");
  link.dataset.state = state;
  link.textContent = text;
}

function connect() {
  const events = new EventSource(withToken("/api/events"));
  events.onopen = () => setLink("live", "live");
  events.onmessage = (message) => render(JSON.parse(message.data));
  events.addEventListener("closed", (message) => {
    closed = true;
    events.close();
    render(JSON.parse(message.data));
    setLink("closed", "recorder stopped");
  });
  events.onerror = () => { if (!closed) setLink("connecting", "reconnecting…"); };
}

document.getElementById("stop-all").addEventListener("click", async (event) => {
  if (!confirm("Finalise every file and stop the recorder?")) return;
  event.target.disabled = true;
  try { await post("/api/stop"); } catch (error) { event.target.disabled = false; alert("stop failed: " + error.message); }
});

connect();
