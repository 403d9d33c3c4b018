// txoutbox console: polls the JSON API every few seconds and draws the charts as SVG. No library, no build.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const SVG = "http://www.w3.org/2000/svg";
let windowSeconds = 900;
let refreshMs = 2000;
let faultAvailable = false;

// -- talking to the API --------------------------------------------------------------------------------

async function api(path, body) {
  const init = { credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRF-Token"] = CSRF;
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || data);
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return data;
}

// -- small helpers -------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "-";
  if (value < 10) return `${value.toFixed(1)} s`;
  if (value < 120) return `${Math.round(value)} s`;
  if (value < 7200) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  return `${(value / 3600).toFixed(1)} h`;
}

function number(value, digits = 0) {
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits });
}

function when(iso) {
  if (!iso) return "-";
  const ago = (Date.now() - Date.parse(iso)) / 1000;
  return ago >= 0 ? `${seconds(ago)} ago` : `in ${seconds(-ago)}`;
}

function bytes(n) {
  if (n >= 1048576) return `${(n / 1048576).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

function fill(table, rows, render) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows.map(render));
  table.hidden = rows.length === 0;
  table.parentElement.querySelector(".empty").hidden = rows.length !== 0;
}

let toastTimer;
function toast(message, error = false) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = error ? "error" : "";
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, error ? 10000 : 6000);
}

// Every change of state goes through this dialog first.
function ask(title, text, confirmLabel, danger) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const ok = document.getElementById("confirm-ok");
  ok.textContent = confirmLabel;
  ok.className = danger ? "danger" : "primary";
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

// Destructive or disruptive actions get a red button in the dialog.
const DANGEROUS = new Set(["Discard", "Switch to deny", "Switch to down"]);

async function act(title, text, label, path, body, done) {
  if (!(await ask(title, text, label, DANGEROUS.has(label)))) return;
  try {
    done(await api(path, body));
  } catch (error) {
    toast(error.message, true);
  }
  refresh();
}

// -- charts ----------------------------------------------------------------------------------------------

// A tick step of 1, 2, 2.5 or 5 times a power of ten, so that four steps cover `max`.
function niceStep(max, integral) {
  const raw = Math.max(max, integral ? 4 : 1) / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) {
    const step = m * power;
    if (step >= raw && (!integral || Number.isInteger(step))) return step;
  }
  return 10 * power;
}

function drawChart(figure, points, now) {
  const key = figure.dataset.key;
  const unit = figure.dataset.unit;
  const box = figure.querySelector("svg");
  const [W, H, left, right, top, bottom] = [400, 160, 40, 8, 8, 20];
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const step = niceStep(Math.max(0, ...points.map((p) => p[key])), key === "backlog");
  const yMax = 4 * step;
  // Up to the last 15 minutes: a console started a minute ago spreads its minute over the width.
  const span = Math.min(windowSeconds, Math.max(60, points.length ? Math.ceil((now - points[0].t) / 60) * 60 : 0));
  const x = (t) => left + ((t - (now - span)) / span) * plotW;
  const y = (v) => top + plotH - (v / yMax) * plotH;
  const nodes = [];
  for (let i = 0; i <= 4; i++) {
    const v = step * i;
    nodes.push(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
    nodes.push(svg("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" },
      v >= 10000 ? `${number(v / 1000)}k` : number(v, 2)));
  }
  for (const k of [3, 2, 1, 0]) {
    const ago = (k * span) / 3;
    const t = now - ago;
    const label = !k ? "now" : span >= 180 ? `-${Math.round(ago / 60)} min` : `-${Math.round(ago)} s`;
    nodes.push(svg("text", { class: "axis", x: x(t), y: H - 5, "text-anchor": k ? "middle" : "end" }, label));
  }
  if (points.length) {
    const line = points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join("");
    const last = points[points.length - 1];
    const area = `${line}L${x(last.t).toFixed(1)},${y(0)}L${x(points[0].t).toFixed(1)},${y(0)}Z`;
    nodes.push(svg("path", { class: "area", d: area }), svg("path", { class: "line", d: line }));
    const digits = key === "backlog" ? 0 : 1;
    figure.querySelector(".value").textContent =
      key === "oldest_age_seconds" ? seconds(last[key]) : `${number(last[key], digits)} ${unit}`;
  } else {
    nodes.push(svg("text", { class: "nodata", x: left + plotW / 2, y: top + plotH / 2, "text-anchor": "middle" },
      "collecting samples…"));
  }
  box.replaceChildren(...nodes);
  figure.dataset.points = String(points.length);
}

// -- views -------------------------------------------------------------------------------------------------

function renderOverview(data) {
  windowSeconds = data.window_seconds;
  refreshMs = Math.max(1000, data.sample_seconds * 1000);
  const status = document.getElementById("status");
  status.textContent = data.status;
  status.className = `pill ${data.status}`;
  const reasons = [...data.reasons];
  if (data.sampler_error) reasons.unshift(`console cannot sample the database: ${data.sampler_error}`);
  document.getElementById("reasons").replaceChildren(...reasons.map((r) => el("li", { text: r })));
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  const now = Date.now() / 1000;
  for (const figure of document.querySelectorAll(".chart")) drawChart(figure, data.series, now);

  fill(document.getElementById("relays"), data.relays, (r) => {
    const state = r.live ? r.circuit_state : "stale";
    return el("tr", { "data-relay": r.relay_id, "data-circuit": state },
      el("td", { text: r.relay_id }),
      el("td", { text: `${r.hostname} / ${r.pid}` }),
      el("td", { text: `${seconds(r.heartbeat_age_seconds)} ago` }),
      el("td", { class: "circuit" }, el("span", { class: `pill ${state}`, text: r.live ? r.circuit_state : "silent" })),
      el("td", { class: "error", text: r.circuit_reason || "" }),
      el("td", { class: "num", text: number(r.published_total) }),
      el("td", { class: "num", text: `${number(r.publish_rate, 1)}/s` }));
  });
  faultAvailable = data.local_stack;
  document.getElementById("fault-section").hidden = !faultAvailable;
  if (!data.dlq_configured) {
    document.getElementById("dlq-note").textContent = "no dead-letter queue configured (SQS_DLQ_URL)";
  }
}

function renderOutbox(rows) {
  fill(document.getElementById("outbox"), rows, (r) =>
    el("tr", { "data-event": r.id },
      el("td", { text: r.id }),
      el("td", { text: `${r.aggregate_type} ${r.aggregate_id}` }),
      el("td", { text: r.event_type }),
      el("td", { class: "num", text: r.attempts }),
      el("td", { text: r.state === "retry scheduled" ? when(r.next_attempt_at) : "-" }),
      el("td", { text: r.state }),
      el("td", { class: "error", text: r.last_error || "" }),
      el("td", { class: "actions" }, r.state === "retry scheduled" ? el("button", {
        type: "button", "data-action": "retry-now", text: "Retry now",
        onclick: () => act("Retry now?", `Make event ${r.id} (${r.event_type} of ${r.aggregate_type} ${r.aggregate_id}) due now, without waiting for its back-off.`,
          "Retry now", `/api/outbox/${r.id}/retry`, {}, (d) => toast(`${d.due_now.length} event(s) due now`)),
      }) : "")));
}

function renderDeadLetters(rows) {
  fill(document.getElementById("dead-letters"), rows, (r) => {
    const what = `event ${r.id} (${r.event_type} of ${r.aggregate_type} ${r.aggregate_id})`;
    return el("tr", { "data-dead-letter": r.id },
      el("td", { text: r.id }),
      el("td", { text: `${r.aggregate_type} ${r.aggregate_id}` }),
      el("td", { text: r.event_type }),
      el("td", { class: "num", text: r.attempts }),
      el("td", { class: "num", text: bytes(r.payload_bytes) }),
      el("td", { text: when(r.dead_lettered_at) }),
      el("td", { class: "error", text: r.reason }),
      el("td", { class: "actions" },
        el("button", { type: "button", "data-action": "payload", text: "Payload", onclick: () => showPayload(r.id) }), " ",
        el("button", { type: "button", "data-action": "retry", text: "Retry",
          onclick: () => act("Retry this dead letter?", `Put ${what} back into the outbox, first in its aggregate's order. If the broker refuses it again it comes back here.`,
            "Retry", `/api/dead-letters/${r.id}/retry`, {}, () => toast(`dead letter ${r.id} is back in the outbox`)) }), " ",
        el("button", { type: "button", "data-action": "discard", text: "Discard",
          onclick: () => act("Discard this dead letter for good?", `Delete ${what}. It will never be published; the later events of ${r.aggregate_id} flow on.`,
            "Discard", `/api/dead-letters/${r.id}/discard`, {}, () => toast(`dead letter ${r.id} discarded`)) })));
  });
}

