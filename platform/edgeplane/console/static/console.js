// The edgeplane site console. No framework and no network beyond this host: everything here is
// drawn with the DOM and SVG. Text from the host is always set as text, never parsed as HTML.
"use strict";

const state = { me: null, tab: "overview", timers: {}, rows: new Map(), history: null, skew: 0, source: null, tz: "UTC", scan: null };
const QUALITY = ["good", "uncertain", "bad"];
const COLORS = ["#1f6feb", "#c9252d", "#1a7f37", "#8250df", "#b35900", "#0a7ea4", "#bf3989"];
const BAND_COLORS = ["#f59e0b", "#0a7ea4", "#8250df"];

function $(id) { return document.getElementById(id); }
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
  return node;
}
function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
function badge(text) { return el("span", { class: "state " + String(text).toLowerCase() }, text); }
function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Math.abs(v) >= 1e15 || (Math.abs(v) < 1e-4 && v !== 0) ? v.toExponential(3) : String(Math.round(v * 1000) / 1000);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
function when(ts) {
  if (!ts) return "–";
  return new Intl.DateTimeFormat("en-GB", { timeZone: state.tz, dateStyle: "short", timeStyle: "medium" }).format(new Date(ts * 1000));
}
function age(ts) {
  if (!ts) return "";
  const s = Date.now() / 1000 - state.skew - ts;
  if (s < 0) return "now";
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (opts.body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.body);
    if (state.me) opts.headers["X-CSRF-Token"] = state.me.csrf;
  }
  const response = await fetch("/console/api/" + path, opts);
  let data = null;
  try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
  if (response.status === 401 && path !== "login" && path !== "me") { showLogin("your session ended: log in again"); }
  return { status: response.status, ok: response.ok, data };
}

// -- login -----------------------------------------------------------------------------------

