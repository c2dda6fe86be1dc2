// livewatch's page: one WebSocket to the daemon (the documented protocol), a session cookie for auth.
// No framework, no build step: the views are plain DOM, rendered from the daemon's replies.

const $ = (sel) => document.querySelector(sel);
const VIEWS = ["login", "view-cameras", "view-camera", "view-watches", "view-status"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

function time(t) {
  return t ? new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "";
}

function frameUrl(camera, id, size) {
  return `/frames/${encodeURIComponent(camera)}/${id}.jpg${size ? `?size=${size}` : ""}`;
}

// -- the connection: requests by id, replies and streamed tokens, reconnection ------------------------------------

class Daemon {
  constructor() {
    this.ws = null;
    this.next = 1;
    this.pending = new Map(); // id -> {resolve, reject, onToken, onProgress}
    this.onEvent = null;
    this.onState = null;
    this.retry = 500;
    this.wanted = false;
  }

  connect() {
    this.wanted = true;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    this.ws = ws;
    ws.onopen = () => { this.retry = 500; this.onState?.(true); };
    ws.onmessage = (m) => this.receive(JSON.parse(m.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const p of this.pending.values()) p.reject(new Error("the connection to the daemon was lost"));
      this.pending.clear();
      this.onState?.(false);
      if (this.wanted) setTimeout(() => this.wanted && this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    };
  }

  close() {
    this.wanted = false;
    if (this.ws) this.ws.close();
  }

  get open() { return this.ws !== null && this.ws.readyState === WebSocket.OPEN; }

  request(message, handlers = {}) {
    if (!this.open) return Promise.reject(new Error("not connected to the daemon"));
    const id = `p${this.next++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, ...handlers });
      this.ws.send(JSON.stringify({ ...message, id }));
      handlers.onId?.(id);
    });
  }

  cancel(id) {
    if (this.open) this.ws.send(JSON.stringify({ type: "cancel", id }));
  }

  receive(msg) {
    if (msg.type === "event") { this.onEvent?.(msg); return; }
    const p = this.pending.get(msg.id);
    if (!p) return;
    if (msg.type === "token") { p.onToken?.(msg.text); return; }
    if (msg.type === "find.progress") { p.onProgress?.(msg); return; }
    this.pending.delete(msg.id);
    if (msg.type === "error") p.reject(Object.assign(new Error(msg.message), { code: msg.code }));
    else p.resolve(msg);
  }
}

const daemon = new Daemon();
let status = null;
let statusTimer = null;
let currentAsk = null;

// -- login --------------------------------------------------------------------------------------------------------

async function session() {
  const r = await fetch("/session", { credentials: "same-origin" });
  return r.json();
}

async function login(event) {
  event.preventDefault();
  $("#login-error").textContent = "";
  const r = await fetch("/login", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("#token").value }),
  });
  if (!r.ok) {
    $("#login-error").textContent = r.status === 401 ? "Wrong token." : `Login failed (HTTP ${r.status}).`;
    return;
  }
  $("#token").value = "";
  start();
}

async function logout() {
  daemon.close();
  clearInterval(statusTimer);
  await fetch("/logout", { method: "POST", credentials: "same-origin" });
  locked();
}

function locked(reason = null) {
  $("#nav").hidden = true;
  banner(reason);
  show("login");
  $("#token").focus();
}

function start() {
  $("#nav").hidden = false;
  daemon.onState = async (up) => {
    if (up) {
      banner(null);
      refreshStatus(); daemon.request({ type: "watch.subscribe" }).catch(() => {}); route();
      return;
    }
    banner("The daemon is unreachable; reconnecting…");
    try {  // a daemon that restarted has forgotten the session: log in again
      if (!(await session()).logged_in) {
        daemon.close(); clearInterval(statusTimer); locked("The daemon restarted: log in again.");
      }
    } catch { /* still unreachable: keep retrying */ }
  };
  daemon.onEvent = addEvent;
  daemon.connect();
  clearInterval(statusTimer);
  statusTimer = setInterval(refreshStatus, 2000);
  route();
}

function banner(text) {
  $("#banner").hidden = !text;
  $("#banner").textContent = text || "";
}

function show(id) {
  for (const v of VIEWS) $(`#${v}`).hidden = v !== id;
}

// -- views --------------------------------------------------------------------------------------------------------

function route() {
  if ($("#nav").hidden) return;
  const hash = location.hash || "#/";
  const cam = hash.match(/^#\/camera\/([A-Za-z0-9_.-]+)$/);
  if (cam) { show("view-camera"); openCamera(cam[1]); }
  else if (hash === "#/watches") { show("view-watches"); loadWatches(); }
  else if (hash === "#/status") { show("view-status"); renderStatus(); }
  else { show("view-cameras"); renderGrid(); }
}

async function refreshStatus() {
  if (!daemon.open) return;
  try {
    status = await daemon.request({ type: "status" });
  } catch { return; }
  const engineUp = status.engine && status.engine.alive !== false;
  banner(engineUp ? null : "The engine is down: questions fail until the daemon restarts.");
  if (!$("#view-cameras").hidden) renderGrid();
  if (!$("#view-status").hidden) renderStatus();
  if (!$("#view-camera").hidden) renderCameraFigures();
}

function cameraFigures(name) {
  const cam = status?.cameras?.[name] || {};
  const mem = status?.memory?.[name] || {};
  const eng = status?.engine?.cameras?.[name] || {};
  const parts = [];
  if (cam.fps) parts.push(`${Number(cam.fps).toFixed(1)} fps`);
  if (cam.resolution) parts.push(Array.isArray(cam.resolution) ? cam.resolution.join("×") : cam.resolution);
  if (mem.unique_frames !== undefined) parts.push(`${mem.unique_frames} frames`);
  if (eng.encode_lag_s !== undefined) parts.push(`lag ${Number(eng.encode_lag_s).toFixed(1)} s`);
  return { state: cam.state || "unknown", text: parts.join(" · "), error: cam.last_error, newest: mem.newest_frame_id };
}

function renderGrid() {
  const grid = $("#grid");
  const names = Object.keys(status?.cameras || {}).sort();
  grid.replaceChildren(...names.map((name) => {
    const f = cameraFigures(name);
    const img = f.newest
      ? el("img", { src: frameUrl(name, f.newest, 480), alt: `latest frame of ${name}` })
      : el("div", { class: "noframe" }, "no frame yet");
    return el("article", { class: "tile", "data-camera": name },
      el("a", { class: "open", href: `#/camera/${name}` }, img,
        el("div", { class: "body" },
          el("div", { class: "name" }, name),
          el("div", {}, el("span", { class: `state-${f.state}` }, f.state)),
          el("div", { class: "figures" }, f.text),
          f.error ? el("div", { class: "error" }, f.error) : null)),
      el("div", { class: "body" },
        el("button", { type: "button", class: "secondary", onclick: () => removeCamera(name) }, `Remove ${name}`)));
  }));
  if (!names.length) grid.replaceChildren(el("p", { class: "muted" }, "No cameras yet."));
}

async function addCamera(event) {
  event.preventDefault();
  const error = $("#add-error");
  error.textContent = "";
  try {
    await daemon.request({ type: "camera.add", name: $("#cam-name").value.trim(), url: $("#cam-url").value.trim() });
    $("#cam-name").value = ""; $("#cam-url").value = "";
    await refreshStatus();
  } catch (e) { error.textContent = e.message; }
}

async function removeCamera(name) {
  if (!confirm(`Remove camera ${name} and delete its stored frames?`)) return;
  try { await daemon.request({ type: "camera.remove", name }); } catch (e) { alert(e.message); }
  await refreshStatus();
}

let shownCamera = null;

async function openCamera(name) {
  if (shownCamera !== name) { $("#chat").replaceChildren(); shownCamera = name; }
  $("#cam-title").textContent = name;
  renderCameraFigures();
  try {
    const memory = await daemon.request({ type: "memory", camera: name });
    $("#strip").replaceChildren(...memory.frames.map((f) =>
      el("figure", { class: f.star ? "star" : "window" },
        el("img", { src: `${f.url}?size=300`, alt: `${f.star ? "star" : "window"} frame at ${time(f.time)}`, loading: "lazy" }),
        el("figcaption", {}, `${time(f.time)} · ${f.star ? "★ star" : "window"} · ${f.importance.toFixed(2)}`))));
    if (!memory.frames.length) $("#strip").replaceChildren(el("p", { class: "muted" }, "No frames yet."));
    const newest = memory.frames.reduce((a, f) => (!a || f.time > a.time ? f : a), null);
    if (newest) $("#mask-frame").src = `${newest.url}?size=640`;
  } catch (e) { $("#strip").replaceChildren(el("p", { class: "error" }, e.message)); }
  loadMasks(name);
}

// -- privacy masks: polygons in relative coordinates, drawn over the newest frame ---------------------------------

const SVG = "http://www.w3.org/2000/svg";
let masks = []; // closed polygons: [[x, y], ...]
let drawing = []; // the polygon being drawn

async function loadMasks(name) {
  masks = []; drawing = [];
  $("#mask-status").textContent = "";
  try {
    const reply = await daemon.request({ type: "camera.masks", camera: name });
    masks = reply.masks.map((flat) => flat.reduce((pts, v, i) => (i % 2 ? pts[pts.length - 1].push(v) : pts.push([v]), pts), []));
  } catch (e) { $("#mask-status").textContent = e.message; }
  renderMasks();
}

function renderMasks() {
  const layer = $("#mask-layer");
  const shape = (tag, pts) => {
    const node = document.createElementNS(SVG, tag);
    node.setAttribute("points", pts.map(([x, y]) => `${x},${y}`).join(" "));
    return node;
  };
  layer.replaceChildren(...masks.map((p) => shape("polygon", p)), ...(drawing.length ? [shape("polyline", drawing)] : []));
  $("#mask-close").disabled = drawing.length < 3;
}

function maskClick(event) {
  const box = $("#mask-layer").getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, Math.round(v * 10000) / 10000));
  drawing.push([clamp((event.clientX - box.left) / box.width), clamp((event.clientY - box.top) / box.height)]);
  renderMasks();
}

function closeMask() {
  if (drawing.length >= 3) { masks.push(drawing); drawing = []; renderMasks(); }
}

function undoMask() {
  if (drawing.length) drawing.pop(); else masks.pop();
  renderMasks();
}

async function saveMasks() {
  closeMask();
  try {
    const reply = await daemon.request({ type: "camera.masks", camera: shownCamera, masks: masks.map((p) => p.flat()) });
    $("#mask-status").textContent = `Saved: ${reply.masks.length} mask${reply.masks.length === 1 ? "" : "s"}.`;
  } catch (e) { $("#mask-status").textContent = e.message; }
}

function renderCameraFigures() {
  if (!shownCamera) return;
  const f = cameraFigures(shownCamera);
  $("#cam-figures").textContent = `${f.state}${f.text ? " · " + f.text : ""}${f.error ? " · " + f.error : ""}`;
}

async function ask(event) {
  event.preventDefault();
  const question = $("#question").value.trim();
  if (!question || currentAsk) return;
  const answer = el("div", { class: "a" });
  const metrics = el("div", { class: "metrics" });
  const evidence = el("div", { class: "evidence" });
  $("#chat").prepend(el("div", { class: "turn" }, el("div", { class: "q" }, question), answer, metrics, evidence));
  $("#question").value = "";
  $("#ask-button").disabled = true;
  $("#cancel-button").disabled = false;
  currentAsk = { id: null };
  try {
    const done = await daemon.request({ type: "ask", camera: shownCamera, question }, {
      onId: (id) => { currentAsk.id = id; },
      onToken: (text) => { answer.textContent += text; },
    });
    answer.textContent = done.text;
    const m = done.metrics;
    metrics.textContent = `first token ${m.ttft_ms} ms · ${m.output_tokens} tokens · ${m.frames_in_context} frames` +
      ` over ${m.video_span_s} s · cache ${m.cache_reused ? "reused" : "rebuilt"}`;
    metrics.dataset.done = "1";
    evidence.replaceChildren(...(done.evidence || []).slice(0, 6).map((f) =>
      el("img", { src: `${f.url}?size=200`, alt: `evidence at ${time(f.time)}`, title: time(f.time) })));
  } catch (e) {
    metrics.textContent = e.code === "cancelled" ? "cancelled" : `error: ${e.message}`;
    metrics.dataset.done = "1";
  } finally {
    currentAsk = null;
    $("#ask-button").disabled = false;
    $("#cancel-button").disabled = true;
  }
}

function cancelAsk() {
  if (currentAsk?.id) daemon.cancel(currentAsk.id);
}

async function loadWatches() {
  $("#watch-camera").replaceChildren(...Object.keys(status?.cameras || {}).sort().map((n) => el("option", {}, n)));
  try {
    const list = await daemon.request({ type: "watch.list" });
    $("#watch-rows").replaceChildren(...list.watches.map((w) => el("tr", {},
      el("td", {}, w.name), el("td", {}, w.camera), el("td", {}, w.condition), el("td", {}, w.state),
      el("td", {}, w.last_probability === null || w.last_probability === undefined ? "" : w.last_probability.toFixed(2)),
      el("td", {}, el("button", { type: "button", class: "secondary", onclick: () => removeWatch(w.name) }, "Remove")))));
  } catch (e) { $("#watch-error").textContent = e.message; }
}

async function addWatch(event) {
  event.preventDefault();
  $("#watch-error").textContent = "";
  try {
    await daemon.request({ type: "watch.add", name: $("#watch-name").value.trim(), camera: $("#watch-camera").value,
                           condition: $("#watch-condition").value.trim() });
    $("#watch-name").value = ""; $("#watch-condition").value = "";
    loadWatches();
  } catch (e) { $("#watch-error").textContent = e.message; }
}

async function removeWatch(name) {
  try { await daemon.request({ type: "watch.remove", name }); } catch (e) { $("#watch-error").textContent = e.message; }
  loadWatches();
}

function addEvent(e) {
  const item = el("li", {}, el("img", { src: `${e.frame_url}?size=240`, alt: `evidence of ${e.watch}` }),
    `${time(e.frame_time)} · ${e.watch} on ${e.camera}: ${e.kind} (P(yes) ${Number(e.probability).toFixed(2)})`,
    e.description ? ` — ${e.description}` : "");
  $("#events").prepend(item);
  while ($("#events").children.length > 100) $("#events").lastChild.remove();
}

function renderStatus() {
  if (!status) return;
  const eng = status.engine || {};
  const dec = eng.decoder || {};
  const rows = [
    ["Engine", eng.alive === false ? "down" : "running"], ["Model", eng.model], ["Device", `${eng.device} ${eng.dtype || ""}`],
    ["Decoder", `${dec.mode || ""} ${dec.kernels || ""}`], ["Encode mode", eng.encode_mode],
    ["Queued questions", eng.queued_questions], ["Questions in flight", status.server?.questions_in_flight],
    ["GPU memory", eng.gpu_memory_allocated !== undefined
      ? `${(eng.gpu_memory_allocated / 2 ** 30).toFixed(1)} GiB allocated, ${(eng.gpu_memory_reserved / 2 ** 30).toFixed(1)} GiB reserved`
      : "none (CPU)"],
  ];
  const table = el("table", { class: "table status-table" },
    ...rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v ?? ""))));
  const mem = Object.entries(status.memory || {}).map(([name, m]) => el("tr", {},
    el("td", {}, name), el("td", {}, `${m.unique_frames} frames (${m.star_memory_size} star, ${m.stream_memory_size} window), ` +
      `${((m.bytes_on_disk || 0) / 2 ** 20).toFixed(1)} MiB on disk, history ${((m.history_bytes || 0) / 2 ** 20).toFixed(1)} MiB`)));
  $("#status-body").replaceChildren(table, el("h2", {}, "Memory per camera"), el("table", { class: "table status-table" }, ...mem));
}

// -- start --------------------------------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#add-camera").addEventListener("submit", addCamera);
  $("#ask-form").addEventListener("submit", ask);
  $("#cancel-button").addEventListener("click", cancelAsk);
  $("#add-watch").addEventListener("submit", addWatch);
  $("#mask-layer").addEventListener("click", maskClick);
  $("#mask-close").addEventListener("click", closeMask);
  $("#mask-undo").addEventListener("click", undoMask);
  $("#mask-clear").addEventListener("click", () => { masks = []; drawing = []; renderMasks(); });
  $("#mask-save").addEventListener("click", saveMasks);
  try {
    const s = await session();
    if (s.logged_in) start(); else locked();
  } catch { banner("The daemon is unreachable."); }
});