async function showPayload(id) {
  try {
    const row = await api(`/api/dead-letters/${id}`);
    let text = row.payload;
    try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* shown as stored */ }
    const limit = 20000;
    if (text.length > limit) text = `${text.slice(0, limit)}\n… (${bytes(row.payload.length)} in all)`;
    document.getElementById("payload-title").textContent = `Payload of event ${id}: ${row.reason}`;
    document.getElementById("payload-text").textContent = text;
    document.getElementById("payload").showModal();
  } catch (error) {
    toast(error.message, true);
  }
}

async function loadDlq() {
  const note = document.getElementById("dlq-note");
  try {
    const data = await api("/api/dlq");
    document.getElementById("dlq-redrive").disabled = !data.configured || data.messages.length === 0;
    if (data.configured) note.textContent = `looked ${new Date().toLocaleTimeString()}`;
    fill(document.getElementById("dlq"), data.messages, (m) =>
      el("tr", { "data-message": m.message_id },
        el("td", { text: m.message_id }),
        el("td", { text: m.group_id || "" }),
        el("td", { text: `${m.event_type || ""} ${m.event_id || ""}` }),
        el("td", { class: "num", text: m.receive_count }),
        el("td", { class: "body", text: m.body.length > 300 ? `${m.body.slice(0, 300)}…` : m.body })));
  } catch (error) {
    note.textContent = error.message;
  }
}