function showLogin(message) {
  state.me = null;
  if (state.source) { state.source.close(); state.source = null; }
  for (const t of Object.values(state.timers)) clearInterval(t);
  state.timers = {};
  document.querySelectorAll("section.tab").forEach(s => s.hidden = true);
  $("tabs").hidden = true; $("logout").hidden = true; $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

async function login(event) {
  event.preventDefault();
  const r = await api("login", { body: { user: $("login-user").value, password: $("login-password").value } });
  $("login-password").value = "";
  if (!r.ok) { $("login-error").textContent = r.data.error || "login failed"; return; }
  await start();
}

async function start() {
  const r = await api("me");
  if (!r.ok) { showLogin(""); return; }
  state.me = r.data;
  $("login").hidden = true; $("tabs").hidden = false; $("logout").hidden = false;
  $("who").textContent = state.me.user + " (" + state.me.role + ")";
  $("viewer-note").hidden = state.me.role !== "viewer";
  $("site-name").textContent = state.me.site;
  document.title = state.me.site + " · edgeplane console";
  if (state.me.timezone) state.tz = state.me.timezone;
  openStream();
  show(location.hash.slice(1) || "overview");
}

// -- tabs ------------------------------------------------------------------------------------

function show(tab) {
  if (!$(tab) || !$(tab).classList.contains("tab")) tab = "overview";
  state.tab = tab;
  document.querySelectorAll("section.tab").forEach(s => s.hidden = s.id !== tab);
  document.querySelectorAll("#tabs button").forEach(b => b.classList.toggle("active", b.dataset.tab === tab));
  for (const t of Object.values(state.timers)) clearInterval(t);
  state.timers = {};
  if (location.hash.slice(1) !== tab) history.replaceState(null, "", "#" + tab);
  const loaders = { overview: loadOverview, devices: loadDevices, panels: loadPanels, audit: loadAudit };
  if (loaders[tab]) {
    loaders[tab]();
    if (tab === "overview" || tab === "panels") state.timers[tab] = setInterval(loaders[tab], 5000);
  }
}

// -- overview --------------------------------------------------------------------------------

function dl(title, items) {
  const list = el("dl");
  for (const [k, v] of items) list.append(el("dt", {}, k), el("dd", {}, v instanceof Node ? v : fmt(v)));
  return [el("h2", {}, title), list];
}

async function loadOverview() {
  const r = await api("overview");
  if (!r.ok) return;
  const o = r.data;
  if (o.site.timezone) state.tz = o.site.timezone;
  $("ov-site").replaceChildren(...dl("Site", [["id", o.site.id], ["name", o.site.name || "–"], ["host", badge(o.site.state)],
    ["ready", o.site.ready ? "yes" : "no"], ["up for", o.site.uptime_s === null ? "–" : Math.round(o.site.uptime_s) + " s"]]));
  const s = o.sync;
  $("ov-sync").replaceChildren(...(s ? dl("Cloud sync", [["uplink", badge(s.link)], ["broker", s.url],
    ["backlog (readings)", "high " + s.backlog_readings.high + " · normal " + s.backlog_readings.normal + " · low " + s.backlog_readings.low],
    ["outbox", Math.round(s.outbox_bytes / 1024) + " KiB of " + Math.round(s.quota_bytes / 1048576) + " MiB"],
    ["last acknowledged", s.last_ack ? when(s.last_ack) + " (" + age(s.last_ack) + ")" : "not yet"],
    ["last error", s.last_error || "–"]]) : dl("Cloud sync", [["uplink", "not configured"]])));
  const c = o.config;
  $("ov-config").replaceChildren(...dl("Configuration", [["source", c.source || "–"], ["local digest", c.local_digest],
    ["from the cloud", c.from_cloud ? "yes, revision " + c.revision : "no (local file)"],
    ["cloud status", c.cloud ? (c.cloud.status || "–") + (c.cloud.error ? ": " + c.cloud.error : "") : "–"]]));
  $("ov-parts").tBodies[0].replaceChildren(...o.parts.map(p => el("tr", { "data-part": p.key },
    el("td", {}, p.key), el("td", {}, badge(p.state)), el("td", { class: "num" }, p.restarts), el("td", {}, age(p.since)), el("td", {}, p.detail))));
  $("ov-links").tBodies[0].replaceChildren(...o.links.map(l => el("tr", {},
    el("td", {}, l.device), el("td", {}, l.connector), el("td", {}, badge(l.state)), el("td", {}, l.detail))));
  const models = o.inference ? o.inference.models : [];
  $("ov-models").tBodies[0].replaceChildren(...(models.length ? models.map(m => el("tr", {},
    el("td", {}, m.name), el("td", {}, m.version), el("td", {}, (m.providers || []).join(", ")), el("td", {}, m.trust || "–")))
    : [el("tr", {}, el("td", { colspan: 4 }, o.inference ? "no model loaded yet" : "this site has no inference service"))]));
}

// -- devices and live values -------------------------------------------------------------------

function limitsText(l) {
  const parts = [];
  if (l.min !== undefined) parts.push("min " + l.min);
  if (l.max !== undefined) parts.push("max " + l.max);
  if (l.max_rate !== undefined) parts.push("rate " + l.max_rate + "/s");
  if (l.allowed !== undefined) parts.push("one of " + l.allowed.join(", "));
  return parts.join(", ");
}

async function loadDevices() {
  const r = await api("devices");
  if (!r.ok) return;
  state.rows = new Map();
  const blocks = [];
  for (const d of r.data.devices) {
    const known = new Set(d.points.map(p => p.topic));
    const extra = Object.keys(r.data.values).filter(t => t.startsWith(d.device + "/") && !known.has(t)).sort()
      .map(t => ({ point: t.slice(d.device.length + 1), topic: t, unit: null, access: "r", writable: false, limits: {} }));
    const body = el("tbody");
    for (const p of d.points.concat(extra)) body.append(pointRow(d.device, p));
    blocks.push(el("div", { class: "device", "data-device": d.device },
      el("h2", {}, d.device + " ", badge(d.state), " ", el("span", { class: "hint" }, d.connector)),
      el("table", { class: "grid" }, el("thead", {}, el("tr", {}, ...["point", "value", "unit", "quality", "age", "limits", "write"].map(h => el("th", {}, h)))), body)));
  }
  $("device-list").replaceChildren(...blocks);
  applyValues(r.data.values);
}

function pointRow(device, p) {
  const value = el("td", { class: "num value" }, "–"), quality = el("td", { class: "quality" }), ageCell = el("td", { class: "age" });
  let write = el("td", {}, p.access === "r" ? "" : "write-only");
  if (p.writable) {
    const input = el("input", { class: "write-value", "aria-label": "new value for " + p.topic });
    const button = el("button", { class: "write", onclick: () => writePoint(device, p.point, input.value) }, "Write");
    write = el("td", {}, input, " ", button);
  }
  const row = el("tr", { "data-topic": p.topic },
    el("td", {}, el("button", { class: "link", onclick: () => showHistory(p.topic, p.unit) }, p.point)),
    value, el("td", {}, p.unit || ""), quality, ageCell, el("td", {}, limitsText(p.limits)), write);
  state.rows.set(p.topic, { value, quality, age: ageCell, ts: null });
  return row;
}

function applyValues(values) {
  for (const [topic, [ts, v, q]] of Object.entries(values)) {
    const row = state.rows.get(topic);
    if (row) {
      row.value.textContent = fmt(v);
      row.quality.replaceChildren(badge(QUALITY[q] || q));
      row.ts = ts;
      row.age.textContent = age(ts);
    }
    if (state.history && state.history.topic === topic && typeof v === "number") {
      state.history.points.push([ts, v]);
      if (state.history.points.length > 2000) state.history.points.shift();
      drawHistory();
    }
  }
}

function openStream() {
  if (state.source) state.source.close();
  const source = new EventSource("/console/api/stream");
  source.addEventListener("values", (e) => {
    const msg = JSON.parse(e.data);
    if (msg.now) state.skew = Date.now() / 1000 - msg.now;
    applyValues(msg.values);
  });
  source.onerror = () => { api("me"); };  // a 401 there shows the login form; else EventSource retries
  state.source = source;
}

async function showHistory(topic, unit) {
  const r = await api("history?topic=" + encodeURIComponent(topic));
  if (!r.ok) return;
  state.history = { topic, unit: unit || "", points: r.data.points };
  $("history").hidden = false;
  $("history-title").textContent = "History of " + topic;
  drawHistory();
}

function drawHistory() {
  const h = state.history;
  drawPlot($("history-plot"), { series: [{ name: h.topic, points: h.points }], bands: [], unit: h.unit, x: "time" });
}

async function writePoint(device, point, text) {
  let value = text.trim();
  if (value === "true" || value === "false") value = value === "true";
  else if (value !== "" && !isNaN(Number(value))) value = Number(value);
  const box = $("write-result");
  box.hidden = false;
  box.replaceChildren("writing " + device + "/" + point + " = " + text + " …");
  const r = await api("write", { body: { device, point, value } });
  if (r.ok) {
    const d = r.data;
    box.replaceChildren(el("b", {}, device + "/" + point + " = " + fmt(d.value) + ": "), badge(d.status), " ",
      el("span", { class: "message" }, d.message), d.readback !== null ? el("span", {}, " · read back " + fmt(d.readback)) : "");
  } else {
    box.replaceChildren(el("b", {}, device + "/" + point + ": "), badge("refused"), " ", el("span", { class: "message" }, r.data.error || r.status));
  }
}

// -- audit -----------------------------------------------------------------------------------

async function loadAudit(event) {
  if (event) event.preventDefault();
  const q = new URLSearchParams({ limit: "200" });
  if ($("audit-device").value) q.set("device", $("audit-device").value);
  if ($("audit-user").value) q.set("user", $("audit-user").value);
  const r = await api("audit?" + q);
  if (!r.ok) return;
  $("audit-table").tBodies[0].replaceChildren(...r.data.rows.map(a => el("tr", {},
    el("td", {}, when(a.ts)), el("td", {}, a.source), el("td", {}, a.device + "/" + a.point), el("td", { class: "num" }, fmt(a.value)),
    el("td", {}, badge(a.status)), el("td", {}, a.message), el("td", { class: "num" }, fmt(a.readback)), el("td", {}, a.reason))));
}

// -- solution panels -------------------------------------------------------------------------

async function loadPanels() {
  const r = await api("panels");
  if (!r.ok) return;
  if (!r.data.panels.length) { $("panel-list").replaceChildren(el("p", { class: "hint" }, "No solution on this site contributes a panel.")); return; }
  $("panel-list").replaceChildren(...r.data.panels.map(p => el("div", { class: "panel", "data-solution": p.solution, "data-type": p.type },
    el("h2", {}, p.title + " · " + p.solution), p.error ? el("p", { class: "error" }, "this panel failed: " + p.error) : "",
    el("div", { class: "widgets" }, ...p.widgets.map(widget)))));
}

function widget(w) {
  if (w.kind === "stats") {
    return el("div", { class: "widget stats-widget" }, el("h3", {}, w.title),
      el("div", { class: "stats" }, ...Object.entries(w.items).map(([k, v]) => el("div", {}, el("b", {}, fmt(v)), el("span", {}, k)))));
  }
  if (w.kind === "table") {
    return el("div", { class: "widget table-widget" }, el("h3", {}, w.title),
      el("table", { class: "grid" }, el("thead", {}, el("tr", {}, ...w.columns.map(c => el("th", {}, c)))),
        el("tbody", {}, ...(w.rows.length ? w.rows.map(r => el("tr", {}, ...r.map(c => el("td", {}, fmt(c)))))
          : [el("tr", {}, el("td", { colspan: w.columns.length, class: "hint" }, "none"))]))));
  }
  if (w.kind === "plot") {
    const box = el("div", { class: "plot" });
    const node = el("div", { class: "widget plot-widget" }, el("h3", {}, w.title), box);
    drawPlot(box, w);
    return node;
  }
  return el("div", {}, "unknown widget " + w.kind);
}

// -- the plot: lines and shaded bands in SVG ---------------------------------------------------

function drawPlot(box, p) {
  const W = 640, H = 240, L = 56, R = 12, T = 10, B = 28;
  const xs = [], ys = [];
  for (const s of p.series) for (const [x, y] of s.points) if (y !== null) { xs.push(x); ys.push(y); }
  for (const b of p.bands) for (const [x, lo, hi] of b.points) if (lo !== null && hi !== null) { xs.push(x); ys.push(lo, hi); }
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": p.title || "plot" });
  if (!xs.length) {
    chart.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"));
    box.replaceChildren(chart);
    return;
  }
  let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R), sy = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + (y1 - y0) * i / 4, xv = x0 + (x1 - x0) * i / 4;
    chart.append(svg("line", { x1: L, x2: W - R, y1: sy(yv), y2: sy(yv), stroke: "#eceff3" }));
    chart.append(svg("text", { x: L - 4, y: sy(yv) + 4, "text-anchor": "end" }, fmt(Number(yv.toPrecision(3)))));
    const label = p.x === "time" ? new Intl.DateTimeFormat("en-GB", { timeZone: state.tz, hour: "2-digit", minute: "2-digit", second: (x1 - x0) < 600 ? "2-digit" : undefined }).format(new Date(xv * 1000)) : fmt(Number(xv.toPrecision(3)));
    chart.append(svg("text", { x: sx(xv), y: H - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, label));
  }
  chart.append(svg("text", { x: 4, y: T + 8 }, p.unit || ""));
  const legend = el("div", { class: "legend" });
  p.bands.forEach((b, i) => {
    const pts = b.points.filter(q => q[1] !== null && q[2] !== null);
    if (!pts.length) return;
    const d = pts.map((q, j) => (j ? "L" : "M") + sx(q[0]).toFixed(1) + "," + sy(q[2]).toFixed(1)).join("") +
      pts.slice().reverse().map(q => "L" + sx(q[0]).toFixed(1) + "," + sy(q[1]).toFixed(1)).join("") + "Z";
    chart.append(svg("path", { d, fill: BAND_COLORS[i % BAND_COLORS.length], "fill-opacity": "0.25", stroke: "none", class: "band" }));
    const swatch = el("i", { class: "band-swatch" });
    swatch.dataset.color = BAND_COLORS[i % BAND_COLORS.length];
    legend.append(el("span", {}, swatch, b.name));
  });
  p.series.forEach((s, i) => {
    let d = "", pen = false;
    for (const [x, y] of s.points) {
      if (y === null) { pen = false; continue; }
      d += (pen ? "L" : "M") + sx(x).toFixed(1) + "," + sy(y).toFixed(1);
      pen = true;
    }
    const color = COLORS[i % COLORS.length];
    const attrs = { d, fill: "none", stroke: color, "stroke-width": "1.8", class: "series" };
    if (s.dashed) attrs["stroke-dasharray"] = "5 4";
    chart.append(svg("path", attrs));
    const swatch = el("i", {});
    swatch.dataset.color = color;
    legend.append(el("span", {}, swatch, s.name));
  });
  box.replaceChildren(chart, legend);
  // colours are set through the DOM, never an inline style attribute (the page's CSP forbids those)
  legend.querySelectorAll("i").forEach(i => { i.style.background = i.dataset.color; if (i.classList.contains("band-swatch")) { i.style.opacity = "0.5"; i.style.height = "10px"; } });
}

