// Prism's dashboard: vanilla JS, no build step, no outside resource.
// Every piece of data reaches the page through textContent or a form value,
// never as markup.
"use strict";

const ROLES = ["viewer", "operator", "admin"];
const PALETTE = { blue: "#2f6fd6", green: "#23914a", red: "#c8372d", yellow: "#c49a00",
  orange: "#d86f1c", purple: "#7b45c2", pink: "#c2458f", cyan: "#1796a8", gray: "#66707c" };
const ACTIVE = ["pending", "running", "waiting", "holding", "paused", "draining", "rolling_back"];
const views = new Map();
let me = null;
let stream = null;
let last = null;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function colorOf(name) {
  if (PALETTE[name]) return PALETTE[name];
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${hash}, 55%, 42%)`;
}

function may(role) {
  return me !== null && ROLES.indexOf(me.role) >= ROLES.indexOf(role);
}

function csrf() {
  const found = document.cookie.split("; ").find((c) => c.startsWith("prism_csrf="));
  return found ? decodeURIComponent(found.slice("prism_csrf=".length)) : "";
}

function notice(text, hint, isError) {
  const box = document.getElementById("notice");
  const parts = [el("span", { className: "message" }, text)];
  if (hint) parts.push(el("span", { className: "hint" }, hint));
  box.replaceChildren(...parts);
  box.className = isError ? "error" : "";
  box.hidden = false;
}

async function call(method, path, body) {
  const headers = { "X-Prism-CSRF": csrf() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch("/api/v1" + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await answer.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
  if (!answer.ok) {
    const error = new Error((data && (data.detail || data.title)) || `HTTP ${answer.status}`);
    error.hint = data && data.hint;
    error.status = answer.status;
    throw error;
  }
  return data;
}

// An action: confirm, send, then say what happened (or the error and its hint).
async function act(question, method, path, body, done) {
  if (!window.confirm(question)) return;
  try {
    const answer = await call(method, path, body);
    notice(done(answer || {}), null, false);
  } catch (error) {
    notice(error.message, error.hint, true);
  }
}

function weights(w) {
  return Object.entries(w || {}).map(([c, v]) => `${c}=${v}`).join(" ");
}

function reasonOf(view) {
  const text = view.reason.value.trim();
  return text ? text : null;
}

function buildApp(app) {
  const name = app.name;
  const view = { name, colorsKey: "" };
  view.title = el("h2", {}, name);
  view.summary = el("div", { className: "summary" });
  view.bar = el("div", { className: "bar", dataset: { role: "weights" } });
  view.colors = el("table", { className: "colors" });
  view.pins = el("table", { className: "pins" });
  view.charts = el("div", { className: "charts" });
  view.graphs = {};
  for (const [key, label] of [["rps", "requests/s"], ["err", "5xx ratio"], ["ms", "response ms"]]) {
    const chart = svg("svg", { viewBox: "0 0 400 120", preserveAspectRatio: "none", "data-chart": key });
    view.graphs[key] = chart;
    view.charts.append(el("div", { className: "chart" }, el("h3", {}, label), chart));
  }
  view.release = el("div", { className: "release" });
  view.actions = el("div", { className: "actions" });
  view.root = el("section", { className: "app", dataset: { app: name } },
    view.title, view.summary, view.bar, view.colors, view.pins,
    el("h3", {}, "Traffic, last 15 minutes"), view.charts, view.release, view.actions);
  if (may("operator")) buildActions(view, app);
  return view;
}

function buildActions(view, app) {
  const name = app.name;
  view.reason = el("input", { className: "reason", placeholder: "reason (audit log)", maxLength: 256 });
  view.shift = el("form", { className: "shift", on: { submit: (e) => {
    e.preventDefault();
    const body = { weights: {}, reason: reasonOf(view) };
    for (const input of view.shift.querySelectorAll("input.weight")) {
      body.weights[input.name] = Number(input.value);
    }
    act(`Shift ${name} to ${weights(body.weights)}?`, "PUT", `/apps/${name}/weights`, body,
      (a) => { view.shift.dataset.dirty = ""; return `${name}: ${weights(a.previous)} -> ${weights(a.weights)}`; });
  } } });
  view.shift.addEventListener("input", () => { view.shift.dataset.dirty = "1"; });
  view.startTo = el("select", { className: "to" });
  view.steps = el("input", { className: "steps", value: "10,50,100", size: 10 });
  view.interval = el("input", { className: "interval", value: "30s", size: 5 });
  const start = el("form", { className: "start", on: { submit: (e) => {
    e.preventDefault();
    const to = view.startTo.value;
    const parts = view.steps.value.split(",").map((s) => s.trim()).filter(Boolean);
    const interval = view.interval.value.trim() || "30s";
    const steps = [];
    parts.forEach((w, i) => {
      steps.push({ weight: Number(w) });
      if (i < parts.length - 1) steps.push({ pause: interval });
    });
    act(`Start a release of ${name} to ${to} (${parts.join(", ")} every ${interval})?`, "POST",
      `/apps/${name}/releases`, { plan: { to, steps }, reason: reasonOf(view) },
      (a) => `release ${a.id || ""} of ${name} to ${to}: ${a.phase}`);
  } } }, "to ", view.startTo, " steps ", view.steps, " every ", view.interval,
  el("button", { type: "submit" }, "Start release"));
  const steer = el("div", { className: "group steer" });
  for (const action of ["promote", "pause", "resume", "abort"]) {
    steer.append(el("button", { type: "button", className: action === "abort" ? "danger" : "",
      dataset: { action }, on: { click: () => act(`${action} the release of ${name}?`, "POST",
        `/apps/${name}/releases/${action}`, { reason: reasonOf(view) },
        (a) => `${name}: release ${action}: ${a.phase}`) } }, action));
  }
  view.steer = steer;
  const rollback = el("button", { type: "button", className: "danger", dataset: { action: "rollback" },
    on: { click: () => act(`Roll ${name} back to its weights before the last change?`, "POST",
      `/apps/${name}/rollback`, { reason: reasonOf(view) },
      (a) => `${name}: ${weights(a.previous)} -> ${weights(a.weights)}`) } }, "Roll back");
  view.pinKey = el("input", { className: "pin-key", placeholder: "tenant key", size: 10 });
  view.pinTo = el("select", { className: "pin-to" });
  const pin = el("form", { className: "pin", on: { submit: (e) => {
    e.preventDefault();
    const key = view.pinKey.value.trim();
    const color = view.pinTo.value;
    act(`Pin ${key} of ${name} to ${color}?`, "PUT", `/apps/${name}/pins/${encodeURIComponent(key)}`,
      { color, reason: reasonOf(view) }, () => `${name}: ${key} pinned to ${color}`);
  } } }, view.pinKey, " to ", view.pinTo, el("button", { type: "submit" }, "Pin"));
  view.actions.append(view.reason, view.shift, start, steer, rollback, pin);
}

function renderColors(view, app) {
  const key = app.colors.map((c) => c.name).join(",");
  if (view.shift && (key !== view.colorsKey || !view.shift.dataset.dirty)) {
    const inputs = app.colors.map((c) => el("label", {}, c.name + " ",
      el("input", { className: "weight", name: c.name, type: "number", min: 0, max: 100, value: c.weight })));
    view.shift.replaceChildren(...inputs, el("button", { type: "submit" }, "Shift"));
    view.shift.dataset.dirty = "";
  }
  if (view.startTo && key !== view.colorsKey) {
    for (const select of [view.startTo, view.pinTo]) {
      select.replaceChildren(...app.colors.map((c) => el("option", { value: c.name }, c.name)));
    }
    const other = app.colors.find((c) => c.name !== app.active);
    if (other) view.startTo.value = other.name;
  }
  view.colorsKey = key;
  view.bar.replaceChildren(...app.colors.filter((c) => c.weight > 0).map((c) => {
    const part = el("div", { dataset: { color: c.name, weight: String(c.weight) },
      title: `${c.name} ${c.weight}%` }, `${c.name} ${c.weight}%`);
    part.style.flexGrow = String(c.weight);
    part.style.background = colorOf(c.name);
    return part;
  }));
  const head = el("tr", {}, ["color", "version", "weight", "buckets", "servers"].map((h) => el("th", {}, h)));
  const rows = app.colors.map((c) => el("tr", { dataset: { color: c.name } },
    el("td", {}, c.name, c.active ? " (active)" : ""),
    el("td", {}, c.version),
    el("td", { className: "weight" }, `${c.weight}%`),
    el("td", {}, c.buckets.join(", ") || "-"),
    el("td", {}, c.servers.map((s) => el("div", { className: "server" },
      `${s.name} ${s.address} `, el("span", { className: `status-${String(s.status).split(" ")[0]}` }, s.status),
      s.check ? ` ${s.check}` : "",
      s.nodes ? ` [${Object.entries(s.nodes).map(([n, r]) => `${n}: ${r.status}`).join(", ")}]` : "")))));
  view.colors.replaceChildren(head, ...rows);
}

function renderPins(view, app) {
  if (!app.pins.length) { view.pins.replaceChildren(); return; }
  const head = el("tr", {}, ["pin rule", "key", "color", ""].map((h) => el("th", {}, h)));
  view.pins.replaceChildren(head, ...app.pins.map((p) => el("tr", { dataset: { pin: p.key } },
    el("td", {}, p.rule), el("td", {}, p.key), el("td", {}, p.color),
    el("td", {}, may("operator") ? el("button", { type: "button", dataset: { action: "unpin" },
      on: { click: () => act(`Unpin ${p.key} of ${app.name}?`, "DELETE",
        `/apps/${app.name}/pins/${encodeURIComponent(p.key)}?rule=${encodeURIComponent(p.rule)}`,
        undefined, () => `${app.name}: ${p.key} unpinned`) } }, "unpin") : ""))));
}

function stepLabel(step) {
  if ("weight" in step) return `${step.weight}%`;
  if ("pause" in step) return step.pause === "manual" ? "pause (manual)" : `pause ${Math.round(step.pause / 1000)}s`;
  return "analysis";
}

function renderRelease(view, app, serverSkew) {
  const r = app.release;
  if (view.steer) view.steer.hidden = !(r && ACTIVE.includes(r.phase));
  if (!r) { view.release.replaceChildren(el("p", {}, "No release yet.")); return; }
  const active = ACTIVE.includes(r.phase);
  const steps = r.plan.steps.map((s, i) => el("li", {
    className: (r.phase === "completed" || i < r.step) ? "done" : (i === r.step && active ? "current" : ""),
    dataset: { step: String(i) } }, stepLabel(s)));
  let left = "";
  const current = r.plan.steps[r.step];
  if (active && current && typeof current.pause === "number" && r.phase !== "paused") {
    const now = Date.now() / 1000 - serverSkew;
    left = ` · ${Math.max(0, Math.round(r.step_started_at + current.pause / 1000 - now))}s left`;
  }
  const log = r.steps.slice(-8).reverse().map((e) => el("div", { className: e.ok ? "ok" : "fail" },
    `${new Date(e.at * 1000).toLocaleTimeString()} ${e.name}: ${e.message}`));
  view.release.replaceChildren(
    el("h3", {}, `Release ${r.from_color} → ${r.to_color}: `,
      el("span", { className: "phase", dataset: { phase: r.phase } }, r.phase),
      ` (step ${r.step + 1}/${r.plan.steps.length})${left}`,
      r.reason ? el("span", { className: "reason-text" }, ` — ${r.reason}`) : ""),
    el("ol", { className: "timeline" }, steps),
    el("div", { className: "release-log" }, log));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

// A chart is an SVG of one polyline per color: no canvas backing store, so a thousand
// apps cost a few nodes each, not megabytes.
function drawChart(chart, series, index, colors) {
  const w = 400, h = 120, now = Date.now() / 1000, from = now - 900;
  let max = 0;
  const latest = {};
  for (const c of colors) {
    const points = series[c] || [];
    for (const p of points) max = Math.max(max, p[index]);
    if (points.length) latest[c] = points[points.length - 1][index];
  }
  chart.dataset.latest = JSON.stringify(latest);
  max = max > 0 ? max * 1.15 : 1;
  const label = svg("text", { x: 2, y: 10, class: "scale" });
  label.textContent = index === 2 ? max.toFixed(3) : max.toFixed(1);
  const lines = [label];
  for (const c of colors) {
    const points = series[c] || [];
    if (!points.length) continue;
    const coords = points.map((p) => {
      const x = Math.max(0, (p[0] - from) / 900) * w;
      const y = h - (p[index] / max) * (h - 12);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    lines.push(svg("polyline", { points: coords.join(" "), fill: "none", stroke: colorOf(c),
      "stroke-width": 1.5, "data-color": c }));
  }
  chart.replaceChildren(...lines);
}

function renderHistory(rows) {
  const table = document.getElementById("history");
  const head = el("tr", {}, ["when", "who", "what", "app", "why"].map((h) => el("th", {}, h)));
  table.replaceChildren(head, ...rows.map((r) => el("tr", {},
    el("td", {}, new Date(r.at * 1000).toLocaleTimeString()), el("td", {}, r.actor),
    el("td", {}, r.action), el("td", {}, r.app || ""), el("td", { className: "why" }, r.reason || ""))));
  document.getElementById("history-section").hidden = false;
}

function renderNodes(rows) {
  const table = document.getElementById("nodes");
  const head = el("tr", {}, ["node", "state", "applied revision", "drift", "last error"].map((h) => el("th", {}, h)));
  table.replaceChildren(head, ...rows.map((n) => el("tr", {}, el("td", {}, n.name), el("td", {}, n.state),
    el("td", {}, n.applied_revision ?? ""), el("td", {}, n.drift ? "DRIFT" : ""), el("td", {}, n.last_error || ""))));
  document.getElementById("nodes-section").hidden = false;
}

// A render works through the apps in slices of a few milliseconds and gives the
// browser back in between, so the first apps show at once however many there are;
// a newer state (or a logout) ends the pass of an older one.
const SLICE_MS = 12;
let generation = 0;

// Charts are drawn only for apps on (or near) the screen; one scrolled into view
// draws the samples it was last given.
const onScreen = typeof IntersectionObserver === "function" ? new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const view = entry.target.prismView;
    if (!view) continue;
    view.visible = entry.isIntersecting;
    if (view.visible && view.stale) { const [series, colors] = view.stale; view.stale = null; drawCharts(view, series, colors); }
  }
}, { rootMargin: "600px 0px" }) : null;

function drawCharts(view, series, colors) {
  drawChart(view.graphs.rps, series, 1, colors);
  drawChart(view.graphs.err, series, 2, colors);
  drawChart(view.graphs.ms, series, 3, colors);
}

function renderApp(view, app, series, skew) {
  // Only apps whose status moved are drawn again (a release's time left is recounted
  // on every state, so an app with a running release always is).
  const sig = JSON.stringify(app);
  if (sig !== view.sig || (app.release && ACTIVE.includes(app.release.phase))) {
    view.sig = sig;
    view.summary.textContent = `active ${app.active} · ${app.bind || app.listener || ""}` +
      ` · desired r${app.desired_revision} applied r${app.applied_revision}`;
    renderColors(view, app);
    renderPins(view, app);
    renderRelease(view, app, skew);
  }
  const colors = app.colors.map((c) => c.name);
  const seriesSig = JSON.stringify([colors, series]);
  if (seriesSig === view.seriesSig) return;
  view.seriesSig = seriesSig;
  if (view.visible === false) view.stale = [series, colors];
  else { view.stale = null; drawCharts(view, series, colors); }
}

function render(state) {
  const mine = ++generation;
  last = state;
  me = state.me;
  document.getElementById("me").textContent = `${me.name} (${me.role})`;
  document.getElementById("logout").hidden = false;
  document.getElementById("login").hidden = true;
  const skew = Date.now() / 1000 - state.at;
  const container = document.getElementById("apps");
  const names = new Set(state.apps.map((a) => a.name));
  for (const [name, view] of views) {
    if (!names.has(name)) { if (onScreen) onScreen.unobserve(view.root); view.root.remove(); views.delete(name); }
  }
  renderNodes(state.nodes);
  renderHistory(state.history);
  let i = 0;
  const slice = () => {
    if (mine !== generation) return;
    const until = performance.now() + SLICE_MS;
    const added = [];
    for (; i < state.apps.length && (performance.now() < until || i === 0); i++) {
      const app = state.apps[i];
      let view = views.get(app.name);
      if (!view) {
        view = buildApp(app);
        views.set(app.name, view);
        view.root.prismView = view;
        added.push(view.root);
      }
      renderApp(view, app, state.series[app.name] || {}, skew);
    }
    if (added.length) {
      container.append(...added);
      if (onScreen) for (const node of added) onScreen.observe(node);
    }
    if (i < state.apps.length) window.setTimeout(slice, 0);
  };
  slice();
}

function connect() {
  if (stream) stream.close();
  stream = new EventSource("/api/v1/events");
  const live = document.getElementById("live");
  // States may come faster than a big fleet renders: only the newest is parsed and drawn.
  let pending = null;
  stream.addEventListener("state", (event) => {
    live.textContent = "live";
    live.className = "live on";
    if (pending === null) {
      window.setTimeout(() => { const data = pending; pending = null; render(JSON.parse(data)); }, 0);
    }
    pending = event.data;
  });
  stream.addEventListener("error", () => {
    live.textContent = "offline";
    live.className = "live";
    if (stream.readyState === EventSource.CLOSED) start();
  });
}

async function start() {
  try {
    render(await call("GET", "/dashboard"));
    connect();
  } catch (error) {
    if (error.status === 401) {
      document.getElementById("login").hidden = false;
      document.getElementById("logout").hidden = true;
    } else {
      notice(error.message, error.hint, true);
      window.setTimeout(start, 3000);
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = document.getElementById("token");
    const answer = await fetch("/api/v1/session", { method: "POST", credentials: "same-origin",
      headers: { Authorization: "Bearer " + field.value.trim() } });
    field.value = "";
    if (!answer.ok) {
      document.getElementById("login-error").textContent = "That token is not valid.";
      return;
    }
    document.getElementById("login-error").textContent = "";
    start();
  });
  document.getElementById("logout").addEventListener("click", async () => {
    if (stream) stream.close();
    await fetch("/api/v1/session", { method: "DELETE", credentials: "same-origin" });
    generation++;
    for (const view of views.values()) { if (onScreen) onScreen.unobserve(view.root); view.root.remove(); }
    views.clear();
    me = null;
    document.getElementById("me").textContent = "";
    start();
  });
  start();
});