async function loadFault() {
  if (!faultAvailable) return;
  try {
    const data = await api("/api/fault");
    const mode = document.getElementById("fault-mode");
    mode.textContent = data.mode;
    mode.className = `pill ${data.mode}`;
  } catch (error) {
    document.getElementById("fault-mode").textContent = error.message;
  }
}

const FAULT_TEXT = {
  deny: "Local SQS will answer AccessDenied to every call, as AWS does when the relay's role is denied. Bookings still succeed; events wait in the outbox.",
  down: "Local SQS will drop every connection without answering. Events wait in the outbox.",
  allow: "Local SQS goes back to normal; waiting events drain in order.",
};

for (const button of document.querySelectorAll("[data-fault]")) {
  const mode = button.dataset.fault;
  button.addEventListener("click", () =>
    act(`Switch local SQS to "${mode}"?`, FAULT_TEXT[mode], `Switch to ${mode}`, "/api/fault", { mode },
      (d) => toast(`local SQS is now "${d.mode}"`)).then(loadFault));
}

document.getElementById("dlq-refresh").addEventListener("click", loadDlq);
document.getElementById("dlq-redrive").addEventListener("click", () =>
  act("Redrive the dead-letter queue?", "Move every message of the payment DLQ back to the main queue. The payment service's inbox still makes sure no flight is paid twice.",
    "Redrive", "/api/dlq/redrive", {}, (d) => toast(`${d.redriven} message(s) moved back to the queue`)).then(loadDlq));

// -- the loop ----------------------------------------------------------------------------------------------

async function refresh() {
  try {
    const [overview, outbox, dead] = await Promise.all([
      api("/api/overview"), api("/api/outbox"), api("/api/dead-letters"),
    ]);
    renderOverview(overview);
    renderOutbox(outbox);
    renderDeadLetters(dead);
    await loadFault();
  } catch (error) {
    const status = document.getElementById("status");
    status.textContent = "unreachable";
    status.className = "pill open";
    document.getElementById("reasons").replaceChildren(el("li", { text: error.message }));
  }
}

async function loop() {
  await refresh();
  setTimeout(loop, refreshMs);
}

loop().then(loadDlq);