// -- commissioning ---------------------------------------------------------------------------

function suggestName(path) {
  const last = String(path).split("/").pop().replace(/^\d+:/, "");
  return last.replace(/[^A-Za-z0-9_.-]+/g, "_").replace(/^[^A-Za-z0-9_]+/, "") || "point";
}

async function scan(kind, event) {
  event.preventDefault();
  $("scan-status").textContent = kind === "opcua" ? "browsing …" : "scanning …";
  $("scan-result").hidden = true;
  const body = kind === "opcua" ? { endpoint: $("opcua-endpoint").value, depth: Number($("opcua-depth").value) }
    : { target: $("modbus-target").value, unit: Number($("modbus-unit").value) };
  const r = await api("commissioning/" + kind, { body });
  if (!r.ok) { $("scan-status").replaceChildren(el("span", { class: "error" }, r.data.error || "failed")); return; }
  state.scan = r.data;
  const vars = r.data.rows.filter(row => row.class === "Variable");
  $("scan-status").textContent = (kind === "opcua" ? "found " : "SunSpec at " + r.data.base + ": ") + vars.length + " points" + (r.data.truncated ? " (first 2000 shown)" : "");
  const used = new Set();
  $("scan-table").tBodies[0].replaceChildren(...vars.map((row, i) => {
    let name = kind === "opcua" ? suggestName(row.path) : row.sunspec;
    while (used.has(name)) name += "_";
    used.add(name);
    return el("tr", { "data-index": i }, el("td", {}, el("input", { type: "checkbox", class: "pick" })),
      el("td", {}, el("input", { class: "pick-name", value: name })), el("td", {}, row.path), el("td", {}, row.type || ""),
      el("td", {}, row.writable ? "rw" : "r"), el("td", { class: "num" }, kind === "opcua" ? fmt(row.value) : row.address));
  }));
  state.scan.variables = vars;
  state.scan.kind = kind;
  $("scan-result").hidden = false;
}

async function saveProfile(event) {
  event.preventDefault();
  const points = [];
  for (const tr of $("scan-table").tBodies[0].rows) {
    if (!tr.querySelector(".pick").checked) continue;
    const row = state.scan.variables[Number(tr.dataset.index)];
    points.push(Object.assign({}, row, { name: tr.querySelector(".pick-name").value }));
  }
  const source = state.scan.kind === "opcua" ? state.scan.endpoint : state.scan.target;
  const r = await api("commissioning/profile", { body: { name: $("profile-name").value, connector: state.scan.connector, points, source, overwrite: $("profile-overwrite").checked } });
  $("profile-status").replaceChildren(r.ok ? el("span", {}, "saved " + r.data.path + ": " + r.data.hint) : el("span", { class: "error" }, r.data.error || "failed"));
}

// -- wiring ----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", async () => { await api("logout", { body: {} }); showLogin("logged out"); });
  document.querySelectorAll("#tabs button").forEach(b => b.addEventListener("click", () => show(b.dataset.tab)));
  $("audit-form").addEventListener("submit", loadAudit);
  $("opcua-form").addEventListener("submit", e => scan("opcua", e));
  $("modbus-form").addEventListener("submit", e => scan("modbus", e));
  $("profile-form").addEventListener("submit", saveProfile);
  $("scan-all").addEventListener("change", e => document.querySelectorAll("#scan-table .pick").forEach(c => c.checked = e.target.checked));
  setInterval(() => { for (const row of state.rows.values()) row.age.textContent = age(row.ts); }, 1000);
  start();
});
